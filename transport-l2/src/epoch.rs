//! Epochs and nonces for the drivers (the engines take them as inputs).
//!
//! An engine's epoch must be higher after every restart of its side
//! (`docs/l2-protocol.md` §3). Without persisted state, the realtime clock
//! provides that: 16 epochs per second since 2025-01-01, then one more per
//! session started within this process. A process that starts more than 16
//! sessions per second for a long time runs ahead of the clock; a restart
//! then may reuse an epoch (the node protocol still refuses the stale
//! session's frames: its keys are gone). The counter wraps in 2033.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 2025-01-01T00:00:00Z.
const BASE: Duration = Duration::from_secs(1_735_689_600);
/// Epochs per second of the clock.
const PER_SECOND: u64 = 16;

static LAST: AtomicU32 = AtomicU32::new(0);

/// The clock's epoch now (16 per second since 2025-01-01). Never 0.
fn clock_epoch() -> u32 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(BASE);
    let clock = since.as_secs() * PER_SECOND + u64::from(since.subsec_millis()) * PER_SECOND / 1000;
    u32::try_from(clock % u64::from(u32::MAX))
        .unwrap_or(1)
        .max(1)
}

/// A fresh epoch: above every epoch this process handed out and (clock
/// permitting) every epoch an earlier process did. Never 0.
pub fn fresh_epoch() -> u32 {
    let clock = clock_epoch();
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = clock.max(prev.wrapping_add(1)).max(1);
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

/// The client epochs of one process, per node. A node keys sessions by
/// (master MAC, client epoch), and the tools and the master of one host
/// share a MAC. Taking a fresh epoch per session made a process that
/// opened six sessions at once run six epochs ahead of the clock, and the
/// next process on the host (`qbd repair`, then `qbd-master`, a few hundred
/// ms later) reused some of them: the node took its hello for the earlier
/// process's session and the handshake timed out (found by `qbd-bench
/// torture`). So the first session to each node takes the clock's epoch
/// (the same for every node), and a later session to the same node one
/// above its last (or the clock, if higher).
#[derive(Debug, Default)]
pub struct NodeEpochs(Mutex<HashMap<[u8; 6], u32>>);

impl NodeEpochs {
    /// The epoch of the next session to `node`.
    pub fn next(&self, node: [u8; 6]) -> u32 {
        let clock = clock_epoch();
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let e = match last.get(&node) {
            Some(&l) => clock.max(l.wrapping_add(1)).max(1),
            None => clock,
        };
        last.insert(node, e);
        // Later `fresh_epoch`s (a session re-opened by its peer) stay above.
        LAST.fetch_max(e, Ordering::Relaxed);
        e
    }
}

/// 32 fresh random bytes for a handshake nonce.
pub fn fresh_nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    n[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    n[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    n
}

/// A random u64 (probe nonces).
pub fn random_u64() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_only_grow_and_are_never_zero() {
        let mut prev = fresh_epoch();
        for _ in 0..1000 {
            let e = fresh_epoch();
            assert!(e > prev && e != 0);
            prev = e;
        }
    }

    #[test]
    fn one_process_takes_one_epoch_for_every_node_and_a_higher_one_per_reconnect() {
        let epochs = NodeEpochs::default();
        let first: Vec<u32> = (0..6u8).map(|n| epochs.next([n; 6])).collect();
        let clock = clock_epoch();
        assert!(
            first.iter().all(|&e| e <= clock && e + 2 >= clock),
            "{first:?} vs {clock}"
        );
        let again = epochs.next([0; 6]);
        assert!(
            again > first[0],
            "a reconnect to a node takes a higher epoch"
        );
        assert!(fresh_epoch() > again, "fresh epochs stay above");
    }
}
