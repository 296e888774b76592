//! The master's side of QBD-L2 on one interface: [`L2Link`] owns the
//! AF_PACKET socket and its polling thread; [`L2Transport`] is one node
//! reached through it, implementing the node protocol's [`Transport`].
//!
//! Threads: the poller thread runs every engine ([`crate::engine::Client`],
//! one per node), seals and opens node-protocol frames, and completes each
//! request's oneshot; tokio tasks only queue commands and ring its
//! doorbell. Nothing spins inside a tokio worker.
//!
//! Setting up a node: [`L2Link::discover`] broadcasts a `Probe` query and
//! collects answers (identity, MAC, MTU); [`L2Link::connect`] probes the
//! path's MTU with a jumbo ping (jumbo frames only if the pong comes back),
//! then runs the node-protocol handshake as message 1 of a fresh engine
//! session. Placement uses the identity the handshake proves, never the
//! order of discovery.
//!
//! [`Transport`]: qbd_core::transport::Transport

mod handler;
mod peer;
mod transport;

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use qbd_core::proto::ClusterKey;
use qbd_core::transport::TransportError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};
use uuid::Uuid;

use self::handler::{Cmd, LinkHandler, Shared, lock};
use self::peer::Peer;
pub use self::transport::L2Transport;
use crate::af_packet::{
    PacketSocket, Poller, PollerConfig, PollerSender, PollerStats, SocketConfig,
};
use crate::engine::{Config, Mac, Stats};
use crate::epoch::{NodeEpochs, random_u64};
use crate::probe::{BASE_MTU, Probe};

/// How to open an [`L2Link`].
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// The interface (in the calling thread's network namespace).
    pub iface: String,
    /// Engine parameters for every node (epoch and MTU are set per
    /// session; `ethertype` is the link's).
    pub engine: Config,
    /// The polling thread's parameters.
    pub poller: PollerConfig,
    /// Never use frames above this MTU, even if the path carries them.
    pub max_mtu: Option<usize>,
}

impl LinkOptions {
    /// Defaults for `iface`.
    pub fn new(iface: &str) -> Self {
        LinkOptions {
            iface: iface.to_owned(),
            engine: Config::default(),
            poller: PollerConfig {
                name: "qbd-l2-master".into(),
                ..PollerConfig::default()
            },
            max_mtu: None,
        }
    }
}

/// A closed loop of requests run on a link's polling thread
/// ([`L2Transport::run_closed_loop`]): how a benchmark measures the
/// transport without a thread hop per request. `step` runs after every
/// batch of received frames and on every pass of the thread, so it must be
/// quick and must never block.
pub trait ClosedLoop: Send + std::fmt::Debug + 'static {
    /// Takes the outcomes completed since the last call (request id,
    /// outcome; drain `completed`) and returns the requests to send now,
    /// each with an id of the loop's choosing.
    fn step(
        &mut self,
        now: std::time::Instant,
        completed: &mut Vec<(u64, Result<qbd_core::proto::msg::Response, TransportError>)>,
    ) -> Vec<(u64, qbd_core::proto::msg::Request)>;

    /// True once the loop is finished; it is then dropped (on the polling
    /// thread: report results through a channel it owns).
    fn done(&self) -> bool;
}

/// A node that answered discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its MAC address.
    pub mac: Mac,
    /// The backend identity it claims (the handshake proves it).
    pub backend: Uuid,
    /// Its name.
    pub name: String,
    /// Its interface MTU.
    pub mtu: usize,
}

/// Counters of a link: its engines' and its socket's.
#[derive(Debug, Clone, Default)]
pub struct LinkStats {
    /// Every engine session's counters, summed.
    pub engine: Stats,
    /// The polling thread's and socket's counters.
    pub poller: PollerStats,
}

