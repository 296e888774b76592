//! The node protocol over TCP: pipelined requests, out-of-order completion.
//!
//! A [`TcpTransport`] is one master's connection to one `qbd-node`. It
//! implements [`qbd_core::transport::Transport`]: `submit` seals a batch of
//! requests into one buffer and writes it in one go; a reader task opens
//! response frames and completes each request's future by request id, in
//! whatever order the node answers.
//!
//! Module map:
//! - [`frame_io`]: reading one whole frame off a stream (header first,
//!   bounded payload), writing through a shared write half, and the client
//!   side of the handshake over a socket.
//! - [`conn`]: one established connection (one session): the outbox, the
//!   table of requests in flight, the reader and writer tasks.
//! - [`transport`]: [`TcpTransport`]: connecting, deadlines, reconnecting
//!   with backoff after the connection breaks.
//!
//! Invariants:
//! - Frames reach the socket in the order they were sealed (the sequence
//!   numbers the node checks): sealing and handing the bytes to the socket
//!   (or to the writer's queue) happen under one lock.
//! - Every request future resolves: with the node's response, with
//!   `Timeout` after the deadline, or with `Disconnected` when its
//!   connection breaks. Nothing is ever sent twice by the transport; the
//!   caller decides whether to retry.
//! - A reconnect must find the same node identity (backend UUID) as the
//!   first handshake, or it is refused.

pub mod conn;
pub mod frame_io;
pub mod transport;

use std::time::Duration;

pub use transport::TcpTransport;

/// Tunables of a [`TcpTransport`].
#[derive(Debug, Clone)]
pub struct TcpOptions {
    /// How long one request may take, from submit to response (including a
    /// reconnect it has to wait for).
    pub request_timeout: Duration,
    /// How long connecting plus the handshake may take.
    pub connect_timeout: Duration,
    /// First delay before another reconnect attempt after one failed.
    pub reconnect_min: Duration,
    /// Largest delay between reconnect attempts (the delay doubles).
    pub reconnect_max: Duration,
}

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
        }
    }
}
