//! `--replace OLD=NEW`: slot `s` of the placement table moves from backend
//! OLD to the fresh backend NEW, then the repair fills NEW.
//!
//! The switch, the same offline and online, in this order:
//! 1. every healthy backend records, durably, that NEW's part of every
//!    written chunk with a part in slot `s` is stale (degraded map keyed by
//!    NEW's identity: ignored while no table names NEW);
//! 2. NEW gets the volume (`.volumesmeta`, `.meta` with the new table at
//!    epoch E+1, an empty allocation map) — or, if an interrupted replace
//!    already made it, its `.meta` is rewritten;
//! 3. every other healthy backend's `.meta` is rewritten (atomically) with
//!    the new table at epoch E+1.
//!
//! **Offline** ([`Volume::replace_backend`], `qbd repair` without a master):
//! done on a volume opened for repair *without* OLD (its slot stands in as
//! absent); the caller then closes the volume and opens it again on the new
//! set. E+1 is written under the tool's own identity; it fences this
//! session's own writes on nodes, so the volume is not written between 3 and
//! the reopen.
//!
//! **Online** ([`Volume::replace_serving`], through the serving master's
//! admin socket): the whole volume's exclusive range lock is held from
//! before 1 until the live volume uses NEW, so no client read or write (and
//! no resync or heal, which take chunk locks) runs in between. NEW is opened
//! between 2 and 3. E+1 is written under *this master's* identity, so it
//! becomes the master's session epoch on every backend (a node accepts the
//! newer epoch; nodes remember the epoch they last saved). Then slot `s`
//! holds NEW (behind the volume's fence), the volume's meta is the new
//! table at E+1 (a later readmit writes it), NEW's parts of those chunks are
//! stale in memory and the slot is not failed: writes skip NEW's stale
//! parts, reads never touch them, and the repair or the background resync
//! fills them on the heal path. OLD may still be answering (a planned
//! move): its data is not used, its files are left as they are.
//!
//! Crash safety (either way): a crash before 3 starts leaves every table
//! without NEW: the volume opens as before (the stray degraded-map entries
//! are harmless). A crash during 3 leaves some backends at E+1 with the new
//! table and others at E with the old one: the open takes the highest
//! epoch's `.meta`, the new table, and rewrites it everywhere. In both cases
//! NEW's parts are stale until repaired, so NEW is never read before it
//! holds the data. Running the same replace again finishes either state.

use std::sync::Arc;

use qbd_core::backend::Backend;
use qbd_core::generation::MAX_EPOCH;
use qbd_core::meta::volume::VolumeMeta;
use qbd_core::placement::BackendId;

use super::super::range_lock::Mode;
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

/// Who makes the switch: the tool on a volume it opened, or the master
/// serving the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Session {
    Offline,
    Serving,
}

fn setup(msg: String) -> VolumeError {
    VolumeError::Setup(msg)
}

impl Volume {
    /// Moves OLD's slot to NEW as the module docs say (offline). `old` must
    /// be in the table (or NEW already in its place).
    pub async fn replace_backend(
        &self,
        old: BackendId,
        new: &Arc<dyn Backend>,
    ) -> Result<Replaced, VolumeError> {
        let meta = self.meta();
        let Some(slot) = self.locate(&meta, old, new)? else {
            return Ok(Replaced::AlreadySwitched);
        };
        if self.slot_present(slot) {
            return Err(setup(format!(
                "{} (the backend to replace) was given: leave it out of the backend flags",
                self.backends[slot].describe()
            )));
        }
        let who = format!("qbd repair --replace (pid {})", std::process::id());
        self.switch(slot, new, &meta, who, Session::Offline).await?;
        eprintln!(
            "qbd repair: backend {slot} of volume {:?} is now {} (was {old})",
            meta.name,
            new.describe()
        );
        Ok(Replaced::Switched)
    }

