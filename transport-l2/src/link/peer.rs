//! One node as the master's link sees it: the engine [`Client`] of the
//! current L2 session, the node-protocol session on top, and the requests
//! waiting for answers. Runs on the poller thread only.
//!
//! Phases: `Idle` (no node-protocol session) → `Hello` (message 1 of a
//! fresh L2 session is the `ClientHello`; requests submitted meanwhile
//! queue) → `Open` (requests are sealed and sent as they come). A node
//! restart, or a node that forgot the session (a `Reset` with
//! `FLAG_UNKNOWN_SESSION`; both `ClientEvent::PeerRestarted`), fails what
//! was in flight (`Disconnected`: it may or may not have run) and
//! returns to `Idle`; the next request starts a new handshake on a new
//! engine session (new client epoch), which must find the same backend.

use std::collections::HashMap;
use std::time::Instant;

use qbd_core::proto::ClusterKey;
use qbd_core::proto::ProtoError;
use qbd_core::proto::msg::{Request, Response};
use qbd_core::proto::session::{ClientHandshake, NodeHello, Opener, Sealer};
use qbd_core::transport::TransportError;
use tokio::sync::oneshot;

use crate::af_packet::FrameBatch;
use crate::engine::{Client, ClientEvent, Config, FailReason, Mac, MsgId, Stats};
use crate::epoch::{fresh_epoch, fresh_nonce};
use crate::probe::{BASE_MTU, Probe};

/// What a request's waiter receives.
pub(crate) type Reply = Result<Response, TransportError>;
/// What a handshake's waiter receives.
pub(crate) type HelloReply = Result<NodeHello, TransportError>;

/// A request to send, with its id and where its outcome goes.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) id: u64,
    pub(crate) req: Request,
    pub(crate) tx: Sink,
}

/// Where a request's outcome goes.
#[derive(Debug)]
pub(crate) enum Sink {
    /// A tokio task waits on it.
    Task(oneshot::Sender<Reply>),
    /// A closed loop on the polling thread takes it (see
    /// [`super::ClosedLoop`]).
    Loop,
}

enum Phase {
    Idle,
    Hello {
        hs: ClientHandshake,
        msg: MsgId,
        waiters: Vec<oneshot::Sender<HelloReply>>,
        queued: Vec<Job>,
    },
    Open {
        sealer: Sealer,
        opener: Opener,
    },
}

/// Handshakes restarted in a row because the node restarted during them.
const HELLO_RESTARTS: u32 = 3;

/// One node of the link.
pub(crate) struct Peer {
    mac: Mac,
    local: Mac,
    cfg: Config,
    key: ClusterKey,
    name: String,
    client: Client,
    phase: Phase,
    /// The backend identity every handshake must find (after the first).
    expect: Option<NodeHello>,
    inflight: HashMap<MsgId, (u64, Sink)>,
    /// Outcomes of closed-loop requests, for the loop to take.
    looped: Vec<(u64, Reply)>,
    /// Counters of the engine sessions this peer replaced.
    retired: Stats,
    hello_restarts: u32,
    /// An MTU ping to send before the next frame of a new engine session.
    announce: Option<Vec<u8>>,
    scratch: Vec<u8>,
    /// One frame being built (sized to the MTU once).
    frame: Vec<u8>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("mac", &self.mac)
            .field("inflight", &self.inflight.len())
            .finish_non_exhaustive()
    }
}

impl Peer {
    /// A peer at `mac` whose first engine session uses `cfg` (its epoch
    /// and MTU already chosen: the MTU probe carried that epoch).
    pub(crate) fn new(cfg: Config, local: Mac, mac: Mac, key: ClusterKey, name: String) -> Self {
        Peer {
            client: Client::new(cfg.clone(), local, mac),
            mac,
            local,
            cfg,
            key,
            name,
            phase: Phase::Idle,
            expect: None,
            inflight: HashMap::new(),
            looped: Vec::new(),
            retired: Stats::default(),
            hello_restarts: 0,
            announce: None,
            scratch: Vec::new(),
            frame: Vec::new(),
        }
    }

    /// The node's MAC address.
    pub(crate) fn mac(&self) -> Mac {
        self.mac
    }

    /// The client epoch of the current engine session (frames from the
    /// node carry it: that is how they find this peer).
    pub(crate) fn epoch(&self) -> u32 {
        self.cfg.epoch
    }

    /// Starts the first handshake; `tx` gets its outcome.
    pub(crate) fn connect(&mut self, now: Instant, tx: oneshot::Sender<HelloReply>) {
        self.start_hello(now, false, vec![tx], Vec::new());
    }