/// The master's L2 endpoint on one interface.
#[derive(Debug)]
pub struct L2Link {
    poller: std::sync::Mutex<Option<Poller<LinkHandler>>>,
    sender: PollerSender,
    shared: Arc<Shared>,
    iface: String,
    mac: Mac,
    mtu: usize,
    engine: Config,
    next_token: AtomicU64,
    epochs: NodeEpochs,
}

/// Tries of the jumbo probe, and how long each waits for its pong.
const MTU_TRIES: u32 = 3;
const MTU_WAIT: Duration = Duration::from_millis(200);
/// How often discovery repeats its query.
const QUERY_EVERY: Duration = Duration::from_millis(250);

impl L2Link {
    /// Opens the socket on `opts.iface` and starts the polling thread.
    pub fn open(opts: LinkOptions) -> io::Result<Arc<L2Link>> {
        let socket =
            PacketSocket::open_with(&opts.iface, opts.engine.ethertype, &SocketConfig::session())?;
        let mac = Mac(socket.mac());
        let mtu = opts.max_mtu.map_or(socket.mtu(), |m| m.min(socket.mtu()));
        let shared = Arc::new(Shared::default());
        let handler = LinkHandler::new(Arc::clone(&shared));
        let poller = Poller::spawn(socket, handler, opts.poller.clone())?;
        Ok(Arc::new(L2Link {
            sender: poller.sender(),
            poller: std::sync::Mutex::new(Some(poller)),
            shared,
            iface: opts.iface,
            mac,
            mtu,
            engine: opts.engine,
            next_token: AtomicU64::new(1),
            epochs: NodeEpochs::default(),
        }))
    }

    /// The interface.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// This end's MAC address.
    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// The interface MTU (capped by `max_mtu`).
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Counters so far (engine counters lag by a few milliseconds).
    pub fn stats(&self) -> LinkStats {
        let poller = lock(&self.poller).as_ref().map(Poller::stats);
        LinkStats {
            engine: lock(&self.shared.stats).clone(),
            poller: poller.unwrap_or_default(),
        }
    }

    /// Stops the polling thread: every request waiting fails.
    pub fn shutdown(&self) {
        if let Some(p) = lock(&self.poller).take() {
            let _ = p.stop();
        }
    }

    fn command(&self, cmd: Cmd) {
        lock(&self.shared.cmds).push(cmd);
        self.shared.pending.store(true, Ordering::SeqCst);
        self.sender.wake();
    }

