//! The placement table: which backend holds which part.
//!
//! The table is the volume's ordered list of backend identities (stored in
//! `<nr>/.meta`). Part `p` of chunk `c` lives on entry `(c + p) mod N`. It is
//! bound to identities, never to command-line or discovery order, and since
//! `parts <= N` no two parts of one chunk share a backend.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{CoreError, CoreResult};

/// A backend's identity (the UUID in its `.backend` file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BackendId(pub Uuid);

impl std::fmt::Display for BackendId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The ordered backend identities of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementTable {
    entries: Vec<BackendId>,
}

impl PlacementTable {
    /// A table over `entries`; needs at least `parts` distinct entries.
    pub fn new(entries: Vec<BackendId>, parts: usize) -> CoreResult<Self> {
        let mut sorted = entries.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != entries.len() {
            return Err(CoreError::InvalidSetting(
                "the same backend appears twice".into(),
            ));
        }
        if entries.len() < parts {
            return Err(CoreError::InvalidSetting(format!(
                "{} backend(s) given but the policy needs at least {parts} (one per part)",
                entries.len()
            )));
        }
        Ok(PlacementTable { entries })
    }

    /// The table index holding part `part` of chunk `chunk`.
    pub fn slot(&self, chunk: u64, part: usize) -> usize {
        let n = self.entries.len() as u64;
        ((chunk % n + part as u64 % n) % n) as usize
    }

    /// The backend holding part `part` of chunk `chunk`.
    pub fn backend(&self, chunk: u64, part: usize) -> BackendId {
        self.entries[self.slot(chunk, part)]
    }

    /// The identities, in table order.
    pub fn entries(&self) -> &[BackendId] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u128) -> Vec<BackendId> {
        (1..=n).map(|i| BackendId(Uuid::from_u128(i))).collect()
    }

    #[test]
    fn rotates_parts_over_the_table() -> CoreResult<()> {
        let t = PlacementTable::new(ids(4), 2)?;
        assert_eq!(t.slot(0, 0), 0);
        assert_eq!(t.slot(0, 1), 1);
        assert_eq!(t.slot(3, 1), 0);
        assert_eq!(t.slot(u64::MAX, 1), ((u64::MAX % 4 + 1) % 4) as usize);
        Ok(())
    }

    #[test]
    fn parts_of_a_chunk_never_share_a_backend() -> CoreResult<()> {
        let t = PlacementTable::new(ids(6), 6)?;
        for c in 0..50 {
            let mut seen: Vec<_> = (0..6).map(|p| t.backend(c, p)).collect();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), 6);
        }
        Ok(())
    }

    #[test]
    fn refuses_too_few_or_duplicates() {
        assert!(PlacementTable::new(ids(2), 3).is_err());
        let mut d = ids(3);
        d[2] = d[0];
        assert!(PlacementTable::new(d, 1).is_err());
    }
}
