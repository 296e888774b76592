//! [`PacketSocket`]: one `AF_PACKET`/`SOCK_RAW` socket bound to one
//! EtherType on one interface, with batched `sendmmsg`/`recvmmsg` over
//! preallocated buffers.
//!
//! Invariants:
//! - The socket is created with protocol 0 and only then bound to
//!   `(ethertype, ifindex)`, so it never holds a frame of another
//!   EtherType or another interface (no `ETH_P_ALL`, no promiscuous mode).
//! - The hot path allocates nothing: received frames land in a ring of
//!   fixed slots allocated at open; the `mmsghdr`/`iovec` arrays for both
//!   directions are allocated at open and only rewritten per call.
//! - Frames are whole Ethernet frames (destination MAC, source MAC,
//!   EtherType, payload) in both directions; the kernel adds no header.

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use super::sys;

/// Bytes of an untagged Ethernet header (two MACs and the EtherType).
pub const ETH_HLEN: usize = 14;
/// The QBD EtherType by default ("local experimental" 0x88B5).
pub const DEFAULT_ETHERTYPE: u16 = 0x88B5;
/// Most frames handed to the kernel, or taken from it, in one syscall.
pub const MAX_BATCH: usize = 64;

/// Receive slots of the sockets that carry sessions (master link, node
/// server): a pass handles at most this many frames before it sends what
/// they produced. With 64, a node took a whole window of requests in one
/// pass and answered all of it before the master saw any answer, so the two
/// sides worked in turn (measured, `qbd-bench transport --ops read --qd 32
/// --mtu 9000`, l2-loop: 0.81× TCP; with 4 slots and 8-segment bundles,
/// 1.05×; 1 MiB reads in `qbd-bench e2e` unchanged).
pub const SESSION_BATCH: usize = 4;

impl SocketConfig {
    /// The configuration of a session socket: [`SESSION_BATCH`] slots.
    pub fn session() -> Self {
        SocketConfig {
            batch: SESSION_BATCH,
            ..SocketConfig::default()
        }
    }
}

/// Tunables of a [`PacketSocket`]; [`Default`] suits MTU up to 9000.
#[derive(Debug, Clone)]
pub struct SocketConfig {
    /// Receive slots (frames per `recvmmsg`), 1..=[`MAX_BATCH`].
    pub batch: usize,
    /// Bytes per receive slot. Raised to the interface MTU plus headers if
    /// smaller, so a frame the interface can carry is never truncated.
    pub slot_size: usize,
    /// `SO_RCVBUF` in bytes (forced past `rmem_max` when privileged);
    /// 0 keeps the kernel default. Bursts the poller cannot drain in time
    /// are dropped here, so size it for a window of in-flight frames.
    pub recv_buffer: usize,
    /// `SO_SNDBUF` in bytes, as above; 0 keeps the kernel default.
    pub send_buffer: usize,
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self {
            batch: MAX_BATCH,
            slot_size: 9216,
            recv_buffer: 16 << 20,
            send_buffer: 4 << 20,
        }
    }
}

/// Counters of one socket, cumulative since open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketStats {
    /// Frames handed to the receive callback.
    pub rx_frames: u64,
    /// Frames dropped because they did not fit a receive slot.
    pub rx_truncated: u64,
    /// Frames dropped because they were addressed to another host or were
    /// our own outgoing frames looped back.
    pub rx_filtered: u64,
    /// Frames accepted by the kernel for transmission.
    pub tx_frames: u64,
    /// `recvmmsg` and `sendmmsg` calls made.
    pub syscalls: u64,
}

/// An `AF_PACKET` socket bound to one EtherType on one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    iface: String,
    ifindex: u32,
    ethertype: u16,
    mac: [u8; 6],
    mtu: usize,
    rx: RxRing,
    tx: TxScratch,
    stats: SocketStats,
}

impl PacketSocket {
    /// Opens a socket on `iface` (looked up in the calling thread's network
    /// namespace) for frames of `ethertype`, with [`SocketConfig::default`].
    pub fn open(iface: &str, ethertype: u16) -> io::Result<Self> {
        Self::open_with(iface, ethertype, &SocketConfig::default())
    }

