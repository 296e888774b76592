//! The node protocol: messages between a master and `qbd-node`, the same
//! over every transport (spec: `docs/node-protocol.md`).
//!
//! - [`msg`]: requests and responses, with encode/decode (pure, no I/O).
//! - [`frame`]: the frame header and the MAC trailer.
//! - [`key`]: the cluster key and its file.
//! - [`session`]: the handshake (nonces from both sides, per-session keys
//!   derived from the cluster key), sealing and opening frames (MAC,
//!   sequence numbers that reject replays).
//!
//! Transports move frames; they never look inside payloads.

pub mod frame;
pub mod key;
pub mod msg;
pub mod session;

pub use key::{ClusterKey, KeyError, KeyFileError};

/// Errors of the protocol layer. All are the peer's fault except `Io`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    /// Bytes that do not decode.
    #[error("malformed {what}: {why}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A frame whose MAC does not verify (forged, corrupted, wrong key).
    #[error("bad MAC")]
    BadMac,
    /// A frame whose detached tail does not match the checksums its MAC
    /// covers (forged or corrupted data): as untrusted as a bad MAC.
    #[error("data outside the MAC does not match its checksum: {0}")]
    BadTail(String),
    /// A frame whose sequence number was already seen (replay).
    #[error("replayed frame (seq {0})")]
    Replay(u64),
    /// The handshake failed (wrong key, wrong protocol version, bad state).
    #[error("handshake failed: {0}")]
    Handshake(String),
}

impl ProtoError {
    /// Shorthand for a decode error.
    pub fn malformed(what: &'static str, why: impl Into<String>) -> Self {
        ProtoError::Malformed {
            what,
            why: why.into(),
        }
    }
}