    fn listen(&self) -> mpsc::UnboundedReceiver<(Mac, Probe)> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.command(Cmd::Listen(tx));
        rx
    }

    fn send_probe(&self, p: &Probe, dst: Mac, epoch: u32) {
        let mut buf = vec![0u8; self.engine.frame_capacity().max(self.mtu + 64)];
        if let Some(n) = p.encode(self.engine.ethertype, dst, self.mac, epoch, &mut buf) {
            // A full queue drops the probe; the caller's loop sends again.
            let _ = self.sender.send(&buf[..n]);
        }
    }

    /// Finds nodes on the segment: broadcasts a query every 250 ms until
    /// `want` nodes answered (only the `pinned` MACs count, if any are
    /// given: then all of them are wanted), `wait` passed, or — with
    /// `settle` — at least one answered and no new one for `settle`.
    /// Returns what answered, sorted by MAC.
    pub async fn discover(
        &self,
        pinned: &[Mac],
        want: usize,
        wait: Duration,
        settle: Option<Duration>,
    ) -> Vec<Found> {
        let mut answers = self.listen();
        let nonce = random_u64();
        let want = if pinned.is_empty() {
            want
        } else {
            pinned.len()
        };
        let end = Instant::now() + wait;
        let mut found: BTreeMap<Mac, Found> = BTreeMap::new();
        let mut next_query = Instant::now();
        let mut last_new = Instant::now();
        while found.len() < want && Instant::now() < end {
            let settled = settle.is_some_and(|s| last_new + s <= Instant::now());
            if settled && !found.is_empty() {
                break;
            }
            if Instant::now() >= next_query {
                self.send_probe(&Probe::Query { nonce }, Mac::BROADCAST, 0);
                next_query = Instant::now() + QUERY_EVERY;
            }
            let got = timeout_at(next_query.min(end), answers.recv()).await;
            let Ok(Some((
                mac,
                Probe::Answer {
                    nonce: n,
                    backend,
                    mtu,
                    name,
                },
            ))) = got
            else {
                continue;
            };
            if n == nonce && (pinned.is_empty() || pinned.contains(&mac)) {
                let mtu = usize::from(mtu);
                if found
                    .insert(
                        mac,
                        Found {
                            mac,
                            backend,
                            name,
                            mtu,
                        },
                    )
                    .is_none()
                {
                    last_new = Instant::now();
                }
            }
        }
        found.into_values().collect()
    }

    /// The MTU to use towards a node whose interface has `node_mtu`, for
    /// the engine session `epoch`: jumbo only if a ping of that size came
    /// back as a pong of that size.
    async fn probe_mtu(&self, mac: Mac, node_mtu: usize, epoch: u32) -> usize {
        let candidate = self.mtu.min(node_mtu);
        if candidate <= BASE_MTU {
            return candidate;
        }
        let size = u16::try_from(candidate).unwrap_or(u16::MAX);
        let mut pongs = self.listen();
        for _ in 0..MTU_TRIES {
            let nonce = random_u64();
            self.send_probe(&Probe::MtuPing { nonce, size }, mac, epoch);
            let end = Instant::now() + MTU_WAIT;
            while let Ok(Some((from, p))) = timeout_at(end, pongs.recv()).await {
                if from == mac && p == (Probe::MtuPong { nonce, size }) {
                    return candidate;
                }
            }
        }
        eprintln!(
            "qbd-l2: no {candidate}-byte frames to and from {mac} on {}: using {BASE_MTU}",
            self.iface
        );
        BASE_MTU
    }

    /// Connects to the node `found`: MTU probe, then the handshake with
    /// `key`, introducing this end as `name`. The handshake must prove the
    /// identity discovery reported.
    pub async fn connect(
        self: &Arc<Self>,
        found: &Found,
        key: ClusterKey,
        name: &str,
    ) -> Result<Arc<L2Transport>, TransportError> {
        let epoch = self.epochs.next(found.mac.0);
        let mtu = self.probe_mtu(found.mac, found.mtu, epoch).await;
        let cfg = Config {
            epoch,
            mtu,
            ..self.engine.clone()
        };
        let peer = Peer::new(cfg, self.mac, found.mac, key, name.to_owned());
        let (tx, rx) = oneshot::channel();
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        self.command(Cmd::Connect {
            token,
            peer: Box::new(peer),
            tx,
        });
        let limit = self.engine.deadline + Duration::from_secs(1);
        let hello = match tokio::time::timeout(limit, rx).await {
            Ok(Ok(Ok(h))) if h.backend == found.backend => h,
            outcome => {
                self.command(Cmd::Disconnect { token });
                return Err(match outcome {
                    Ok(Ok(Ok(h))) => qbd_core::proto::ProtoError::Handshake(format!(
                        "{} answered discovery as backend {} but its handshake proves {}",
                        found.mac, found.backend, h.backend
                    ))
                    .into(),
                    Ok(Ok(Err(e))) => e,
                    Ok(Err(_)) => TransportError::Disconnected("the L2 link stopped".into()),
                    Err(_) => {
                        TransportError::Timeout(u64::try_from(limit.as_millis()).unwrap_or(0))
                    }
                });
            }
        };
        let t = L2Transport::new(Arc::clone(self), token, found.mac, hello, mtu);
        Ok(Arc::new(t))
    }
}

impl Drop for L2Link {
    fn drop(&mut self) {
        self.shutdown();
    }
}
