//! The rate limit: a repair that has moved `bytes` since `start` at most
//! `rate` bytes/s waits until `start + bytes / rate`. Time is an input
//! (`now`), so the rule is tested without clocks.

use std::time::{Duration, Instant};

/// Paces a stream of bytes to a rate.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    rate: Option<u64>,
    start: Instant,
    bytes: u64,
}

impl Pace {
    /// At most `rate` bytes/s from `start` (`None`: unlimited).
    pub fn new(rate: Option<u64>, start: Instant) -> Self {
        Pace {
            rate: rate.filter(|r| *r > 0),
            start,
            bytes: 0,
        }
    }

    /// Counts `bytes` more moved.
    pub fn account(&mut self, bytes: u64) {
        self.bytes += bytes;
    }

    /// How long to wait at `now` before moving more.
    pub fn delay(&self, now: Instant) -> Duration {
        let Some(rate) = self.rate else {
            return Duration::ZERO;
        };
        let due = self.start + Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        due.saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_until_the_bytes_are_due() {
        let t0 = Instant::now();
        let mut p = Pace::new(Some(1000), t0);
        p.account(500);
        assert_eq!(p.delay(t0), Duration::from_millis(500));
        assert_eq!(
            p.delay(t0 + Duration::from_millis(200)),
            Duration::from_millis(300)
        );
        assert_eq!(p.delay(t0 + Duration::from_secs(1)), Duration::ZERO);
    }

    #[test]
    fn unlimited_never_waits() {
        let t0 = Instant::now();
        let mut p = Pace::new(None, t0);
        p.account(u64::MAX / 2);
        assert_eq!(p.delay(t0), Duration::ZERO);
    }
}