    /// Opens a socket with explicit tunables.
    pub fn open_with(iface: &str, ethertype: u16, config: &SocketConfig) -> io::Result<Self> {
        if ethertype < 0x0600 {
            return Err(sys::invalid(format!(
                "EtherType {ethertype:#06x} is a length, not a type"
            )));
        }
        if config.batch == 0 || config.batch > MAX_BATCH {
            return Err(sys::invalid(format!(
                "batch {} not in 1..={MAX_BATCH}",
                config.batch
            )));
        }
        let ifindex = sys::if_index(iface)?;
        let fd = sys::packet_socket()?;
        let mac = sys::if_mac(fd.as_fd(), iface)?;
        let mtu = sys::if_mtu(fd.as_fd(), iface)?;
        set_buffers(fd.as_fd(), config)?;
        // Best effort (Linux ≥ 4.20): never see our own transmissions.
        let _ = sys::set_int_opt(
            fd.as_fd(),
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            1,
        );
        sys::bind_packet(fd.as_fd(), ifindex, ethertype)?;
        // Largest frame the interface carries: MTU + header + one VLAN tag.
        let slot_size = config.slot_size.max(mtu + ETH_HLEN + 4);
        Ok(Self {
            fd,
            iface: iface.to_owned(),
            ifindex,
            ethertype,
            mac,
            mtu,
            rx: RxRing::new(config.batch, slot_size),
            tx: TxScratch::new(),
            stats: SocketStats::default(),
        })
    }

    /// Sends whole Ethernet frames, batched `MAX_BATCH` per `sendmmsg`.
    ///
    /// Returns how many leading frames the kernel accepted: fewer than
    /// `frames.len()` (possibly 0) when its send buffer is full; send the
    /// rest later. An error (e.g. `EMSGSIZE` for a frame larger than
    /// MTU + [`ETH_HLEN`]) is returned only when the very first frame fails;
    /// after a partial send, the next call reports it. `ENOBUFS` means the
    /// device dropped that frame (e.g. a veth peer with a smaller MTU).
    pub fn send_batch(&mut self, frames: &[&[u8]]) -> io::Result<usize> {
        self.send_frames(frames.iter().copied())
    }

