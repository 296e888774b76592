//! The node's poller-thread side: probes, the session table, running
//! requests (inline first, then on tokio), answers coming back, timers.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use qbd_core::backend::BoxFut;
use qbd_core::proto::ClusterKey;
use qbd_core::proto::msg::{ErrorCode, Response};

use super::gate::SlowGate;
use super::session::{Action, Sess};
use super::{ServeStats, Service, lock};
use crate::af_packet::{FrameBatch, Handler, PollerSender};
use crate::engine::admission::{Ages, Budget, Table};
use crate::engine::wire::{Frame, FrameType, HEADER_LEN, session_of};
use crate::engine::{Config, Mac, ReqId, Stats};
use crate::probe::{self, BASE_MTU, Probe};

/// A session's key: (master MAC, client epoch).
type Key = (Mac, u32);

/// An answer computed by a tokio task.
struct Done {
    key: Key,
    id: ReqId,
    rid: u64,
    resp: Response,
}

#[derive(Default)]
struct DoneQueue {
    items: Mutex<Vec<Done>>,
    pending: AtomicBool,
}

/// What [`ServeHandler::new`] needs.
pub(super) struct Setup {
    pub(super) key: ClusterKey,
    pub(super) service: Arc<dyn Service>,
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) engine: Config,
    pub(super) local: Mac,
    pub(super) iface_mtu: usize,
    pub(super) max_sessions: usize,
    pub(super) max_pending: usize,
    pub(super) idle: Duration,
    pub(super) stats: Arc<Mutex<ServeStats>>,
    pub(super) doorbell: Arc<OnceLock<PollerSender>>,
}

mod admit;

/// Answers to unauthenticated senders: a burst, then this many a second.
const ANSWER_BURST: u32 = 64;
const ANSWERS_PER_SECOND: u32 = 1000;
/// Most MACs whose jumbo ping is remembered.
const MAX_JUMBO: usize = 1024;
const PUBLISH_EVERY: Duration = Duration::from_millis(5);
const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub(super) struct ServeHandler {
    setup: Setup,
    sessions: Table<Key, Sess>,
    /// Answers to unauthenticated senders (sent once each).
    budget: Budget,
    unauth_answers: u64,
    pending_evicted: u64,
    /// Retransmissions by sessions that retired unauthenticated.
    unauth_retransmissions: u64,
    /// The MTU each master's last ping proved (to us).
    jumbo: HashMap<Mac, usize>,
    done: Arc<DoneQueue>,
    /// Whether quick-but-may-block requests (writes) still run inline.
    gate: SlowGate,
    taken: Vec<Done>,
    retired: Stats,
    dropped: u64,
    malformed: u64,
    evicted: u64,
    dirty: bool,
    published: Instant,
    swept: Instant,
    probe_buf: Vec<u8>,
}

impl std::fmt::Debug for ServeHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeHandler")
            .field("sessions", &self.sessions.authenticated())
            .field("pending", &self.sessions.pending())
            .finish_non_exhaustive()
    }
}

impl ServeHandler {
    pub(super) fn new(setup: Setup) -> Self {
        let now = Instant::now();
        ServeHandler {
            probe_buf: vec![0u8; setup.iface_mtu.max(BASE_MTU) + 64],
            sessions: Table::new(setup.max_sessions, setup.max_pending),
            setup,
            budget: Budget::new(ANSWER_BURST, ANSWERS_PER_SECOND),
            unauth_answers: 0,
            pending_evicted: 0,
            unauth_retransmissions: 0,
            jumbo: HashMap::new(),
            done: Arc::new(DoneQueue::default()),
            gate: SlowGate::default(),
            taken: Vec::new(),
            retired: Stats::default(),
            dropped: 0,
            malformed: 0,
            evicted: 0,
            dirty: false,
            published: now,
            swept: now,
        }
    }

