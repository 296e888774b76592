//! The master's engine for one node.
//!
//! States of a message: queued → on the wire (fragments sent, RTO armed)
//! → acknowledged (the node has it whole; no more retransmission) →
//! answered ([`ClientEvent::Delivered`]) or failed ([`ClientEvent::Failed`]).
//!
//! Session rule (node restart): the client learns the node's epoch from
//! its first frame. A frame with a *higher* node epoch — a `Reset` answer
//! to a frame addressed to the old epoch, or any frame of the new epoch —
//! means the node restarted: every unfinished message fails with
//! [`FailReason::PeerRestarted`] (its sealed bytes are under the old
//! session's keys and cannot be replayed; whether the old node executed it
//! is unknown), [`ClientEvent::PeerRestarted`] tells the caller to redo the
//! node-protocol handshake, and later messages go to the new epoch. Frames
//! with a lower epoch are stale and dropped. A `Reset` with
//! `FLAG_UNKNOWN_SESSION` at the node's current epoch (the node forgot this
//! session) is handled the same way: the session is gone, the node
//! executed nothing after forgetting it, whatever came before is unknown.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use super::admission::FLAG_UNKNOWN_SESSION;
use super::recv::{Insert, Reassembly};
use super::send::SendQueue;
use super::timer::{Timer, TimerTable};
use super::wire::{FLAG_BUNDLE, FragAck, Frame, FrameType, Header, Mac, extend_seq, segments};
use super::{
    Config, DUPLICATES_MAX, SendError, Stats, data_frame, duplicates_reported, encode_outgoing,
    report_duplicates,
};

/// Identifies a message sent by a [`Client`] (never reused by one engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MsgId(pub u64);

/// Why a message failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// No complete response within [`Config::deadline`].
    Deadline,
    /// The node restarted (new epoch) or forgot this session: the message
    /// may or may not have been executed; re-handshake and retry.
    PeerRestarted,
}

/// What the client engine reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The complete response to `id`.
    Delivered {
        /// The request.
        id: MsgId,
        /// The response message (opaque bytes: authenticate it).
        response: Vec<u8>,
    },
    /// `id` got no response.
    Failed {
        /// The request.
        id: MsgId,
        /// Why.
        why: FailReason,
    },
    /// The node restarted with `epoch`, or (same `epoch`) forgot this
    /// session: the node-protocol session is gone.
    PeerRestarted {
        /// The node's new epoch.
        epoch: u32,
    },
}

#[derive(Debug)]
struct Pending {
    deadline: Instant,
    response: Option<Reassembly>,
}

/// The master's side of the session with one node. See the module doc of
/// [`crate::engine`] for the calling contract.
#[derive(Debug)]
pub struct Client {
    cfg: Config,
    local: Mac,
    peer: Mac,
    server_epoch: u32,
    next_seq: u64,
    pending: BTreeMap<u64, Pending>,
    send: SendQueue,
    credit_edge: u64,
    timers: TimerTable,
    ack_now: bool,
    events: VecDeque<ClientEvent>,
    stats: Stats,
    /// Data frames received twice, not yet reported to the peer.
    dups_unreported: u32,
}

impl Client {
    /// A client at `local` for the node at `peer`; `cfg.epoch` is this
    /// session's epoch.
    pub fn new(cfg: Config, local: Mac, peer: Mac) -> Self {
        Client {
            send: SendQueue::new(&cfg),
            credit_edge: 1 + u64::from(cfg.initial_credit),
            cfg,
            local,
            peer,
            server_epoch: 0,
            next_seq: 1,
            pending: BTreeMap::new(),
            timers: TimerTable::default(),
            ack_now: false,
            events: VecDeque::new(),
            stats: Stats::default(),
            dups_unreported: 0,
        }
    }

    /// Queues a message; its outcome comes as one event with the same id.
    pub fn send(&mut self, now: Instant, message: Vec<u8>) -> Result<MsgId, SendError> {
        let seq = self.next_seq;
        self.send.push(seq, message)?;
        self.next_seq += 1;
        let deadline = now + self.cfg.deadline;
        self.pending.insert(
            seq,
            Pending {
                deadline,
                response: None,
            },
        );
        self.timers.set_earliest(Timer::Deadline, deadline);
        Ok(MsgId(seq))
    }

