//! Redundancy policies: `replicate:N` and `ec:K+M`.
//!
//! A chunk has `parts()` parts, named `a`, `b`, `c`, ... (directory names on
//! disk). For replication every part is a full copy; for EC parts `0..k` are
//! data and `k..k+m` parity.

use std::fmt;
use std::str::FromStr;

use crate::CoreError;

/// The most parts a chunk can have (EC 16+8).
pub const MAX_PARTS: usize = 24;
/// The most data parts of an EC profile (sizes the parity meta record).
pub const MAX_EC_DATA: usize = 16;
/// The most parity parts of an EC profile.
pub const MAX_EC_PARITY: usize = 8;

/// How a chunk is made redundant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redundancy {
    /// N full copies.
    Replicate(u8),
    /// K data + M parity Reed-Solomon parts.
    Ec {
        /// Data parts.
        k: u8,
        /// Parity parts.
        m: u8,
    },
}

impl Redundancy {
    /// Parts per chunk.
    pub fn parts(self) -> usize {
        match self {
            Redundancy::Replicate(n) => usize::from(n),
            Redundancy::Ec { k, m } => usize::from(k) + usize::from(m),
        }
    }

    /// Data parts per chunk (1 for replication).
    pub fn data_parts(self) -> usize {
        match self {
            Redundancy::Replicate(_) => 1,
            Redundancy::Ec { k, .. } => usize::from(k),
        }
    }
}

/// The directory name of part `index` (`a`, `b`, ...).
pub fn part_name(index: usize) -> char {
    // MAX_PARTS is 24, well inside the alphabet.
    char::from(b'a' + (index % 26) as u8)
}

impl fmt::Display for Redundancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Redundancy::Replicate(n) => write!(f, "replicate:{n}"),
            Redundancy::Ec { k, m } => write!(f, "ec:{k}+{m}"),
        }
    }
}

impl FromStr for Redundancy {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            CoreError::InvalidSetting(format!(
                "bad redundancy {s:?}: {why} (use replicate:N with N in 1..=8, or ec:K+M with K in 1..=16, M in 1..=8)"
            ))
        };
        if let Some(n) = s.strip_prefix("replicate:") {
            let n: u8 = n.parse().map_err(|_| bad("N is not a number"))?;
            if !(1..=8).contains(&n) {
                return Err(bad("N out of range"));
            }
            return Ok(Redundancy::Replicate(n));
        }
        if let Some(km) = s.strip_prefix("ec:") {
            let (k, m) = km.split_once('+').ok_or_else(|| bad("missing '+'"))?;
            let k: u8 = k.parse().map_err(|_| bad("K is not a number"))?;
            let m: u8 = m.parse().map_err(|_| bad("M is not a number"))?;
            if !(1..=MAX_EC_DATA as u8).contains(&k) || !(1..=MAX_EC_PARITY as u8).contains(&m) {
                return Err(bad("K or M out of range"));
            }
            return Ok(Redundancy::Ec { k, m });
        }
        Err(bad("unknown policy"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        for s in ["replicate:1", "replicate:3", "ec:4+2", "ec:16+8"] {
            let r: Redundancy = s.parse().expect("valid");
            assert_eq!(r.to_string(), s);
        }
        assert_eq!(
            "ec:4+2".parse::<Redundancy>().ok().map(|r| r.parts()),
            Some(6)
        );
    }

    #[test]
    fn rejects_out_of_range() {
        for s in [
            "replicate:0",
            "replicate:9",
            "ec:0+1",
            "ec:17+1",
            "ec:4+9",
            "ec:4",
            "raid5",
            "",
        ] {
            assert!(s.parse::<Redundancy>().is_err(), "{s}");
        }
    }

    #[test]
    fn part_names() {
        assert_eq!(part_name(0), 'a');
        assert_eq!(part_name(23), 'x');
    }
}
