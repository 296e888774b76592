//! Background maintenance while serving: readmit failed backends that
//! answer again, and resync stale parts of usable backends.
//!
//! A failed backend is probed with backoff (1 s doubling to 60 s). When it
//! answers, the volume is re-opened on it and the current epoch re-recorded
//! (for nodes: the epoch compare-and-set), every chunk it had written but
//! not synced when it failed is marked stale (a restarted node may have lost
//! them), and it is readmitted: writes go to its current parts again, and
//! its stale parts are resynced here before they are ever read.

use std::time::{Duration, Instant};

use super::{Volume, VolumeError};

/// Per-slot probe schedule.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    next: Instant,
    delay: Duration,
}

const FIRST: Duration = Duration::from_secs(1);
const MAX: Duration = Duration::from_secs(60);

impl Backoff {
    fn fresh(now: Instant) -> Self {
        Backoff {
            next: now,
            delay: FIRST,
        }
    }
}

impl Volume {
    /// One maintenance pass: probes failed backends that are due, then
    /// resyncs stale parts of usable ones. Returns how many parts were
    /// resynced. `schedule` carries the backoff between passes.
    pub async fn maintain(&self, schedule: &mut Vec<Backoff>, now: Instant) -> u64 {
        if self.fence.check().is_err() {
            return 0; // another master holds the volume: touch nothing
        }
        if schedule.len() != self.backends.len() {
            *schedule = vec![Backoff::fresh(now); self.backends.len()];
        }
        for (slot, b) in schedule.iter_mut().enumerate() {
            // An absent slot has nothing to probe until a backend is
            // admitted into it (`admit.rs`); then it is probed at once.
            if !self.health.is_failed(slot) || self.health.is_absent(slot) {
                *b = Backoff::fresh(now);
                continue;
            }
            if now < b.next {
                continue;
            }
            match self.readmit(slot).await {
                Ok(()) => *b = Backoff::fresh(now),
                Err(e) => {
                    let wait = b.delay;
                    b.next = now + wait;
                    b.delay = (b.delay * 2).min(MAX);
                    eprintln!(
                        "qbd-master: {} still unusable ({e}); next try in {wait:?}",
                        self.backends[slot].describe()
                    );
                }
            }
        }
        match self.resync().await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("qbd-master: resync: {e}");
                0
            }
        }
    }

    /// Re-opens the volume on a failed backend and lets it serve again.
    async fn readmit(&self, slot: usize) -> Result<(), VolumeError> {
        let b = &self.backends[slot];
        b.open_volume(self.meta()).await?;
        b.save_meta(self.meta()).await?;
        let unsynced = self.health.take_unsynced(slot);
        self.degrade(&[slot], &unsynced).await?;
        self.health.unfail(slot);
        eprintln!(
            "qbd-master: {} is back; resyncing its stale parts",
            b.describe()
        );
        Ok(())
    }
}