    /// [`send_batch`](Self::send_batch) over any iterator of frames.
    pub fn send_frames<'a>(
        &mut self,
        frames: impl IntoIterator<Item = &'a [u8]>,
    ) -> io::Result<usize> {
        let mut frames = frames.into_iter().peekable();
        let mut total = 0;
        while frames.peek().is_some() {
            let mut count = 0;
            for frame in frames.by_ref().take(MAX_BATCH) {
                if frame.len() < ETH_HLEN {
                    return if total + count == 0 {
                        Err(sys::invalid(format!(
                            "frame of {} bytes has no Ethernet header",
                            frame.len()
                        )))
                    } else {
                        self.flush_tx(count).map(|sent| total + sent)
                    };
                }
                self.tx.set(count, frame);
                count += 1;
            }
            let sent = match self.flush_tx(count) {
                Ok(sent) => sent,
                Err(e) if total == 0 => return Err(e),
                Err(_) => 0,
            };
            total += sent;
            if sent < count {
                break;
            }
        }
        Ok(total)
    }

    /// Receives up to one batch of frames without blocking and calls `f`
    /// with each (a whole Ethernet frame, valid only during the call).
    ///
    /// Returns how many frames were handed to `f`; 0 when none are waiting.
    /// Frames too large for a slot, addressed to another host, or looped
    /// back from our own transmissions are dropped and counted instead.
    pub fn recv_batch(&mut self, mut f: impl FnMut(&[u8])) -> io::Result<usize> {
        let received = match self.rx.recvmmsg(self.fd.as_fd()) {
            Ok(n) => n,
            Err(e) if is_transient(&e) => return Ok(0),
            Err(e) => return Err(e),
        };
        self.stats.syscalls += 1;
        let mut delivered = 0;
        for i in 0..received {
            match self.rx.frame(i) {
                RxFrame::Truncated => self.stats.rx_truncated += 1,
                RxFrame::Filtered => self.stats.rx_filtered += 1,
                RxFrame::Frame(frame) => {
                    f(frame);
                    delivered += 1;
                }
            }
        }
        self.stats.rx_frames += delivered as u64;
        Ok(delivered)
    }

    /// The interface's MAC address (the source address of our frames).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The interface MTU read at open (or at the last [`refresh_mtu`](Self::refresh_mtu)):
    /// payload bytes per frame, excluding the [`ETH_HLEN`]-byte header.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Re-reads the interface MTU (it can change while the socket is open).
    pub fn refresh_mtu(&mut self) -> io::Result<usize> {
        self.mtu = sys::if_mtu(self.fd.as_fd(), &self.iface)?;
        Ok(self.mtu)
    }

    /// The interface index the socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The interface name the socket was opened on.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The EtherType the socket is bound to.
    pub fn ethertype(&self) -> u16 {
        self.ethertype
    }

    /// Largest frame (header included) a receive slot holds.
    pub fn max_frame(&self) -> usize {
        self.rx.slot_size
    }

    /// Counters since open.
    pub fn stats(&self) -> SocketStats {
        self.stats
    }

    /// Hands the first `count` frames staged in `tx` to the kernel.
    fn flush_tx(&mut self, count: usize) -> io::Result<usize> {
        if count == 0 {
            return Ok(0);
        }
        self.stats.syscalls += 1;
        match self.tx.sendmmsg(self.fd.as_fd(), count) {
            Ok(sent) => {
                self.stats.tx_frames += sent as u64;
                Ok(sent)
            }
            Err(e) if is_transient(&e) => Ok(0),
            Err(e) => Err(e),
        }
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// "Try again later": nothing waiting, or no room in the socket buffer.
/// Not ENOBUFS: on a packet socket it means the device or qdisc dropped
/// that very frame (e.g. a veth peer whose MTU is smaller), so retrying it
/// would spin; the caller drops it and counts it instead.
fn is_transient(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR))
}

