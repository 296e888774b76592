//! [`SlowGate`]: whether requests that are usually quick but may block (a
//! write can wait on the page cache's writeback) are still run inline on
//! the polling thread.
//!
//! Running a write inline saves a hand-off to a tokio worker and back: two
//! cross-thread wake-ups, each ~24 µs on an idle VM, and most of a write's
//! cost on the node (`qbd-bench transport --ops write`). But while the
//! thread runs it, no frame of any session moves. So the gate times every
//! gated call: one slower than [`SLOW`] closes it for a back-off (doubling
//! while slow calls repeat, up to [`MAX_BACKOFF`]), during which those
//! requests go to tokio as before; a quick call resets the back-off.

use std::time::{Duration, Instant};

/// A gated call slower than this closes the gate.
pub(super) const SLOW: Duration = Duration::from_micros(200);
/// The first back-off.
pub(super) const BASE_BACKOFF: Duration = Duration::from_millis(50);
/// The longest back-off.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// See the module documentation.
#[derive(Debug)]
pub(super) struct SlowGate {
    closed_until: Option<Instant>,
    backoff: Duration,
    /// Times a slow call closed the gate.
    pub(super) closed: u64,
}

impl Default for SlowGate {
    fn default() -> Self {
        Self {
            closed_until: None,
            backoff: BASE_BACKOFF,
            closed: 0,
        }
    }
}

impl SlowGate {
    /// May a gated request run inline now?
    pub(super) fn open(&self, now: Instant) -> bool {
        self.closed_until.is_none_or(|t| now >= t)
    }

    /// Records how long a gated call took, ending at `now`.
    pub(super) fn record(&mut self, took: Duration, now: Instant) {
        if took > SLOW {
            self.closed_until = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            self.closed += 1;
        } else {
            self.backoff = BASE_BACKOFF;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_calls_keep_it_open_and_a_slow_one_closes_it_for_the_backoff() {
        let t0 = Instant::now();
        let mut g = SlowGate::default();
        g.record(Duration::from_micros(5), t0);
        assert!(g.open(t0));
        g.record(SLOW + Duration::from_micros(1), t0);
        assert!(!g.open(t0 + BASE_BACKOFF - Duration::from_micros(1)));
        assert!(g.open(t0 + BASE_BACKOFF));
        assert_eq!(g.closed, 1);
    }

    #[test]
    fn repeated_slow_calls_double_the_backoff_up_to_the_cap_and_a_quick_one_resets_it() {
        let mut now = Instant::now();
        let mut g = SlowGate::default();
        let mut expect = BASE_BACKOFF;
        for _ in 0..12 {
            g.record(SLOW * 2, now);
            assert!(!g.open(now + expect - Duration::from_micros(1)));
            now += expect;
            assert!(g.open(now));
            expect = (expect * 2).min(MAX_BACKOFF);
        }
        assert_eq!(expect, MAX_BACKOFF);
        g.record(Duration::ZERO, now);
        g.record(SLOW * 2, now);
        assert!(g.open(now + BASE_BACKOFF));
    }
}
