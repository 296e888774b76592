//! Sessions: the handshake, per-session keys, sealing and opening frames.
//!
//! Handshake (sans-IO: nonces are inputs, frames are bytes):
//! 1. client → node: `ClientHello` frame, payload = client nonce (32 B) +
//!    client name (u16 length + UTF-8). MAC keyed with
//!    `derive_key("qbd hello v1", cluster_key)`.
//! 2. node → client: `ServerHello`, payload = node nonce (32 B) + backend
//!    UUID (16 B) + node name (u16 length + UTF-8). MAC keyed the same way
//!    but over (client nonce ‖ header ‖ payload), binding it to this hello.
//! 3. Both derive `K = derive_key("qbd session v1", cluster_key ‖ nc ‖ ns)`
//!    and the direction keys `derive_key("qbd c2s v1", K)`,
//!    `derive_key("qbd s2c v1", K)`.
//!
//! A replayed session fails: the node's fresh nonce changes every key. A
//! replayed or reordered-beyond-the-window frame fails `open` (sequence
//! numbers start at 1 per direction; a 64-frame window accepts reordering,
//! never a repeat). A forged frame fails its MAC. The node learns that the
//! client holds the key from the first request's MAC.

use uuid::Uuid;

use super::frame::{FrameHeader, FrameKind};
use super::{ClusterKey, ProtoError};

/// What the node told about itself in its hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHello {
    /// The node's backend identity.
    pub backend: Uuid,
    /// The node's name (`--id`).
    pub name: String,
}

/// The client side of the handshake.
#[derive(Debug)]
pub struct ClientHandshake {
    _private: (),
}

impl ClientHandshake {
    /// Starts a handshake; returns the state and the `ClientHello` frame bytes.
    pub fn start(_key: &ClusterKey, _nonce: [u8; 32], _name: &str) -> (Self, Vec<u8>) {
        unimplemented!("session: see module doc")
    }

    /// Checks the node's `ServerHello` frame and derives the session.
    pub fn finish(self, _server_hello: &[u8]) -> Result<(Session, NodeHello), ProtoError> {
        unimplemented!("session: see module doc")
    }
}

/// The node side of the handshake: checks a `ClientHello` frame, returns
/// the session, the client's name and the `ServerHello` frame bytes.
pub fn accept(
    _key: &ClusterKey,
    _nonce: [u8; 32],
    _hello: &NodeHello,
    _client_hello: &[u8],
) -> Result<(Session, String, Vec<u8>), ProtoError> {
    unimplemented!("session: see module doc")
}

/// An established session (one side of it).
#[derive(Debug)]
pub struct Session {
    _private: (),
}

impl Session {
    /// Appends a sealed frame (header with the next sequence number,
    /// payload, MAC) to `out`.
    pub fn seal(
        &mut self,
        _kind: FrameKind,
        _opcode: u16,
        _request_id: u64,
        _payload: &[u8],
        _out: &mut Vec<u8>,
    ) {
        unimplemented!("session: see module doc")
    }

    /// Verifies a whole frame (MAC, then sequence number against the
    /// replay window) and returns its header and payload.
    pub fn open<'a>(&mut self, _frame: &'a [u8]) -> Result<(FrameHeader, &'a [u8]), ProtoError> {
        unimplemented!("session: see module doc")
    }
}
