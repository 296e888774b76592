//! [`Poller`]: a dedicated thread that owns a [`PacketSocket`], polls it
//! with a bounded spin before blocking, sends frames queued by other
//! threads and hands received frames to a [`Handler`].
//!
//! Why a thread: a wake-up costs ~24 µs here, four L2 round trips, so the
//! socket is polled by a thread that spins briefly when idle — never by a
//! tokio worker. The spin is bounded ([`PollerConfig::spin`]) and adapts
//! to how soon work follows a block (`spin.rs`); after it the thread blocks
//! in poll(2) on the socket and an eventfd doorbell, for at most
//! [`PollerConfig::block_timeout`] so the stop flag is always seen.
//!
//! Loop invariants:
//! - Every iteration checks the stop flag; every inner loop advances or
//!   exits (no unbounded retry on a full socket).
//! - No lost wake-up: the thread publishes `parked` before its last look at
//!   the queue and the handler; a producer pushes, sets `pending`, then
//!   rings the doorbell if it sees `parked` (all `SeqCst`).
//! - The spinning thread reads the `pending` flag, not the queue's mutex,
//!   so producers never contend with the spin.
//! - Frames the kernel refuses with a hard error (e.g. `EMSGSIZE`) are
//!   dropped and counted in `tx_dropped`; reliability is the engine's job.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::batch::FrameBatch;
use super::socket::{PacketSocket, SocketStats};
use super::spin::AdaptiveSpin;
use super::sys;

/// What the poller thread calls. All methods run on the poller thread;
/// frames pushed to `out` are sent right after the call returns.
pub trait Handler: Send + 'static {
    /// One received frame (a whole Ethernet frame, valid during the call).
    fn on_frame(&mut self, frame: &[u8], out: &mut FrameBatch);

    /// After the frames of one `recvmmsg` batch: the place to wake tokio
    /// tasks once per batch rather than once per frame.
    fn on_batch_end(&mut self, _out: &mut FrameBatch) {}

    /// Every loop iteration, and once more just before the thread blocks:
    /// run timers, take requests from other threads' queues (they ring
    /// [`PollerSender::wake`] after pushing). Returns the next deadline,
    /// which bounds how long the thread may block.
    fn on_tick(&mut self, _now: Instant, _out: &mut FrameBatch) -> Option<Instant> {
        None
    }
}

impl<F: FnMut(&[u8], &mut FrameBatch) + Send + 'static> Handler for F {
    fn on_frame(&mut self, frame: &[u8], out: &mut FrameBatch) {
        self(frame, out)
    }
}

/// Tunables of a [`Poller`].
#[derive(Debug, Clone)]
pub struct PollerConfig {
    /// How long to keep polling the idle socket before blocking (the
    /// ceiling, with `adaptive_spin`).
    pub spin: Duration,
    /// Adapt the spin between 0 and `spin` (`spin.rs`: grow when work
    /// came soon after the thread blocked, shrink when it did not), so
    /// idle threads stop taking cores from busy ones.
    pub adaptive_spin: bool,
    /// Yield the CPU (sched_yield) between polls while spinning, so a
    /// thread waiting for this core (the tokio worker that will submit the
    /// next request, the other side's poller on a small machine) runs at
    /// once instead of after the spin. Costs ~1 µs per poll when nothing
    /// else wants the core.
    pub yield_while_spinning: bool,
    /// Longest single block in poll(2); bounds how late a stop is seen
    /// even if the doorbell were lost.
    pub block_timeout: Duration,
    /// Frames [`PollerSender::send`] may queue before refusing.
    pub queue_frames: usize,
    /// Pin the thread to this CPU (benchmarks); `None` leaves it free.
    pub cpu: Option<usize>,
    /// Thread name.
    pub name: String,
}

impl Default for PollerConfig {
    fn default() -> Self {
        Self {
            spin: Duration::from_micros(50),
            adaptive_spin: true,
            yield_while_spinning: true,
            block_timeout: Duration::from_millis(20),
            queue_frames: 1024,
            cpu: None,
            name: "qbd-l2-poll".to_owned(),
        }
    }
}

