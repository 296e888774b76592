//! `qbd-node`: serves the part files of one backend root to QBD masters.
//!
//! Module map:
//! - [`node`]: [`Node`], the state: the root, and per volume an opened
//!   `DirBackend` with its current epoch (the fence between masters).
//! - `dispatch`: [`Node::handle`], request → chunk-store operation, with the
//!   epoch compare-and-set (`SaveMeta`) and the epoch check of writes. No
//!   sockets: tested by calling it directly.
//! - [`serve`]: the TCP accept loop and graceful shutdown; `conn`: one
//!   connection (handshake, frame reader, batching writer).
//! - [`l2`]: the node as a service of the raw-Ethernet server
//!   (`qbd_transport_l2::serve`).
//! - [`stats`]: counters of refused frames and handshakes.
//! - [`cli`], [`run`]: the daemon's flags and wiring (`main.rs` is thin).

pub mod cli;
mod conn;
mod dispatch;
pub mod error;
pub mod l2;
pub mod node;
pub mod run;
pub mod serve;
pub mod stats;

pub use conn::ConnConfig;
pub use error::NodeError;
pub use node::Node;
pub use serve::{serve, serve_with};
pub use stats::{NodeStats, StatsSnapshot};