    /// Writes the final counters (after the thread stopped).
    pub(super) fn publish_into(&self, stats: &mut ServeStats) {
        let mut engine = self.retired.clone();
        let mut unauth_retx = self.unauth_retransmissions;
        for (_, s, authed) in self.sessions.iter() {
            engine.absorb(s.server.stats());
            if !authed {
                unauth_retx += s.server.stats().retransmissions;
            }
        }
        stats.engine = engine;
        stats.malformed = self.malformed;
        stats.dropped = self.dropped;
        stats.sessions = self.sessions.authenticated();
        stats.pending = self.sessions.pending();
        stats.evicted = self.evicted;
        stats.pending_evicted = self.pending_evicted;
        stats.unauth_answers = self.unauth_answers;
        stats.unauth_refused = self.budget.refused;
        stats.unauth_retransmissions = unauth_retx;
        stats.slow_inline = self.gate.closed;
    }

    fn on_probe(&mut self, frame: &[u8], out: &mut FrameBatch) {
        let Some((h, p)) = probe::parse(frame) else {
            self.malformed += 1;
            return;
        };
        let reply = match p {
            Probe::Query { nonce } => {
                let hello = self.setup.service.hello();
                Probe::Answer {
                    nonce,
                    backend: hello.backend,
                    mtu: u16::try_from(self.setup.iface_mtu).unwrap_or(u16::MAX),
                    name: hello.name,
                }
            }
            Probe::MtuPing { nonce, size } if usize::from(size) <= self.setup.iface_mtu => {
                if self.jumbo.len() >= MAX_JUMBO && !self.jumbo.contains_key(&h.src) {
                    self.jumbo.clear();
                }
                self.jumbo.insert(h.src, usize::from(size));
                Probe::MtuPong { nonce, size }
            }
            _ => return,
        };
        let cfg = &self.setup.engine;
        if let Some(n) = reply.encode(
            cfg.ethertype,
            h.src,
            self.setup.local,
            h.client_epoch,
            &mut self.probe_buf,
        ) {
            out.push(&self.probe_buf[..n]);
        }
    }

    fn retire(&mut self, s: &Sess, authed: bool) {
        self.retired.absorb(s.server.stats());
        if !authed {
            self.unauth_retransmissions += s.server.stats().retransmissions;
        }
    }

    /// Authenticates and runs what session `key` delivered, then sends.
    fn serve(&mut self, now: Instant, key: Key, out: &mut FrameBatch) {
        let setup = &self.setup;
        let Some(sess) = self.sessions.get_mut(&key) else {
            return;
        };
        while let Some(action) = sess.next_action(now, setup.service.as_ref()) {
            if let Action::Run { id, rid, req } = action {
                let gated = !setup.service.inline(&req)
                    && setup.service.inline_while_quick(&req)
                    && self.gate.open(now);
                let inline = gated || setup.service.inline(&req);
                let call = setup.service.call(req);
                let task = Task { key, id, rid };
                let started = gated.then(Instant::now);
                let ran = run(
                    &setup.runtime,
                    call,
                    inline,
                    &self.done,
                    &setup.doorbell,
                    task,
                );
                if let Some(t0) = started {
                    let end = Instant::now();
                    self.gate.record(end - t0, end);
                }
                if let Some(resp) = ran {
                    sess.answer(now, id, rid, &resp);
                }
            }
        }
        let cap = sess.server_frame_capacity();
        sess.transmit(now, cap, out);
        if sess.authenticated && !self.sessions.is_authenticated(&key) {
            self.promote(key);
        }
    }

    fn take_done(&mut self, now: Instant, out: &mut FrameBatch) {
        if !self.done.pending.load(Ordering::SeqCst) {
            return;
        }
        self.done.pending.store(false, Ordering::SeqCst);
        std::mem::swap(&mut self.taken, &mut *lock(&self.done.items));
        let mut touched = Vec::new();
        for d in self.taken.drain(..) {
            if let Some(sess) = self.sessions.get_mut(&d.key) {
                sess.answer(now, d.id, d.rid, &d.resp);
                touched.push(d.key);
            }
        }
        touched.dedup();
        for key in touched {
            if let Some(sess) = self.sessions.get_mut(&key) {
                let cap = sess.server_frame_capacity();
                sess.transmit(now, cap, out);
            }
        }
        self.dirty = true;
    }

    fn sweep(&mut self, now: Instant) {
        if now.duration_since(self.swept) < SWEEP_EVERY {
            return;
        }
        self.swept = now;
        let ages = Ages {
            pending: self.setup.engine.deadline,
            authed: self.setup.idle,
        };
        let gone = self.sessions.sweep(now, ages, |s| s.server.executing() > 0);
        for s in gone {
            self.retire(&s, s.authenticated);
            self.dirty = true;
        }
    }

