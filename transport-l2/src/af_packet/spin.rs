//! How long an idle polling thread spins before it blocks: adaptive, by
//! KVM's halt-polling rule.
//!
//! Spinning pays when work arrives within the spin (a response a few µs
//! after the request, the next request of a closed loop), and is waste
//! when it does not: on a small host every idle thread that spins takes a
//! core from one that has work (the e2e benchmark runs a master and three
//! to six nodes, each with a polling thread, on 2 cores). So the window
//! grows (doubling, from [`GROW_FROM`]) when the thread blocked and work
//! came soon ([`BUSY_GAP`]: the thread is serving traffic, and spinning
//! saves it the wake-up), and halves when work came later or not at all
//! (the thread is idle). A thread that
//! keeps catching work while spinning never blocks and keeps its window; an
//! idle node's poller stops spinning after a few blocks.

use std::time::Duration;

/// The window a shrunken spin restarts from when it grows again.
const GROW_FROM: Duration = Duration::from_micros(4);

/// Work that wakes a blocked thread within this is traffic (grow); later,
/// the thread was idle (shrink). Not the spin ceiling: the measured sleep
/// includes the wake-up itself, 30–70 µs on an idle VM, so a request that
/// came 10 µs after the block looks like a 60 µs sleep (a threshold at the
/// 50 µs ceiling shrank every QD1 poller to 0 and made QD1 reads 3–6×
/// slower: 22 → 90 µs through the transport).
const BUSY_GAP: Duration = Duration::from_millis(1);

/// The spin window of one polling thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdaptiveSpin {
    window: Duration,
    max: Duration,
    adaptive: bool,
}

impl AdaptiveSpin {
    /// A window starting at its ceiling `max`; fixed unless `adaptive`.
    pub(crate) fn new(max: Duration, adaptive: bool) -> Self {
        AdaptiveSpin {
            window: max,
            max,
            adaptive,
        }
    }

    /// How long to spin now.
    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// The thread blocked and was woken by work after `slept`.
    pub(crate) fn woke_after(&mut self, slept: Duration) {
        if slept <= BUSY_GAP {
            self.grow();
        } else {
            self.shrink();
        }
    }

    /// The thread blocked until its timeout: nothing came.
    pub(crate) fn timed_out(&mut self) {
        self.shrink();
    }

    fn grow(&mut self) {
        if self.adaptive {
            self.window = (self.window * 2).max(GROW_FROM).min(self.max);
        }
    }

    fn shrink(&mut self) {
        if self.adaptive {
            self.window /= 2;
            if self.window < Duration::from_micros(1) {
                self.window = Duration::ZERO;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(50);

    #[test]
    fn idle_shrinks_to_nothing_and_quick_work_grows_back() {
        let mut s = AdaptiveSpin::new(MAX, true);
        assert_eq!(s.window(), MAX);
        for _ in 0..8 {
            s.timed_out();
        }
        assert_eq!(s.window(), Duration::ZERO);
        // A wake-up 70 µs after the block is still traffic (the sleep
        // includes the wake-up's own latency).
        s.woke_after(Duration::from_micros(70));
        assert_eq!(s.window(), GROW_FROM);
        for _ in 0..8 {
            s.woke_after(Duration::from_micros(70));
        }
        assert_eq!(s.window(), MAX, "capped at the ceiling");
        s.woke_after(Duration::from_millis(3));
        assert_eq!(s.window(), MAX / 2, "late work shrinks it");
    }

    #[test]
    fn fixed_when_not_adaptive() {
        let mut s = AdaptiveSpin::new(MAX, false);
        s.timed_out();
        s.woke_after(Duration::from_secs(1));
        assert_eq!(s.window(), MAX);
    }
}
