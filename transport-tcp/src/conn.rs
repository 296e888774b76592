//! One established connection: its session, the requests in flight, and
//! the two tasks that move its frames.
//!
//! Sending needs no task hop in the common case: `send` seals the batch
//! into one buffer and writes it straight to the socket (`try_write`). Only
//! when the socket buffer is full does the rest go to the writer task's
//! queue; from then on (`backlog`) every new buffer queues behind it until
//! the writer has drained the queue, so frames stay in sealing order.
//!
//! The reader task reads whole frames, opens them (MAC, replay window) and
//! completes the waiting request by id. Any read, write or verification
//! failure closes the connection: every request in flight fails with
//! `Disconnected`, both tasks stop, and the socket closes once the last
//! handle is dropped.
//!
//! The session is split: the reader task owns the `Opener` (no lock on
//! the receive path); the `Sealer` sits in the outbox mutex, held only to
//! seal a batch and hand its bytes to the socket or the queue.

use std::collections::HashMap;
use std::io;
use std::mem;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use qbd_core::proto::frame::{FrameKind, HEADER_LEN, MAC_LEN};
use qbd_core::proto::msg::Response;
use qbd_core::proto::session::{Opener, Sealer, Session};
use qbd_core::transport::TransportError;
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::frame_io::{lost, read_frame, write_all};

/// What a request's waiter receives.
pub type Reply = Result<Response, TransportError>;

/// A request encoded and numbered, ready to seal.
#[derive(Debug)]
pub struct Outgoing {
    /// Request id (unique per transport).
    pub id: u64,
    /// Frame opcode.
    pub opcode: u16,
    /// Encoded payload.
    pub payload: Vec<u8>,
    /// Trailing payload bytes outside the MAC (`Request::detached_tail`).
    pub tail: usize,
}

/// Read buffer of the reader task: many small responses per syscall.
const READ_BUFFER: usize = 64 << 10;

/// One connection to a node.
#[derive(Debug)]
pub struct Conn {
    outbox: Mutex<Outbox>,
    inflight: Mutex<Inflight>,
    open: AtomicBool,
    write: Arc<OwnedWriteHalf>,
    queue: mpsc::UnboundedSender<(Vec<u8>, usize)>,
    tasks: Mutex<Vec<AbortHandle>>,
}

#[derive(Debug)]
struct Outbox {
    sealer: Sealer,
    /// The writer task has queued bytes: new frames must queue behind them.
    backlog: bool,
}

#[derive(Debug, Default)]
struct Inflight {
    waiting: HashMap<u64, oneshot::Sender<Reply>>,
    /// Why the connection closed (then nothing registers any more).
    closed: Option<TransportError>,
}

impl Conn {
    /// Takes over a stream whose handshake produced `session` and starts
    /// the reader and writer tasks (on the current tokio runtime).
    pub fn start(stream: TcpStream, session: Session) -> Arc<Conn> {
        let (read, write) = stream.into_split();
        let (sealer, opener) = session.split();
        let (queue, rx) = mpsc::unbounded_channel();
        let conn = Arc::new(Conn {
            outbox: Mutex::new(Outbox {
                sealer,
                backlog: false,
            }),
            inflight: Mutex::new(Inflight::default()),
            open: AtomicBool::new(true),
            write: Arc::new(write),
            queue,
            tasks: Mutex::new(Vec::new()),
        });
        let reader = tokio::spawn(reader(Arc::clone(&conn), read, opener));
        let writer = tokio::spawn(writer(Arc::clone(&conn), rx));
        lock(&conn.tasks).extend([reader.abort_handle(), writer.abort_handle()]);
        conn
    }

