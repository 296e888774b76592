//! One master connection: handshake, then a reader that opens frames and
//! runs each request, and an outbox that seals the answers in the order it
//! writes them.
//!
//! - The reader (the connection task itself) polls each request's handling
//!   once, inline. Most finish on that first poll (a ping, a read of the
//!   chunk store): their answer is sealed into the outbox at once, with no
//!   task hop. A request that is not ready moves, still pinned in its box,
//!   into a task of its own, and the reader goes on with the next frame:
//!   requests never wait for each other and are answered out of order,
//!   each with its request id.
//! - Writing: whoever queues an answer may also write the queue to the
//!   socket, but only one party at a time holds that role; the others just
//!   append, and the writer keeps going until the queue is empty, so frames
//!   never interleave and bursts coalesce into one write. The reader defers
//!   writing while the next frame is already buffered (up to [`FLUSH_AT`]
//!   bytes) and writes before anything that could block (reading the
//!   socket, waiting for a permit). When the socket is full the writer role
//!   moves to a task of its own, so the reader never blocks on writing.
//! - Backpressure: every request holds a permit of a per-connection
//!   [`Semaphore`] (`max_in_flight` of them) from the moment its frame is
//!   opened until its answer is written; when none is left the reader waits.
//! - A frame that fails its MAC, replays a sequence number or does not
//!   parse ends the connection: it is counted in [`crate::NodeStats`] and
//!   logged in one line; the requests already accepted are still answered.
//!   An authenticated frame whose payload is not a request the node knows
//!   gets an `Invalid` error reply instead (the peer holds the key: it is a
//!   newer or buggy master, not an attacker).
//! - The session is split: the reader owns its receiving half (keys and
//!   replay window), the outbox its sending half, sealing under the queue's
//!   lock, so frames reach the socket in the order they were sealed.
//! - Ending: once the reader stops (EOF, shutdown, violation, or writing
//!   failed), the connection waits until every permit is back (every
//!   request answered and written, or dropped because writing failed), then
//!   sends FIN.

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use qbd_core::proto::frame::{FrameHeader, FrameKind, HEADER_LEN};
use qbd_core::proto::msg::{ErrorCode, Request, Response};
use qbd_core::proto::session::{self, Opener, Sealer, Session};
use qbd_core::proto::{ClusterKey, ProtoError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError, watch};

use crate::node::Node;
use crate::stats::bump;

/// Largest `ClientHello` payload accepted (nonce + a name).
const MAX_HELLO: u32 = 4096;
/// The reader writes the queued answers once they reach this many bytes,
/// even if more frames are buffered.
const FLUSH_AT: usize = 128 << 10;
/// Queue buffer capacity kept after a burst.
const KEEP_CAPACITY: usize = 1 << 20;

/// Per-connection limits.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// Time a client has to send its `ClientHello`.
    pub handshake_timeout: Duration,
    /// Requests of one connection being handled at once; the reader waits
    /// beyond that (backpressure instead of unbounded tasks).
    pub max_in_flight: usize,
    /// After the node stops reading a connection that may still be sending
    /// (shutdown, violation), how long it discards what arrives before it
    /// closes: closing with unread bytes would send a reset, and a reset
    /// makes the peer's kernel drop answers it has not read yet.
    pub linger: Duration,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            handshake_timeout: Duration::from_secs(10),
            max_in_flight: 256,
            linger: Duration::from_secs(1),
        }
    }
}

/// Why the reader stopped.
#[derive(Debug)]
enum End {
    /// The peer closed between frames.
    Eof,
    /// The node is shutting down.
    Shutdown,
    /// The socket failed.
    Io(std::io::Error),
    /// The peer broke the protocol.
    Violation(ProtoError),
    /// Writing answers failed (the outbox holds why).
    Unwritable,
}

