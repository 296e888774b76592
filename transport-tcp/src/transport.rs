//! [`TcpTransport`]: deadlines and reconnecting around [`Conn`].
//!
//! While the connection is up, `submit` sends at once and each request's
//! future only waits for its response. When the connection has broken,
//! every request that was in flight has already failed with
//! `Disconnected`; the next request reconnects (one attempt at a time,
//! under its own deadline), redoes the handshake (a new session) and is
//! then sent. After a failed attempt, further attempts wait a backoff
//! (doubling from `reconnect_min` to `reconnect_max`); requests arriving
//! meanwhile fail at once with `Disconnected`. Nothing is resent.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use qbd_core::proto::msg::Request;
use qbd_core::proto::session::NodeHello;
use qbd_core::proto::{ClusterKey, ProtoError};
use qbd_core::transport::{Pending, Transport, TransportError};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout};

use crate::TcpOptions;
use crate::conn::{Conn, Outgoing, Reply};
use crate::frame_io::{fresh_nonce, handshake, lost};

/// A connection to one node over TCP (see the crate docs).
#[derive(Debug)]
pub struct TcpTransport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    addr: SocketAddr,
    key: ClusterKey,
    name: String,
    opts: TcpOptions,
    /// What the first handshake found; reconnects must find the same backend.
    node: NodeHello,
    next_id: AtomicU64,
    link: Mutex<Link>,
    /// One reconnect attempt at a time.
    dialing: tokio::sync::Mutex<()>,
    /// Set when the transport is dropped: no more reconnects.
    shut: AtomicBool,
}

#[derive(Debug)]
struct Link {
    conn: Option<Arc<Conn>>,
    /// No reconnect attempt before this (after a failed one).
    retry_at: Option<Instant>,
    delay: Duration,
    last_error: Option<TransportError>,
}

impl TcpTransport {
    /// Connects to the node at `addr` and runs the handshake with `key`,
    /// introducing this end as `name`.
    pub async fn connect(
        addr: SocketAddr,
        key: ClusterKey,
        name: &str,
        opts: TcpOptions,
    ) -> Result<Arc<TcpTransport>, TransportError> {
        let (conn, node) = dial(addr, &key, name, &opts).await?;
        let link = Link {
            conn: Some(conn),
            retry_at: None,
            delay: opts.reconnect_min,
            last_error: None,
        };
        let inner = Inner {
            addr,
            key,
            name: name.to_owned(),
            opts,
            node,
            next_id: AtomicU64::new(1),
            link: Mutex::new(link),
            dialing: tokio::sync::Mutex::new(()),
            shut: AtomicBool::new(false),
        };
        Ok(Arc::new(TcpTransport {
            inner: Arc::new(inner),
        }))
    }

    /// The node's identity and name, from the first handshake.
    pub fn node(&self) -> NodeHello {
        self.inner.node.clone()
    }

    /// The node's address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// True while a connection is up (false after it broke, until a
    /// request reconnects).
    pub fn is_connected(&self) -> bool {
        self.inner.live().is_some()
    }
}

impl Transport for TcpTransport {
    fn submit(&self, batch: Vec<Request>) -> Vec<Pending> {
        let outgoing: Vec<Outgoing> = batch.iter().map(|r| self.inner.encode(r)).collect();
        match self.inner.live() {
            Some(conn) => {
                let ids: Vec<u64> = outgoing.iter().map(|o| o.id).collect();
                let rxs = conn.send(outgoing);
                ids.into_iter()
                    .zip(rxs)
                    .map(|(id, rx)| self.inner.wait(Sent::Now(Arc::clone(&conn), id, rx)))
                    .collect()
            }
            None => outgoing
                .into_iter()
                .map(|o| self.inner.wait(Sent::Later(o)))
                .collect(),
        }
    }

    fn describe(&self) -> String {
        format!("tcp:{}", self.inner.addr)
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.inner.shut.store(true, Ordering::Release);
        if let Some(conn) = lock(&self.inner.link).conn.take() {
            conn.close(TransportError::Disconnected("transport closed".into()));
        }
    }
}

/// Where a request stands when its future is made.
enum Sent {
    /// Sent on `conn`; the receiver gets the reply.
    Now(Arc<Conn>, u64, oneshot::Receiver<Reply>),
    /// Not sent: the future reconnects first.
    Later(Outgoing),
}

/// Forgets a request's waiter when its future ends (answered, timed out or
/// dropped), so late answers find nobody.
struct Forget(Arc<Conn>, u64);

