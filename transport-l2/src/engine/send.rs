//! Outgoing messages: fragmentation, retransmission with the same sequence
//! number, acknowledgement, RTT sampling and the congestion window. Shared
//! by the client (requests) and the server (responses).
//!
//! Invariants: `in_flight` is the number of fragments of started,
//! unacknowledged messages; a message is started only in sequence order;
//! a retransmission resends every fragment of the message from index 0 (the
//! receiver keeps the fragments it has, so the copies fill the gaps).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::ops::Range;
use std::time::{Duration, Instant};

use super::cc::{Aimd, RttEstimator};
use super::{Config, SendError, Stats};

/// A fragment `poll_transmit` should send now.
#[derive(Debug, Clone)]
pub(crate) struct FragOut {
    pub(crate) seq: u64,
    pub(crate) index: u16,
    pub(crate) count: u16,
    pub(crate) msg_len: u32,
    pub(crate) range: Range<usize>,
}

#[derive(Debug)]
struct OutMsg {
    data: Vec<u8>,
    count: u16,
    frag_size: usize,
    /// Fragments from this index on are due (first send or retransmission).
    next: Option<u16>,
    started: bool,
    /// When the first transmission's last fragment went out.
    first_sent: Option<Instant>,
    last_sent: Option<Instant>,
    retransmitted: bool,
    acked: bool,
    backoff: u32,
    rto_at: Option<Instant>,
    /// Fragments the peer reported received (empty: no report yet).
    have: Vec<bool>,
    /// A fragment ack already triggered a resend in this round.
    fast_done: bool,
}

impl OutMsg {
    /// The first fragment from `from` on that the peer lacks.
    fn first_missing(&self, from: u16) -> Option<u16> {
        (from..self.count).find(|&i| !self.have.get(usize::from(i)).copied().unwrap_or(false))
    }

    fn missing(&self) -> u64 {
        (0..self.count)
            .filter(|&i| !self.have.get(usize::from(i)).copied().unwrap_or(false))
            .count() as u64
    }

    /// Starts a retransmission round: the missing fragments, or the last
    /// one if the peer has them all (its acknowledgement was lost).
    fn restart_round(&mut self) {
        self.next = self.first_missing(0).or(Some(self.count - 1));
        self.rto_at = None;
        self.retransmitted = true;
    }
}

/// The sender's half of a session.
#[derive(Debug)]
pub(crate) struct SendQueue {
    msgs: BTreeMap<u64, OutMsg>,
    pub(crate) rtt: RttEstimator,
    pub(crate) cc: Aimd,
    max_payload: usize,
    max_message: usize,
    in_flight: u32,
    /// Started messages with fragments due (`next` is `Some`): what goes
    /// out before any new message.
    due: BTreeSet<u64>,
    /// Messages queued and not started yet (a server answers in any
    /// order, so they need not be the highest numbers).
    unstarted: BTreeSet<u64>,
    /// Every message below this number is acknowledged or gone (a client's
    /// cumulative acknowledgements need not revisit them).
    acked_below: u64,
    /// Every RTO deadline set, earliest first; entries whose message has
    /// another deadline now (or none) are dropped when they reach the top.
    rto_heap: BinaryHeap<Reverse<(Instant, u64)>>,
    /// The fragments of the frame being built (kept to reuse its memory).
    scratch: Vec<FragOut>,
}

/// Fragment count and size for a message of `len` bytes.
pub(crate) fn split(len: usize, max_payload: usize) -> Option<(u16, usize)> {
    let count = len.div_ceil(max_payload).max(1);
    let count = u16::try_from(count).ok()?;
    Some((count, len.div_ceil(usize::from(count))))
}

/// Time the peer may need to work through the frames in flight ahead of a
/// message's last fragment before it can acknowledge it: 1 ns per byte
/// (1 GB/s, well below what one core copies). Without it, a message sent
/// behind megabytes of others times out spuriously at the RTO floor.
fn queue_allowance(in_flight_frames: u32, frame_payload: usize) -> Duration {
    let bytes = u64::from(in_flight_frames) * frame_payload as u64;
    Duration::from_nanos(bytes)
}

