//! The node's side of QBD-L2 on one interface: [`L2Server`] answers
//! discovery and MTU probes, keeps one engine [`crate::engine::Server`] per
//! master session, authenticates every message with the node protocol and
//! hands requests to a [`Service`] (the node's dispatcher).
//!
//! - Sessions are keyed by (master MAC, client epoch): one master may hold
//!   several (one per transport), and a restarted master's new epoch is a
//!   new session. Admission (`handler/admit.rs`, `engine::admission`):
//!   only message 1 whole in one frame, a `ClientHello` that verifies
//!   under the cluster key, creates state, and then only a *pending*
//!   session (at most [`ServeOptions::max_pending`], evicting each other
//!   only). It becomes *authenticated* when a sealed request opens under
//!   its keys; at most [`ServeOptions::max_sessions`] of those exist, and
//!   only a newly authenticated one evicts one. Unauthenticated senders
//!   get at most one answer per frame (an empty refusal of a bad hello,
//!   the `ServerHello`, a `Reset`), within a budget, never retransmitted.
//!   Sessions idle for [`ServeOptions::idle`] (pending ones: the engine's
//!   deadline) are forgotten; a master that sends to a forgotten session
//!   gets a `Reset` with `FLAG_UNKNOWN_SESSION` and re-handshakes.
//! - Later messages are sealed requests. One that fails `Opener::open`
//!   (bad MAC, replayed sequence number, garbage) is rejected at the
//!   engine — not acknowledged, forgotten — so the master's
//!   retransmission of the genuine bytes still gets through; it is
//!   counted through [`Service::rejected`].
//! - A quick request ([`Service::inline`]: pings, reads, raw reads) is
//!   polled once inline on the polling thread (inside the tokio runtime's
//!   context) and usually finishes there, with no thread hop. Other
//!   requests (writes, syncs: they may block on a disk), and quick ones
//!   that were not ready, run in tokio tasks whose answers come back
//!   through a queue and the poller's doorbell.

mod gate;
mod handler;
mod session;

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use qbd_core::backend::BoxFut;
use qbd_core::proto::msg::{Request, Response};
use qbd_core::proto::session::NodeHello;
use qbd_core::proto::{ClusterKey, ProtoError};

use self::handler::ServeHandler;

/// Largest write [`Service::inline_while_quick`] tries inline by default.
pub const INLINE_WRITE_MAX: usize = 64 << 10;
use crate::af_packet::{PacketSocket, Poller, PollerConfig, PollerStats, SocketConfig};
use crate::engine::{Config, Mac, Stats};
use crate::epoch::fresh_epoch;

/// What the node plugs into an [`L2Server`].
pub trait Service: Send + Sync + 'static {
    /// The identity the handshake presents.
    fn hello(&self) -> NodeHello;
    /// Runs one authenticated request.
    fn call(&self, req: Request) -> BoxFut<'static, Response>;
    /// Whether `req` may be tried inline on the polling thread first: only
    /// requests that normally finish in microseconds (the thread must not
    /// block on a disk while frames queue up). Default: pings, reads and
    /// raw reads (one block and its record: the same path as a read).
    fn inline(&self, req: &Request) -> bool {
        matches!(
            req,
            Request::Ping | Request::Read { .. } | Request::ReadRaw { .. }
        )
    }
    /// Whether `req` may be tried inline while such calls stay quick
    /// (`gate.rs`: one slower than 200 µs sends them to tokio for a
    /// back-off). Default: writes of up to 64 KiB, which usually only copy
    /// into the page cache but may wait on its writeback.
    fn inline_while_quick(&self, req: &Request) -> bool {
        match req {
            Request::Write { data, .. } | Request::VouchedWrite { data, .. } => {
                data.len() <= INLINE_WRITE_MAX
            }
            _ => false,
        }
    }
    /// A message of an established session failed to authenticate or
    /// decode (count it).
    fn rejected(&self, peer: Mac, why: &ProtoError);
    /// A handshake failed (count it, log it).
    fn handshake_failed(&self, peer: Mac, why: &str);
}

/// How to run an [`L2Server`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The interface (in the calling thread's network namespace).
    pub iface: String,
    /// Engine parameters of every session (the epoch is chosen at start;
    /// the MTU per session).
    pub engine: Config,
    /// The polling thread's parameters.
    pub poller: PollerConfig,
    /// Most authenticated sessions kept at once (a new one evicts the
    /// least recently heard).
    pub max_sessions: usize,
    /// Most pending sessions (hello verified, no sealed request opened
    /// yet), bounded apart: they never evict an authenticated one.
    pub max_pending: usize,
    /// A session without frames for this long (and nothing executing) is
    /// forgotten.
    pub idle: Duration,
}

