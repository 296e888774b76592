//! Listeners, one task per connection, graceful shutdown.
//!
//! [`Server::run`] spawns one accept loop per listener and one task per
//! connection. When its `shutdown` future resolves it raises a stop flag
//! (a `watch` channel): accept loops return (closing their listeners),
//! connections still in the handshake are dropped, and connections in
//! transmission stop reading, finish and answer their in-flight requests,
//! then close. Every task holds a clone of a completion `mpsc::Sender`;
//! `run` returns when all of them are gone.
//!
//! Connections are bounded: each served one holds a permit of a semaphore
//! of `max_connections` from accept to close. A client accepted while none
//! is free is refused during the handshake (its options answered
//! `NBD_REP_ERR_POLICY` "too many connections", which clients report),
//! with a small buffer and the handshake timeout; as many refusals run at
//! once, beyond that a client is closed at once. Either way the master
//! logs one line.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use super::handshake::{Export, negotiate_as};
use super::{Error, ExportConfig, conn};
use crate::device::BlockDevice;

const READ_BUFFER: usize = 128 << 10;
/// Read buffer of a refused client (it only sends option headers).
const REFUSED_BUFFER: usize = 1 << 10;
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A socket the server accepts NBD clients on.
#[derive(Debug)]
pub enum Listener {
    /// TCP (TCP_NODELAY is set on every accepted connection).
    Tcp(TcpListener),
    /// Unix stream socket.
    Unix(UnixListener),
}

enum Stream {
    Tcp(TcpStream, String),
    Unix(UnixStream),
}

impl Listener {
    async fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => l.accept().await.map(|(s, a)| Stream::Tcp(s, a.to_string())),
            Listener::Unix(l) => l.accept().await.map(|(s, _)| Stream::Unix(s)),
        }
    }
}

/// Serves one device as one NBD export.
#[derive(Debug)]
pub struct Server<D: BlockDevice> {
    device: Arc<D>,
    cfg: ExportConfig,
    /// One permit per connection served.
    served: Arc<Semaphore>,
    /// One permit per connection being refused.
    refusing: Arc<Semaphore>,
}

impl<D: BlockDevice> Server<D> {
    /// A server for `device`, offered as the export `cfg` describes.
    pub fn new(device: Arc<D>, cfg: ExportConfig) -> Self {
        let max = cfg.max_connections.max(1);
        Self {
            device,
            cfg,
            served: Arc::new(Semaphore::new(max)),
            refusing: Arc::new(Semaphore::new(max)),
        }
    }

    /// A permit to serve a client, else to refuse it (`Err(Some)`), else
    /// none (`Err(None)`: close it at once).
    fn admit(&self) -> Result<OwnedSemaphorePermit, Option<OwnedSemaphorePermit>> {
        match Arc::clone(&self.served).try_acquire_owned() {
            Ok(p) => Ok(p),
            Err(_) => Err(Arc::clone(&self.refusing).try_acquire_owned().ok()),
        }
    }

    /// Why a client is refused.
    fn refusal(&self) -> String {
        format!(
            "too many connections: this server serves at most {} at once \
             (qbd-master --max-connections); try again later",
            self.cfg.max_connections.max(1)
        )
    }

    /// Serves until `shutdown` resolves; then stops accepting, drops
    /// clients still in the handshake, finishes and answers every in-flight
    /// request, closes every connection and returns.
    ///
    /// Accept errors (e.g. out of file descriptors) are logged and retried;
    /// they do not end `run`.
    pub async fn run(
        self,
        listeners: Vec<Listener>,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let server = Arc::new(self);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        for listener in listeners {
            let task = accept_loop(
                Arc::clone(&server),
                listener,
                stop_rx.clone(),
                done_tx.clone(),
            );
            tokio::spawn(task);
        }
        drop(done_tx);
        shutdown.await;
        let _ = stop_tx.send(true);
        let _ = done_rx.recv().await; // None once every task has ended
        Ok(())
    }

