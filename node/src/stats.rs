//! Counters of what the node refused, for logs, tests and (later) metrics.

use std::sync::atomic::{AtomicU64, Ordering};

use qbd_core::proto::ProtoError;

/// Live counters; every field only grows.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Requests answered (any response, errors included).
    pub requests: AtomicU64,
    /// Frames whose MAC did not verify (forged, corrupted, wrong key), or
    /// whose data outside the MAC did not match the checksums under it.
    pub bad_mac: AtomicU64,
    /// Frames whose sequence number was already seen.
    pub replay: AtomicU64,
    /// Bytes that do not decode: garbage headers, truncated frames,
    /// authenticated payloads that are not a request.
    pub malformed: AtomicU64,
    /// Handshakes that failed or timed out.
    pub handshake_failed: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// See [`NodeStats::connections`].
    pub connections: u64,
    /// See [`NodeStats::requests`].
    pub requests: u64,
    /// See [`NodeStats::bad_mac`].
    pub bad_mac: u64,
    /// See [`NodeStats::replay`].
    pub replay: u64,
    /// See [`NodeStats::malformed`].
    pub malformed: u64,
    /// See [`NodeStats::handshake_failed`].
    pub handshake_failed: u64,
}

impl NodeStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            connections: get(&self.connections),
            requests: get(&self.requests),
            bad_mac: get(&self.bad_mac),
            replay: get(&self.replay),
            malformed: get(&self.malformed),
            handshake_failed: get(&self.handshake_failed),
        }
    }

    /// Counts a protocol violation of an established session.
    pub(crate) fn count_violation(&self, e: &ProtoError) {
        let counter = match e {
            ProtoError::BadMac | ProtoError::BadTail(_) => &self.bad_mac,
            ProtoError::Replay(_) => &self.replay,
            ProtoError::Malformed { .. } | ProtoError::Handshake(_) => &self.malformed,
        };
        bump(counter);
    }
}

/// Adds one.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
