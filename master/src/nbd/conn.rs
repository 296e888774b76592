//! The transmission phase of one connection.
//!
//! The reader (the connection task itself) reads a request, checks it
//! ([`check`]) and polls the device call once, inline. Calls to directory
//! backends finish on that first poll (their I/O is synchronous); their
//! reply is encoded into the connection's outgoing queue at once. A call
//! that is not ready (a node's answer is awaited) joins the connection's
//! running calls ([`Calls`]), which the same task polls alongside reading
//! the next request: requests of one connection never wait for each other,
//! and no request costs a task spawn or a wake-up of its own. Whatever
//! finished between two polls of the task is answered with one write, so a
//! transport that completes a burst of answers at once wakes the
//! connection once and gets one `writev` back.
//!
//! Writing: whoever queues a reply may also write the queue to the socket,
//! but only one party at a time holds that role (the "writer"); the others
//! just append, and the writer keeps going until the queue is empty, so
//! replies never interleave and bursts coalesce into one vectored write.
//! The reader defers writing while the next request is already buffered
//! (up to [`FLUSH_AT`] bytes), so a burst of requests is answered with one
//! syscall; it writes before it could block (on the socket or on the
//! budget). When the socket is full the writer role moves to a task of its
//! own, so the reader never blocks on writing.
//!
//! Backpressure: every request holds permits of a per-connection
//! [`Semaphore`] until its reply is written (1 permit, plus 1 per
//! [`BUDGET_UNIT`] of data buffer), so at most [`BUDGET`] requests and about
//! `BUDGET × BUDGET_UNIT` bytes of buffers are in flight; when none are left
//! the reader stops reading.
//!
//! Ending: on `NBD_CMD_DISC`, shutdown, a read error or a protocol
//! violation the reader stops; the running calls still complete (the
//! connection task drives them to the end) and their replies are written;
//! then the socket is shut down. When writing fails (client gone), the
//! reader stops too and the remaining device calls finish with nowhere to
//! send their replies. [`serve`] returns only when no request of the
//! connection is running.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};

use futures_util::stream::{FuturesUnordered, Stream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, BufReader};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError, watch};

use super::Error;
use super::handshake::{Negotiated, skip};
use super::wire::{self, Command, MAX_PAYLOAD, RequestHeader, SimpleReply, cmd_flags, errno};
use crate::device::{BlockDevice, DeviceResult};

/// Permits per connection: the bound on in-flight requests.
pub(crate) const BUDGET: u32 = 128;
/// Buffer bytes one extra permit stands for.
pub(crate) const BUDGET_UNIT: u32 = 512 << 10;
/// Longest refused WRITE payload that is read and discarded rather than
/// dropping the client.
pub(crate) const MAX_SKIP: u32 = 2 * MAX_PAYLOAD;
/// The reader writes its queued replies once they reach this many bytes,
/// even if more requests are buffered.
const FLUSH_AT: usize = 128 << 10;
/// READ data at least this long is queued by ownership, not copied.
const LARGE: usize = 16 << 10;
/// Slices per vectored write.
const MAX_SLICES: usize = 64;
/// Queue buffer capacity kept after a burst.
const KEEP_CAPACITY: usize = 1 << 20;
/// A checked request, ready for the device.
#[derive(Debug)]
enum Op {
    Read {
        offset: u64,
        len: u32,
    },
    Write {
        offset: u64,
        data: Vec<u8>,
        fua: bool,
    },
    Flush,
    Trim {
        offset: u64,
        len: u64,
        fua: bool,
    },
    Zeroes {
        offset: u64,
        len: u64,
        no_hole: bool,
        fua: bool,
    },
}

/// The outcome of a request, as the writer encodes it.
#[derive(Debug, PartialEq, Eq)]
enum Body {
    /// Success without data.
    Done,
    /// Failure of a non-READ command.
    Failed(u32),
    /// Successful READ.
    Data { offset: u64, data: Vec<u8> },
    /// Failed READ (needs an error chunk when structured).
    ReadFailed(u32),
}

