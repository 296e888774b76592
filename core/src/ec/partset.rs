//! A small set of part indices (at most [`MAX_PARTS`]), as a bit mask.

use std::fmt;

use crate::redundancy::MAX_PARTS;

/// A set of part indices `0..MAX_PARTS` (bit `i` = part `i`). Copy, no
/// allocation: it travels in per-row verdicts on the read path.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PartSet(u32);

const ALL: u32 = (1 << MAX_PARTS) - 1;

impl PartSet {
    /// The empty set.
    pub const EMPTY: PartSet = PartSet(0);

    /// The parts `0..n` (`n` is clamped to [`MAX_PARTS`]).
    pub fn first(n: usize) -> PartSet {
        let n = n.min(MAX_PARTS);
        PartSet(((1u64 << n) - 1) as u32)
    }

    /// The parts `start..end`.
    pub fn range(start: usize, end: usize) -> PartSet {
        PartSet(Self::first(end).0 & !Self::first(start).0)
    }

    /// The set with these bits (bits past [`MAX_PARTS`] are dropped).
    pub fn from_bits(bits: u32) -> PartSet {
        PartSet(bits & ALL)
    }

    /// The bit mask.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Adds a part (indices ≥ [`MAX_PARTS`] are ignored).
    pub fn insert(&mut self, part: usize) {
        if part < MAX_PARTS {
            self.0 |= 1 << part;
        }
    }

    /// Removes a part.
    pub fn remove(&mut self, part: usize) {
        if part < MAX_PARTS {
            self.0 &= !(1 << part);
        }
    }

    /// Is `part` in the set?
    pub fn contains(self, part: usize) -> bool {
        part < MAX_PARTS && self.0 & (1 << part) != 0
    }

    /// Number of parts in the set.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// True for the empty set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parts in both sets.
    pub fn and(self, other: PartSet) -> PartSet {
        PartSet(self.0 & other.0)
    }

    /// Parts in either set.
    pub fn or(self, other: PartSet) -> PartSet {
        PartSet(self.0 | other.0)
    }

    /// Parts in `self` but not in `other`.
    pub fn minus(self, other: PartSet) -> PartSet {
        PartSet(self.0 & !other.0)
    }

    /// The parts in increasing order.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..MAX_PARTS).filter(move |&p| self.contains(p))
    }
}

impl FromIterator<usize> for PartSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        let mut s = PartSet::EMPTY;
        for p in iter {
            s.insert(p);
        }
        s
    }
}

impl fmt::Debug for PartSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        let a = PartSet::range(2, 5);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(a.len(), 3);
        let b: PartSet = [4, 7].into_iter().collect();
        assert_eq!(a.and(b).iter().collect::<Vec<_>>(), vec![4]);
        assert_eq!(a.minus(b).len(), 2);
        assert_eq!(a.or(b).len(), 4);
        assert_eq!(PartSet::first(MAX_PARTS).len(), MAX_PARTS);
        assert_eq!(PartSet::first(99).len(), MAX_PARTS);
        let mut c = PartSet::EMPTY;
        c.insert(MAX_PARTS);
        assert!(c.is_empty());
        c.insert(23);
        assert!(c.contains(23) && !c.contains(24));
        c.remove(23);
        assert!(c.is_empty());
        assert_eq!(format!("{:?}", b), "{4, 7}");
    }
}
