//! Write generations.
//!
//! A generation is 64 bits: the master epoch in the high 24 bits, a
//! per-epoch counter in the low 40 bits. Epochs only grow (a master bumps it
//! when it takes a volume), so every generation of a later master is newer
//! than every generation of an earlier one. Generation 0 means "never
//! written". A normal write applies only if its generation is newer than the
//! stored one; repair and resync replace blocks whatever their generation.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bits of the per-epoch counter.
pub const COUNTER_BITS: u32 = 40;
/// The largest epoch.
pub const MAX_EPOCH: u64 = (1 << (64 - COUNTER_BITS)) - 1;

/// A block's write generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Generation(pub u64);

impl Generation {
    /// Never written.
    pub const NONE: Generation = Generation(0);

    /// Builds a generation from its parts.
    pub fn new(epoch: u64, counter: u64) -> Self {
        Generation((epoch << COUNTER_BITS) | (counter & ((1 << COUNTER_BITS) - 1)))
    }

    /// The epoch part.
    pub fn epoch(self) -> u64 {
        self.0 >> COUNTER_BITS
    }

    /// The counter part.
    pub fn counter(self) -> u64 {
        self.0 & ((1 << COUNTER_BITS) - 1)
    }
}

/// Hands out increasing generations within one epoch.
#[derive(Debug)]
pub struct GenerationCounter {
    epoch: u64,
    next: AtomicU64,
}

impl GenerationCounter {
    /// A counter for `epoch`, starting at counter 1.
    pub fn new(epoch: u64) -> Self {
        GenerationCounter {
            epoch,
            next: AtomicU64::new(1),
        }
    }

    /// The next generation, or `None` when the epoch's counter space is used
    /// up (the master must then take a new epoch).
    pub fn next(&self) -> Option<Generation> {
        let c = self.next.fetch_add(1, Ordering::Relaxed);
        (c < (1 << COUNTER_BITS)).then(|| Generation::new(self.epoch, c))
    }

    /// The epoch this counter serves.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_epochs_are_always_newer() {
        let old = Generation::new(5, (1 << COUNTER_BITS) - 1);
        let new = Generation::new(6, 1);
        assert!(new > old);
        assert_eq!(new.epoch(), 6);
        assert_eq!(old.counter(), (1 << COUNTER_BITS) - 1);
    }

    #[test]
    fn counter_increases_and_never_yields_none_gen() {
        let c = GenerationCounter::new(1);
        let a = c.next().expect("space");
        let b = c.next().expect("space");
        assert!(b > a && a > Generation::NONE);
    }
}