impl SendQueue {
    pub(crate) fn new(cfg: &Config) -> Self {
        SendQueue {
            msgs: BTreeMap::new(),
            rtt: RttEstimator::new(cfg),
            cc: Aimd::new(cfg),
            max_payload: cfg.max_payload(),
            max_message: cfg.max_message,
            in_flight: 0,
            due: BTreeSet::new(),
            unstarted: BTreeSet::new(),
            acked_below: 0,
            rto_heap: BinaryHeap::new(),
            scratch: Vec::new(),
        }
    }

    /// Queues message `seq` (sequence numbers must be pushed in order).
    pub(crate) fn push(&mut self, seq: u64, data: Vec<u8>) -> Result<(), SendError> {
        let too_long = SendError::TooLong(data.len());
        if data.len() > self.max_message || u32::try_from(data.len()).is_err() {
            return Err(too_long);
        }
        let (count, frag_size) = split(data.len(), self.max_payload).ok_or(too_long)?;
        let msg = OutMsg {
            data,
            count,
            frag_size,
            next: Some(0),
            started: false,
            first_sent: None,
            last_sent: None,
            retransmitted: false,
            acked: false,
            backoff: 0,
            rto_at: None,
            have: Vec::new(),
            fast_done: false,
        };
        self.msgs.insert(seq, msg);
        self.unstarted.insert(seq);
        Ok(())
    }

    /// The next fragment to send: retransmissions and started messages
    /// first, then new messages in order while the window and `may_start`
    /// allow. Marks it sent at `now`.
    pub(crate) fn next_fragment(
        &mut self,
        now: Instant,
        may_start: impl Fn(u64) -> bool,
    ) -> Option<FragOut> {
        self.next_fragment_within(now, may_start, usize::MAX)
    }

    /// [`Self::next_fragment`], if that fragment is at most `max_len`
    /// bytes; otherwise `None`, and nothing is marked sent (how a bundle
    /// fills the rest of a frame).
    pub(crate) fn next_fragment_within(
        &mut self,
        now: Instant,
        may_start: impl Fn(u64) -> bool,
        max_len: usize,
    ) -> Option<FragOut> {
        let seq = match self.due.first() {
            Some(&seq) => seq,
            None => {
                // The lowest unstarted message, if the window and caller allow.
                let seq = *self.unstarted.first()?;
                let m = self.msgs.get(&seq)?;
                let cwnd = self.cc.window();
                let fits = self.in_flight == 0 || self.in_flight + u32::from(m.count) <= cwnd;
                if !(fits && may_start(seq)) {
                    return None;
                }
                seq
            }
        };
        let Some(m) = self.msgs.get_mut(&seq) else {
            self.due.remove(&seq);
            return None;
        };
        let index = m.next?;
        let start = usize::from(index) * m.frag_size;
        let end = (start + m.frag_size).min(m.data.len());
        if end.saturating_sub(start) > max_len {
            return None;
        }
        if !m.started {
            m.started = true;
            self.in_flight += u32::from(m.count);
            self.unstarted.remove(&seq);
        }
        m.next = m.first_missing(index + 1);
        if m.next.is_some() {
            self.due.insert(seq);
        } else {
            self.due.remove(&seq);
            m.last_sent = Some(now);
            m.first_sent.get_or_insert(now);
            let queued = queue_allowance(self.in_flight, self.max_payload);
            let at = now + self.rtt.rto_backoff(now, m.backoff) + queued;
            m.rto_at = Some(at);
            self.rto_heap.push(Reverse((at, seq)));
        }
        Some(FragOut {
            seq,
            index,
            count: m.count,
            msg_len: m.data.len() as u32,
            range: start..end,
        })
    }

    /// The frame-building buffer, to fill while the queue is borrowed.
    pub(crate) fn take_scratch(&mut self) -> Vec<FragOut> {
        std::mem::take(&mut self.scratch)
    }

    /// Gives the frame-building buffer back.
    pub(crate) fn put_scratch(&mut self, frags: Vec<FragOut>) {
        self.scratch = frags;
    }

    /// The bytes of message `seq` (for a [`FragOut`] just returned).
    pub(crate) fn data(&self, seq: u64) -> &[u8] {
        self.msgs.get(&seq).map_or(&[], |m| &m.data)
    }

