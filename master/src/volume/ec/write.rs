//! EC writes: row updates under exclusive row locks.
//!
//! The caller (`io.rs`) has turned the request into whole blocks of one
//! chunk and holds an exclusive lock over the rows they touch. Here:
//! 1. the blocks of the touched rows that the write does not cover (the
//!    edges of the first and last row) are read, with their generations —
//!    reconstructed if their part is unusable; full rows read nothing;
//! 2. the new parity of all touched rows is encoded in one call (the K data
//!    runs, one per data part, are the same part blocks in every part);
//! 3. one generation G is taken; the new blocks of every part become a
//!    redo record in the master's journal, fsynced before any backend write
//!    (`journal.rs`: the write hole); every usable data part gets its
//!    written blocks, every usable parity part its blocks of all touched
//!    rows, each parity record covering, per row, G for the blocks written
//!    and the read generation for the others;
//! 4. with at least K parts written, the missed ones (unusable or failed)
//!    are recorded in the degraded map before the reply; fewer than K parts
//!    usable or written: the write fails (EIO).
//!
//! Zeroing (`WriteData::Zero`) of whole rows writes zero records to the
//! data parts and zero parity (punched) with parity records; partly
//! covered rows are encoded from zeros and the kept blocks.

use futures_util::future::join_all;
use qbd_core::backend::{BlockWrite, PartId, WriteData};
use qbd_core::ec::Cover;
use qbd_core::generation::Generation;

use super::super::heal::Apply;
use super::super::io::Segment;
use super::super::journal::{PartPut, RowUpdate};
use super::super::range_lock::Mode;
use super::super::{Volume, VolumeError};
use super::parity::ParityWrite;

impl Volume {
    /// Writes a segment's whole blocks to an EC chunk (rows locked
    /// exclusively by the caller).
    pub(in crate::volume) async fn ec_write(
        &self,
        s: Segment,
        data: WriteData,
        fua: bool,
    ) -> Result<(), VolumeError> {
        let ec = self.ec_state()?;
        let r = self.ec_write_rows(s, data, fua).await;
        ec.cache.invalidate(s.chunk);
        r
    }

    async fn ec_write_rows(
        &self,
        s: Segment,
        data: WriteData,
        fua: bool,
    ) -> Result<(), VolumeError> {
        let ec = self.ec_state()?;
        let (k, m) = (ec.k(), ec.m());
        let bs = self.bs() as usize;
        let rows = ec.rows_of(s);
        let n_rows = rows.len();
        let row_first = rows.start * k as u32;
        let targets: Vec<usize> = (0..k + m)
            .filter(|&p| self.usable(self.placement.slot(s.chunk, p), s.chunk))
            .collect();
        if targets.len() < k {
            return Err(VolumeError::NoCopy(format!(
                "chunk {}: only {} of {} parts writable, a row needs {k}",
                s.chunk,
                targets.len(),
                k + m
            )));
        }
        let generation = self
            .generations
            .next()
            .ok_or(VolumeError::GenerationsExhausted)?;
        // The touched rows in volume order, and each block's generation.
        let mut buf = vec![0u8; n_rows * k * bs];
        let mut gens = vec![generation; n_rows * k];
        let at = (s.first - row_first) as usize;
        let zero = match &data {
            WriteData::Bytes(d) => {
                buf[at * bs..at * bs + d.len()].copy_from_slice(d);
                None
            }
            WriteData::Zero { punch } => Some(*punch),
        };
        let head = Segment {
            first: row_first,
            count: s.first - row_first,
            start: s.start - u64::from(s.first - row_first) * bs as u64,
            ..s
        };
        let end = s.first + s.count;
        let tail = Segment {
            first: end,
            count: rows.end * k as u32 - end,
            start: s.start + u64::from(s.count) * bs as u64,
            ..s
        };
        for edge in [head, tail].into_iter().filter(|e| e.count > 0) {
            let old = self.ec_read(edge, Mode::Exclusive).await?;
            let i = (edge.first - row_first) as usize;
            buf[i * bs..i * bs + old.data.len()].copy_from_slice(&old.data);
            gens[i..i + edge.count as usize].copy_from_slice(&old.gens);
        }
        let all_zero = zero.is_some() && head.count == 0 && tail.count == 0;
        let parity = if all_zero {
            None
        } else {
            let shards: Vec<Vec<u8>> = (0..k).map(|p| gather(&buf, bs, k, p, n_rows)).collect();
            Some(ec.codec.encode(&shards)?)
        };
        let covers: Vec<Cover> = gens.chunks(k).map(Cover::new).collect::<Result<_, _>>()?;
        let update = self.row_update(s, &rows, generation, covers, &buf, zero, parity)?;
        let journal = &self.erasure_state()?.journal;
        let ticket = journal.append(&update).await?;
        let results = self
            .apply_row_update(&update, &targets, Apply::Write, fua)
            .await;
        journal.done(ticket);
        self.settle_row_writes(s.chunk, k, &targets, results, fua)
            .await?;
        if fua {
            journal.synced(ticket).await;
        }
        if journal.wants_flush() {
            self.flush_all().await?;
        }
        Ok(())
    }