/// Counters of a poller, cumulative since spawn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollerStats {
    /// The socket's own counters (published by the thread as it goes).
    pub socket: SocketStats,
    /// Times the thread blocked in poll(2) after its spin ran out.
    pub blocks: u64,
    /// Frames dropped because the kernel refused them with a hard error.
    pub tx_dropped: u64,
    /// Receive errors other than "nothing waiting" (e.g. interface down).
    pub rx_errors: u64,
}

/// What [`Poller::stop`] hands back.
#[derive(Debug)]
pub struct Stopped<H> {
    /// The socket, still open and bound.
    pub socket: PacketSocket,
    /// The handler, with whatever it accumulated.
    pub handler: H,
    /// Final counters.
    pub stats: PollerStats,
}

/// A running polling thread. Dropping it stops and joins the thread.
#[derive(Debug)]
pub struct Poller<H: Handler> {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Stopped<H>>>,
}

/// Queues frames for, and wakes, a [`Poller`]; cheap to clone, usable
/// from any thread (including tokio workers: it never blocks but on a
/// short mutex).
#[derive(Debug, Clone)]
pub struct PollerSender {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    parked: AtomicBool,
    /// Set after every push; cleared by the thread when it takes the queue.
    pending: AtomicBool,
    queue: Mutex<FrameBatch>,
    queue_frames: usize,
    doorbell: OwnedFd,
    counters: Counters,
}

#[derive(Debug, Default)]
struct Counters {
    rx_frames: AtomicU64,
    rx_truncated: AtomicU64,
    rx_filtered: AtomicU64,
    tx_frames: AtomicU64,
    syscalls: AtomicU64,
    blocks: AtomicU64,
    tx_dropped: AtomicU64,
    rx_errors: AtomicU64,
}

impl<H: Handler> Poller<H> {
    /// Starts the polling thread; it owns `socket` and `handler` until
    /// [`stop`](Self::stop).
    pub fn spawn(socket: PacketSocket, handler: H, config: PollerConfig) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            pending: AtomicBool::new(false),
            queue: Mutex::new(FrameBatch::with_capacity(config.queue_frames, 64 << 10)),
            queue_frames: config.queue_frames,
            doorbell: sys::eventfd()?,
            counters: Counters::default(),
        });
        let state = LoopState::new(socket, handler, Arc::clone(&shared), &config);
        let thread = std::thread::Builder::new()
            .name(config.name.clone())
            .spawn(move || {
                if let Some(cpu) = config.cpu {
                    // Best effort: a bad CPU number leaves the thread unpinned.
                    let _ = sys::pin_to_cpu(cpu);
                }
                state.run()
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// A handle to queue frames and wake the thread.
    pub fn sender(&self) -> PollerSender {
        PollerSender {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Counters as last published by the thread.
    pub fn stats(&self) -> PollerStats {
        self.shared.counters.snapshot()
    }

    /// True while the thread runs (false after a handler panic).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the thread and joins it. The thread sees the stop flag at its
    /// next iteration (the doorbell ends any block at once), so this waits
    /// at most for the handler call in progress.
    pub fn stop(mut self) -> io::Result<Stopped<H>> {
        self.shutdown()
            .ok_or_else(|| io::Error::other("poller thread panicked"))
    }

    fn shutdown(&mut self) -> Option<Stopped<H>> {
        self.shared.stop.store(true, Ordering::SeqCst);
        sys::eventfd_ring(self.shared.doorbell.as_fd());
        self.thread.take()?.join().ok()
    }
}

impl<H: Handler> Drop for Poller<H> {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl PollerSender {
    /// Queues one frame (copied) for the poller to send. Fails with
    /// `WouldBlock` when [`PollerConfig::queue_frames`] are already queued,
    /// and with `BrokenPipe` once the poller is stopping.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        self.send_batch(&[frame])
            .and_then(|n| if n == 1 { Ok(()) } else { Err(queue_full()) })
    }

    /// Queues frames in order; returns how many fit (0 is not an error).
    /// Wakes the poller once for the whole batch.
    pub fn send_batch(&self, frames: &[&[u8]]) -> io::Result<usize> {
        if self.shared.stop.load(Ordering::Acquire) {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "poller stopped"));
        }
        let queued = {
            let mut queue = self.shared.lock_queue();
            let room = self.shared.queue_frames.saturating_sub(queue.len());
            frames.iter().take(room).for_each(|f| queue.push(f));
            room.min(frames.len())
        };
        if queued > 0 {
            self.shared.pending.store(true, Ordering::SeqCst);
            self.wake();
        }
        Ok(queued)
    }

    /// Makes the poller run [`Handler::on_tick`] soon: rings the doorbell
    /// only if the thread is blocked (a spinning thread will see the work).
    pub fn wake(&self) {
        if self.shared.parked.load(Ordering::SeqCst) {
            sys::eventfd_ring(self.shared.doorbell.as_fd());
        }
    }
}

fn queue_full() -> io::Error {
    io::Error::new(io::ErrorKind::WouldBlock, "poller send queue full")
}

impl Shared {
    fn lock_queue(&self) -> MutexGuard<'_, FrameBatch> {
        // A panic while holding the lock cannot break FrameBatch's invariant
        // (push is a copy then a push), so a poisoned queue is still usable.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Counters {
    fn publish(&self, socket: SocketStats) {
        self.rx_frames.store(socket.rx_frames, Ordering::Relaxed);
        self.rx_truncated
            .store(socket.rx_truncated, Ordering::Relaxed);
        self.rx_filtered
            .store(socket.rx_filtered, Ordering::Relaxed);
        self.tx_frames.store(socket.tx_frames, Ordering::Relaxed);
        self.syscalls.store(socket.syscalls, Ordering::Relaxed);
    }

    fn snapshot(&self) -> PollerStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PollerStats {
            socket: SocketStats {
                rx_frames: load(&self.rx_frames),
                rx_truncated: load(&self.rx_truncated),
                rx_filtered: load(&self.rx_filtered),
                tx_frames: load(&self.tx_frames),
                syscalls: load(&self.syscalls),
            },
            blocks: load(&self.blocks),
            tx_dropped: load(&self.tx_dropped),
            rx_errors: load(&self.rx_errors),
        }
    }
}