    /// Message `seq` arrived complete at the peer. Returns whether that is
    /// news.
    pub(crate) fn on_ack(&mut self, now: Instant, seq: u64) -> bool {
        let Some(m) = self.msgs.get_mut(&seq) else {
            return false;
        };
        if m.acked || !m.started {
            return false;
        }
        m.acked = true;
        m.next = None;
        self.due.remove(&seq);
        m.rto_at = None;
        self.in_flight -= u32::from(m.count);
        if let (false, Some(sent)) = (m.retransmitted, m.first_sent) {
            self.rtt.sample(now.saturating_duration_since(sent));
        }
        self.cc.on_ack(u32::from(m.count));
        true
    }

    /// Applies a cumulative + selective acknowledgement (already extended
    /// to 64 bits).
    pub(crate) fn apply_ack(&mut self, now: Instant, cum: u64, bits: u64) {
        let mut from = self.acked_below;
        while from < cum
            && let Some((&seq, _)) = self.msgs.range(from..cum).next()
        {
            self.on_ack(now, seq);
            from = seq + 1;
        }
        // Unstarted messages cannot be acknowledged yet: stop below them.
        let unstarted = self.unstarted.first().copied().unwrap_or(u64::MAX);
        self.acked_below = self.acked_below.max(cum.min(unstarted));
        let mut rest = bits;
        while rest != 0 {
            self.on_ack(now, cum + 1 + u64::from(rest.trailing_zeros()));
            rest &= rest - 1;
        }
    }

    /// Forgets message `seq` (answered, failed or given up).
    pub(crate) fn remove(&mut self, seq: u64) {
        self.due.remove(&seq);
        self.unstarted.remove(&seq);
        if let Some(m) = self.msgs.remove(&seq)
            && m.started
            && !m.acked
        {
            self.in_flight -= u32::from(m.count);
        }
    }

    /// Forgets every message.
    pub(crate) fn clear(&mut self) {
        self.msgs.clear();
        self.due.clear();
        self.unstarted.clear();
        self.rto_heap.clear();
        self.in_flight = 0;
    }

    /// Schedules the retransmission of every message whose RTO expired.
    pub(crate) fn on_timeout(&mut self, now: Instant, stats: &mut Stats) {
        for (&seq, m) in self.msgs.iter_mut() {
            if m.acked || m.rto_at.is_none_or(|t| t > now) {
                continue;
            }
            m.restart_round();
            self.due.insert(seq);
            m.backoff += 1;
            m.fast_done = false;
            stats.retransmissions += 1;
            stats.retransmitted_frames += m.missing().max(1);
            if let Some(sent) = m.first_sent {
                self.cc.on_timeout(sent, now);
            }
            self.cc.on_retransmit(m.missing().max(1));
        }
    }

    /// The peer asked again for message `seq` (a duplicate request whose
    /// response is stored): resend it unless it was sent within `gap`.
    pub(crate) fn kick(&mut self, now: Instant, seq: u64, gap: Duration, stats: &mut Stats) {
        let Some(m) = self.msgs.get_mut(&seq) else {
            return;
        };
        let recent = m.last_sent.is_some_and(|t| now < t + gap);
        if m.acked || m.next.is_some() || recent {
            return;
        }
        m.restart_round();
        self.due.insert(seq);
        stats.retransmissions += 1;
        stats.retransmitted_frames += m.missing().max(1);
        self.cc.on_retransmit(m.missing().max(1));
    }

    /// The peer reports which fragments of `seq` it has. After a complete
    /// round, the missing ones are resent at once (once per round; the RTO
    /// covers the rest).
    pub(crate) fn on_frag_ack(&mut self, seq: u64, base: u16, bits: u64, stats: &mut Stats) {
        let Some(m) = self.msgs.get_mut(&seq) else {
            return;
        };
        if m.acked || !m.started {
            return;
        }
        m.have.resize(usize::from(m.count), false);
        let base = usize::from(base).min(m.have.len());
        m.have[..base].fill(true);
        for (i, have) in m.have[base..].iter_mut().take(64).enumerate() {
            *have |= bits & (1 << i) != 0;
        }
        if m.next.is_none() && !m.fast_done && m.first_missing(0).is_some() {
            m.fast_done = true;
            m.restart_round();
            self.due.insert(seq);
            stats.retransmissions += 1;
            stats.retransmitted_frames += m.missing();
            self.cc.on_retransmit(m.missing());
        }
    }