    /// Takes one received frame (any bytes).
    pub fn handle_frame(&mut self, now: Instant, bytes: &[u8]) {
        let Ok(frame) = Frame::decode(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        let h = frame.header;
        if h.ethertype != self.cfg.ethertype
            || h.dst != self.local
            || h.src != self.peer
            || h.client_epoch != self.cfg.epoch
            || !self.check_epoch(&h)
        {
            self.stats.foreign += 1;
            return;
        }
        self.stats.frames_received += 1;
        let dups = duplicates_reported(h.flags);
        self.send.on_duplicates(now, dups, &mut self.stats);
        if h.ty == FrameType::Reset {
            self.update_timers();
            return;
        }
        let reference = self.next_seq;
        let cum = extend_seq(reference, h.ack_cum);
        self.send.apply_ack(now, cum, h.ack_bits);
        // The edge only moves back when the node holds partial messages;
        // taking the maximum makes reordered frames harmless.
        self.credit_edge = self.credit_edge.max(extend_seq(reference, h.credit));
        match h.ty {
            FrameType::Response if h.flags & FLAG_BUNDLE != 0 => {
                self.on_bundle(now, &h, frame.payload);
            }
            FrameType::Response => self.on_response(now, &h, frame.payload),
            FrameType::Ack => self.on_frag_acks(reference, frame.payload),
            FrameType::Reset => {}
            FrameType::Request | FrameType::Probe | FrameType::Unknown(_) => {
                self.stats.malformed += 1;
            }
        }
        self.update_timers();
    }

    /// Writes the next frame to send into `buf` (at least
    /// [`Config::frame_capacity`] bytes); `None` when there is none.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if buf.len() < self.cfg.frame_capacity() {
            return None;
        }
        let floor = self.floor();
        let limit = floor + self.cfg.in_flight_limit();
        let edge = self.credit_edge;
        let may_start = |seq| seq < limit && seq < edge;
        let n = match self.send.next_fragment(now, may_start) {
            Some(first) => {
                let h = self.header(FrameType::Request);
                let (send, stats) = (&mut self.send, &mut self.stats);
                data_frame(send, now, first, may_start, &self.cfg, h, buf, stats)?
            }
            None if self.ack_now => {
                let h = self.header(FrameType::Ack);
                encode_outgoing(h, None, &self.send, self.partial(), buf)?
            }
            None => return None,
        };
        self.ack_now = false;
        self.dups_unreported -= self.dups_unreported.min(DUPLICATES_MAX);
        self.timers.set(Timer::Ack, None);
        self.stats.frames_sent += 1;
        self.update_timers();
        Some(n)
    }

    /// When to call [`Client::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for t in self.timers.expire(now) {
            match t {
                Timer::Retransmit => self.send.on_timeout(now, &mut self.stats),
                Timer::Ack => self.ack_now = true,
                Timer::Deadline => self.expire(now),
            }
        }
        self.update_timers();
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The congestion window towards the node, in frames.
    pub fn window(&self) -> u32 {
        self.send.window()
    }

    /// Messages sent and not yet answered or failed.
    pub fn unfinished(&self) -> usize {
        self.pending.len()
    }

    /// The node's epoch, once heard.
    pub fn server_epoch(&self) -> Option<u32> {
        (self.server_epoch != 0).then_some(self.server_epoch)
    }

    /// Accepts the frame's node epoch, adopting a first or newer one.
    fn check_epoch(&mut self, h: &Header) -> bool {
        let e = h.server_epoch;
        if e == 0 || e < self.server_epoch {
            return false;
        }
        if self.server_epoch == 0 && h.ty == FrameType::Reset {
            // We sent epoch 0, which no node resets: not for us.
            return false;
        }
        if self.server_epoch == 0 {
            self.server_epoch = e;
        } else if e > self.server_epoch {
            self.restart(e);
        } else if h.ty == FrameType::Reset {
            if h.flags & FLAG_UNKNOWN_SESSION == 0 {
                return false;
            }
            // The same incarnation forgot this session (evicted, idle):
            // as after a restart, the node-protocol session is gone.
            self.restart(e);
        }
        true
    }

    fn restart(&mut self, epoch: u32) {
        self.server_epoch = epoch;
        self.stats.resets += 1;
        for (seq, _) in std::mem::take(&mut self.pending) {
            let why = FailReason::PeerRestarted;
            self.events.push_back(ClientEvent::Failed {
                id: MsgId(seq),
                why,
            });
        }
        self.send.clear();
        self.credit_edge = self.next_seq + u64::from(self.cfg.initial_credit);
        self.events.push_back(ClientEvent::PeerRestarted { epoch });
    }

    fn on_response(&mut self, now: Instant, h: &Header, payload: &[u8]) {
        let seq = extend_seq(self.next_seq, h.seq);
        let Some(p) = self.pending.get_mut(&seq) else {
            // Answered or failed already: a duplicate; ack it again.
            self.duplicate();
            self.ack_now = true;
            return;
        };
        self.send.on_ack(now, seq);
        if p.response.is_none() {
            p.response = Reassembly::new(h, self.cfg.max_message);
        }
        let Some(r) = p.response.as_mut() else {
            self.stats.malformed += 1;
            return;
        };
        match r.insert(h, payload) {
            // The last fragment came and others are missing: report them
            // after `ack_delay`, time for reordered ones to arrive.
            Insert::Partial if h.frag_index + 1 == h.frag_count => {
                let at = now + self.cfg.ack_delay;
                self.timers.set_earliest(Timer::Ack, at);
            }
            Insert::Partial => {}
            Insert::Duplicate => {
                self.duplicate();
                self.ack_now = true;
            }
            Insert::Invalid => self.stats.malformed += 1,
            Insert::Complete => self.complete(now, seq),
        }
    }

    /// A data frame of a message this side has whole already: counted, and
    /// reported to the node in the next frame's flags (§5).
    fn duplicate(&mut self) {
        self.stats.duplicates += 1;
        self.dups_unreported = self.dups_unreported.saturating_add(1);
    }

    /// Each segment of a bundle, as the frame it stands for.
    fn on_bundle(&mut self, now: Instant, h: &Header, payload: &[u8]) {
        let Some(segs) = segments(payload) else {
            self.stats.malformed += 1;
            return;
        };
        for seg in segs {
            self.on_response(now, &seg.header(h), seg.data);
        }
    }

    fn on_frag_acks(&mut self, reference: u64, payload: &[u8]) {
        let Some(acks) = FragAck::decode_all(payload) else {
            self.stats.malformed += 1;
            return;
        };
        for a in acks {
            let seq = extend_seq(reference, a.seq);
            self.send.on_frag_ack(seq, a.base, a.bits, &mut self.stats);
        }
    }

    /// Responses being reassembled.
    fn partial(&self) -> impl Iterator<Item = (u64, &Reassembly)> {
        self.pending
            .iter()
            .filter_map(|(&s, p)| Some((s, p.response.as_ref()?)))
    }

    fn complete(&mut self, now: Instant, seq: u64) {
        let Some(response) = self.pending.remove(&seq).and_then(|p| p.response) else {
            return;
        };
        self.send.remove(seq);
        let response = response.into_message();
        self.events.push_back(ClientEvent::Delivered {
            id: MsgId(seq),
            response,
        });
        self.timers
            .set_earliest(Timer::Ack, now + self.cfg.ack_delay);
    }

    fn expire(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .pending
            .iter()
            .take_while(|(_, p)| p.deadline <= now)
            .map(|(&s, _)| s)
            .collect();
        for seq in due {
            self.pending.remove(&seq);
            self.send.remove(seq);
            self.stats.expired += 1;
            let why = FailReason::Deadline;
            self.events.push_back(ClientEvent::Failed {
                id: MsgId(seq),
                why,
            });
            self.ack_now = true;
        }
    }

    /// The lowest unfinished number: everything below is answered or
    /// failed, so the node may forget it.
    fn floor(&self) -> u64 {
        self.pending.keys().next().copied().unwrap_or(self.next_seq)
    }

    /// A header carrying this side's acknowledgement of responses.
    fn header(&self, ty: FrameType) -> Header {
        let floor = self.floor();
        let mut bits = 0u64;
        for i in 0..64u64 {
            let s = floor + 1 + i;
            if s >= self.next_seq {
                break;
            }
            if !self.pending.contains_key(&s) {
                bits |= 1 << i;
            }
        }
        Header {
            dst: self.peer,
            src: self.local,
            ethertype: self.cfg.ethertype,
            ty,
            flags: report_duplicates(self.dups_unreported),
            client_epoch: self.cfg.epoch,
            server_epoch: self.server_epoch,
            seq: 0,
            frag_index: 0,
            frag_count: 0,
            msg_len: 0,
            ack_cum: floor as u32,
            ack_bits: bits,
            credit: 0,
        }
    }

    fn update_timers(&mut self) {
        self.timers.set(Timer::Retransmit, self.send.next_rto());
        let first = self.pending.values().next().map(|p| p.deadline);
        self.timers.set(Timer::Deadline, first);
    }
}
