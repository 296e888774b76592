//! Backend health: failed backends and the degraded map.
//!
//! A backend whose write, sync or allocation fails during a run is *failed*
//! until it answers a probe again ([`super::maintain`]): it is neither read
//! nor written meanwhile. A part that
//! missed a write is *stale*: before that write (or the FLUSH it missed) is
//! acknowledged, the chunk is recorded in the degraded map
//! (`.stale.<backend>`) on every healthy backend. Stale parts are never
//! read; when their backend is usable again (at the next start, or when the
//! background maintenance readmits it), they are resynced
//! ([`super::recover`]) and become readable.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{AllocBits, Volume, VolumeError};

/// Per-slot health state.
#[derive(Debug)]
pub struct Health {
    failed: Vec<AtomicBool>,
    /// Failed slots with no backend behind them yet (an [`Absent`] stand-in:
    /// missing when the volume was opened); not probed until one is admitted
    /// ([`super::admit`]).
    ///
    /// [`Absent`]: super::repair::absent::Absent
    absent: Vec<AtomicBool>,
    stale: Vec<AllocBits>,
    /// Chunks written per slot since its last successful sync.
    unsynced: Vec<Mutex<HashSet<u64>>>,
    degrade_lock: tokio::sync::Mutex<()>,
}

impl Health {
    /// All healthy, nothing stale, for `slots` backends and `chunks` chunks.
    pub fn new(slots: usize, chunks: u64) -> Self {
        Health {
            failed: (0..slots).map(|_| AtomicBool::new(false)).collect(),
            absent: (0..slots).map(|_| AtomicBool::new(false)).collect(),
            stale: (0..slots)
                .map(|_| AllocBits::new(chunks, std::iter::empty()))
                .collect(),
            unsynced: (0..slots).map(|_| Mutex::new(HashSet::new())).collect(),
            degrade_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub(super) fn set_stale(&self, slot: usize, chunk: u64) {
        self.stale[slot].set(chunk);
    }

    pub(super) fn stale_chunks(&self, slot: usize) -> Vec<u64> {
        self.stale[slot].iter().collect()
    }

    pub(super) fn clear_stale(&self, slot: usize, chunk: u64) {
        self.stale[slot].clear(chunk);
    }

    /// Marks `slot` failed without a message (a backend absent at open).
    pub(super) fn set_failed(&self, slot: usize) {
        self.failed[slot].store(true, Ordering::Release);
    }

    /// Marks `slot` failed with no backend behind it (missing at open).
    pub(super) fn set_absent(&self, slot: usize) {
        self.set_failed(slot);
        self.absent[slot].store(true, Ordering::Release);
    }

    /// A backend now stands in `slot` (it stays failed until readmitted).
    pub(super) fn clear_absent(&self, slot: usize) {
        self.absent[slot].store(false, Ordering::Release);
    }

    /// Is `slot` missing its backend since the volume was opened?
    pub fn is_absent(&self, slot: usize) -> bool {
        self.absent[slot].load(Ordering::Acquire)
    }

    pub(super) fn unfail(&self, slot: usize) {
        self.failed[slot].store(false, Ordering::Release);
    }

    /// Is `slot` failed?
    pub fn is_failed(&self, slot: usize) -> bool {
        self.failed[slot].load(Ordering::Acquire)
    }

    /// Is `slot`'s part of `chunk` stale?
    pub fn is_stale(&self, slot: usize, chunk: u64) -> bool {
        self.stale[slot].get(chunk)
    }

    /// A new backend took `slot` (`qbd repair --replace` while serving):
    /// nothing the slot's old backend owed applies any more; the new one's
    /// parts of `stale` chunks (recorded durably first) are stale until
    /// healed, and the slot is usable for writes to its other parts.
    pub(super) fn new_backend_in(&self, slot: usize, stale: &[u64]) {
        // Set before clear: no moment where one of them reads as current.
        stale.iter().for_each(|&c| self.stale[slot].set(c));
        let keep: HashSet<u64> = stale.iter().copied().collect();
        let old: Vec<u64> = self.stale[slot]
            .iter()
            .filter(|c| !keep.contains(c))
            .collect();
        old.into_iter().for_each(|c| self.stale[slot].clear(c));
        self.take_unsynced(slot);
        self.clear_absent(slot);
        self.unfail(slot);
    }

    pub(super) fn note_written(&self, slot: usize, chunk: u64) {
        if let Ok(mut u) = self.unsynced[slot].lock() {
            u.insert(chunk);
        }
    }

    pub(super) fn take_unsynced(&self, slot: usize) -> Vec<u64> {
        self.unsynced[slot]
            .lock()
            .map(|mut u| u.drain().collect())
            .unwrap_or_default()
    }
}

impl Volume {
    /// Can `slot`'s part of `chunk` be read and written?
    pub(super) fn usable(&self, slot: usize, chunk: u64) -> bool {
        !self.health.is_failed(slot) && !self.health.is_stale(slot, chunk)
    }

    /// Marks a backend failed for the rest of this run (logged once).
    /// Once the volume is fenced nothing is failed: every later error is
    /// the refusal itself (or the fence refusing for it), which says that
    /// another master holds the volume, never that this backend is broken
    /// (`docs/heal.md` §2).
    pub(super) fn fail(&self, slot: usize, why: &str) {
        if self.fence.check().is_err() {
            return;
        }
        if !self.health.failed[slot].swap(true, Ordering::AcqRel) {
            eprintln!(
                "qbd-master: backend {} failed ({why}); its parts are degraded until it answers again and is resynced",
                self.backends[slot].describe()
            );
        }
    }

    /// Records durably, on every healthy backend but the ones concerned,
    /// that `slots` missed writes to `chunks`. Fails only if no healthy
    /// backend could record it.
    ///
    /// A fencing refusal is returned as it is: the volume is fenced, so
    /// nothing is recorded, no backend is failed, and the caller's request
    /// fails with the fence's reason (never "no redundancy left").
    pub(super) async fn degrade(&self, slots: &[usize], chunks: &[u64]) -> Result<(), VolumeError> {
        let _g = self.health.degrade_lock.lock().await;
        self.fence.check()?;
        for &s in slots {
            let todo: Vec<u64> = chunks
                .iter()
                .copied()
                .filter(|&c| !self.health.is_stale(s, c))
                .collect();
            if todo.is_empty() {
                continue;
            }
            let of = self.backends[s].id();
            let mut recorded = 0;
            for h in 0..self.backends.len() {
                if slots.contains(&h) || self.health.is_failed(h) {
                    continue;
                }
                match self.backends[h].mark_stale(of, todo.clone()).await {
                    Ok(()) => recorded += 1,
                    Err(e) if e.is_fenced() => return Err(e.into()),
                    Err(e) => self.fail(h, &format!("recording the degraded map: {e}")),
                }
            }
            if recorded == 0 {
                return Err(VolumeError::NoCopy(format!(
                    "no healthy backend could record that {} missed writes",
                    self.backends[s].describe()
                )));
            }
            todo.iter().for_each(|&c| self.health.set_stale(s, c));
        }
        Ok(())
    }
}