    /// False once the connection has closed.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Registers, seals and sends `batch` in one write; one receiver per
    /// request, in order. On a closed connection every receiver already
    /// holds the error.
    pub fn send(&self, batch: Vec<Outgoing>) -> Vec<oneshot::Receiver<Reply>> {
        let rxs = self.register(&batch);
        if lock(&self.inflight).closed.is_some() {
            return rxs;
        }
        let len = batch.iter().map(|o| o.payload.len() + HEADER_LEN + MAC_LEN);
        let mut buf = Vec::with_capacity(len.sum());
        let mut out = lock(&self.outbox);
        for o in &batch {
            out.sealer.seal_with_tail(
                FrameKind::Request,
                o.opcode,
                o.id,
                &o.payload,
                o.tail,
                &mut buf,
            );
        }
        if let Err(e) = self.push(&mut out, buf) {
            drop(out);
            self.close(lost("sending", &e));
        }
        rxs
    }

    /// Drops the waiter of `id` (its deadline passed or nobody waits).
    pub fn forget(&self, id: u64) {
        lock(&self.inflight).waiting.remove(&id);
    }

    /// Closes the connection: every request in flight fails with
    /// `Disconnected`, the tasks stop. Idempotent.
    pub fn close(&self, why: TransportError) {
        let why = match why {
            TransportError::Disconnected(_) => why,
            other => TransportError::Disconnected(format!("connection dropped: {other}")),
        };
        self.open.store(false, Ordering::Release);
        let waiting = {
            let mut inflight = lock(&self.inflight);
            inflight.closed.get_or_insert_with(|| why.clone());
            mem::take(&mut inflight.waiting)
        };
        for tx in waiting.into_values() {
            let _ = tx.send(Err(why.clone()));
        }
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }

    fn register(&self, batch: &[Outgoing]) -> Vec<oneshot::Receiver<Reply>> {
        let mut inflight = lock(&self.inflight);
        let closed = inflight.closed.clone();
        batch
            .iter()
            .map(|o| {
                let (tx, rx) = oneshot::channel();
                match &closed {
                    Some(why) => drop(tx.send(Err(why.clone()))),
                    None => drop(inflight.waiting.insert(o.id, tx)),
                }
                rx
            })
            .collect()
    }

    /// Hands sealed bytes to the socket, or to the writer's queue when it
    /// has a backlog or the socket is full. Called under the outbox lock.
    fn push(&self, out: &mut Outbox, buf: Vec<u8>) -> io::Result<()> {
        let from = if out.backlog {
            0
        } else {
            match self.write.try_write(&buf) {
                Ok(n) if n == buf.len() => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            }
        };
        out.backlog = true;
        self.queue
            .send((buf, from))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }

    /// Opens one frame and completes its request.
    fn deliver(&self, opener: &mut Opener, frame: &[u8]) -> Result<(), TransportError> {
        let (header, reply) = opener.open_response(frame)?;
        let reply = reply.map_err(TransportError::from);
        // No waiter: the request's deadline passed; its late answer is dropped.
        if let Some(tx) = lock(&self.inflight).waiting.remove(&header.request_id) {
            let _ = tx.send(reply);
        }
        Ok(())
    }
}

async fn reader(conn: Arc<Conn>, read: OwnedReadHalf, mut opener: Opener) {
    let mut read = BufReader::with_capacity(READ_BUFFER, read);
    let mut frame = Vec::new();
    let why = loop {
        let delivered = match read_frame(&mut read, &mut frame).await {
            Ok(_) => conn.deliver(&mut opener, &frame),
            Err(e) => Err(e),
        };
        if let Err(e) = delivered {
            break e;
        }
    };
    conn.close(why);
}

async fn writer(conn: Arc<Conn>, mut rx: mpsc::UnboundedReceiver<(Vec<u8>, usize)>) {
    while let Some((buf, from)) = rx.recv().await {
        if let Err(e) = write_all(&conn.write, &buf[from..]).await {
            conn.close(lost("sending", &e));
            return;
        }
        if rx.is_empty() {
            // Submitters queue under this lock, so the queue cannot fill
            // between the check and clearing the flag.
            let mut out = lock(&conn.outbox);
            if rx.is_empty() {
                out.backlog = false;
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
