//! Round-trip estimation (RFC 6298) and the AIMD congestion window.
//!
//! Invariants: `rto()` is within `[min_rto, max_rto]`; the window is within
//! `[min_cwnd, max_cwnd]` frames and shrinks at most once per round trip
//! (a burst of losses from one window is one congestion signal).

use std::time::{Duration, Instant};

use super::Config;

/// SRTT/RTTVAR from samples of messages sent once (Karn's rule is the
/// caller's: never sample a retransmitted message).
#[derive(Debug, Clone)]
pub(crate) struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    initial: Duration,
    min_rto: Duration,
    max_rto: Duration,
}

impl RttEstimator {
    pub(crate) fn new(cfg: &Config) -> Self {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            initial: cfg.initial_rto,
            min_rto: cfg.min_rto,
            max_rto: cfg.max_rto,
        }
    }

    /// Folds in one sample (RFC 6298 §2: alpha 1/8, beta 1/4).
    pub(crate) fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let err = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + err) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    /// The retransmission timeout before backoff.
    pub(crate) fn rto(&self) -> Duration {
        let raw = match self.srtt {
            None => self.initial,
            Some(srtt) => srtt + self.rttvar * 4,
        };
        raw.clamp(self.min_rto, self.max_rto)
    }

    /// The timeout after `backoff` consecutive expiries (doubling, capped).
    pub(crate) fn rto_backoff(&self, backoff: u32) -> Duration {
        let factor = 1u32 << backoff.min(16);
        self.rto().saturating_mul(factor).min(self.max_rto)
    }
}

/// Additive increase, multiplicative decrease, counted in frames (the Linux
/// AoE initiator's scheme: +1 frame per window acknowledged, halve on a
/// timeout).
#[derive(Debug, Clone)]
pub(crate) struct Aimd {
    cwnd: u32,
    min: u32,
    max: u32,
    /// Frames acknowledged since the last increase.
    acked: u32,
    /// Losses of messages first sent before this instant are the same
    /// congestion event as the last decrease.
    recovery_start: Option<Instant>,
}

impl Aimd {
    pub(crate) fn new(cfg: &Config) -> Self {
        Aimd {
            cwnd: cfg.initial_cwnd.clamp(cfg.min_cwnd, cfg.cwnd_ceiling()),
            min: cfg.min_cwnd,
            max: cfg.cwnd_ceiling(),
            acked: 0,
            recovery_start: None,
        }
    }

    /// The window in frames.
    pub(crate) fn window(&self) -> u32 {
        self.cwnd
    }

    /// `frames` frames were acknowledged.
    pub(crate) fn on_ack(&mut self, frames: u32) {
        self.acked += frames;
        while self.acked >= self.cwnd && self.cwnd < self.max {
            self.acked -= self.cwnd;
            self.cwnd += 1;
        }
        if self.cwnd >= self.max {
            self.acked = 0;
        }
    }

    /// A message first sent at `sent` timed out at `now`.
    pub(crate) fn on_timeout(&mut self, sent: Instant, now: Instant) {
        if self.recovery_start.is_some_and(|start| sent < start) {
            return;
        }
        self.cwnd = (self.cwnd / 2).max(self.min);
        self.acked = 0;
        self.recovery_start = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rto_floor_and_backoff() {
        let cfg = Config::default();
        let mut r = RttEstimator::new(&cfg);
        assert_eq!(r.rto(), cfg.initial_rto);
        r.sample(Duration::from_micros(10));
        assert_eq!(r.rto(), cfg.min_rto);
        assert_eq!(r.rto_backoff(1), cfg.min_rto * 2);
        assert_eq!(r.rto_backoff(40), cfg.max_rto);
        for _ in 0..20 {
            r.sample(Duration::from_millis(10));
        }
        assert!(r.rto() >= Duration::from_millis(10));
    }

    #[test]
    fn aimd_halves_once_per_event() {
        let cfg = Config::default();
        let mut a = Aimd::new(&cfg);
        let w0 = a.window();
        a.on_ack(w0);
        assert_eq!(a.window(), w0 + 1);
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(1);
        a.on_timeout(t0, t1);
        let w1 = a.window();
        assert_eq!(w1, w0.div_ceil(2));
        a.on_timeout(t0, t1 + Duration::from_millis(1));
        assert_eq!(a.window(), w1, "same window, one decrease");
        a.on_timeout(t1 + Duration::from_millis(2), t1 + Duration::from_millis(3));
        assert_eq!(a.window(), (w1 / 2).max(cfg.min_cwnd));
    }
}
