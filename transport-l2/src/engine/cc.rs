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
    /// A delay spike proven by an undone decrease, and until when the RTO
    /// stays above it.
    spike: Option<(Duration, Instant)>,
}

/// How long a proven delay spike keeps the RTO above it.
const SPIKE_MEMORY: Duration = Duration::from_secs(1);

impl RttEstimator {
    pub(crate) fn new(cfg: &Config) -> Self {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            initial: cfg.initial_rto,
            min_rto: cfg.min_rto,
            max_rto: cfg.max_rto,
            spike: None,
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

    /// The timeout after `backoff` consecutive expiries (doubling, capped),
    /// at least a delay spike seen within [`SPIKE_MEMORY`] of `now`.
    pub(crate) fn rto_backoff(&self, now: Instant, backoff: u32) -> Duration {
        let factor = 1u32 << backoff.min(16);
        let base = match self.spike {
            Some((spike, until)) if now < until => self.rto().max(spike),
            _ => self.rto(),
        };
        base.saturating_mul(factor).min(self.max_rto)
    }

    /// A message's first copy took `delay` to be answered, far past the
    /// RTO, yet arrived (its retransmission was a duplicate): the path has
    /// pauses that long (a descheduled peer). Samples cannot show them
    /// (Karn's rule skips retransmitted messages), so the RTO stays above
    /// `delay` for [`SPIKE_MEMORY`] (RFC 4015's response, kept simple).
    pub(crate) fn note_spike(&mut self, now: Instant, delay: Duration) {
        let delay = delay.min(self.max_rto);
        let keep = match self.spike {
            Some((d, until)) if now < until => d.max(delay),
            _ => delay,
        };
        self.spike = Some((keep, now + SPIKE_MEMORY));
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
    /// What to restore if the peer proves the last decrease spurious.
    undo: Option<Undo>,
}

/// A decrease that can still be undone (RFC 3708's D-SACK detection, as
/// Linux undoes a spurious RTO): the window before it, and how many frames
/// were retransmitted since that the peer has not reported as duplicates.
/// When every one of them came back as a duplicate, nothing was lost: the
/// timeout was a delay (a descheduled thread, a busy peer), not congestion.
#[derive(Debug, Clone, Copy)]
struct Undo {
    cwnd: u32,
    unconfirmed: u32,
    /// When the message whose timeout caused the decrease was first sent.
    sent: Instant,
}

impl Aimd {
    pub(crate) fn new(cfg: &Config) -> Self {
        Aimd {
            cwnd: cfg.initial_cwnd.clamp(cfg.min_cwnd, cfg.cwnd_ceiling()),
            min: cfg.min_cwnd,
            max: cfg.cwnd_ceiling(),
            acked: 0,
            recovery_start: None,
            undo: None,
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
        // Frames of an earlier decrease still unconfirmed stay so: this
        // one is undone only if those turn out duplicates too.
        let unconfirmed = self.undo.map_or(0, |u| u.unconfirmed);
        self.undo = Some(Undo {
            cwnd: self.cwnd,
            unconfirmed,
            sent,
        });
        self.cwnd = (self.cwnd / 2).max(self.min);
        self.acked = 0;
        self.recovery_start = Some(now);
    }

    /// `frames` frames were sent again (after a timeout, on a fragment
    /// report, or on the peer's request).
    pub(crate) fn on_retransmit(&mut self, frames: u64) {
        if let Some(u) = &mut self.undo {
            let frames = u32::try_from(frames).unwrap_or(u32::MAX);
            u.unconfirmed = u.unconfirmed.saturating_add(frames);
        }
    }

    /// The peer reports at `now` `frames` data frames it received twice.
    /// If that undid the last decrease, returns how long the first copy of
    /// the message that caused it had been on its way (the delay spike).
    pub(crate) fn on_duplicates(&mut self, now: Instant, frames: u32) -> Option<Duration> {
        let u = self.undo.as_mut()?;
        u.unconfirmed = u.unconfirmed.saturating_sub(frames);
        if u.unconfirmed > 0 {
            return None;
        }
        self.cwnd = self.cwnd.max(u.cwnd);
        let spike = now.saturating_duration_since(u.sent);
        self.undo = None;
        Some(spike)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decrease_is_undone_when_every_resent_frame_was_a_duplicate() {
        let cfg = Config::default();
        let t0 = Instant::now();
        let mut a = Aimd::new(&cfg);
        let w = a.window();
        a.on_timeout(t0, t0 + Duration::from_millis(1));
        a.on_retransmit(3);
        assert_eq!(a.window(), w / 2);
        let later = t0 + Duration::from_millis(4);
        assert_eq!(
            a.on_duplicates(later, 2),
            None,
            "one resent frame is unaccounted for"
        );
        assert_eq!(a.window(), w / 2);
        assert_eq!(a.on_duplicates(later, 1), Some(Duration::from_millis(4)));
        assert_eq!(a.window(), w);
        // Nothing left to undo: later reports change nothing.
        assert_eq!(a.on_duplicates(later, 5), None);
        // A real loss: the resent frame never comes back twice.
        a.on_timeout(t0 + Duration::from_millis(2), t0 + Duration::from_millis(3));
        a.on_retransmit(1);
        assert_eq!(a.on_duplicates(later, 0), None);
        assert_eq!(a.window(), w / 2);
    }

    #[test]
    fn rto_floor_and_backoff() {
        let cfg = Config::default();
        let mut r = RttEstimator::new(&cfg);
        assert_eq!(r.rto(), cfg.initial_rto);
        r.sample(Duration::from_micros(10));
        assert_eq!(r.rto(), cfg.min_rto);
        let now = Instant::now();
        assert_eq!(r.rto_backoff(now, 1), cfg.min_rto * 2);
        assert_eq!(r.rto_backoff(now, 40), cfg.max_rto);
        r.note_spike(now, Duration::from_millis(4));
        assert_eq!(r.rto_backoff(now, 0), Duration::from_millis(4));
        assert_eq!(r.rto_backoff(now + SPIKE_MEMORY, 0), cfg.min_rto);
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
