//! The AF_PACKET driver: raw Ethernet frames of one EtherType on one
//! interface, batched, polled by a dedicated thread.
//!
//! - [`PacketSocket`]: an `AF_PACKET`/`SOCK_RAW` socket bound to the QBD
//!   EtherType and one ifindex (never `ETH_P_ALL`, never promiscuous),
//!   non-blocking, with batched `sendmmsg`/`recvmmsg` over buffers
//!   allocated once at open. Frames are whole Ethernet frames.
//! - [`Poller`]: the thread that owns a socket, spins a bounded time on it
//!   when idle, then blocks in poll(2); it sends frames queued through a
//!   [`PollerSender`] and hands received frames to a [`Handler`] (later:
//!   the engine, completing requests to tokio tasks once per batch).
//! - [`FrameBatch`]: frames packed back to back in one reusable buffer.
//!
//! Not TPACKET_V3: its block retire timer (milliseconds) ruins
//! request/response latency. A TPACKET_V2 ring or AF_XDP can replace the
//! socket behind the same `send_frames`/`recv_batch` shape later.
//!
//! This module is the crate's only `unsafe` code; `sys` holds the libc
//! wrappers, `socket` the two batched syscalls.

#![allow(unsafe_code)]

mod batch;
mod poller;
mod socket;
mod spin;
mod sys;

pub use batch::FrameBatch;
pub use poller::{Handler, Poller, PollerConfig, PollerSender, PollerStats, Stopped};
pub use socket::{
    DEFAULT_ETHERTYPE, ETH_HLEN, MAX_BATCH, PacketSocket, SESSION_BATCH, SocketConfig, SocketStats,
};
