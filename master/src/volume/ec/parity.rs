//! How parity blocks and their records reach a backend.
//!
//! A parity record names the data generations its parity covers (flag
//! `PARITY`, K covered generations, `Cover::parity_record`). The `Backend`
//! trait's `write`/`heal` build plain data records, and its `read`
//! reports a generation but not a cover, so this module is the one place
//! that bridges the gap, in two steps:
//!
//! 1. the parity bytes go through the normal `write` (or `heal`) with the
//!    row update's generation: fault injection, crash undo, the newer-only
//!    rule and dirty tracking apply as for data;
//! 2. each block's record is then replaced by its parity record through
//!    `write_raw`, under the same exclusive row lock.
//!
//! Between the two steps the block carries a plain record, which
//! `PartMeta::parity` treats as unavailable: a crash there leaves a parity
//! part that is simply not used, never a wrong cover. Covers are read back
//! per block with `read_raw` (only when a row must be reconstructed). Both
//! raw operations exist on directory backends and, over nodes, as the node
//! protocol's `ReadRaw`/`WriteRaw` (epoch-fenced).

use qbd_core::backend::{BlockState, BlockWrite, PartId, WriteData};
use qbd_core::ec::{Cover, PartMeta};
use qbd_core::format::record::{MetaRecord, RecordPos};
use qbd_core::generation::Generation;

use super::super::heal::Apply;
use super::super::{Volume, VolumeError};

/// Parity blocks of one parity part over a run of rows.
#[derive(Debug)]
pub struct ParityWrite {
    /// The part.
    pub part: PartId,
    /// First row.
    pub first: u32,
    /// `rows × block_size` parity bytes; `None`: all zero (punched).
    pub bytes: Option<Vec<u8>>,
    /// One cover per row.
    pub covers: Vec<Cover>,
    /// The write's generation.
    pub generation: Generation,
}

impl Volume {
    /// The covers of a parity part's blocks, as read (`states` from the
    /// normal read of the same rows, under the same lock).
    pub(in crate::volume) async fn parity_metas(
        &self,
        slot: usize,
        part: PartId,
        first: u32,
        states: &[BlockState],
    ) -> Vec<PartMeta> {
        let k = self.geo.redundancy.data_parts();
        let mut out = Vec::with_capacity(states.len());
        for (i, st) in states.iter().enumerate() {
            let block = first + i as u32;
            let meta = match st {
                BlockState::Corrupt(_) => PartMeta::Unavailable,
                BlockState::Unwritten => PartMeta::parity(&MetaRecord::EMPTY, k),
                BlockState::Data(g) | BlockState::Zero(g) => {
                    match self.backends[slot].read_raw(part, block).await {
                        Ok(raw) => {
                            let pos = RecordPos {
                                chunk: part.chunk,
                                part: part.part,
                                block,
                            };
                            match MetaRecord::decode(&raw.record, pos) {
                                Ok(r) if r.generation == *g => PartMeta::parity(&r, k),
                                _ => PartMeta::Unavailable,
                            }
                        }
                        Err(_) => PartMeta::Unavailable,
                    }
                }
            };
            out.push(meta);
        }
        out
    }

    /// Writes parity blocks and then their parity records (see the module
    /// docs); [`Apply::Heal`] heals them (resync, reconcile, replay, `qbd
    /// repair`: `super::super::heal`).
    pub(in crate::volume) async fn write_parity(
        &self,
        slot: usize,
        w: ParityWrite,
        apply: Apply,
    ) -> Result<(), VolumeError> {
        let bs = self.bs() as usize;
        let count = w.covers.len() as u32;
        let data = match &w.bytes {
            Some(b) => WriteData::Bytes(b.clone()),
            None => WriteData::Zero { punch: true },
        };
        let bw = BlockWrite {
            part: w.part,
            first: w.first,
            count,
            data,
            generation: w.generation,
        };
        let backend = &self.backends[slot];
        let outcome = match apply {
            Apply::Heal => {
                self.heal_write(slot, bw).await?;
                qbd_core::backend::WriteOutcome {
                    applied: count,
                    skipped: 0,
                }
            }
            Apply::Write => backend.write(bw).await?,
        };
        if outcome.applied != count {
            return Err(VolumeError::Inconsistent(format!(
                "parity write of chunk {} part {} skipped {} block(s): a newer generation is stored",
                w.part.chunk, w.part.part, outcome.skipped
            )));
        }
        let zeros = vec![0u8; bs];
        for (i, cover) in w.covers.iter().enumerate() {
            let block = w.first + i as u32;
            let bytes = w
                .bytes
                .as_ref()
                .map_or(&zeros[..], |b| &b[i * bs..(i + 1) * bs]);
            let pos = RecordPos {
                chunk: w.part.chunk,
                part: w.part.part,
                block,
            };
            let rec = cover.parity_record(bytes, w.generation).encode(pos);
            backend.write_raw(w.part, block, None, Some(rec)).await?;
        }
        Ok(())
    }
}