/// What the reader got from the socket.
enum Incoming {
    Disc,
    Immediate(u64, Body, OwnedSemaphorePermit),
    Op(u64, Op, OwnedSemaphorePermit),
}

/// Validates a request against what was negotiated; `Err` is the NBD errno.
///
/// FUA is accepted on every command (clients set it on reads too); DF only
/// on READ with structured replies; NO_HOLE only on WRITE_ZEROES. Ranges
/// beyond the end give ENOSPC for WRITE/WRITE_ZEROES and EINVAL otherwise.
pub(crate) fn check(h: &RequestHeader, n: &Negotiated) -> Result<(), u32> {
    let allowed = match h.command {
        Command::Read if n.structured => cmd_flags::FUA | cmd_flags::DF,
        Command::Read | Command::Write | Command::Flush | Command::Trim => cmd_flags::FUA,
        Command::WriteZeroes => cmd_flags::FUA | cmd_flags::NO_HOLE,
        Command::Disc | Command::Unknown(_) => return Err(errno::EINVAL),
    };
    if h.flags & !allowed != 0 {
        return Err(errno::EINVAL);
    }
    let writes = matches!(
        h.command,
        Command::Write | Command::Trim | Command::WriteZeroes
    );
    if writes && n.read_only() {
        return Err(errno::EPERM);
    }
    if h.command == Command::Flush {
        return Ok(()); // offset and length are reserved
    }
    if matches!(h.command, Command::Read | Command::Write) && h.length > MAX_PAYLOAD {
        return Err(errno::EINVAL);
    }
    match h.offset.checked_add(u64::from(h.length)) {
        Some(end) if end <= n.size => Ok(()),
        _ if matches!(h.command, Command::Write | Command::WriteZeroes) => Err(errno::ENOSPC),
        _ => Err(errno::EINVAL),
    }
}

/// Permits a request holds: one, plus one per started `BUDGET_UNIT` of buffer.
fn cost(buffer_len: u32) -> u32 {
    (1 + buffer_len.div_ceil(BUDGET_UNIT)).min(BUDGET)
}

/// Runs the transmission phase until DISC, shutdown (`stop` turns true) or
/// an error; returns once every request of the connection has finished.
pub(crate) async fn serve<D, R, W>(
    device: Arc<D>,
    r: &mut BufReader<R>,
    w: W,
    n: Negotiated,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Error>
where
    D: BlockDevice,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let budget = Arc::new(Semaphore::new(BUDGET as usize));
    let out = Arc::new(Outbox::new(w, Arc::clone(&budget), n.structured));
    let read_result = read_loop(&device, r, &out, &n, stop).await;
    out.flush().await;
    // Every permit is back once every reply is written (or dropped because
    // writing failed); permits return only after the writer role is free.
    let _ = budget.acquire_many(BUDGET).await;
    let failed = lock(&out.state).error.take();
    let write_result = match failed {
        Some(e) => Err(e),
        None => poll_fn(|cx| Pin::new(&mut lock(&out.sink).w).poll_shutdown(cx)).await,
    };
    read_result?;
    Ok(write_result?)
}

async fn read_loop<D, R, W>(
    device: &Arc<D>,
    r: &mut BufReader<R>,
    out: &Arc<Outbox<W>>,
    n: &Negotiated,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Error>
where
    D: BlockDevice,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut calls = Calls::new();
    // One registration for the connection's life, not one per request.
    let broken = out.broken.notified();
    tokio::pin!(broken);
    let result = async {
        loop {
            let incoming = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return Ok(()),
                () = &mut broken => return Ok(()), // writing failed; serve reports why
                incoming = calls.alongside(out, read_request(r, out, n)) => incoming?,
            };
            let queued = match incoming {
                Incoming::Disc => return Ok(()),
                Incoming::Immediate(cookie, body, permit) => out.push(cookie, body, permit),
                Incoming::Op(cookie, op, permit) => {
                    let read = matches!(op, Op::Read { .. });
                    let call = calls.boxed(request(Arc::clone(device), op));
                    calls.start(call, read, cookie, permit, out).await
                }
            };
            if queued >= FLUSH_AT {
                out.flush().await;
            }
        }
    }
    .await;
    // In-flight calls finish and their replies are queued even after a
    // read error, DISC or shutdown.
    poll_fn(|cx| calls.poll_finished(out, cx)).await;
    result
}