    /// Sends `jobs` (or queues them behind a handshake, starting one if
    /// there is no session).
    pub(crate) fn submit(&mut self, now: Instant, jobs: Vec<Job>, out: &mut FrameBatch) {
        match &mut self.phase {
            Phase::Open { .. } => {
                for job in jobs {
                    self.send_job(now, job);
                }
            }
            Phase::Hello { queued, .. } => queued.extend(jobs),
            Phase::Idle => self.start_hello(now, true, Vec::new(), jobs),
        }
        self.transmit(now, out);
    }

    /// Takes one frame from this node.
    pub(crate) fn handle_frame(&mut self, now: Instant, frame: &[u8], out: &mut FrameBatch) {
        self.client.handle_frame(now, frame);
        self.drain(now);
        self.transmit(now, out);
    }

    /// Runs due timers, then sends what is due; returns the next timer.
    pub(crate) fn tick(&mut self, now: Instant, out: &mut FrameBatch) -> Option<Instant> {
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client.handle_timeout(now);
            self.drain(now);
        }
        self.transmit(now, out);
        self.client.poll_timeout()
    }

    /// Fails everything waiting (the link is closing or the peer replaced).
    pub(crate) fn close(&mut self, why: &str) {
        let err = || TransportError::Disconnected(why.to_owned());
        let inflight: Vec<(u64, Sink)> = self.inflight.drain().map(|(_, v)| v).collect();
        for (id, tx) in inflight {
            self.finish(id, tx, Err(err()));
        }
        if let Phase::Hello {
            waiters, queued, ..
        } = std::mem::replace(&mut self.phase, Phase::Idle)
        {
            self.fail_hello(waiters, queued, &err());
        }
    }

    /// Counters of every engine session of this peer.
    pub(crate) fn stats(&self) -> Stats {
        let mut s = self.retired.clone();
        s.absorb(self.client.stats());
        s
    }

    fn start_hello(
        &mut self,
        now: Instant,
        new_session: bool,
        waiters: Vec<oneshot::Sender<HelloReply>>,
        queued: Vec<Job>,
    ) {
        if new_session {
            self.new_engine_session();
        }
        let (hs, hello) = ClientHandshake::start(&self.key, fresh_nonce(), &self.name);
        match self.client.send(now, hello) {
            Ok(msg) => {
                self.phase = Phase::Hello {
                    hs,
                    msg,
                    waiters,
                    queued,
                }
            }
            Err(e) => self.fail_hello(waiters, queued, &proto(format!("hello not sent: {e}"))),
        }
    }

    /// Replaces the engine session (new client epoch, same MTU). A jumbo
    /// MTU is announced to the node with an (unverified) ping for the new
    /// epoch, sent before the hello: the path was probed already.
    fn new_engine_session(&mut self) {
        self.retired.absorb(self.client.stats());
        self.cfg.epoch = fresh_epoch();
        self.client = Client::new(self.cfg.clone(), self.local, self.mac);
        if self.cfg.mtu > BASE_MTU {
            self.announce_mtu();
        }
    }

    fn announce_mtu(&mut self) {
        let size = u16::try_from(self.cfg.mtu).unwrap_or(u16::MAX);
        let ping = Probe::MtuPing { nonce: 0, size };
        let mut buf = vec![0u8; self.cfg.frame_capacity()];
        if let Some(n) = ping.encode(
            self.cfg.ethertype,
            self.mac,
            self.local,
            self.cfg.epoch,
            &mut buf,
        ) {
            buf.truncate(n);
            self.announce = Some(buf);
        }
    }

    fn send_job(&mut self, now: Instant, job: Job) {
        let Phase::Open { sealer, .. } = &mut self.phase else {
            self.finish(job.id, job.tx, Err(gone("no session")));
            return;
        };
        let mut sealed = Vec::with_capacity(job.req.detached_tail() + 512);
        sealer.seal_message(job.id, &job.req, &mut self.scratch, &mut sealed);
        match self.client.send(now, sealed) {
            Ok(msg) => drop(self.inflight.insert(msg, (job.id, job.tx))),
            Err(e) => self.finish(job.id, job.tx, Err(proto(format!("request not sent: {e}")))),
        }
    }

    fn transmit(&mut self, now: Instant, out: &mut FrameBatch) {
        if let Some(frame) = self.announce.take() {
            out.push(&frame);
        }
        if self.frame.len() < self.cfg.frame_capacity() {
            self.frame.resize(self.cfg.frame_capacity(), 0);
        }
        while let Some(n) = self.client.poll_transmit(now, &mut self.frame) {
            out.push(&self.frame[..n]);
        }
    }

    fn drain(&mut self, now: Instant) {
        let mut restarted = false;
        while let Some(ev) = self.client.poll_event() {
            match ev {
                ClientEvent::Delivered { id, response } => self.delivered(now, id, &response),
                ClientEvent::Failed { id, why } => self.failed(now, id, why),
                ClientEvent::PeerRestarted { .. } => restarted = true,
            }
        }
        if restarted && matches!(self.phase, Phase::Open { .. }) {
            eprintln!(
                "qbd-l2: node {} restarted or forgot the session: new session at the next request",
                self.mac
            );
            self.phase = Phase::Idle;
        }
    }

    fn delivered(&mut self, now: Instant, id: MsgId, response: &[u8]) {
        if let Some((request_id, tx)) = self.inflight.remove(&id) {
            let reply = self.open_response(request_id, response);
            self.finish(request_id, tx, reply);
            return;
        }
        let is_hello = matches!(&self.phase, Phase::Hello { msg, .. } if *msg == id);
        if is_hello {
            self.finish_hello(now, response);
        }
    }

    /// Fails a handshake's waiters and the requests queued behind it.
    fn fail_hello(
        &mut self,
        waiters: Vec<oneshot::Sender<HelloReply>>,
        queued: Vec<Job>,
        err: &TransportError,
    ) {
        for tx in waiters {
            let _ = tx.send(Err(err.clone()));
        }
        for job in queued {
            self.finish(job.id, job.tx, Err(err.clone()));
        }
    }

    /// Hands a request's outcome to its sink.
    fn finish(&mut self, id: u64, sink: Sink, reply: Reply) {
        match sink {
            Sink::Task(tx) => drop(tx.send(reply)),
            Sink::Loop => self.looped.push((id, reply)),
        }
    }

    /// Takes the closed-loop outcomes gathered so far.
    pub(crate) fn take_looped(&mut self, into: &mut Vec<(u64, Reply)>) {
        into.append(&mut self.looped);
    }

    fn open_response(&mut self, request_id: u64, bytes: &[u8]) -> Reply {
        let Phase::Open { opener, .. } = &mut self.phase else {
            return Err(gone("session closed"));
        };
        let (h, resp) = opener.open_response(bytes)?;
        let resp = resp?;
        if h.request_id != request_id {
            let why = format!(
                "the response to request {} where the response to {request_id} was expected",
                h.request_id
            );
            return Err(ProtoError::malformed("frame", why).into());
        }
        Ok(resp)
    }

    fn finish_hello(&mut self, now: Instant, response: &[u8]) {
        let Phase::Hello {
            hs,
            waiters,
            queued,
            ..
        } = std::mem::replace(&mut self.phase, Phase::Idle)
        else {
            return;
        };
        self.hello_restarts = 0;
        let finished = if response.is_empty() {
            Err(ProtoError::Handshake(format!(
                "node {} refused the handshake: is the cluster key the one the node uses?",
                self.mac
            )))
        } else {
            hs.finish(response)
        };
        let (session, hello) = match finished.map_err(TransportError::from) {
            Ok(x) => x,
            Err(e) => return self.fail_hello(waiters, queued, &e),
        };
        if let Some(expect) = &self.expect
            && expect.backend != hello.backend
        {
            let e = ProtoError::Handshake(format!(
                "{} is now backend {} ({}), expected {} ({})",
                self.mac, hello.backend, hello.name, expect.backend, expect.name
            ));
            return self.fail_hello(waiters, queued, &e.into());
        }
        self.expect = Some(hello.clone());
        let (sealer, opener) = session.split();
        self.phase = Phase::Open { sealer, opener };
        for tx in waiters {
            let _ = tx.send(Ok(hello.clone()));
        }
        for job in queued {
            self.send_job(now, job);
        }
    }

    fn failed(&mut self, now: Instant, id: MsgId, why: FailReason) {
        let err = match why {
            FailReason::Deadline => TransportError::Timeout(millis(self.cfg.deadline)),
            FailReason::PeerRestarted => gone(&format!(
                "node {} restarted; the request may or may not have run",
                self.mac
            )),
        };
        if let Some((request_id, tx)) = self.inflight.remove(&id) {
            self.finish(request_id, tx, Err(err));
            return;
        }
        let is_hello = matches!(&self.phase, Phase::Hello { msg, .. } if *msg == id);
        if !is_hello {
            return;
        }
        let Phase::Hello {
            waiters, queued, ..
        } = std::mem::replace(&mut self.phase, Phase::Idle)
        else {
            return;
        };
        if why == FailReason::PeerRestarted && self.hello_restarts < HELLO_RESTARTS {
            // The node restarted under the handshake: its new incarnation
            // will answer a new one.
            self.hello_restarts += 1;
            return self.start_hello(now, true, waiters, queued);
        }
        let err = match err {
            TransportError::Timeout(ms) => gone(&format!(
                "node {} did not answer the handshake within {ms} ms",
                self.mac
            )),
            other => other,
        };
        self.fail_hello(waiters, queued, &err);
    }
}

fn gone(why: &str) -> TransportError {
    TransportError::Disconnected(why.to_owned())
}

fn proto(why: String) -> TransportError {
    ProtoError::malformed("message", why).into()
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
