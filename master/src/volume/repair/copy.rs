//! Copying a block to a part *with its original generation*.
//!
//! The backends' repair operation (`Backend::repair`) takes a generation,
//! but a node fences it by that generation's epoch: a block written in an
//! earlier epoch cannot be copied back at its own generation through it.
//! The raw write is fenced by the backend's current epoch instead, so a
//! copy is its data and the record the repair operation would have made
//! (`MetaRecord::for_data` / `for_zero` at the block's place), written raw:
//! data first, then the record, as every block write is.

use qbd_core::backend::{BlockState, PartId};
use qbd_core::format::record::{MetaRecord, RecordPos};
use qbd_core::generation::Generation;

use super::super::{Volume, VolumeError};

/// What to put in one block.
#[derive(Debug, Clone, Copy)]
pub enum Put<'a> {
    /// These bytes (one block) at this generation.
    Data(&'a [u8], Generation),
    /// Zeros at this generation.
    Zero(Generation),
}

impl<'a> Put<'a> {
    /// The put for a block found in `state` with bytes `data` (`None` for
    /// never-written and failing blocks: nothing to put).
    pub fn of(state: &BlockState, data: &'a [u8]) -> Option<Put<'a>> {
        match state {
            BlockState::Data(g) => Some(Put::Data(data, *g)),
            BlockState::Zero(g) => Some(Put::Zero(*g)),
            BlockState::Unwritten | BlockState::Corrupt(_) => None,
        }
    }
}

impl Volume {
    /// Writes block `block` of `part` on `slot` as `put` says. `fresh`: the
    /// part was just recreated, so a zero block's data is already a hole.
    pub(in crate::volume) async fn put_block(
        &self,
        slot: usize,
        part: PartId,
        block: u32,
        put: Put<'_>,
        fresh: bool,
    ) -> Result<(), VolumeError> {
        let pos = RecordPos {
            chunk: part.chunk,
            part: part.part,
            block,
        };
        let (data, record) = match put {
            Put::Data(d, g) => (Some(d.to_vec()), MetaRecord::for_data(d, g)),
            Put::Zero(g) => {
                let data = (!fresh).then(|| vec![0u8; self.bs() as usize]);
                (data, MetaRecord::for_zero(g))
            }
        };
        self.backends[slot]
            .write_raw(part, block, data, Some(record.encode(pos)))
            .await?;
        Ok(())
    }
}
