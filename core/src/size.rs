//! Sizes on the command line are binary: `4K` = 4096, `4M` = 4 MiB.

use crate::{CoreError, CoreResult};

/// Parses `123`, `4K`, `4KiB`, `64k`, `4M`, `1G`, `2T` (binary multiples).
pub fn parse_size(text: &str) -> CoreResult<u64> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits_end);
    let bad =
        || CoreError::InvalidSetting(format!("bad size {text:?} (use e.g. 4096, 4K, 4M, 1G)"));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let shift = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        "P" | "PB" | "PIB" => 50,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

/// Formats a byte count the way `parse_size` reads it, exact (e.g. `4K`, `1536`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u32, &str); 5] = [(50, "P"), (40, "T"), (30, "G"), (20, "M"), (10, "K")];
    for (shift, unit) in UNITS {
        if bytes != 0 && bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_suffixes() {
        assert_eq!(parse_size("4096").ok(), Some(4096));
        assert_eq!(parse_size("4K").ok(), Some(4096));
        assert_eq!(parse_size("64k").ok(), Some(65536));
        assert_eq!(parse_size("4M").ok(), Some(4 << 20));
        assert_eq!(parse_size("1GiB").ok(), Some(1 << 30));
        assert_eq!(parse_size("2T").ok(), Some(2 << 40));
    }

    #[test]
    fn rejects_garbage_and_overflow() {
        assert!(parse_size("").is_err());
        assert!(parse_size("K").is_err());
        assert!(parse_size("4X").is_err());
        assert!(parse_size("-4K").is_err());
        assert!(parse_size("99999999999P").is_err());
    }

    #[test]
    fn format_round_trips() {
        for v in [1u64, 1536, 4096, 4 << 20, 3 << 30] {
            assert_eq!(parse_size(&format_size(v)).ok(), Some(v));
        }
        assert_eq!(format_size(4 << 20), "4M");
    }
}
