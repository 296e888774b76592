//! The node's engine for one master session (one client epoch of one MAC;
//! route frames to it with [`super::wire::session_of`]).
//!
//! States of a request, by sequence number: `Partial` (reassembling) →
//! `Executing` (delivered once as [`ServerEvent::Request`]) → `Answered`
//! (the response is stored and retransmitted until the master acknowledges
//! it) → `Done` (acknowledged, or given up after [`Config::deadline`]). A
//! duplicate of an `Executing` or `Done` request is only acknowledged; of
//! an `Answered` one, it resends the stored response. A number below the
//! master's floor (its cumulative acknowledgement: everything below is
//! answered or abandoned) is forgotten, and frames for it are dropped:
//! nothing is ever delivered twice.
//!
//! A frame addressed to another node epoch (the master talks to this
//! node's previous incarnation) gets a `Reset` carrying this epoch.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use super::recv::{AckSet, Insert, Reassembly};
use super::send::SendQueue;
use super::timer::{Timer, TimerTable};
use super::wire::{FLAG_BUNDLE, FragAck, Frame, FrameType, Header, Mac, extend_seq, segments};
use super::{
    Config, DUPLICATES_MAX, SendError, Stats, data_frame, duplicates_reported, encode_outgoing,
    report_duplicates,
};

/// Identifies a request within a [`Server`] session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReqId(pub u64);

/// What the server engine reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// A complete request, delivered once: authenticate it, then
    /// [`Server::respond`] or [`Server::reject`].
    Request {
        /// Its id, for the answer.
        id: ReqId,
        /// The request message (opaque bytes).
        message: Vec<u8>,
    },
}

#[derive(Debug)]
enum ReqState {
    Partial(Reassembly),
    Executing,
    Answered(Instant),
    Done,
}

/// The node's side of one master session. See [`crate::engine`] for the
/// calling contract.
#[derive(Debug)]
pub struct Server {
    cfg: Config,
    local: Mac,
    peer: Mac,
    client_epoch: u32,
    /// `None` until the first frame of the session: then the master's floor.
    floor: Option<u64>,
    reqs: BTreeMap<u64, ReqState>,
    received: AckSet,
    send: SendQueue,
    timers: TimerTable,
    ack_now: bool,
    reset_now: bool,
    events: VecDeque<ServerEvent>,
    stats: Stats,
    /// Data frames received twice, not yet reported to the peer.
    dups_unreported: u32,
    /// When each response was first sent, in that order (the deadline
    /// timer's queue; entries no longer `Answered` then are skipped).
    answered: VecDeque<(Instant, u64)>,
}

impl Server {
    /// A session at `local` (epoch `cfg.epoch`) for the master at `peer`
    /// with session epoch `client_epoch`.
    pub fn new(cfg: Config, local: Mac, peer: Mac, client_epoch: u32) -> Self {
        Server {
            send: SendQueue::new(&cfg),
            cfg,
            local,
            peer,
            client_epoch,
            floor: None,
            reqs: BTreeMap::new(),
            received: AckSet::new(0),
            timers: TimerTable::default(),
            ack_now: false,
            reset_now: false,
            events: VecDeque::new(),
            stats: Stats::default(),
            dups_unreported: 0,
            answered: VecDeque::new(),
        }
    }