impl Drop for Forget {
    fn drop(&mut self) {
        self.0.forget(self.1);
    }
}

impl Inner {
    fn encode(&self, req: &Request) -> Outgoing {
        let mut payload = Vec::new();
        req.encode(&mut payload);
        Outgoing {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            opcode: req.opcode(),
            payload,
            tail: req.detached_tail(),
        }
    }

    fn live(&self) -> Option<Arc<Conn>> {
        lock(&self.link).conn.clone().filter(|c| c.is_open())
    }

    /// The request's future: (reconnect, send,) wait — all under the deadline.
    fn wait(self: &Arc<Self>, sent: Sent) -> Pending {
        let inner = Arc::clone(self);
        let deadline = self.opts.request_timeout;
        // Made now, so a future dropped unpolled forgets its waiter too.
        let forget = match &sent {
            Sent::Now(conn, id, _) => Some(Forget(Arc::clone(conn), *id)),
            Sent::Later(_) => None,
        };
        Box::pin(async move {
            let waited = timeout(deadline, async move {
                let (rx, _forget) = match sent {
                    Sent::Now(_, _, rx) => (rx, forget),
                    Sent::Later(o) => {
                        let conn = inner.reconnect().await?;
                        let id = o.id;
                        let rx = conn.send(vec![o]).pop();
                        let rx = rx.ok_or_else(|| gone("no receiver"))?;
                        (rx, Some(Forget(conn, id)))
                    }
                };
                rx.await.unwrap_or_else(|_| Err(gone("transport closed")))
            })
            .await;
            waited.unwrap_or_else(|_| Err(TransportError::Timeout(millis(deadline))))
        })
    }

    /// A live connection: the current one, or a new one if it is time to try.
    async fn reconnect(&self) -> Result<Arc<Conn>, TransportError> {
        let _one = self.dialing.lock().await;
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        if self.shut.load(Ordering::Acquire) {
            return Err(gone("transport closed"));
        }
        self.check_backoff()?;
        let dialed = dial(self.addr, &self.key, &self.name, &self.opts).await;
        let mut link = lock(&self.link);
        match dialed.and_then(|(conn, node)| self.same_node(conn, &node)) {
            Ok(conn) => {
                link.conn = Some(Arc::clone(&conn));
                link.retry_at = None;
                link.delay = self.opts.reconnect_min;
                link.last_error = None;
                Ok(conn)
            }
            Err(e) => {
                link.conn = None;
                link.retry_at = Some(Instant::now() + link.delay);
                link.delay = (link.delay * 2).min(self.opts.reconnect_max);
                link.last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    fn check_backoff(&self) -> Result<(), TransportError> {
        let link = lock(&self.link);
        match link.retry_at {
            Some(at) if Instant::now() < at => {
                // The inner reason only: a Disconnected error's Display
                // already starts with "node unreachable".
                let last = link.last_error.as_ref().map(|e| match e {
                    TransportError::Disconnected(why) => why.clone(),
                    other => other.to_string(),
                });
                Err(gone(&format!(
                    "{} (next reconnect attempt in {} ms)",
                    last.unwrap_or_else(|| "disconnected".into()),
                    millis(at - Instant::now())
                )))
            }
            _ => Ok(()),
        }
    }

    /// Refuses a reconnect that reached a different backend.
    fn same_node(&self, conn: Arc<Conn>, node: &NodeHello) -> Result<Arc<Conn>, TransportError> {
        if node.backend == self.node.backend {
            return Ok(conn);
        }
        let why = format!(
            "{} is now backend {} ({}), expected {} ({})",
            self.addr, node.backend, node.name, self.node.backend, self.node.name
        );
        conn.close(gone(&why));
        Err(ProtoError::Handshake(why).into())
    }
}

/// Connects, sets TCP_NODELAY and runs the handshake, within the connect timeout.
async fn dial(
    addr: SocketAddr,
    key: &ClusterKey,
    name: &str,
    opts: &TcpOptions,
) -> Result<(Arc<Conn>, NodeHello), TransportError> {
    let attempt = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| lost(&format!("connecting to {addr}"), &e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| lost("setting TCP_NODELAY", &e))?;
        let (session, node) = handshake(&mut stream, key, fresh_nonce(), name).await?;
        Ok((Conn::start(stream, session), node))
    };
    timeout(opts.connect_timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(gone(&format!(
                "no handshake with {addr} within {} ms",
                millis(opts.connect_timeout)
            )))
        })
}

fn gone(why: &str) -> TransportError {
    TransportError::Disconnected(why.to_owned())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
