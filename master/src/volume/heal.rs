//! Heal: the one operation that replaces a part's blocks with known-good
//! content (`docs/heal.md`).
//!
//! Every trigger — read repair, resync of a readmitted backend, crash
//! reconcile, EC journal replay and `qbd repair` — decides *what* a part
//! must hold (its plan: blocks copied at their source's generation, or
//! rebuilt from K consistent EC parts), then runs it through the functions
//! here, which are the only callers of [`Backend::heal`]:
//! - [`Volume::heal_write`]: blocks (data or zeros) at the generation given,
//!   whatever the stored generation;
//! - [`Volume::heal_block`]: one block as a [`Content`] says (`Lost`: an
//!   invalid record, so it reads as EIO, never as zeros);
//! - [`Volume::heal_whole_part`]: a part recreated empty, then filled;
//! - [`Volume::heal_done`]: the part synced and its stale mark cleared on
//!   every backend.
//!
//! EC parity blocks are healed by `write_parity` with [`Apply::Heal`]
//! (its bytes through [`Volume::heal_write`], its cover through the raw
//! record write).
//!
//! Rules the callers keep (each function's doc repeats the one it needs):
//! - **Fencing** is the master's session epoch, which the backend carries
//!   (a node refuses another one); never the generation's epoch, which is
//!   old by design. A refusal fences the volume ([`super::fence`]): it is
//!   never evidence that data is stale.
//! - **Ordering**: the caller holds the lock of the blocks healed (the
//!   chunk's exclusive lock for a whole part, and for anything that then
//!   clears a stale mark), from the plan's reads to [`Volume::heal_done`],
//!   so no write can land between "rebuilt" and "current again".
//! - **Lost only on checked blocks**: `Content::Lost` is written only for a
//!   block whose every copy was read and failed its checks.

use qbd_core::backend::{Backend, BlockState, BlockWrite, PartId, WriteData};
use qbd_core::format::record::RECORD_SIZE;
use qbd_core::generation::Generation;

use super::{Volume, VolumeError};

/// How a write reaches a backend: the normal write (generation rule) or the
/// heal operation (whatever the stored generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    /// A client write: applied only where its generation is newer.
    Write,
    /// A heal: replaces the blocks.
    Heal,
}

/// What one block of a healed part must hold.
#[derive(Debug, Clone, Copy)]
pub enum Content<'a> {
    /// These bytes (one block) at this generation.
    Data(&'a [u8], Generation),
    /// Zeros at this generation.
    Zero(Generation),
    /// No good copy exists (every copy was checked): reads as EIO.
    Lost,
}

impl<'a> Content<'a> {
    /// The content of a block found in `state` with bytes `data`; `None`
    /// for a never-written block (nothing to put) and for a block that
    /// failed its checks (not known-good: the caller decides).
    pub fn of(state: &BlockState, data: &'a [u8]) -> Option<Content<'a>> {
        match state {
            BlockState::Data(g) => Some(Content::Data(data, *g)),
            BlockState::Zero(g) => Some(Content::Zero(*g)),
            BlockState::Unwritten | BlockState::Corrupt(_) => None,
        }
    }

    /// A never-written block, as a heal writes it over an outdated one
    /// (zeros at generation 0: the same as never written).
    pub const NEVER_WRITTEN: Content<'static> = Content::Zero(Generation::NONE);
}

/// A record no block can have (it fails its checksum): what a healed part
/// holds where no good copy of a block was left, so it reads as lost.
pub const LOST_RECORD: [u8; RECORD_SIZE] = [0xff; RECORD_SIZE];

impl Volume {
    /// Heals blocks `w` on backend `slot`: the only call of
    /// [`Backend::heal`]. The caller holds their lock.
    pub(super) async fn heal_write(&self, slot: usize, w: BlockWrite) -> Result<(), VolumeError> {
        let backend: &dyn Backend = self.backends[slot].as_ref();
        let (part, count) = (w.part, w.count);
        let out = backend.heal(w).await?;
        if out.applied != count {
            return Err(VolumeError::Inconsistent(format!(
                "heal of chunk {} part {} on {} applied {} of {count} block(s)",
                part.chunk,
                part.part,
                backend.describe(),
                out.applied
            )));
        }
        Ok(())
    }

    /// Heals block `block` of `part` on `slot` with `content`. The caller
    /// holds the block's lock.
    pub(super) async fn heal_block(
        &self,
        slot: usize,
        part: PartId,
        block: u32,
        content: Content<'_>,
    ) -> Result<(), VolumeError> {
        let (data, generation) = match content {
            Content::Data(d, g) => (WriteData::Bytes(d.to_vec()), g),
            Content::Zero(g) => (WriteData::Zero { punch: true }, g),
            Content::Lost => {
                self.backends[slot]
                    .write_raw(part, block, None, Some(LOST_RECORD))
                    .await?;
                return Ok(());
            }
        };
        let w = BlockWrite {
            part,
            first: block,
            count: 1,
            data,
            generation,
        };
        self.heal_write(slot, w).await
    }

    /// Replaces `part` on `slot` with a fresh part holding `image` (per
    /// block: its content, `None` for never written), then syncs it.
    /// Returns the blocks written. The caller holds the chunk's exclusive
    /// lock and has recorded the part stale (durably) before, so a crash
    /// half-way never leaves a part that reads as never written.
    pub(super) async fn heal_whole_part(
        &self,
        slot: usize,
        part: PartId,
        image: &[Option<Content<'_>>],
    ) -> Result<u64, VolumeError> {
        self.backends[slot].recreate(part).await?;
        let mut written = 0;
        for (i, content) in image.iter().enumerate() {
            if let Some(c) = content {
                self.heal_block(slot, part, i as u32, *c).await?;
                written += 1;
            }
        }
        self.backends[slot].sync(Some(vec![part])).await?;
        Ok(written)
    }

    /// Ends the heal of a whole part: synced, then current again on every
    /// backend's degraded map. The caller still holds the chunk's exclusive
    /// lock (a write in between would skip the part and be lost).
    pub(super) async fn heal_done(&self, slot: usize, part: PartId) -> Result<(), VolumeError> {
        self.backends[slot].sync(Some(vec![part])).await?;
        self.clear_stale_everywhere(slot, part.chunk).await
    }
}

/// The image of a part as its good copy `states`/`data` give it (`bs`
/// bytes per block); `None` entries are never written.
pub(super) fn image_of<'a>(
    states: &[Option<BlockState>],
    data: &'a [u8],
    bs: usize,
) -> Vec<Option<Content<'a>>> {
    states
        .iter()
        .enumerate()
        .map(|(i, st)| match st {
            Some(st) => Content::of(st, &data[i * bs..(i + 1) * bs]),
            None => Some(Content::Lost),
        })
        .collect()
}