    /// The configuration this session runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
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
            || h.client_epoch != self.client_epoch
        {
            self.stats.foreign += 1;
            return;
        }
        if h.server_epoch != 0 && h.server_epoch != self.cfg.epoch {
            // For a previous (or forged) incarnation: say who we are.
            self.stats.foreign += 1;
            self.reset_now = true;
            return;
        }
        self.stats.frames_received += 1;
        let dups = duplicates_reported(h.flags);
        self.send.on_duplicates(now, dups, &mut self.stats);
        let reference = self.floor.unwrap_or(0).max(self.received.cum());
        let cum = extend_seq(reference, h.ack_cum);
        self.advance_floor(cum);
        for i in 0..64u64 {
            if h.ack_bits & (1 << i) != 0 {
                self.response_acked(cum + 1 + i);
            }
        }
        match h.ty {
            FrameType::Request if h.flags & FLAG_BUNDLE != 0 => {
                self.on_bundle(now, &h, frame.payload);
            }
            FrameType::Request => self.on_request(now, &h, frame.payload),
            FrameType::Ack => self.on_frag_acks(cum, frame.payload),
            _ => self.stats.malformed += 1,
        }
        self.update_timers();
    }

    /// Answers request `id`. Returns `false` if the request is not awaiting
    /// an answer (the master abandoned it, or it was answered already).
    pub fn respond(
        &mut self,
        now: Instant,
        id: ReqId,
        response: Vec<u8>,
    ) -> Result<bool, SendError> {
        let Some(state) = self.reqs.get_mut(&id.0) else {
            return Ok(false);
        };
        if !matches!(state, ReqState::Executing) {
            return Ok(false);
        }
        self.send.push(id.0, response)?;
        *state = ReqState::Answered(now);
        self.answered.push_back((now, id.0));
        self.update_timers();
        Ok(true)
    }

    /// Refuses request `id` (it failed authentication): forgets it, so that
    /// a retransmitted genuine copy is reassembled afresh and delivered.
    /// Must come before the next `poll_transmit` (see the contract).
    pub fn reject(&mut self, id: ReqId) {
        if matches!(self.reqs.get(&id.0), Some(ReqState::Executing)) {
            self.reqs.remove(&id.0);
            self.received.remove(id.0);
        }
    }

    /// Writes the next frame to send into `buf` (at least
    /// [`Config::frame_capacity`] bytes); `None` when there is none.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if buf.len() < self.cfg.frame_capacity() {
            return None;
        }
        if self.reset_now {
            self.reset_now = false;
            self.stats.resets += 1;
            self.stats.frames_sent += 1;
            let h = self.header(FrameType::Reset);
            return Frame {
                header: h,
                payload: &[],
            }
            .encode(buf)
            .ok();
        }
        let n = match self.send.next_fragment(now, |_| true) {
            Some(first) => {
                let h = self.header(FrameType::Response);
                let (send, stats) = (&mut self.send, &mut self.stats);
                data_frame(send, now, first, |_| true, &self.cfg, h, buf, stats)?
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

    /// When to call [`Server::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for t in self.timers.expire(now) {
            match t {
                Timer::Retransmit => self.send.on_timeout(now, &mut self.stats),
                Timer::Ack => self.ack_now = true,
                Timer::Deadline => self.give_up(now),
            }
        }
        self.update_timers();
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Requests delivered and not yet answered.
    pub fn executing(&self) -> usize {
        self.reqs
            .values()
            .filter(|s| matches!(s, ReqState::Executing))
            .count()
    }

    fn on_request(&mut self, now: Instant, h: &Header, payload: &[u8]) {
        let floor = self.floor.unwrap_or(0);
        let seq = extend_seq(floor, h.seq);
        // Below the floor: finished at the master. Far above: not a number
        // the master can have sent (the window is 64); refuse to hold state.
        if seq < floor {
            self.duplicate();
            return;
        }
        if seq >= floor + 4 * self.cfg.in_flight_limit() {
            self.stats.duplicates += 1;
            return;
        }
        let state = match self.reqs.get_mut(&seq) {
            Some(s) => s,
            None => match Reassembly::new(h, self.cfg.max_message) {
                Some(r) => self.reqs.entry(seq).or_insert(ReqState::Partial(r)),
                None => {
                    self.stats.malformed += 1;
                    return;
                }
            },
        };
        match state {
            ReqState::Partial(r) => match r.insert(h, payload) {
                // The last fragment came and others are missing: report
                // them after `ack_delay`, time for reordered ones to arrive.
                Insert::Partial if h.frag_index + 1 == h.frag_count => {
                    let at = now + self.cfg.ack_delay;
                    self.timers.set_earliest(Timer::Ack, at);
                }
                Insert::Partial => {}
                Insert::Duplicate => self.duplicate(),
                Insert::Invalid => self.stats.malformed += 1,
                Insert::Complete => self.deliver(now, seq),
            },
            ReqState::Executing | ReqState::Done => {
                self.duplicate();
                self.ack_now = true;
            }
            ReqState::Answered(_) => {
                self.duplicate();
                let gap = self.cfg.min_rto / 2;
                self.send.kick(now, seq, gap, &mut self.stats);
                self.ack_now = true;
            }
        }
    }

    /// A data frame of a request this side has whole already: counted, and
    /// reported to the master in the next frame's flags (§5).
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
            self.on_request(now, &seg.header(h), seg.data);
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

    /// Requests being reassembled.
    fn partial(&self) -> impl Iterator<Item = (u64, &Reassembly)> {
        self.reqs.iter().filter_map(|(&s, st)| match st {
            ReqState::Partial(r) => Some((s, r)),
            _ => None,
        })
    }

    fn deliver(&mut self, now: Instant, seq: u64) {
        let Some(ReqState::Partial(r)) = self.reqs.insert(seq, ReqState::Executing) else {
            return;
        };
        self.received.insert(seq);
        let message = r.into_message();
        self.events.push_back(ServerEvent::Request {
            id: ReqId(seq),
            message,
        });
        self.timers
            .set_earliest(Timer::Ack, now + self.cfg.ack_delay);
    }

    fn advance_floor(&mut self, floor: u64) {
        if self.floor.is_some_and(|f| floor <= f) {
            return;
        }
        self.floor = Some(floor);
        self.received.advance_to(floor);
        let keep = self.reqs.split_off(&floor);
        for seq in std::mem::replace(&mut self.reqs, keep).into_keys() {
            self.send.remove(seq);
        }
    }

    fn response_acked(&mut self, seq: u64) {
        if let Some(state) = self.reqs.get_mut(&seq)
            && matches!(state, ReqState::Answered(_))
        {
            *state = ReqState::Done;
            self.send.remove(seq);
        }
    }

    fn give_up(&mut self, now: Instant) {
        let deadline = self.cfg.deadline;
        for (&seq, state) in self.reqs.iter_mut() {
            if let ReqState::Answered(at) = state
                && *at + deadline <= now
            {
                *state = ReqState::Done;
                self.send.remove(seq);
                self.stats.expired += 1;
            }
        }
    }

    /// The credit edge: the master may send numbers below it.
    fn credit(&self) -> u64 {
        let busy = self
            .reqs
            .values()
            .filter(|s| matches!(s, ReqState::Partial(_) | ReqState::Executing))
            .count() as u64;
        self.received.cum() + u64::from(self.cfg.max_pending).saturating_sub(busy)
    }

    fn header(&self, ty: FrameType) -> Header {
        let (ack_cum, ack_bits) = self.received.encode();
        Header {
            dst: self.peer,
            src: self.local,
            ethertype: self.cfg.ethertype,
            ty,
            flags: report_duplicates(self.dups_unreported),
            client_epoch: self.client_epoch,
            server_epoch: self.cfg.epoch,
            seq: 0,
            frag_index: 0,
            frag_count: 0,
            msg_len: 0,
            ack_cum,
            ack_bits,
            credit: self.credit() as u32,
        }
    }

    fn update_timers(&mut self) {
        self.timers.set(Timer::Retransmit, self.send.next_rto());
        while let Some(&(at, seq)) = self.answered.front() {
            if matches!(self.reqs.get(&seq), Some(ReqState::Answered(t)) if *t == at) {
                break;
            }
            self.answered.pop_front();
        }
        let oldest = self.answered.front().map(|&(at, _)| at + self.cfg.deadline);
        self.timers.set(Timer::Deadline, oldest);
    }
}