/// The device call of one request, owning what it needs.
async fn request<D: BlockDevice>(device: Arc<D>, op: Op) -> Body {
    execute(&*device, op).await
}

/// Boxes of finished calls kept for reuse, at most.
const SPARE_BOXES: usize = 32;

/// A connection's device calls that were not ready on their first poll.
/// The connection task drives them (no task, no cross-thread hop per
/// request): whatever finishes between two polls of the task is answered
/// with one write, and many completions cost one wake-up.
struct Calls<F> {
    running: FuturesUnordered<InFlight<F>>,
    /// Boxes of finished calls, reused so that calls cost no allocation
    /// beyond their slot in `running`.
    spare: Vec<Pin<Box<F>>>,
}

impl<F: Future<Output = Body>> Calls<F> {
    fn new() -> Self {
        Calls {
            running: FuturesUnordered::new(),
            spare: Vec::new(),
        }
    }

    /// Boxes `call`, in a spare box if there is one.
    fn boxed(&mut self, call: F) -> Pin<Box<F>> {
        match self.spare.pop() {
            Some(mut b) => {
                b.set(call);
                b
            }
            None => Box::pin(call),
        }
    }

    fn recycle(&mut self, b: Pin<Box<F>>) {
        if self.spare.len() < SPARE_BOXES {
            self.spare.push(b);
        }
    }

    /// Polls `call` once; queues its reply if it is done (returns the bytes
    /// queued), else adds it to the running calls (returns 0).
    async fn start<W>(
        &mut self,
        mut call: Pin<Box<F>>,
        read: bool,
        cookie: u64,
        permit: OwnedSemaphorePermit,
        out: &Arc<Outbox<W>>,
    ) -> usize
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        match poll_fn(|cx| Poll::Ready(poll_call(call.as_mut(), read, cx))).await {
            Poll::Ready(body) => {
                self.recycle(call);
                out.push(cookie, body, permit)
            }
            Poll::Pending => {
                self.running.push(InFlight {
                    cookie,
                    read,
                    held: Some((call, permit)),
                });
                0
            }
        }
    }

    /// Runs `fut` while driving the running calls.
    async fn alongside<W, T>(&mut self, out: &Arc<Outbox<W>>, fut: impl Future<Output = T>) -> T
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let mut fut = std::pin::pin!(fut);
        poll_fn(|cx| {
            let _ = self.poll_finished(out, cx);
            fut.as_mut().poll(cx)
        })
        .await
    }

    /// Polls the running calls, queues the replies of those that finished
    /// and starts writing them; ready once none is running.
    fn poll_finished<W>(&mut self, out: &Arc<Outbox<W>>, cx: &mut Context<'_>) -> Poll<()>
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let mut queued = false;
        let poll = loop {
            match Pin::new(&mut self.running).poll_next(cx) {
                Poll::Ready(Some(f)) => {
                    out.push(f.cookie, f.body, f.permit);
                    self.recycle(f.call);
                    queued = true;
                }
                Poll::Ready(None) => break Poll::Ready(()),
                Poll::Pending => break Poll::Pending,
            }
        };
        if queued {
            out.kick(cx);
        }
        poll
    }
}

/// A running device call and what its reply needs.
struct InFlight<F> {
    cookie: u64,
    read: bool,
    /// The call and the request's permits; `None` once finished.
    held: Option<(Pin<Box<F>>, OwnedSemaphorePermit)>,
}

/// A finished call: its reply, and its box for reuse.
struct Finished<F> {
    cookie: u64,
    body: Body,
    permit: OwnedSemaphorePermit,
    call: Pin<Box<F>>,
}

