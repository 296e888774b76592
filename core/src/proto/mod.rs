//! The node protocol: messages between a master and `qbd-node`, the same
//! over every transport (spec: `docs/node-protocol.md`).
//!
//! - [`msg`]: requests and responses, with encode/decode (pure, no I/O).
//! - [`frame`]: the frame header and the MAC trailer.
//! - [`session`]: the handshake (nonces from both sides, per-session keys
//!   derived from the cluster key), sealing and opening frames (MAC,
//!   sequence numbers that reject replays).
//!
//! Transports move frames; they never look inside payloads.

pub mod frame;
pub mod msg;
pub mod session;

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

/// A cluster key: 32 bytes, written as 64 hex characters in its file.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey(pub [u8; 32]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// The all-zero key used with `--insecure` (authenticates nothing).
    pub const INSECURE: ClusterKey = ClusterKey([0; 32]);

    /// Parses 64 hex characters (surrounding whitespace allowed).
    pub fn from_hex(text: &str) -> Result<Self, ProtoError> {
        let t = text.trim();
        if t.len() != 64 {
            return Err(ProtoError::malformed(
                "cluster key",
                format!("{} characters, expected 64 hex", t.len()),
            ));
        }
        let mut k = [0u8; 32];
        for (i, byte) in k.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&t[i * 2..i * 2 + 2], 16)
                .map_err(|_| ProtoError::malformed("cluster key", "not hexadecimal"))?;
        }
        Ok(ClusterKey(k))
    }

    /// 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hex_round_trip_and_rejects() {
        let k = ClusterKey(core::array::from_fn(|i| i as u8 * 7));
        assert_eq!(ClusterKey::from_hex(&format!(" {}\n", k.to_hex())), Ok(k));
        assert!(ClusterKey::from_hex("abcd").is_err());
        assert!(ClusterKey::from_hex(&"zz".repeat(32)).is_err());
    }
}