    /// The peer reports `frames` data frames it had already (flags bits
    /// 8..16): undoes the last window decrease if those were all of the
    /// frames sent again since, and keeps the RTO above the delay that
    /// proved spurious.
    pub(crate) fn on_duplicates(&mut self, now: Instant, frames: u32, stats: &mut Stats) {
        if frames == 0 {
            return;
        }
        if let Some(spike) = self.cc.on_duplicates(now, frames) {
            stats.undone_decreases += 1;
            self.rtt.note_spike(now, spike);
        }
    }

    /// The congestion window, in frames.
    pub(crate) fn window(&self) -> u32 {
        self.cc.window()
    }

    /// Whether `seq` is queued and acknowledged.
    #[cfg(test)]
    pub(crate) fn is_acked(&self, seq: u64) -> bool {
        self.msgs.get(&seq).is_some_and(|m| m.acked)
    }

    /// The earliest retransmission deadline.
    pub(crate) fn next_rto(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, seq))) = self.rto_heap.peek() {
            if self.msgs.get(&seq).and_then(|m| m.rto_at) == Some(at) {
                return Some(at);
            }
            self.rto_heap.pop();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_ack_resends_only_the_missing() {
        let cfg = Config::default();
        let mut q = SendQueue::new(&cfg);
        let mut st = Stats::default();
        q.push(1, vec![0u8; 5 * 1458]).expect("fits");
        let t0 = Instant::now();
        assert_eq!(
            std::iter::from_fn(|| q.next_fragment(t0, |_| true)).count(),
            5
        );
        // The peer has 0, 1 and 3: fragments 2 and 4 go again, once.
        q.on_frag_ack(1, 2, 0b10, &mut st);
        q.on_frag_ack(1, 2, 0b10, &mut st);
        let again: Vec<u16> = std::iter::from_fn(|| q.next_fragment(t0, |_| true))
            .map(|f| f.index)
            .collect();
        assert_eq!(again, vec![2, 4]);
        assert_eq!((st.retransmissions, st.retransmitted_frames), (1, 2));
        // Everything reported but the ack lost: the RTO resends the last.
        q.on_frag_ack(1, 5, 0, &mut st);
        let rto = q.next_rto().expect("armed");
        q.on_timeout(rto, &mut st);
        let last: Vec<u16> = std::iter::from_fn(|| q.next_fragment(rto, |_| true))
            .map(|f| f.index)
            .collect();
        assert_eq!(last, vec![4]);
    }

    #[test]
    fn split_sizes() {
        assert_eq!(split(0, 1458), Some((1, 0)));
        assert_eq!(split(1458, 1458), Some((1, 1458)));
        assert_eq!(split(1459, 1458), Some((2, 730)));
        assert_eq!(split(32 * 1024, 1458), Some((23, 1425)));
        assert_eq!(split(usize::from(u16::MAX) * 2 + 1, 2), None);
    }

    #[test]
    fn fragments_then_retransmit_same_seq() {
        let cfg = Config::default();
        let mut q = SendQueue::new(&cfg);
        let mut st = Stats::default();
        q.push(7, vec![1u8; 3000]).expect("fits");
        let t0 = Instant::now();
        let frags: Vec<_> = std::iter::from_fn(|| q.next_fragment(t0, |_| true)).collect();
        assert_eq!(frags.len(), 3);
        assert!(frags.iter().all(|f| f.seq == 7 && f.count == 3));
        assert_eq!(frags.iter().map(|f| f.range.len()).sum::<usize>(), 3000);
        let rto = q.next_rto().expect("armed");
        q.on_timeout(rto, &mut st);
        assert_eq!(st.retransmissions, 1);
        let again: Vec<_> = std::iter::from_fn(|| q.next_fragment(rto, |_| true)).collect();
        assert_eq!(again.len(), 3);
        assert!(q.next_rto().expect("armed") >= rto + cfg.min_rto * 2);
        q.apply_ack(rto, 8, 0);
        assert!(q.is_acked(7));
        assert_eq!(q.next_rto(), None);
    }
}
