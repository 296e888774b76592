//! Epochs and nonces for the drivers (the engines take them as inputs).
//!
//! An engine's epoch must be higher after every restart of its side
//! (`docs/l2-protocol.md` §3). Without persisted state, the realtime clock
//! provides that: 16 epochs per second since 2025-01-01, then one more per
//! session started within this process. A process that starts more than 16
//! sessions per second for a long time runs ahead of the clock; a restart
//! then may reuse an epoch (the node protocol still refuses the stale
//! session's frames: its keys are gone). The counter wraps in 2033.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 2025-01-01T00:00:00Z.
const BASE: Duration = Duration::from_secs(1_735_689_600);
/// Epochs per second of the clock.
const PER_SECOND: u64 = 16;

static LAST: AtomicU32 = AtomicU32::new(0);

/// A fresh epoch: above every epoch this process handed out and (clock
/// permitting) every epoch an earlier process did. Never 0.
pub fn fresh_epoch() -> u32 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(BASE);
    let clock = since.as_secs() * PER_SECOND + u64::from(since.subsec_millis()) * PER_SECOND / 1000;
    let clock = u32::try_from(clock % u64::from(u32::MAX))
        .unwrap_or(1)
        .max(1);
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = clock.max(prev.wrapping_add(1)).max(1);
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
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
}
