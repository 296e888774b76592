//! `--replace OLD=NEW`: slot `s` of the placement table moves from backend
//! OLD to the fresh backend NEW, then the repair fills NEW.
//!
//! Done on a volume opened for repair *without* OLD (its slot stands in as
//! absent), in this order:
//! 1. every healthy backend records, durably, that NEW's part of every
//!    written chunk with a part in slot `s` is stale (degraded map keyed by
//!    NEW's identity: ignored while no table names NEW);
//! 2. NEW gets the volume (`.volumesmeta`, `.meta` with the new table at
//!    epoch E+1, an empty allocation map) — or, if an interrupted replace
//!    already made it, its `.meta` is rewritten;
//! 3. every other healthy backend's `.meta` is rewritten (atomically) with
//!    the new table at epoch E+1.
//!
//! The caller then closes the volume and opens it again on the new set.
//! A crash before 3 starts leaves every table without NEW: the volume opens
//! as before (the stray degraded-map entries are harmless). A crash during
//! 3 leaves some backends at E+1 with the new table and others at E with
//! the old one: the open takes the highest epoch's `.meta`, the new table,
//! and rewrites it everywhere. In both cases NEW's parts are stale until
//! repaired, so NEW is never read before it holds the data. Running the
//! same replace again finishes either state. E+1 fences this session's own
//! writes on nodes, so the volume is not written between 3 and the reopen.

use std::sync::Arc;

use qbd_core::backend::Backend;
use qbd_core::meta::volume::VolumeMeta;
use qbd_core::placement::BackendId;

use super::super::{Volume, VolumeError};

/// What the replace did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaced {
    /// The table was switched now (steps 1-3).
    Switched,
    /// The table already named NEW (an interrupted or repeated replace):
    /// nothing to do here; the reopen finishes the table, the repair the
    /// filling.
    AlreadySwitched,
}

fn setup(msg: String) -> VolumeError {
    VolumeError::Setup(msg)
}

impl Volume {
    /// Moves OLD's slot to NEW as the module docs say. `old` must be in the
    /// table (or NEW already in its place).
    pub async fn replace_backend(
        &self,
        old: BackendId,
        new: &Arc<dyn Backend>,
    ) -> Result<Replaced, VolumeError> {
        let table = &self.meta.placement;
        if let Some(slot) = table.iter().position(|id| *id == new.id()) {
            if table.contains(&old) {
                return Err(setup(format!(
                    "{} is already backend {slot} of volume {:?}",
                    new.describe(),
                    self.meta.name
                )));
            }
            // Step 1 happened before any table named NEW, and an entry is
            // cleared only once its part is rebuilt: what NEW still lacks
            // is recorded already.
            return Ok(Replaced::AlreadySwitched);
        }
        let slot = table.iter().position(|id| *id == old).ok_or_else(|| {
            setup(format!(
                "backend {old} is not in volume {:?}'s placement table",
                self.meta.name
            ))
        })?;
        if self.slot_present(slot) {
            return Err(setup(format!(
                "{} (the backend to replace) was given: leave it out of the backend flags",
                self.backends[slot].describe()
            )));
        }
        let resume = self.check_new(new).await?;
        self.mark_new_stale(slot, new.id()).await?;
        let mut meta = self.meta.clone();
        meta.placement[slot] = new.id();
        meta.epoch += 1;
        meta.master = format!("qbd repair --replace (pid {})", std::process::id());
        if resume {
            new.save_meta(meta.clone()).await?;
        } else {
            new.create_volume(meta.clone()).await?;
        }
        for s in (0..self.backends.len()).filter(|&s| s != slot && self.slot_present(s)) {
            self.backends[s].save_meta(meta.clone()).await?;
        }
        eprintln!(
            "qbd repair: backend {slot} of volume {:?} is now {} (was {old})",
            self.meta.name,
            new.describe()
        );
        Ok(Replaced::Switched)
    }

    fn slot_present(&self, slot: usize) -> bool {
        !self.health.is_failed(slot)
    }

    /// Whether NEW already holds this volume (an interrupted replace);
    /// refuses a NEW that holds another volume under its name or number.
    async fn check_new(&self, new: &Arc<dyn Backend>) -> Result<bool, VolumeError> {
        let m = &self.meta;
        if let Some(nr) = new.volume_number(&m.name).await? {
            let theirs: Option<VolumeMeta> = new.load_meta(nr).await?;
            return match theirs {
                Some(t) if t.uuid == m.uuid && nr == m.number => Ok(true),
                _ => Err(setup(format!(
                    "{} already holds another volume named {:?}: give a fresh backend",
                    new.describe(),
                    m.name
                ))),
            };
        }
        if new.volume_numbers().await?.contains(&m.number) {
            return Err(setup(format!(
                "{} already uses volume number {} for another volume: give a fresh backend",
                new.describe(),
                m.number
            )));
        }
        Ok(false)
    }

    /// Step 1: NEW's parts of the written chunks in `slot` are stale, on
    /// every healthy backend.
    async fn mark_new_stale(&self, slot: usize, new: BackendId) -> Result<(), VolumeError> {
        let parts = self.geo.redundancy.parts();
        let chunks: Vec<u64> = self
            .allocated
            .iter()
            .filter(|&c| (0..parts).any(|p| self.placement.slot(c, p) == slot))
            .collect();
        if chunks.is_empty() {
            return Ok(());
        }
        let mut recorded = 0;
        for s in (0..self.backends.len()).filter(|&s| s != slot && self.slot_present(s)) {
            self.backends[s].mark_stale(new, chunks.clone()).await?;
            recorded += 1;
        }
        if recorded == 0 {
            return Err(VolumeError::NoCopy(
                "no healthy backend to record the replacement's stale parts".into(),
            ));
        }
        Ok(())
    }
}
