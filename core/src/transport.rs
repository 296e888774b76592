//! The message-based `Transport` trait: how a master talks to one node.
//!
//! Batched submit, out-of-order completion, owned buffers. A transport
//! assigns request ids, seals and sends frames, matches responses to
//! requests, and completes each request's future on its own — in whatever
//! order the node answers. It surfaces deadlines and lost connections as
//! errors, never as hangs. TCP (`qbd-transport-tcp`) and raw Ethernet
//! (`qbd-transport-l2`) implement it; `NodeBackend` in the master turns it
//! into a [`crate::backend::Backend`].

use std::fmt::Debug;

use crate::backend::BoxFut;
use crate::proto::ProtoError;
use crate::proto::msg::{Request, Response};

/// Why a request got no response.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TransportError {
    /// No response before the deadline.
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// The connection is down (and reconnecting failed so far).
    #[error("node unreachable: {0}")]
    Disconnected(String),
    /// The node sent something that does not verify or decode.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtoError),
}

impl TransportError {
    /// Worth retrying later (the node may come back).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TransportError::Timeout(_) | TransportError::Disconnected(_)
        )
    }
}

/// A request in flight.
pub type Pending = BoxFut<'static, Result<Response, TransportError>>;

/// A connection to one node.
pub trait Transport: Send + Sync + Debug {
    /// Sends `batch` (in one write where the transport can); one future
    /// per request, in the same order, each completing independently.
    fn submit(&self, batch: Vec<Request>) -> Vec<Pending>;

    /// A human description (`tcp:10.0.0.5:7000`).
    fn describe(&self) -> String;

    /// Sends one request.
    fn call(&self, req: Request) -> Pending {
        let mut v = self.submit(vec![req]);
        v.pop().unwrap_or_else(|| {
            Box::pin(async { Err(TransportError::Disconnected("no future".into())) })
        })
    }
}
