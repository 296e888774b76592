//! The master link's poller-thread side: routes received frames to the
//! [`Peer`] of their source MAC (probes to whoever listens for them), runs
//! the commands tokio tasks queued, and drives every peer's timers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::ClosedLoop;
use super::peer::{HelloReply, Job, Peer, Reply, Sink};
use crate::af_packet::{FrameBatch, Handler};
use crate::engine::wire::{FrameType, HEADER_LEN};
use crate::engine::{Mac, Stats};
use crate::probe::{self, Probe};

/// What tokio tasks ask of the poller thread.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// Add a peer (one per transport: several may reach one node) and
    /// start its handshake.
    Connect {
        token: u64,
        peer: Box<Peer>,
        tx: oneshot::Sender<HelloReply>,
    },
    /// Send requests to a peer.
    Submit { token: u64, jobs: Vec<Job> },
    /// Forget a peer (its transport was dropped).
    Disconnect { token: u64 },
    /// Deliver every probe received from now on to `tx`.
    Listen(mpsc::UnboundedSender<(Mac, Probe)>),
    /// Run a closed loop of requests against a peer.
    Loop { token: u64, l: Box<dyn ClosedLoop> },
}

/// State shared between tokio tasks and the poller thread.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) cmds: Mutex<Vec<Cmd>>,
    /// Set after every push to `cmds`: the spinning thread reads this
    /// flag, not the mutex.
    pub(crate) pending: AtomicBool,
    /// Engine counters of every peer, published every few milliseconds.
    pub(crate) stats: Mutex<Stats>,
}

/// How often the counters are published.
const PUBLISH_EVERY: Duration = Duration::from_millis(5);

/// The handler of the master link's poller.
#[derive(Debug)]
pub(crate) struct LinkHandler {
    shared: Arc<Shared>,
    /// Peers by transport token.
    peers: HashMap<u64, Peer>,
    /// Frames from a node carry the client epoch of their engine session:
    /// (node MAC, client epoch) → token.
    routes: HashMap<(Mac, u32), u64>,
    listeners: Vec<mpsc::UnboundedSender<(Mac, Probe)>>,
    /// Counters of peers that were removed.
    retired: Stats,
    cmds: Vec<Cmd>,
    /// Closed loops running on this thread, by peer token.
    loops: Vec<(u64, Box<dyn ClosedLoop>)>,
    looped: Vec<(u64, Reply)>,
    published: Instant,
    /// Counters changed since they were last published.
    dirty: bool,
}