    fn publish(&mut self, now: Instant) -> Option<Instant> {
        if !self.dirty {
            return None;
        }
        if now.duration_since(self.published) < PUBLISH_EVERY {
            return Some(self.published + PUBLISH_EVERY);
        }
        self.published = now;
        self.dirty = false;
        let mut stats = lock(&self.setup.stats);
        self.publish_into(&mut stats);
        None
    }
}

impl Handler for ServeHandler {
    fn on_frame(&mut self, frame: &[u8], out: &mut FrameBatch) {
        self.dirty = true;
        let Some(h) = frame.get(..HEADER_LEN) else {
            self.malformed += 1;
            return;
        };
        if FrameType::from_byte(h[15]) == FrameType::Probe {
            return self.on_probe(frame, out);
        }
        if Frame::decode(frame).is_err() {
            self.malformed += 1;
            return;
        }
        let now = Instant::now();
        let Some(key) = session_of(frame) else {
            return;
        };
        if key.1 == 0 || key.0.0[0] & 1 != 0 {
            self.dropped += 1;
            return;
        }
        if !self.sessions.contains(&key) {
            return self.admit(now, frame, out);
        }
        if self.resend_hello(now, key, frame, out) {
            return;
        }
        self.sessions.touch(&key, now);
        if let Some(sess) = self.sessions.get_mut(&key) {
            sess.server.handle_frame(now, frame);
        }
        self.serve(now, key, out);
    }

    fn on_tick(&mut self, now: Instant, out: &mut FrameBatch) -> Option<Instant> {
        self.take_done(now, out);
        let mut next: Option<Instant> = None;
        let mut due = Vec::new();
        for (key, sess, _) in self.sessions.iter() {
            match sess.server.poll_timeout() {
                Some(t) if t <= now => due.push(*key),
                Some(t) => next = Some(next.map_or(t, |n| n.min(t))),
                None => {}
            }
        }
        for key in due {
            if let Some(sess) = self.sessions.get_mut(&key) {
                sess.server.handle_timeout(now);
            }
            self.serve(now, key, out);
            if let Some(t) = self
                .sessions
                .get_mut(&key)
                .and_then(|s| s.server.poll_timeout())
            {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
            self.dirty = true;
        }
        self.sweep(now);
        let mut next = match self.publish(now) {
            Some(p) => Some(next.map_or(p, |n| n.min(p))),
            None => next,
        };
        if self.sessions.authenticated() + self.sessions.pending() > 0 {
            let sweep_at = self.swept + SWEEP_EVERY;
            next = Some(next.map_or(sweep_at, |n| n.min(sweep_at)));
        }
        next
    }
}

/// Where a task's answer goes.
#[derive(Clone, Copy)]
struct Task {
    key: Key,
    id: ReqId,
    rid: u64,
}

/// Runs `call`: with `inline`, polls it once here (in the runtime's
/// context) and returns its answer if it is done; otherwise moves it to a
/// tokio task that queues its answer and rings the doorbell. A panic
/// answers an `Io` error.
fn run(
    rt: &tokio::runtime::Handle,
    mut call: BoxFut<'static, Response>,
    inline: bool,
    done: &Arc<DoneQueue>,
    doorbell: &Arc<OnceLock<PollerSender>>,
    task: Task,
) -> Option<Response> {
    let _in_runtime = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let first = if inline {
        catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(&mut cx)))
    } else {
        Ok(Poll::Pending)
    };
    match first {
        Ok(Poll::Ready(resp)) => Some(resp),
        Err(_) => Some(panicked()),
        Ok(Poll::Pending) => {
            let Task { key, id, rid } = task;
            let (done, doorbell) = (Arc::clone(done), Arc::clone(doorbell));
            rt.spawn(async move {
                let resp = AssertUnwindSafe(call)
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| panicked());
                lock(&done.items).push(Done { key, id, rid, resp });
                done.pending.store(true, Ordering::SeqCst);
                if let Some(bell) = doorbell.get() {
                    bell.wake();
                }
            });
            None
        }
    }
}

fn panicked() -> Response {
    Response::Error {
        code: ErrorCode::Io,
        message: "internal error: the request's handler panicked".into(),
    }
}