impl<F: Future<Output = Body>> Future for InFlight<F> {
    type Output = Finished<F>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Finished<F>> {
        let this = &mut *self;
        let Some((call, _)) = this.held.as_mut() else {
            return Poll::Pending; // finished already (never polled again)
        };
        let body = ready!(poll_call(call.as_mut(), this.read, cx));
        let cookie = this.cookie;
        this.held.take().map_or(Poll::Pending, |(call, permit)| {
            Poll::Ready(Finished {
                cookie,
                body,
                permit,
                call,
            })
        })
    }
}

/// Polls a device call; a panic in the device answers EIO instead of
/// taking the connection down.
fn poll_call<F: Future<Output = Body>>(
    call: Pin<&mut F>,
    read: bool,
    cx: &mut Context<'_>,
) -> Poll<Body> {
    catch_unwind(AssertUnwindSafe(|| call.poll(cx))).unwrap_or(Poll::Ready(if read {
        Body::ReadFailed(errno::EIO)
    } else {
        Body::Failed(errno::EIO)
    }))
}

/// Reads one request (header and any payload). Cancel-safe only in the
/// sense that cancelling drops the connection's framing, which is what
/// shutdown wants. Writes the queued replies before anything that could
/// block: reading from the socket or waiting for budget.
async fn read_request<R, W>(
    r: &mut BufReader<R>,
    out: &Arc<Outbox<W>>,
    n: &Negotiated,
) -> Result<Incoming, Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    if r.buffer().len() < RequestHeader::LEN {
        out.flush().await;
    }
    let mut hdr = [0; RequestHeader::LEN];
    r.read_exact(&mut hdr).await?;
    let h = RequestHeader::decode(&hdr)?;
    if h.command == Command::Disc {
        return Ok(Incoming::Disc);
    }
    let verdict = check(&h, n);
    let buffered = match (h.command, verdict) {
        (Command::Read | Command::Write, Ok(())) => h.length,
        _ => 0,
    };
    let permits = cost(buffered);
    let permit = match Arc::clone(&out.budget).try_acquire_many_owned(permits) {
        Ok(p) => p,
        Err(TryAcquireError::NoPermits) => {
            out.flush().await;
            Arc::clone(&out.budget)
                .acquire_many_owned(permits)
                .await
                .map_err(|_| io::Error::other("request budget closed"))?
        }
        Err(TryAcquireError::Closed) => {
            return Err(io::Error::other("request budget closed").into());
        }
    };
    if h.command == Command::Write && r.buffer().len() < h.length as usize {
        out.flush().await;
    }
    if let Err(e) = verdict {
        if h.command == Command::Write {
            if h.length > MAX_SKIP {
                return Err(Error::PayloadTooLong(h.length));
            }
            skip(r, u64::from(h.length)).await?;
        }
        let body = if h.command == Command::Read {
            Body::ReadFailed(e)
        } else {
            Body::Failed(e)
        };
        return Ok(Incoming::Immediate(h.cookie, body, permit));
    }
    let (offset, len, fua) = (h.offset, h.length, h.flags & cmd_flags::FUA != 0);
    let op = match h.command {
        _ if len == 0 && h.command != Command::Flush => {
            // Zero-length requests: unspecified by the spec; succeed without
            // touching the device.
            let body = if h.command == Command::Read {
                Body::Data {
                    offset,
                    data: Vec::new(),
                }
            } else {
                Body::Done
            };
            return Ok(Incoming::Immediate(h.cookie, body, permit));
        }
        Command::Read => Op::Read { offset, len },
        Command::Write => Op::Write {
            offset,
            data: read_payload(r, len).await?,
            fua,
        },
        Command::Trim => Op::Trim {
            offset,
            len: u64::from(len),
            fua,
        },
        Command::WriteZeroes => {
            let no_hole = h.flags & cmd_flags::NO_HOLE != 0;
            Op::Zeroes {
                offset,
                len: u64::from(len),
                no_hole,
                fua,
            }
        }
        Command::Flush | Command::Disc | Command::Unknown(_) => Op::Flush,
    };
    Ok(Incoming::Op(h.cookie, op, permit))
}