/// Serves one connection to its end.
pub(crate) async fn serve_connection(
    node: Arc<Node>,
    key: Arc<ClusterKey>,
    cfg: ConnConfig,
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(64 << 10, rd);
    let shaken = tokio::select! {
        r = tokio::time::timeout(cfg.handshake_timeout, handshake(&node, &key, &mut rd, &mut wr)) => r,
        _ = stopped(&mut stop) => return,
    };
    let (session, client) = match shaken {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return refuse_handshake(&node, peer, &e.to_string()),
        Err(_) => return refuse_handshake(&node, peer, "handshake timed out"),
    };
    let (sealer, mut opener) = session.split();
    let permits = u32::try_from(cfg.max_in_flight.max(1)).unwrap_or(u32::MAX >> 3);
    let out = Arc::new(Outbox::new(wr, sealer, permits));
    let end = read_loop(&node, &mut opener, &mut rd, &out, &mut stop).await;
    let linger = match end {
        End::Eof | End::Unwritable => false,
        End::Shutdown => true,
        End::Io(e) => {
            eprintln!("qbd-node: {peer} ({client}): connection failed: {e}");
            false
        }
        End::Violation(e) => {
            node.stats().count_violation(&e);
            eprintln!("qbd-node: {peer} ({client}): closing the connection: {e}");
            true
        }
    };
    // Every in-flight request is answered (and its answer written) once
    // every permit is back; permits return only after the writer role is
    // free. Then FIN.
    out.flush();
    let _ = out.limit.acquire_many(permits).await;
    let failed = lock(&out.state).error.take();
    if let Some(e) = failed {
        eprintln!("qbd-node: {peer}: cannot send answers: {e}");
        return;
    }
    let _ = poll_fn(|cx| Pin::new(&mut lock(&out.sink).w).poll_shutdown(cx)).await;
    if linger {
        discard_until_eof(&mut rd, cfg.linger).await;
    }
}

/// Reads and drops bytes until the peer closes or `limit` passes.
async fn discard_until_eof<R: AsyncRead + Unpin>(rd: &mut R, limit: Duration) {
    let drain = async {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(limit, drain).await;
}

fn refuse_handshake(node: &Node, peer: SocketAddr, why: &str) {
    bump(&node.stats().handshake_failed);
    eprintln!("qbd-node: {peer}: {why}");
}

/// Reads the `ClientHello`, answers with the `ServerHello`.
async fn handshake(
    node: &Node,
    key: &ClusterKey,
    rd: &mut BufReader<OwnedReadHalf>,
    wr: &mut OwnedWriteHalf,
) -> Result<(Session, String), ProtoError> {
    let mut frame = Vec::new();
    let got = read_frame(rd, MAX_HELLO, &mut frame)
        .await
        .map_err(|e| ProtoError::Handshake(e.to_string()))?;
    if !got {
        return Err(ProtoError::Handshake("closed before the hello".into()));
    }
    if FrameHeader::decode(&frame)?.kind != FrameKind::ClientHello {
        return Err(ProtoError::Handshake(
            "first frame is not a ClientHello".into(),
        ));
    }
    let (session, client, reply) = session::accept(key, fresh_nonce(), &node.hello(), &frame)?;
    wr.write_all(&reply)
        .await
        .map_err(|e| ProtoError::Handshake(format!("cannot send the hello: {e}")))?;
    Ok((session, client))
}

/// Opens frames and runs their requests until EOF, shutdown, a violation
/// or a write failure.
async fn read_loop(
    node: &Arc<Node>,
    opener: &mut Opener,
    rd: &mut BufReader<OwnedReadHalf>,
    out: &Arc<Outbox>,
    stop: &mut watch::Receiver<bool>,
) -> End {
    let mut frame = Vec::new();
    // The box of the last request that finished inline, reused for the next.
    let mut spare = None;
    loop {
        if !frame_buffered(rd.buffer()) {
            out.flush();
        }
        let read = tokio::select! {
            biased;
            _ = stopped(stop) => return End::Shutdown,
            () = out.broken.notified() => return End::Unwritable,
            r = read_frame(rd, qbd_core::proto::msg::MAX_PAYLOAD, &mut frame) => r,
        };
        match read {
            Ok(true) => {}
            Ok(false) => return End::Eof,
            Err(ReadError::Io(e)) => return End::Io(e),
            Err(ReadError::Proto(e)) => return End::Violation(e),
        }
        let (hdr, decoded) = match opener.open_request(&frame) {
            Ok(x) => x,
            Err(e) => return End::Violation(e),
        };
        let id = hdr.request_id;
        let permit = match Arc::clone(&out.limit).try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::NoPermits) => {
                out.flush();
                match Arc::clone(&out.limit).acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return End::Shutdown,
                }
            }
            Err(TryAcquireError::Closed) => return End::Shutdown,
        };
        let req = match decoded {
            Ok(r) => r,
            Err(e) => {
                bump(&node.stats().malformed);
                let message = format!("undecodable request: {e}");
                let resp = Response::Error {
                    code: ErrorCode::Invalid,
                    message,
                };
                out.push(id, &resp, permit);
                continue;
            }
        };
        let mut call = reuse(&mut spare, handle(Arc::clone(node), req));
        let first = poll_fn(|cx| Poll::Ready(poll_call(call.as_mut(), cx))).await;
        let queued = match first {
            Poll::Ready(resp) => {
                bump(&node.stats().requests);
                let queued = out.push(id, &resp, permit);
                spare = Some(call);
                queued
            }
            Poll::Pending => {
                let (node, out) = (Arc::clone(node), Arc::clone(out));
                tokio::spawn(async move {
                    let resp = poll_fn(|cx| poll_call(call.as_mut(), cx)).await;
                    drop(call);
                    bump(&node.stats().requests);
                    out.push(id, &resp, permit);
                    out.flush();
                });
                0
            }
        };
        if queued >= FLUSH_AT {
            out.flush();
        }
    }
}