/// How a call to block ended.
enum Blocked {
    /// It did not block (a last look found work), or only until the
    /// handler's deadline.
    No,
    /// Work (a frame, the doorbell, room to send) woke it after this long.
    Woken(Duration),
    /// Nothing came within `block_timeout`.
    TimedOut,
}

/// Everything the poller thread owns.
struct LoopState<H> {
    socket: PacketSocket,
    handler: H,
    shared: Arc<Shared>,
    spin: AdaptiveSpin,
    yield_while_spinning: bool,
    block_timeout: Duration,
    /// Frames taken from the shared queue (swapped, not copied).
    queued: FrameBatch,
    /// Frames the handler produced.
    out: FrameBatch,
}

impl<H: Handler> LoopState<H> {
    fn new(socket: PacketSocket, handler: H, shared: Arc<Shared>, config: &PollerConfig) -> Self {
        Self {
            socket,
            handler,
            shared,
            spin: AdaptiveSpin::new(config.spin, config.adaptive_spin),
            yield_while_spinning: config.yield_while_spinning,
            block_timeout: config.block_timeout,
            queued: FrameBatch::with_capacity(config.queue_frames, 64 << 10),
            out: FrameBatch::with_capacity(256, 256 << 10),
        }
    }

    fn run(mut self) -> Stopped<H> {
        let mut last_busy = Instant::now();
        let mut deadline = None;
        while !self.shared.stop.load(Ordering::Acquire) {
            let now = Instant::now();
            let (busy, next) = self.step(now);
            deadline = next.or(deadline.filter(|d| *d > now));
            if busy {
                self.shared.counters.publish(self.socket.stats());
                last_busy = now;
            } else if now.duration_since(last_busy) >= self.spin.window() {
                match self.block(deadline) {
                    Blocked::No => {}
                    Blocked::Woken(slept) => self.spin.woke_after(slept),
                    Blocked::TimedOut => self.spin.timed_out(),
                }
                last_busy = Instant::now();
            } else {
                if self.yield_while_spinning {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        self.shared.counters.publish(self.socket.stats());
        let stats = self.shared.counters.snapshot();
        Stopped {
            socket: self.socket,
            handler: self.handler,
            stats,
        }
    }

    /// One pass: send what other threads queued, receive one batch, tick the
    /// handler, send what it produced. Returns (did anything, next deadline).
    fn step(&mut self, now: Instant) -> (bool, Option<Instant>) {
        let mut busy = self.take_queue();
        busy |= self.transmit_queued();
        busy |= self.receive();
        let deadline = self.handler.on_tick(now, &mut self.out);
        busy |= self.transmit_out();
        (busy, deadline)
    }

    /// Swaps the shared queue with our drained buffer (O(1) under the lock).
    fn take_queue(&mut self) -> bool {
        // A plain load first: the spin must not write a shared cache line.
        if !self.queued.is_empty() || !self.shared.pending.load(Ordering::Relaxed) {
            return false;
        }
        self.shared.pending.store(false, Ordering::SeqCst);
        let mut queue = self.shared.lock_queue();
        if queue.is_empty() {
            return false;
        }
        std::mem::swap(&mut *queue, &mut self.queued);
        true
    }

    fn receive(&mut self) -> bool {
        let (handler, out) = (&mut self.handler, &mut self.out);
        match self.socket.recv_batch(|frame| handler.on_frame(frame, out)) {
            Ok(0) => false,
            Ok(_) => {
                handler.on_batch_end(out);
                true
            }
            Err(_) => {
                self.shared
                    .counters
                    .rx_errors
                    .fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    fn transmit_queued(&mut self) -> bool {
        transmit(&mut self.socket, &mut self.queued, &self.shared.counters)
    }

    fn transmit_out(&mut self) -> bool {
        transmit(&mut self.socket, &mut self.out, &self.shared.counters)
    }

    /// Blocks in poll(2) until a frame arrives, the doorbell rings, the
    /// socket can take pending frames, the handler's deadline, or
    /// `block_timeout` — unless a last look finds work.
    fn block(&mut self, deadline: Option<Instant>) -> Blocked {
        self.shared.parked.store(true, Ordering::SeqCst);
        let now = Instant::now();
        let next = self.handler.on_tick(now, &mut self.out);
        let sent = self.transmit_out();
        let queue_waiting = self.queued.is_empty() && self.shared.pending.load(Ordering::SeqCst);
        if sent || queue_waiting || self.shared.stop.load(Ordering::SeqCst) {
            self.shared.parked.store(false, Ordering::SeqCst);
            return Blocked::No;
        }
        let mut timeout = self.block_timeout;
        if let Some(d) = next.or(deadline) {
            timeout = timeout.min(d.saturating_duration_since(now));
        }
        // Frames still pending mean the socket was full: wait for room too.
        let mut socket_events = libc::POLLIN;
        if !self.queued.is_empty() || !self.out.is_empty() {
            socket_events |= libc::POLLOUT;
        }
        let mut fds = [
            pollfd(self.socket.as_fd(), socket_events),
            pollfd(self.shared.doorbell.as_fd(), libc::POLLIN),
        ];
        self.shared.counters.blocks.fetch_add(1, Ordering::Relaxed);
        let ready = sys::poll(&mut fds, timeout).unwrap_or(0);
        self.shared.parked.store(false, Ordering::SeqCst);
        if fds[1].revents != 0 {
            sys::eventfd_drain(self.shared.doorbell.as_fd());
        }
        match ready {
            // The handler's own deadline (an ack delay, an RTO) says
            // nothing about how soon work comes.
            0 if timeout < self.block_timeout => Blocked::No,
            0 => Blocked::TimedOut,
            _ => Blocked::Woken(now.elapsed()),
        }
    }
}

/// Sends the unsent frames of `batch`; a frame the kernel refuses with a
/// hard error is dropped and counted. Stops when the socket is full.
/// Returns whether any frame left the batch.
fn transmit(socket: &mut PacketSocket, batch: &mut FrameBatch, counters: &Counters) -> bool {
    let mut progressed = false;
    // Each pass advances the batch by ≥ 1 frame or returns: bounded by its length.
    while !batch.is_empty() {
        match socket.send_frames(batch.unsent()) {
            Ok(0) => break,
            Ok(n) => batch.advance(n),
            Err(_) => {
                counters.tx_dropped.fetch_add(1, Ordering::Relaxed);
                batch.advance(1);
            }
        }
        progressed = true;
    }
    progressed
}

fn pollfd(fd: std::os::fd::BorrowedFd<'_>, events: libc::c_short) -> libc::pollfd {
    use std::os::fd::AsRawFd;
    libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    }
}