/// Reads exactly `len` payload bytes into a fresh buffer (not zero-filled first).
async fn read_payload<R: AsyncRead + Unpin>(r: &mut R, len: u32) -> io::Result<Vec<u8>> {
    let len = len as usize;
    let mut data = Vec::with_capacity(len);
    let mut limited = r.take(len as u64);
    while data.len() < len {
        if limited.read_buf(&mut data).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(data)
}

async fn execute<D: BlockDevice>(device: &D, op: Op) -> Body {
    match op {
        Op::Read { offset, len } => match device.read(offset, len).await {
            Ok(data) if data.len() == len as usize => Body::Data { offset, data },
            Ok(_) => Body::ReadFailed(errno::EIO), // device broke its contract
            Err(e) => Body::ReadFailed(e.nbd_errno()),
        },
        Op::Write { offset, data, fua } => done(device.write(offset, data, fua).await),
        Op::Flush => done(device.flush().await),
        Op::Trim { offset, len, fua } => done(device.trim(offset, len, fua).await),
        Op::Zeroes {
            offset,
            len,
            no_hole,
            fua,
        } => done(device.write_zeroes(offset, len, no_hole, fua).await),
    }
}

fn done(r: DeviceResult<()>) -> Body {
    match r {
        Ok(()) => Body::Done,
        Err(e) => Body::Failed(e.nbd_errno()),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Encoded replies in order: `bytes`, with `large` data buffers spliced in
/// at the given offsets of `bytes`.
#[derive(Debug, Default)]
struct Batch {
    bytes: Vec<u8>,
    large: VecDeque<(usize, Vec<u8>)>,
    /// Total bytes, `bytes` and `large` together.
    len: usize,
    /// Budget permits its replies hold, released once they are written.
    permits: u32,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn put(&mut self, b: &[u8]) {
        self.bytes.extend_from_slice(b);
        self.len += b.len();
    }

    fn put_data(&mut self, data: Vec<u8>) {
        if data.len() >= LARGE {
            self.len += data.len();
            self.large.push_back((self.bytes.len(), data));
        } else {
            self.put(&data);
        }
    }

    fn encode(&mut self, cookie: u64, body: Body, structured: bool) {
        let simple = |error| SimpleReply { error, cookie }.encode();
        match body {
            Body::Done => self.put(&simple(0)),
            Body::Failed(e) => self.put(&simple(e)),
            Body::Data { data, .. } if !structured => {
                self.put(&simple(0));
                self.put_data(data);
            }
            Body::Data { data, .. } if data.is_empty() => {
                self.put(&wire::encode_none_chunk(cookie));
            }
            Body::Data { offset, data } => {
                // `data.len()` <= MAX_PAYLOAD, checked before the read.
                let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
                self.put(&wire::encode_read_chunk_header(cookie, offset, len));
                self.put_data(data);
            }
            Body::ReadFailed(e) if structured => self.put(&wire::encode_error_chunk(cookie, e)),
            Body::ReadFailed(e) => self.put(&simple(e)),
        }
    }

    fn clear(&mut self) {
        self.bytes.clear();
        if self.bytes.capacity() > KEEP_CAPACITY {
            self.bytes.shrink_to(KEEP_CAPACITY);
        }
        self.large.clear();
        self.len = 0;
        self.permits = 0;
    }
}

/// The writer's side: the socket and the batch being written.
#[derive(Debug)]
struct Sink<W> {
    w: W,
    batch: Batch,
    /// Bytes of `batch.bytes` written.
    pos: usize,
    /// Bytes of `batch.large.front()` written (when it is due, at `pos`).
    lpos: usize,
    /// Permits of batches written during this turn as writer, released when
    /// the turn ends.
    written: u32,
}

impl<W: AsyncWrite + Unpin> Sink<W> {
    fn batch_done(&self) -> bool {
        self.pos == self.batch.bytes.len() && self.batch.large.is_empty()
    }

    /// Writes the rest of the batch.
    fn poll_write_batch(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.batch_done() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let k = slices_of(&self.batch, self.pos, self.lpos, &mut slices);
            let n = ready!(Pin::new(&mut self.w).poll_write_vectored(cx, &slices[..k]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            match self.batch.large.front() {
                Some((at, data)) if *at == self.pos => {
                    let step = n.min(data.len() - self.lpos);
                    self.lpos += step;
                    n -= step;
                    if self.lpos == data.len() {
                        self.batch.large.pop_front();
                        self.lpos = 0;
                    }
                }
                next => {
                    let end = next.map_or(self.batch.bytes.len(), |(at, _)| *at);
                    let step = n.min(end - self.pos);
                    self.pos += step;
                    n -= step;
                }
            }
        }
    }
}

/// Fills `out` with the unwritten rest of `batch` from (`pos`, `lpos`);
/// returns how many slices it used.
fn slices_of<'a>(
    batch: &'a Batch,
    mut pos: usize,
    mut lpos: usize,
    out: &mut [IoSlice<'a>],
) -> usize {
    let mut k = 0;
    let mut large = batch.large.iter().peekable();
    while k < out.len() {
        match large.peek() {
            Some((at, data)) if *at == pos => {
                out[k] = IoSlice::new(&data[lpos..]);
                lpos = 0;
                large.next();
            }
            Some((at, _)) => {
                out[k] = IoSlice::new(&batch.bytes[pos..*at]);
                pos = *at;
            }
            None if pos < batch.bytes.len() => {
                out[k] = IoSlice::new(&batch.bytes[pos..]);
                pos = batch.bytes.len();
            }
            None => break,
        }
        k += 1;
    }
    k
}

/// What the reader, request tasks and the writer share under one lock.
#[derive(Debug, Default)]
struct State {
    /// Replies queued and not yet taken by the writer.
    queued: Batch,
    /// Someone holds the writer role.
    writing: bool,
    /// Writing failed: replies are dropped from now on.
    failed: bool,
    /// Why writing failed, for [`serve`] to report.
    error: Option<io::Error>,
}

/// A connection's outgoing replies and the socket they go to.
#[derive(Debug)]
struct Outbox<W> {
    state: Mutex<State>,
    /// Locked only by the writer (lock order: `sink`, then `state`).
    sink: Mutex<Sink<W>>,
    budget: Arc<Semaphore>,
    /// Signalled (once) when writing fails, to stop the reader.
    broken: Notify,
    structured: bool,
}

impl<W: AsyncWrite + Unpin + Send + 'static> Outbox<W> {
    fn new(w: W, budget: Arc<Semaphore>, structured: bool) -> Self {
        Self {
            state: Mutex::new(State::default()),
            sink: Mutex::new(Sink {
                w,
                batch: Batch::default(),
                pos: 0,
                lpos: 0,
                written: 0,
            }),
            budget,
            broken: Notify::new(),
            structured,
        }
    }

    /// Queues a reply (its permits return once it is written); returns the
    /// bytes now queued. Does not write.
    fn push(&self, cookie: u64, body: Body, permit: OwnedSemaphorePermit) -> usize {
        let mut st = lock(&self.state);
        if st.failed {
            return 0; // `permit` returns on drop
        }
        st.queued.encode(cookie, body, self.structured);
        let permits = u32::try_from(permit.num_permits()).unwrap_or(BUDGET);
        st.queued.permits += permits;
        permit.forget();
        st.queued.len
    }

    /// Writes the queued replies unless someone else is writing (then they
    /// will). Never waits: if the socket is full, a task of its own takes
    /// over the writer role.
    async fn flush(self: &Arc<Self>) {
        poll_fn(|cx| {
            self.kick(cx);
            Poll::Ready(())
        })
        .await;
    }

    fn kick(self: &Arc<Self>, cx: &mut Context<'_>) {
        {
            let mut st = lock(&self.state);
            if st.writing || st.queued.is_empty() {
                return;
            }
            st.writing = true;
        }
        if self.drive(cx).is_pending() {
            let me = Arc::clone(self);
            tokio::spawn(async move { poll_fn(|cx| me.drive(cx)).await });
        }
    }

    /// The writer's turn: writes until nothing is queued, then gives up the
    /// role. Only the holder of the role calls this.
    fn drive(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut sink = lock(&self.sink);
        loop {
            let result = match sink.poll_write_batch(cx) {
                Poll::Ready(Ok(())) => Pin::new(&mut sink.w).poll_flush(cx),
                other => other,
            };
            match result {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => {
                    sink.written += sink.batch.permits;
                    sink.batch.clear();
                    (sink.pos, sink.lpos) = (0, 0);
                    let mut st = lock(&self.state);
                    if st.queued.is_empty() {
                        st.writing = false;
                        drop(st);
                        let written = std::mem::take(&mut sink.written);
                        self.budget.add_permits(written as usize);
                        return Poll::Ready(());
                    }
                    std::mem::swap(&mut st.queued, &mut sink.batch);
                }
                Poll::Ready(Err(e)) => {
                    let mut st = lock(&self.state);
                    let lost = st.queued.permits + sink.batch.permits + sink.written;
                    st.queued.clear();
                    st.failed = true;
                    st.error.get_or_insert(e);
                    st.writing = false;
                    drop(st);
                    sink.batch.clear();
                    (sink.pos, sink.lpos, sink.written) = (0, 0, 0);
                    self.budget.add_permits(lost as usize);
                    self.broken.notify_one();
                    return Poll::Ready(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nbd::wire::transmission_flags as tf;

    fn neg(structured: bool, read_only: bool) -> Negotiated {
        let mut flags = tf::HAS_FLAGS;
        if read_only {
            flags |= tf::READ_ONLY;
        }
        Negotiated {
            size: 1 << 20,
            flags,
            structured,
        }
    }

    fn req(command: Command, flags: u16, offset: u64, length: u32) -> RequestHeader {
        RequestHeader {
            flags,
            command,
            cookie: 1,
            offset,
            length,
        }
    }

    #[test]
    fn check_ranges() {
        let n = neg(false, false);
        assert_eq!(check(&req(Command::Read, 0, 0, 4096), &n), Ok(()));
        assert_eq!(check(&req(Command::Read, 0, (1 << 20) - 1, 1), &n), Ok(()));
        assert_eq!(
            check(&req(Command::Read, 0, 1 << 20, 1), &n),
            Err(errno::EINVAL)
        );
        assert_eq!(
            check(&req(Command::Read, 0, u64::MAX, 2), &n),
            Err(errno::EINVAL)
        );
        assert_eq!(
            check(&req(Command::Trim, 0, 1 << 20, 1), &n),
            Err(errno::EINVAL)
        );
        assert_eq!(
            check(&req(Command::Write, 0, 1 << 20, 1), &n),
            Err(errno::ENOSPC)
        );
        assert_eq!(
            check(&req(Command::WriteZeroes, 0, 1, 1 << 20), &n),
            Err(errno::ENOSPC)
        );
        assert_eq!(check(&req(Command::Flush, 0, 77, 99), &n), Ok(()));
    }

    #[test]
    fn check_sizes_flags_and_permissions() {
        let n = neg(false, false);
        let big = Negotiated { size: 1 << 40, ..n };
        assert_eq!(
            check(&req(Command::Read, 0, 0, MAX_PAYLOAD + 1), &big),
            Err(errno::EINVAL)
        );
        assert_eq!(
            check(&req(Command::Write, 0, 0, MAX_PAYLOAD + 1), &big),
            Err(errno::EINVAL)
        );
        assert_eq!(check(&req(Command::Trim, 0, 0, u32::MAX), &big), Ok(()));
        assert_eq!(
            check(
                &req(Command::WriteZeroes, cmd_flags::NO_HOLE, 0, u32::MAX),
                &big
            ),
            Ok(())
        );
        assert_eq!(
            check(&req(Command::Write, cmd_flags::NO_HOLE, 0, 1), &n),
            Err(errno::EINVAL)
        );
        assert_eq!(
            check(&req(Command::Read, cmd_flags::DF, 0, 1), &n),
            Err(errno::EINVAL)
        );
        assert_eq!(
            check(&req(Command::Read, cmd_flags::DF, 0, 1), &neg(true, false)),
            Ok(())
        );
        assert_eq!(check(&req(Command::Read, cmd_flags::FUA, 0, 1), &n), Ok(()));
        assert_eq!(
            check(&req(Command::Read, 1 << 4, 0, 1), &n),
            Err(errno::EINVAL)
        );
        assert_eq!(
            check(&req(Command::Unknown(5), 0, 0, 1), &n),
            Err(errno::EINVAL)
        );
        let ro = neg(false, true);
        for c in [Command::Write, Command::Trim, Command::WriteZeroes] {
            assert_eq!(check(&req(c, 0, 0, 1), &ro), Err(errno::EPERM));
        }
        assert_eq!(check(&req(Command::Read, 0, 0, 1), &ro), Ok(()));
        assert_eq!(check(&req(Command::Flush, 0, 0, 0), &ro), Ok(()));
    }

    #[test]
    fn cost_bounds() {
        assert_eq!(cost(0), 1);
        assert_eq!(cost(4096), 2);
        assert_eq!(cost(BUDGET_UNIT), 2);
        assert_eq!(cost(MAX_PAYLOAD), 65);
        assert!(cost(u32::MAX) <= BUDGET);
    }

    fn flatten(b: &Batch) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let k = slices_of(b, 0, 0, &mut slices);
        slices[..k].iter().flat_map(|s| s.iter().copied()).collect()
    }

    async fn encoded(body: Body, structured: bool) -> Vec<u8> {
        let mut b = Batch::default();
        b.encode(7, body, structured);
        assert_eq!(b.len, flatten(&b).len());
        flatten(&b)
    }

    /// Accepts at most 1000 bytes per call, and returns Pending every other call.
    struct Trickle {
        out: Vec<u8>,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.calls += 1;
            if self.calls.is_multiple_of(2) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(1000);
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn batches_with_large_data_are_written_in_order_through_short_writes() {
        let mut b = Batch::default();
        let mut want = Vec::new();
        for i in 0..5u8 {
            let len = if i % 2 == 0 { LARGE + 3 } else { 100 };
            let data = vec![i; len];
            b.encode(
                u64::from(i),
                Body::Data {
                    offset: 0,
                    data: data.clone(),
                },
                false,
            );
            want.extend_from_slice(
                &SimpleReply {
                    error: 0,
                    cookie: u64::from(i),
                }
                .encode(),
            );
            want.extend_from_slice(&data);
        }
        assert_eq!(b.large.len(), 3);
        assert_eq!(flatten(&b), want);
        let mut sink = Sink {
            w: Trickle {
                out: Vec::new(),
                calls: 0,
            },
            batch: b,
            pos: 0,
            lpos: 0,
            written: 0,
        };
        poll_fn(|cx| sink.poll_write_batch(cx))
            .await
            .expect("write");
        assert!(sink.batch_done());
        assert_eq!(sink.w.out, want);
    }

    #[tokio::test]
    async fn reply_encoding_simple_and_structured() {
        let ok = SimpleReply {
            error: 0,
            cookie: 7,
        }
        .encode();
        assert_eq!(encoded(Body::Done, true).await, ok);
        let mut want = ok.to_vec();
        want.extend_from_slice(b"abc");
        assert_eq!(
            encoded(
                Body::Data {
                    offset: 3,
                    data: b"abc".to_vec()
                },
                false
            )
            .await,
            want
        );
        let mut want = wire::encode_read_chunk_header(7, 3, 3).to_vec();
        want.extend_from_slice(b"abc");
        assert_eq!(
            encoded(
                Body::Data {
                    offset: 3,
                    data: b"abc".to_vec()
                },
                true
            )
            .await,
            want
        );
        assert_eq!(
            encoded(
                Body::Data {
                    offset: 3,
                    data: vec![]
                },
                true
            )
            .await,
            wire::encode_none_chunk(7)
        );
        assert_eq!(
            encoded(Body::ReadFailed(22), true).await,
            wire::encode_error_chunk(7, 22)
        );
        assert_eq!(
            encoded(Body::ReadFailed(22), false).await,
            SimpleReply {
                error: 22,
                cookie: 7
            }
            .encode()
        );
        assert_eq!(
            encoded(Body::Failed(1), true).await,
            SimpleReply {
                error: 1,
                cookie: 7
            }
            .encode()
        );
    }
}