/// Whether `buf` starts with a whole frame (or with bytes that cannot be
/// one: reading them fails without waiting).
fn frame_buffered(buf: &[u8]) -> bool {
    match buf.get(..HEADER_LEN).map(FrameHeader::decode) {
        None => false,
        Some(Ok(h)) => buf.len() >= h.frame_len(),
        Some(Err(_)) => true,
    }
}

/// A request's handling, owning what it needs so that it can move into a
/// task of its own.
async fn handle(node: Arc<Node>, req: Request) -> Response {
    node.handle(req).await
}

/// Boxes `call`, in the spare box if there is one (a finished call of the
/// same type), so that calls finishing inline cost no allocation.
fn reuse<F: Future>(spare: &mut Option<Pin<Box<F>>>, call: F) -> Pin<Box<F>> {
    match spare.take() {
        Some(mut b) => {
            b.set(call);
            b
        }
        None => Box::pin(call),
    }
}

/// Polls a request's handling; a panic answers an `Io` error instead of
/// taking the connection down.
fn poll_call<F: Future<Output = Response>>(
    call: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<Response> {
    catch_unwind(AssertUnwindSafe(|| call.poll(cx))).unwrap_or_else(|_| {
        Poll::Ready(Response::Error {
            code: ErrorCode::Io,
            message: "internal error: the request's handler panicked".into(),
        })
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the reader, request tasks and the writer share under one lock.
#[derive(Debug)]
struct State {
    /// The session's sending half: frames are sealed as they are queued.
    sealer: Sealer,
    /// Sealed frames not yet taken by the writer.
    queued: Vec<u8>,
    /// Permits the queued answers hold.
    permits: u32,
    /// Scratch buffer for encoding one answer's payload.
    scratch: Vec<u8>,
    /// Someone holds the writer role.
    writing: bool,
    /// Writing failed: answers are dropped from now on.
    failed: bool,
    /// Why writing failed, for the connection to report.
    error: Option<io::Error>,
}

/// The writer's side: the socket and the batch being written.
#[derive(Debug)]
struct Sink {
    w: OwnedWriteHalf,
    batch: Vec<u8>,
    /// Bytes of `batch` written.
    pos: usize,
    /// Permits of `batch`.
    permits: u32,
    /// Permits of batches written during this turn as writer, released
    /// when the turn ends.
    written: u32,
}

/// A connection's outgoing answers and the socket they go to.
#[derive(Debug)]
struct Outbox {
    state: Mutex<State>,
    /// Locked only by the writer (lock order: `sink`, then `state`).
    sink: Mutex<Sink>,
    /// The in-flight bound: one permit per request until its answer is
    /// written.
    limit: Arc<Semaphore>,
    /// Signalled (once) when writing fails, to stop the reader.
    broken: Notify,
}

impl Outbox {
    fn new(w: OwnedWriteHalf, sealer: Sealer, permits: u32) -> Self {
        Outbox {
            state: Mutex::new(State {
                sealer,
                queued: Vec::with_capacity(64 << 10),
                permits: 0,
                scratch: Vec::new(),
                writing: false,
                failed: false,
                error: None,
            }),
            sink: Mutex::new(Sink {
                w,
                batch: Vec::with_capacity(64 << 10),
                pos: 0,
                permits: 0,
                written: 0,
            }),
            limit: Arc::new(Semaphore::new(permits as usize)),
            broken: Notify::new(),
        }
    }

    /// Seals an answer into the queue (its permit returns once it is
    /// written); returns the bytes now queued. Does not write.
    fn push(&self, request_id: u64, resp: &Response, permit: OwnedSemaphorePermit) -> usize {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        if st.failed {
            return 0; // `permit` returns on drop
        }
        st.sealer
            .seal_message(request_id, resp, &mut st.scratch, &mut st.queued);
        if st.scratch.capacity() > KEEP_CAPACITY {
            st.scratch = Vec::new();
        }
        st.permits += 1;
        permit.forget();
        st.queued.len()
    }

    /// Writes the queued answers unless someone else is writing (then they
    /// will). Never waits: if the socket is full, a task of its own takes
    /// over the writer role.
    fn flush(self: &Arc<Self>) {
        {
            let mut st = lock(&self.state);
            if st.writing || st.queued.is_empty() {
                return;
            }
            st.writing = true;
        }
        // The socket's readiness is registered again by the task that
        // takes over, with its own waker.
        let mut cx = Context::from_waker(Waker::noop());
        if self.drive(&mut cx).is_pending() {
            let me = Arc::clone(self);
            tokio::spawn(async move { poll_fn(|cx| me.drive(cx)).await });
        }
    }

    /// The writer's turn: writes until nothing is queued, then gives up the
    /// role. Only the holder of the role calls this.
    fn drive(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut guard = lock(&self.sink);
        let sink = &mut *guard;
        loop {
            let result = loop {
                if sink.pos == sink.batch.len() {
                    break Ok(());
                }
                match Pin::new(&mut sink.w).poll_write(cx, &sink.batch[sink.pos..]) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(0)) => break Err(io::ErrorKind::WriteZero.into()),
                    Poll::Ready(Ok(n)) => sink.pos += n,
                    Poll::Ready(Err(e)) => break Err(e),
                }
            };
            match result {
                Ok(()) => {
                    sink.written += sink.permits;
                    sink.batch.clear();
                    if sink.batch.capacity() > KEEP_CAPACITY {
                        sink.batch.shrink_to(KEEP_CAPACITY);
                    }
                    (sink.pos, sink.permits) = (0, 0);
                    let mut st = lock(&self.state);
                    if st.queued.is_empty() {
                        st.writing = false;
                        drop(st);
                        let written = std::mem::take(&mut sink.written);
                        self.limit.add_permits(written as usize);
                        return Poll::Ready(());
                    }
                    std::mem::swap(&mut st.queued, &mut sink.batch);
                    sink.permits = std::mem::take(&mut st.permits);
                }
                Err(e) => {
                    let mut st = lock(&self.state);
                    let lost = st.permits + sink.permits + sink.written;
                    st.queued.clear();
                    st.permits = 0;
                    st.failed = true;
                    st.error.get_or_insert(e);
                    st.writing = false;
                    drop(st);
                    sink.batch.clear();
                    (sink.pos, sink.permits, sink.written) = (0, 0, 0);
                    self.limit.add_permits(lost as usize);
                    self.broken.notify_one();
                    return Poll::Ready(());
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Io(std::io::Error),
    #[error(transparent)]
    Proto(#[from] ProtoError),
}

/// Reads one whole frame (header, payload, MAC) into `frame`, replacing
/// its contents; `false` on EOF before its first byte. Checks the header's
/// bounds before growing the buffer.
async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    max_payload: u32,
    frame: &mut Vec<u8>,
) -> Result<bool, ReadError> {
    let mut hdr = [0u8; HEADER_LEN];
    if rd.read(&mut hdr[..1]).await.map_err(ReadError::Io)? == 0 {
        return Ok(false);
    }
    read_exact(rd, &mut hdr[1..]).await?;
    let h = FrameHeader::decode(&hdr)?;
    if h.payload_len > max_payload {
        return Err(ProtoError::malformed("frame", "payload too long").into());
    }
    frame.clear();
    frame.extend_from_slice(&hdr);
    frame.resize(h.frame_len(), 0);
    read_exact(rd, &mut frame[HEADER_LEN..]).await?;
    Ok(true)
}

/// `read_exact`, with EOF in the middle of a frame counted as malformed.
async fn read_exact<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut [u8]) -> Result<(), ReadError> {
    match rd.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(ProtoError::malformed("frame", "truncated").into())
        }
        Err(e) => Err(ReadError::Io(e)),
    }
}

/// Resolves once the node is shutting down.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// 32 fresh random bytes (uuid v4 draws them from the OS).
fn fresh_nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    n[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    n[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use qbd_core::proto::frame::MAC_LEN;

    fn header(payload_len: u32) -> [u8; HEADER_LEN] {
        FrameHeader {
            kind: FrameKind::Request,
            opcode: 1,
            flags: 0,
            covered: 0,
            payload_len,
            request_id: 7,
            seq: 1,
        }
        .encode()
    }

    #[tokio::test]
    async fn reads_whole_frames_and_eof_between_them() {
        let mut bytes = header(3).to_vec();
        bytes.extend_from_slice(&[1, 2, 3]);
        bytes.extend_from_slice(&[9; MAC_LEN]);
        let mut rd = &bytes[..];
        let mut f = vec![5; 200];
        assert!(read_frame(&mut rd, 100, &mut f).await.expect("frame"));
        assert_eq!(f, bytes);
        assert!(!read_frame(&mut rd, 100, &mut f).await.expect("eof"));
    }

    #[tokio::test]
    async fn rejects_garbage_truncation_and_oversize() {
        let mut f = Vec::new();
        let garbage = [0x55u8; 64];
        let r = read_frame(&mut &garbage[..], 100, &mut f).await;
        assert!(matches!(r, Err(ReadError::Proto(_))));
        let truncated = header(10);
        let r = read_frame(&mut &truncated[..], 100, &mut f).await;
        assert!(matches!(r, Err(ReadError::Proto(_))));
        let big = header(101);
        let r = read_frame(&mut &big[..], 100, &mut f).await;
        assert!(matches!(r, Err(ReadError::Proto(_))));
    }

    #[test]
    fn whole_frames_are_recognised_in_the_buffer() {
        let mut bytes = header(3).to_vec();
        assert!(!frame_buffered(&bytes[..HEADER_LEN - 1]));
        assert!(!frame_buffered(&bytes));
        bytes.extend_from_slice(&[1, 2, 3]);
        bytes.extend_from_slice(&[9; MAC_LEN]);
        assert!(frame_buffered(&bytes));
        assert!(frame_buffered(&[0x55; HEADER_LEN]));
    }

    #[test]
    fn nonces_are_fresh() {
        assert_ne!(fresh_nonce(), fresh_nonce());
    }

    const KEY: ClusterKey = ClusterKey([0x3c; 32]);
    const PATIENCE: Duration = Duration::from_secs(10);

    /// A node served with `cfg`, a connected session, and the node's
    /// `CreateVolume` lock held (so a `CreateVolume` stays Pending).
    struct Blocked {
        _dir: tempfile::TempDir,
        node: Arc<Node>,
        stream: TcpStream,
        session: Session,
        _stop: tokio::sync::oneshot::Sender<()>,
    }

    async fn connect(cfg: ConnConfig) -> Blocked {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = Arc::new(Node::open(dir.path(), "conn-test").expect("node"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = crate::serve::serve_with(Arc::clone(&node), listener, KEY, cfg, stopped);
        tokio::spawn(served);
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let (hs, hello) = session::ClientHandshake::start(&KEY, fresh_nonce(), "conn-test");
        stream.write_all(&hello).await.expect("hello");
        let mut reply = Vec::new();
        assert!(
            read_frame(&mut stream, MAX_HELLO, &mut reply)
                .await
                .expect("server hello")
        );
        let (session, _) = hs.finish(&reply).expect("handshake");
        Blocked {
            _dir: dir,
            node,
            stream,
            session,
            _stop: stop,
        }
    }

    impl Blocked {
        async fn send(&mut self, id: u64, req: &Request) {
            let mut payload = Vec::new();
            req.encode(&mut payload);
            let mut frame = Vec::new();
            self.session
                .seal(FrameKind::Request, req.opcode(), id, &payload, &mut frame);
            self.stream.write_all(&frame).await.expect("send");
        }

        async fn receive(&mut self, patience: Duration) -> Option<(u64, Response)> {
            let mut frame = Vec::new();
            let read = read_frame(&mut self.stream, u32::MAX, &mut frame);
            let got = tokio::time::timeout(patience, read).await.ok()?;
            assert!(got.expect("answer"), "connection closed");
            let (hdr, resp) = self.session.open_response(&frame).expect("answer verifies");
            let resp = resp.expect("answer decodes");
            Some((hdr.request_id, resp))
        }
    }

    fn create(node: &Node) -> Request {
        let meta = qbd_core::meta::volume::VolumeMeta {
            format_version: 1,
            name: "conn".into(),
            uuid: uuid::Uuid::from_u128(0x5e),
            number: 4,
            size: 4 << 20,
            block_size: 4096,
            chunk_size: 4 << 20,
            redundancy: "replicate:1".into(),
            read_only: false,
            append_only: false,
            epoch: 0,
            master: "conn-test".into(),
            placement: vec![node.id()],
        };
        Request::CreateVolume {
            meta: toml::to_string(&meta).expect("meta encodes"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocked_request_does_not_hold_up_later_ones() {
        let mut c = connect(ConnConfig::default()).await;
        let node = Arc::clone(&c.node);
        let held = node.creating().await;
        c.send(1, &create(&node)).await;
        c.send(2, &Request::Ping).await;
        c.send(3, &Request::Ping).await;
        assert_eq!(c.receive(PATIENCE).await, Some((2, Response::Pong)));
        assert_eq!(c.receive(PATIENCE).await, Some((3, Response::Pong)));
        drop(held);
        assert_eq!(c.receive(PATIENCE).await, Some((1, Response::Done)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_in_flight_bound_holds_later_requests_back() {
        let cfg = ConnConfig {
            max_in_flight: 1,
            ..ConnConfig::default()
        };
        let mut c = connect(cfg).await;
        let node = Arc::clone(&c.node);
        let held = node.creating().await;
        c.send(1, &create(&node)).await;
        c.send(2, &Request::Ping).await;
        assert_eq!(c.receive(Duration::from_millis(300)).await, None);
        drop(held);
        assert_eq!(c.receive(PATIENCE).await, Some((1, Response::Done)));
        assert_eq!(c.receive(PATIENCE).await, Some((2, Response::Pong)));
    }
}
