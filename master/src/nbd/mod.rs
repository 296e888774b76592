//! The NBD server: serves one [`BlockDevice`](crate::device::BlockDevice) as
//! one export over TCP and unix sockets.
//!
//! - [`wire`]: constants and encode/decode of every message (pure, no I/O).
//! - [`handshake`]: fixed-newstyle option haggling as a sans-IO state
//!   machine plus a small async driver.
//! - `conn`: the transmission phase of one connection (tokio).
//! - `server`: listeners, connection tasks, the connection limit, graceful
//!   shutdown.
//! - [`memdev`]: an in-memory device for tests and demos.
//!
//! Supported: `OPT_EXPORT_NAME`, `ABORT`, `LIST`, `INFO`, `GO`,
//! `STRUCTURED_REPLY` (and `SET/LIST_META_CONTEXT`, answered with no
//! contexts: block status is not supported yet); commands `READ`, `WRITE`,
//! `DISC`, `FLUSH`, `TRIM`, `WRITE_ZEROES` with `FUA`, `NO_HOLE`, `DF`.
//! Not supported: TLS, extended headers, `CACHE`, `BLOCK_STATUS`,
//! `FAST_ZERO` (all refused cleanly).
//!
//! Invariants of the transmission phase:
//! - Requests of one connection run concurrently and are answered out of
//!   order: each device call is polled once inline by the reader and, if
//!   it is not ready, joins the calls the connection task drives alongside
//!   reading (no task per request). Replies go through a shared
//!   outbox drained by one writer at a time, so they never interleave.
//! - A reply is sent only after the device call returned, so a FLUSH (whose
//!   device call starts after the FLUSH was read) covers every write
//!   replied to before it.
//! - In-flight work per connection is bounded (requests and buffer bytes);
//!   the reader stops reading while the bound is reached.

mod conn;
pub mod handshake;
pub mod memdev;
mod server;
pub mod wire;

use std::time::Duration;

pub use handshake::{Export, Negotiated};
pub use server::{Listener, Server};

/// The export a [`Server`] offers.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// Export name; the empty name also selects it (the default export).
    pub name: String,
    /// Optional description shown by `OPT_LIST` and `NBD_INFO_DESCRIPTION`.
    pub description: Option<String>,
    /// A client that has not finished the handshake by then is dropped.
    pub handshake_timeout: Duration,
    /// Most connections served at once; the next ones are refused during
    /// the handshake (see `server`).
    pub max_connections: usize,
}

/// The default of [`ExportConfig::max_connections`]: each connection may
/// hold up to ~64 MiB of request buffers, so 64 of them bound the
/// master's buffers to about 4 GiB.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 64;

impl ExportConfig {
    /// An export named `name` with the default handshake timeout (10 s)
    /// and connection limit ([`DEFAULT_MAX_CONNECTIONS`]).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: None,
            handshake_timeout: Duration::from_secs(10),
            max_connections: DEFAULT_MAX_CONNECTIONS as usize,
        }
    }
}

/// Why a connection ended early. Every variant but `Io` is the client's fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Socket error (including the client vanishing mid-message).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A malformed message (bad magic, bad length).
    #[error("protocol violation: {0}")]
    Wire(#[from] wire::WireError),
    /// The client set client flags this server does not know.
    #[error("unknown client flags {0:#x}")]
    ClientFlags(u32),
    /// A non-fixed-newstyle client sent an option other than `EXPORT_NAME`.
    #[error("option {0} from a client without fixed newstyle")]
    NotFixedNewstyle(u32),
    /// `OPT_EXPORT_NAME` named an export that does not exist.
    #[error("unknown export {0:?}")]
    UnknownExport(String),
    /// Option data too long to read or skip.
    #[error("option data of {0} bytes")]
    OptionTooLong(u32),
    /// A WRITE payload too long to read or skip.
    #[error("write payload of {0} bytes")]
    PayloadTooLong(u32),
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The server was serving its most connections: this one was refused.
    #[error("refused: {0}")]
    Refused(String),
}

impl Error {
    /// Whether the client broke the protocol (as opposed to a socket error).
    pub fn is_client_fault(&self) -> bool {
        !matches!(self, Error::Io(_))
    }
}