fn set_buffers(fd: BorrowedFd<'_>, config: &SocketConfig) -> io::Result<()> {
    let pairs = [
        (config.recv_buffer, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (config.send_buffer, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ];
    for (bytes, forced, plain) in pairs {
        if bytes == 0 {
            continue;
        }
        let value =
            libc::c_int::try_from(bytes).map_err(|_| sys::invalid("socket buffer too large"))?;
        // The forced variant needs CAP_NET_ADMIN; otherwise rmem_max caps it.
        if sys::set_int_opt(fd, libc::SOL_SOCKET, forced, value).is_err() {
            sys::set_int_opt(fd, libc::SOL_SOCKET, plain, value)?;
        }
    }
    Ok(())
}

/// Outcome of one received slot.
enum RxFrame<'a> {
    Frame(&'a [u8]),
    Truncated,
    Filtered,
}

/// The receive ring: `batch` slots of `slot_size` bytes, each with its
/// `sockaddr_ll` (for the packet type) and a `mmsghdr` pointing at both.
///
/// Invariant: `msgs[i]` points into `iovs[i]`, `addrs[i]` and slot `i` of
/// `buf`; all four are vectors filled in `new` and never resized (Vec, not
/// Box: moving a Vec asserts no uniqueness over its heap buffer), so the
/// pointers stay valid for the ring's lifetime even if it moves.
struct RxRing {
    buf: Vec<u8>,
    slot_size: usize,
    addrs: Vec<libc::sockaddr_ll>,
    #[expect(dead_code, reason = "owns the iovecs that `msgs` point to")]
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in `iovs` and `msgs` point only into heap
// allocations owned by the same RxRing (see its invariant), so moving the
// ring to another thread moves everything they point to with it.
unsafe impl Send for RxRing {}

impl RxRing {
    fn new(batch: usize, slot_size: usize) -> Self {
        let mut buf = vec![0u8; batch * slot_size];
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut addrs = vec![unsafe { mem::zeroed::<libc::sockaddr_ll>() }; batch];
        let mut iovs: Vec<libc::iovec> = buf
            .chunks_exact_mut(slot_size)
            .map(|slot| libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: slot_size,
            })
            .collect();
        let msgs = iovs
            .iter_mut()
            .zip(addrs.iter_mut())
            .map(|(iov, addr)| {
                // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
                let mut msg: libc::mmsghdr = unsafe { mem::zeroed() };
                msg.msg_hdr.msg_name = (addr as *mut libc::sockaddr_ll).cast();
                msg.msg_hdr.msg_iov = iov;
                msg.msg_hdr.msg_iovlen = 1;
                msg
            })
            .collect();
        Self {
            buf,
            slot_size,
            addrs,
            iovs,
            msgs,
        }
    }

    fn recvmmsg(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        for msg in self.msgs.iter_mut() {
            msg.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            msg.msg_hdr.msg_flags = 0;
            msg.msg_len = 0;
        }
        let flags = libc::MSG_DONTWAIT | libc::MSG_TRUNC;
        let vlen = self.msgs.len() as libc::c_uint;
        // SAFETY: `msgs` holds `vlen` headers whose name and iovec pointers
        // are valid and exclusively ours (RxRing invariant; `&mut self`);
        // the kernel writes at most `iov_len`/`msg_namelen` bytes to each.
        let ret = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                vlen,
                flags as _,
                std::ptr::null_mut(),
            )
        };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret as usize)
        }
    }

    fn frame(&self, i: usize) -> RxFrame<'_> {
        let msg = &self.msgs[i];
        let len = msg.msg_len as usize;
        if msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > self.slot_size {
            return RxFrame::Truncated;
        }
        let pkttype = self.addrs[i].sll_pkttype;
        if pkttype == libc::PACKET_OTHERHOST || pkttype == libc::PACKET_OUTGOING {
            return RxFrame::Filtered;
        }
        let start = i * self.slot_size;
        RxFrame::Frame(&self.buf[start..start + len])
    }
}

impl std::fmt::Debug for RxRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RxRing")
            .field("slots", &self.msgs.len())
            .field("slot_size", &self.slot_size)
            .finish()
    }
}

/// Send-side headers. Their pointers refer to the caller's frames and are
/// meaningful only during the `sendmmsg` of the call that wrote them.
struct TxScratch {
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers are scratch, rewritten before every sendmmsg and
// never dereferenced by us; `msgs[i]` points to `iovs[i]`, a vector the
// struct owns and moves with it.
unsafe impl Send for TxScratch {}

impl TxScratch {
    fn new() -> Self {
        let mut iovs: Vec<libc::iovec> = (0..MAX_BATCH)
            .map(|_| libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            })
            .collect();
        let msgs = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
                let mut msg: libc::mmsghdr = unsafe { mem::zeroed() };
                msg.msg_hdr.msg_iov = iov;
                msg.msg_hdr.msg_iovlen = 1;
                msg
            })
            .collect();
        Self { iovs, msgs }
    }

    fn set(&mut self, i: usize, frame: &[u8]) {
        // The kernel only reads through this pointer (sendmmsg).
        self.iovs[i] = libc::iovec {
            iov_base: frame.as_ptr().cast_mut().cast(),
            iov_len: frame.len(),
        };
    }

    fn sendmmsg(&mut self, fd: BorrowedFd<'_>, count: usize) -> io::Result<usize> {
        debug_assert!(count <= MAX_BATCH);
        // SAFETY: the first `count` headers point at iovecs set by `set` in
        // this same call of `send_frames`, whose frames are borrowed for the
        // whole call; the kernel only reads them.
        let ret = unsafe {
            libc::sendmmsg(
                fd.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                count as libc::c_uint,
                0,
            )
        };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret as usize)
        }
    }
}

impl std::fmt::Debug for TxScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxScratch").finish_non_exhaustive()
    }
}
