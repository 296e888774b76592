//! The node protocol over raw Ethernet (spec: `docs/l2-protocol.md`).
//!
//! - [`engine`]: the sans-IO protocol engine — sessions, sequence numbers,
//!   retransmission, fragmentation and reassembly, credits and AIMD window.
//!   Fed frames and `now`; emits frames, timeouts and completed messages.
//!   No sockets, no clocks, no threads.
//! - [`af_packet`]: the AF_PACKET socket driver (the only place with
//!   `unsafe`), bound to the QBD EtherType and one interface, batched
//!   `sendmmsg`/`recvmmsg`, a polling thread with bounded spin. AF_XDP comes
//!   later behind the same seam.
//! - [`probe`]: discovery and jumbo-frame probe frames (sans-IO).
//! - [`link`]: the master's side on one interface: [`L2Link`] (socket,
//!   polling thread, discovery) and [`L2Transport`] (one node, as a
//!   `qbd_core::transport::Transport`).
//! - [`serve`]: the node's side: [`L2Server`] (probes, the session table,
//!   authentication, requests handed to a [`Service`]).
//! - [`epoch`]: epochs and nonces for the drivers.

pub mod af_packet;
pub mod engine;
pub mod epoch;
pub mod link;
pub mod probe;
pub mod serve;

pub use link::{ClosedLoop, Found, L2Link, L2Transport, LinkOptions, LinkStats};
pub use serve::{L2Server, ServeOptions, Service};
