//! Thin, safe wrappers over the libc calls the driver needs. Every `unsafe`
//! block of the driver outside the batched send/receive lives here.
//!
//! Invariant: every function takes or returns owned/borrowed file
//! descriptors (`OwnedFd`, `BorrowedFd`), so a closed or foreign descriptor
//! can never reach a syscall through this module.

use std::ffi::CString;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Converts a `-1` return into the thread's `errno`.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The interface index of `name` in the calling thread's network namespace.
pub(crate) fn if_index(name: &str) -> io::Result<u32> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(invalid(format!("bad interface name {name:?}")));
    }
    let cname = CString::new(name).map_err(|_| invalid(format!("bad interface name {name:?}")))?;
    // SAFETY: `cname` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            err.kind(),
            format!("interface {name:?}: {err}"),
        ));
    }
    Ok(index)
}

/// A non-blocking, close-on-exec `AF_PACKET`/`SOCK_RAW` socket with
/// protocol 0: it receives nothing until [`bind_packet`] names the EtherType
/// and interface, so no frame of another interface is ever queued on it.
pub(crate) fn packet_socket() -> io::Result<OwnedFd> {
    let ty = libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: plain syscall with constant arguments; no pointers.
    let fd = check(unsafe { libc::socket(libc::AF_PACKET, ty, 0) })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Binds a packet socket to one EtherType on one interface.
pub(crate) fn bind_packet(fd: BorrowedFd<'_>, ifindex: u32, ethertype: u16) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::c_ushort;
    addr.sll_protocol = ethertype.to_be();
    addr.sll_ifindex = libc::c_int::try_from(ifindex).map_err(|_| invalid("ifindex overflow"))?;
    let len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    let ptr = (&raw const addr).cast::<libc::sockaddr>();
    // SAFETY: `ptr` points to a live sockaddr_ll of `len` bytes; fd is open.
    check(unsafe { libc::bind(fd.as_raw_fd(), ptr, len) })?;
    Ok(())
}

/// `setsockopt` with an `int` value.
pub(crate) fn set_int_opt(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    let len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    let ptr = (&raw const value).cast::<libc::c_void>();
    // SAFETY: `ptr` points to a live c_int of `len` bytes; fd is open.
    check(unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, ptr, len) })?;
    Ok(())
}

/// An `ifreq` naming `iface`, for the SIOCGIF* ioctls.
fn ifreq(iface: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data (a name array and a union of POD).
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    if iface.len() >= req.ifr_name.len() {
        return Err(invalid(format!("interface name {iface:?} too long")));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

/// The interface's hardware (MAC) address, by SIOCGIFHWADDR on `fd`.
pub(crate) fn if_mac(fd: BorrowedFd<'_>, iface: &str) -> io::Result<[u8; 6]> {
    let mut req = ifreq(iface)?;
    // SAFETY: SIOCGIFHWADDR reads ifr_name and writes the ifreq it is given,
    // which lives for the whole call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR as _, &raw mut req) })?;
    // SAFETY: after a successful SIOCGIFHWADDR the union holds ifru_hwaddr.
    let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
    if hw.sa_family != libc::ARPHRD_ETHER {
        return Err(invalid(format!(
            "{iface} is not an Ethernet interface (type {})",
            hw.sa_family
        )));
    }
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(hw.sa_data.iter()) {
        *dst = *src as u8;
    }
    Ok(mac)
}

/// The interface's MTU (L3 payload bytes per frame), by SIOCGIFMTU on `fd`.
pub(crate) fn if_mtu(fd: BorrowedFd<'_>, iface: &str) -> io::Result<usize> {
    let mut req = ifreq(iface)?;
    // SAFETY: SIOCGIFMTU reads ifr_name and writes the ifreq it is given,
    // which lives for the whole call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFMTU as _, &raw mut req) })?;
    // SAFETY: after a successful SIOCGIFMTU the union holds ifru_mtu.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    usize::try_from(mtu).map_err(|_| invalid(format!("{iface}: negative MTU {mtu}")))
}

/// A non-blocking, close-on-exec eventfd (the poller's doorbell).
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with constant arguments; no pointers.
    let fd = check(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by eventfd(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd. A full counter (EAGAIN) still means "readable".
pub(crate) fn eventfd_ring(fd: BorrowedFd<'_>) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to an open eventfd.
    let _ = unsafe { libc::write(fd.as_raw_fd(), (&raw const one).cast(), 8) };
}

/// Resets an eventfd to zero (reads its counter).
pub(crate) fn eventfd_drain(fd: BorrowedFd<'_>) {
    let mut value: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live u64 from an open eventfd.
    let _ = unsafe { libc::read(fd.as_raw_fd(), (&raw mut value).cast(), 8) };
}

/// poll(2) over `fds` for at most `timeout` (rounded up to a millisecond).
/// EINTR counts as "nothing ready".
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<usize> {
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `fds` is a live, exclusively borrowed slice of pollfd.
    let ret = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    match check(ret) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

pub(crate) fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

/// Pins the calling thread to one CPU.
pub(crate) fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    if cpu >= 8 * mem::size_of::<libc::cpu_set_t>() {
        return Err(invalid(format!("CPU {cpu} out of range")));
    }
    // SAFETY: `cpu` was checked against the set's size in bits above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    let size = mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a live cpu_set_t of `size` bytes; pid 0 is this thread.
    check(unsafe { libc::sched_setaffinity(0, size, &raw const set) })?;
    Ok(())
}