    fn export(&self) -> Export {
        let d = &self.device;
        let c = &self.cfg;
        Export::new(
            c.name.clone(),
            c.description.clone(),
            d.size(),
            d.preferred_block_size(),
            d.read_only(),
        )
    }
}

async fn accept_loop<D: BlockDevice>(
    server: Arc<Server<D>>,
    listener: Listener,
    mut stop: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            a = listener.accept() => a,
        };
        let s = Arc::clone(&server);
        let (stop, done) = (stop.clone(), done.clone());
        match accepted {
            Ok(Stream::Tcp(sock, peer)) => {
                let _ = sock.set_nodelay(true);
                let (r, w) = sock.into_split();
                admit(s, r, w, peer, stop, done);
            }
            Ok(Stream::Unix(sock)) => {
                let (r, w) = sock.into_split();
                admit(s, r, w, "unix socket".into(), stop, done);
            }
            Err(e) => {
                eprintln!("qbd-master: nbd: accept failed: {e}");
                let mut stop = stop;
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}

/// Spawns the task of a client just accepted: served if a connection
/// permit is free, else refused (or closed at once if even the refusals
/// are at their bound).
fn admit<D, R, W>(
    server: Arc<Server<D>>,
    r: R,
    w: W,
    peer: String,
    stop: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) where
    D: BlockDevice,
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    match server.admit() {
        Ok(permit) => {
            tokio::spawn(connection(server, r, w, peer, stop, done, permit));
        }
        Err(Some(permit)) => {
            tokio::spawn(refuse(server, r, w, peer, stop, done, permit));
        }
        Err(None) => {
            let e = Error::Refused(server.refusal());
            log(&peer, "accept (closed at once)", &e);
        }
    }
}

/// One client beyond the limit: the handshake with every option refused,
/// until the client gives up (or the timeout, or shutdown).
async fn refuse<D, R, W>(
    server: Arc<Server<D>>,
    r: R,
    mut w: W,
    peer: String,
    mut stop: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
    _permit: OwnedSemaphorePermit,
) where
    D: BlockDevice,
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let export = server.export();
    let why = server.refusal();
    eprintln!("qbd-master: nbd client {peer}: refused: {why}");
    let mut r = BufReader::with_capacity(REFUSED_BUFFER, r);
    let talk = negotiate_as(&mut r, &mut w, &export, Some(&why));
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {}
        _ = tokio::time::timeout(server.cfg.handshake_timeout, talk) => {}
    }
}

/// One client: handshake (bounded in time, abandoned on shutdown), then
/// transmission. Logs one line if the client is dropped for a reason. The
/// connection permit is released when it ends.
async fn connection<D, R, W>(
    server: Arc<Server<D>>,
    r: R,
    mut w: W,
    peer: String,
    mut stop: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
    _permit: OwnedSemaphorePermit,
) where
    D: BlockDevice,
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let export = server.export();
    let mut r = BufReader::with_capacity(READ_BUFFER, r);
    let timeout = server.cfg.handshake_timeout;
    let handshake = tokio::select! {
        _ = stop.wait_for(|s| *s) => return,
        h = tokio::time::timeout(timeout, negotiate_as(&mut r, &mut w, &export, None)) => h,
    };
    let negotiated = match handshake {
        Ok(Ok(Some(n))) => n,
        Ok(Ok(None)) => return, // OPT_ABORT
        Ok(Err(e)) => return log(&peer, "handshake", &e),
        Err(_) => return log(&peer, "handshake", &Error::HandshakeTimeout),
    };
    let device = Arc::clone(&server.device);
    if let Err(e) = conn::serve(device, &mut r, w, negotiated, &mut stop).await {
        log(&peer, "transmission", &e);
    }
}

fn log(peer: &str, phase: &str, e: &Error) {
    eprintln!("qbd-master: nbd client {peer}: dropped during {phase}: {e}");
}