impl ServeOptions {
    /// Defaults for `iface`.
    pub fn new(iface: &str) -> Self {
        ServeOptions {
            iface: iface.to_owned(),
            engine: Config::default(),
            poller: PollerConfig {
                name: "qbd-l2-node".into(),
                ..PollerConfig::default()
            },
            max_sessions: 256,
            max_pending: 64,
            idle: Duration::from_secs(60),
        }
    }
}

/// Counters of an [`L2Server`].
#[derive(Debug, Clone, Default)]
pub struct ServeStats {
    /// Every engine session's counters, summed (sessions since start).
    pub engine: Stats,
    /// Frames of the QBD EtherType that do not decode as QBD-L2 frames.
    pub malformed: u64,
    /// Frames that decode but belong to no session: epoch 0, a group
    /// source address, a non-request frame for an unknown session.
    pub dropped: u64,
    /// Authenticated sessions now.
    pub sessions: usize,
    /// Pending sessions now (hello verified, no sealed request yet).
    pub pending: usize,
    /// Authenticated sessions evicted because `max_sessions` were in use
    /// when another session authenticated.
    pub evicted: u64,
    /// Pending sessions evicted because `max_pending` were in use.
    pub pending_evicted: u64,
    /// Frames sent once to unauthenticated senders (hello answers,
    /// resets).
    pub unauth_answers: u64,
    /// Such answers not sent: the budget was spent.
    pub unauth_refused: u64,
    /// Retransmissions by sessions while unauthenticated (always 0: a
    /// pending session has no response to retransmit).
    pub unauth_retransmissions: u64,
    /// Times an inline write took over 200 µs, sending writes to tokio
    /// for a back-off (`Service::inline_while_quick`).
    pub slow_inline: u64,
    /// The polling thread's and socket's counters.
    pub poller: PollerStats,
}

/// A running L2 server. Dropping it stops the polling thread.
#[derive(Debug)]
pub struct L2Server {
    poller: Mutex<Option<Poller<ServeHandler>>>,
    stats: Arc<Mutex<ServeStats>>,
    iface: String,
    mac: Mac,
    mtu: usize,
    epoch: u32,
}

impl L2Server {
    /// Opens the socket on `opts.iface` and starts serving; requests that
    /// do not finish inline run on `runtime`.
    pub fn start(
        opts: ServeOptions,
        key: ClusterKey,
        service: Arc<dyn Service>,
        runtime: tokio::runtime::Handle,
    ) -> io::Result<L2Server> {
        let socket =
            PacketSocket::open_with(&opts.iface, opts.engine.ethertype, &SocketConfig::session())?;
        let mac = Mac(socket.mac());
        let mtu = socket.mtu();
        let epoch = fresh_epoch();
        let engine = Config {
            epoch,
            ..opts.engine.clone()
        };
        let stats = Arc::new(Mutex::new(ServeStats::default()));
        let doorbell = Arc::new(OnceLock::new());
        let handler = ServeHandler::new(handler::Setup {
            key,
            service,
            runtime,
            engine,
            local: mac,
            iface_mtu: mtu,
            max_sessions: opts.max_sessions.max(1),
            max_pending: opts.max_pending.max(1),
            idle: opts.idle,
            stats: Arc::clone(&stats),
            doorbell: Arc::clone(&doorbell),
        });
        let poller = Poller::spawn(socket, handler, opts.poller.clone())?;
        let _ = doorbell.set(poller.sender());
        Ok(L2Server {
            poller: Mutex::new(Some(poller)),
            stats,
            iface: opts.iface,
            mac,
            mtu,
            epoch,
        })
    }

    /// The interface.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// This node's MAC address on it.
    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// The interface MTU.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// This incarnation's epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Counters so far (they lag by a few milliseconds).
    pub fn stats(&self) -> ServeStats {
        let mut s = lock(&self.stats).clone();
        if let Some(p) = lock(&self.poller).as_ref() {
            s.poller = p.stats();
        }
        s
    }

    /// Stops the polling thread (answers still executing are dropped).
    pub fn stop(&self) {
        let stopped = lock(&self.poller).take().map(Poller::stop);
        if let Some(Ok(s)) = stopped {
            let mut stats = lock(&self.stats);
            stats.poller = s.stats;
            s.handler.publish_into(&mut stats);
        }
    }
}

impl Drop for L2Server {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