    /// Moves OLD's slot to NEW in this serving master (module docs:
    /// online). `new` is the backend as reached (not yet behind the fence).
    /// Returns the slot and what was done; the repair fills NEW afterwards.
    pub async fn replace_serving(
        &self,
        old: BackendId,
        new: Arc<dyn Backend>,
    ) -> Result<(usize, Replaced), VolumeError> {
        // The whole volume: no client I/O, resync or heal until it is done.
        let _all = self.locks.lock(0, u64::MAX, Mode::Exclusive).await;
        self.fence.check()?;
        let meta = self.meta();
        let Some(slot) = self.locate(&meta, old, &new)? else {
            let slot = meta.placement.iter().position(|id| *id == new.id());
            return Ok((slot.unwrap_or_default(), Replaced::AlreadySwitched));
        };
        let who = meta.master.clone();
        let (switched, stale) = self
            .switch(slot, &new, &meta, who, Session::Serving)
            .await?;
        let gone = self.backends.swap(slot, Arc::clone(&new));
        self.set_meta(switched);
        self.health.new_backend_in(slot, &stale);
        eprintln!(
            "qbd-master: backend {slot} of volume {:?} is now {} (was {}); its {} written \
             chunk(s) are stale until repaired",
            meta.name,
            new.describe(),
            gone.map_or_else(|| old.to_string(), |b| b.describe()),
            stale.len()
        );
        Ok((slot, Replaced::Switched))
    }

    /// OLD's slot, or `None` if the table already names NEW instead of OLD.
    fn locate(
        &self,
        meta: &VolumeMeta,
        old: BackendId,
        new: &Arc<dyn Backend>,
    ) -> Result<Option<usize>, VolumeError> {
        let table = &meta.placement;
        if let Some(slot) = table.iter().position(|id| *id == new.id()) {
            if table.contains(&old) {
                return Err(setup(format!(
                    "{} is already backend {slot} of volume {:?}: give a fresh backend",
                    new.describe(),
                    meta.name
                )));
            }
            // Step 1 happened before any table named NEW, and an entry is
            // cleared only once its part is rebuilt: what NEW still lacks
            // is recorded already.
            return Ok(None);
        }
        let slot = table.iter().position(|id| *id == old).ok_or_else(|| {
            setup(format!(
                "backend {old} is not in volume {:?}'s placement table",
                meta.name
            ))
        })?;
        Ok(Some(slot))
    }

    /// Steps 1-3 (and, serving, NEW's open between 2 and 3): returns the
    /// new meta and the chunks whose NEW part was recorded stale.
    async fn switch(
        &self,
        slot: usize,
        new: &Arc<dyn Backend>,
        meta: &VolumeMeta,
        who: String,
        session: Session,
    ) -> Result<(VolumeMeta, Vec<u64>), VolumeError> {
        if meta.epoch >= MAX_EPOCH {
            return Err(setup("epoch space exhausted".into()));
        }
        let resume = self.check_new(meta, new).await?;
        let stale = self.mark_new_stale(slot, new.id()).await?;
        let mut next = meta.clone();
        next.placement[slot] = new.id();
        next.epoch += 1;
        next.master = who;
        if resume {
            new.save_meta(next.clone()).await?;
        } else {
            new.create_volume(next.clone()).await?;
        }
        if session == Session::Serving {
            // Before any other table names NEW: if NEW cannot serve, no
            // table names it and the volume goes on as before.
            new.open_volume(next.clone()).await?;
        }
        self.save_others(slot, &next, session).await?;
        Ok((next, stale))
    }

    /// Step 3. Offline, any failure stops the replace (run it again).
    /// Serving, a backend that fails it is marked failed (its readmission
    /// writes the new table); it fails only if no backend took it.
    async fn save_others(
        &self,
        slot: usize,
        next: &VolumeMeta,
        session: Session,
    ) -> Result<(), VolumeError> {
        let mut first_err = None;
        let mut saved = 0;
        for s in (0..self.backends.len()).filter(|&s| s != slot && self.slot_present(s)) {
            match self.backends[s].save_meta(next.clone()).await {
                Ok(()) => saved += 1,
                Err(e) if session == Session::Offline || e.is_fenced() => return Err(e.into()),
                Err(e) => {
                    self.fail(s, &format!("recording the new placement table: {e}"));
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) if saved == 0 => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn slot_present(&self, slot: usize) -> bool {
        !self.health.is_failed(slot)
    }

    /// Whether NEW already holds this volume (an interrupted replace);
    /// refuses a NEW that holds another volume under its name or number.
    async fn check_new(&self, m: &VolumeMeta, new: &Arc<dyn Backend>) -> Result<bool, VolumeError> {
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
    /// every healthy backend. Returns those chunks.
    async fn mark_new_stale(&self, slot: usize, new: BackendId) -> Result<Vec<u64>, VolumeError> {
        let parts = self.geo.redundancy.parts();
        let chunks: Vec<u64> = self
            .allocated
            .iter()
            .filter(|&c| (0..parts).any(|p| self.placement.slot(c, p) == slot))
            .collect();
        if chunks.is_empty() {
            return Ok(chunks);
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
        Ok(chunks)
    }
}