    /// The new blocks of every part: each data part's written blocks, each
    /// parity part's blocks of every touched row.
    #[allow(clippy::too_many_arguments)]
    fn row_update(
        &self,
        s: Segment,
        rows: &std::ops::Range<u32>,
        generation: Generation,
        covers: Vec<Cover>,
        buf: &[u8],
        zero: Option<bool>,
        parity: Option<Vec<Vec<u8>>>,
    ) -> Result<RowUpdate, VolumeError> {
        let ec = self.ec_state()?;
        let (k, bs) = (ec.k(), self.bs() as usize);
        let blocks = s.first..s.first + s.count;
        let mut parts = Vec::with_capacity(k + ec.m());
        for p in 0..k {
            let pr = ec.part_rows(p, blocks.clone());
            if pr.is_empty() {
                continue;
            }
            let data = match zero {
                Some(punch) => WriteData::Zero { punch },
                None => {
                    let mut b = Vec::with_capacity(pr.len() * bs);
                    for row in pr.clone() {
                        let i = ((row - rows.start) as usize) * k + p;
                        b.extend_from_slice(&buf[i * bs..(i + 1) * bs]);
                    }
                    WriteData::Bytes(b)
                }
            };
            parts.push(PartPut {
                part: p as u8,
                first: pr.start,
                count: pr.len() as u32,
                data,
            });
        }
        let mut parity = parity.map(Vec::into_iter);
        for j in 0..ec.m() {
            let data = match parity.as_mut().and_then(Iterator::next) {
                Some(b) => WriteData::Bytes(b),
                None => WriteData::Zero { punch: true },
            };
            parts.push(PartPut {
                part: (k + j) as u8,
                first: rows.start,
                count: rows.len() as u32,
                data,
            });
        }
        Ok(RowUpdate {
            chunk: s.chunk,
            first_row: rows.start,
            generation,
            covers,
            parts,
        })
    }

    /// Writes a row update to the `targets` parts (healing them, at the
    /// record's generations, when replaying it); per target, whether it
    /// wrote.
    pub(in crate::volume) async fn apply_row_update(
        &self,
        u: &RowUpdate,
        targets: &[usize],
        apply: Apply,
        fua: bool,
    ) -> Vec<Result<bool, VolumeError>> {
        let k = self.geo.redundancy.data_parts();
        let writes = targets.iter().map(|&p| {
            let put = u.parts.iter().find(|x| usize::from(x.part) == p);
            let slot = self.placement.slot(u.chunk, p);
            let id = PartId {
                chunk: u.chunk,
                part: p as u8,
            };
            async move {
                let Some(put) = put.filter(|x| x.count > 0) else {
                    return Ok(false);
                };
                if p < k {
                    let w = BlockWrite {
                        part: id,
                        first: put.first,
                        count: put.count,
                        data: copy(&put.data),
                        generation: u.generation,
                    };
                    match apply {
                        Apply::Heal => self.heal_write(slot, w).await?,
                        Apply::Write => {
                            self.backends[slot].write(w).await?;
                        }
                    }
                } else {
                    let pw = ParityWrite {
                        part: id,
                        first: put.first,
                        bytes: match &put.data {
                            WriteData::Bytes(b) => Some(b.clone()),
                            WriteData::Zero { .. } => None,
                        },
                        covers: u.covers.clone(),
                        generation: u.generation,
                    };
                    self.write_parity(slot, pw, apply).await?;
                }
                if fua {
                    self.backends[slot].sync(Some(vec![id])).await?;
                }
                Ok::<bool, VolumeError>(true)
            }
        });
        join_all(writes).await
    }

    /// Records what a row update missed; fails it when fewer than K parts
    /// of its rows hold it.
    pub(in crate::volume) async fn settle_row_writes(
        &self,
        chunk: u64,
        k: usize,
        targets: &[usize],
        results: Vec<Result<bool, VolumeError>>,
        fua: bool,
    ) -> Result<(), VolumeError> {
        let parts = self.geo.redundancy.parts();
        let mut missed: Vec<usize> = (0..parts).filter(|p| !targets.contains(p)).collect();
        let mut first_error = None;
        for (&p, r) in targets.iter().zip(results) {
            let slot = self.placement.slot(chunk, p);
            match r {
                Ok(wrote) => {
                    if wrote && !fua {
                        self.health.note_written(slot, chunk);
                    }
                }
                Err(e) => {
                    if e.is_part_fault() {
                        eprintln!(
                            "qbd-master: chunk {chunk} on {}: {e}",
                            self.backends[slot].describe()
                        );
                    } else {
                        self.fail(slot, &e.to_string());
                    }
                    missed.push(p);
                    first_error.get_or_insert(e);
                }
            }
        }
        let slots: Vec<usize> = missed
            .iter()
            .map(|&p| self.placement.slot(chunk, p))
            .collect();
        self.degrade(&slots, &[chunk]).await?;
        if parts - missed.len() < k {
            return Err(first_error.unwrap_or_else(|| {
                VolumeError::NoCopy(format!(
                    "chunk {chunk}: fewer than {k} parts took the write"
                ))
            }));
        }
        Ok(())
    }
}

/// Data part `p`'s blocks of `n_rows` rows laid out in volume order.
pub(super) fn gather(rows: &[u8], bs: usize, k: usize, p: usize, n_rows: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n_rows * bs);
    for r in 0..n_rows {
        let i = r * k + p;
        out.extend_from_slice(&rows[i * bs..(i + 1) * bs]);
    }
    out
}

fn copy(d: &WriteData) -> WriteData {
    match d {
        WriteData::Bytes(b) => WriteData::Bytes(b.clone()),
        WriteData::Zero { punch } => WriteData::Zero { punch: *punch },
    }
}