impl LinkHandler {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        LinkHandler {
            shared,
            peers: HashMap::new(),
            routes: HashMap::new(),
            listeners: Vec::new(),
            retired: Stats::default(),
            cmds: Vec::new(),
            loops: Vec::new(),
            looped: Vec::new(),
            published: Instant::now(),
            dirty: false,
        }
    }

    fn run_commands(&mut self, now: Instant, out: &mut FrameBatch) {
        if !self.shared.pending.load(Ordering::SeqCst) {
            return;
        }
        self.shared.pending.store(false, Ordering::SeqCst);
        self.dirty = true;
        std::mem::swap(&mut self.cmds, &mut *lock(&self.shared.cmds));
        let cmds = std::mem::take(&mut self.cmds);
        for cmd in cmds {
            match cmd {
                Cmd::Connect {
                    token,
                    mut peer,
                    tx,
                } => {
                    peer.connect(now, tx);
                    self.peers.insert(token, *peer);
                    self.reroute(token);
                }
                Cmd::Submit { token, jobs } => match self.peers.get_mut(&token) {
                    Some(peer) => {
                        peer.submit(now, jobs, out);
                        self.reroute(token);
                    }
                    None => {
                        for job in jobs {
                            let why = "the node's session is closed".to_owned();
                            if let Sink::Task(tx) = job.tx {
                                let _ = tx.send(Err(
                                    qbd_core::transport::TransportError::Disconnected(why),
                                ));
                            }
                        }
                    }
                },
                Cmd::Disconnect { token } => {
                    if let Some(mut old) = self.peers.remove(&token) {
                        old.close("transport closed");
                        self.retired.absorb(&old.stats());
                    }
                    self.routes.retain(|_, t| *t != token);
                }
                Cmd::Listen(tx) => self.listeners.push(tx),
                Cmd::Loop { token, l } => self.loops.push((token, l)),
            }
        }
    }

    /// Gives every closed loop its outcomes and sends what it issues.
    fn run_loops(&mut self, now: Instant, out: &mut FrameBatch) {
        if self.loops.is_empty() {
            return;
        }
        let mut loops = std::mem::take(&mut self.loops);
        loops.retain_mut(|(token, l)| {
            let Some(peer) = self.peers.get_mut(token) else {
                return false;
            };
            self.looped.clear();
            peer.take_looped(&mut self.looped);
            let issued = l.step(now, &mut self.looped);
            if !issued.is_empty() {
                let jobs = issued
                    .into_iter()
                    .map(|(id, req)| Job {
                        id,
                        req,
                        tx: Sink::Loop,
                    })
                    .collect();
                peer.submit(now, jobs, out);
            }
            !l.done()
        });
        self.loops = loops;
    }

    /// Points the route of `token`'s current engine session at it (a new
    /// session starts with every handshake), dropping its older routes.
    fn reroute(&mut self, token: u64) {
        let Some(peer) = self.peers.get(&token) else {
            return;
        };
        let key = (peer.mac(), peer.epoch());
        if self.routes.get(&key) != Some(&token) {
            self.routes.retain(|_, t| *t != token);
            self.routes.insert(key, token);
        }
    }

    /// Publishes the counters if they changed, at most every
    /// [`PUBLISH_EVERY`]; returns when to publish next, if pending.
    fn publish(&mut self, now: Instant) -> Option<Instant> {
        if !self.dirty {
            return None;
        }
        if now.duration_since(self.published) < PUBLISH_EVERY {
            return Some(self.published + PUBLISH_EVERY);
        }
        self.published = now;
        self.dirty = false;
        let mut total = self.retired.clone();
        for p in self.peers.values() {
            total.absorb(&p.stats());
        }
        *lock(&self.shared.stats) = total;
        None
    }
}

impl Handler for LinkHandler {
    fn on_frame(&mut self, frame: &[u8], out: &mut FrameBatch) {
        let Some(h) = frame.get(..HEADER_LEN) else {
            return;
        };
        if FrameType::from_byte(h[15]) == FrameType::Probe {
            if let Some((header, p)) = probe::parse(frame) {
                self.listeners
                    .retain(|tx| tx.send((header.src, p.clone())).is_ok());
            }
            return;
        }
        let Some(key) = crate::engine::wire::session_of(frame) else {
            return;
        };
        let Some(&token) = self.routes.get(&key) else {
            return;
        };
        if let Some(peer) = self.peers.get_mut(&token) {
            peer.handle_frame(Instant::now(), frame, out);
            self.dirty = true;
            self.reroute(token);
        }
    }

    fn on_batch_end(&mut self, out: &mut FrameBatch) {
        self.run_loops(Instant::now(), out);
    }

    fn on_tick(&mut self, now: Instant, out: &mut FrameBatch) -> Option<Instant> {
        self.run_commands(now, out);
        self.run_loops(now, out);
        let mut next: Option<Instant> = None;
        let mut moved = Vec::new();
        for (&token, peer) in &mut self.peers {
            let epoch = peer.epoch();
            if let Some(t) = peer.tick(now, out) {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
            if peer.epoch() != epoch {
                moved.push(token);
            }
        }
        for token in moved {
            self.reroute(token);
        }
        match self.publish(now) {
            Some(p) => Some(next.map_or(p, |n| n.min(p))),
            None => next,
        }
    }
}

impl Drop for LinkHandler {
    fn drop(&mut self) {
        for peer in self.peers.values_mut() {
            peer.close("the L2 link stopped");
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
