//! EC reads: one data part per block, verified; reconstruction otherwise.
//!
//! Chunk block `b` is block `b / K` of data part `b mod K`: a read of a
//! segment is at most one backend read per data part (one for a 4 KiB
//! read). A block whose part is unusable (stale, backend failed, file
//! missing) or that fails its checks comes from the reconstructed part in
//! the cache; on a miss, a reader (holding only shared locks) builds the
//! entry for the whole chunk under a shared whole-chunk lock, in one decode
//! per erasure pattern, and heals the blocks of usable parts that failed
//! their checks. A writer (holding exclusive row locks, which a whole-chunk
//! lock would wait for) restores just its rows and caches nothing.

use std::ops::Range;
use std::sync::Arc;

use futures_util::future::join_all;
use qbd_core::backend::{PartId, PartRead};
use qbd_core::ec::{PartMeta, PartSet};
use qbd_core::generation::Generation;

use super::super::heal::Content;
use super::super::io::Segment;
use super::super::range_lock::Mode;
use super::super::{Volume, VolumeError};
use super::Ec;
use super::cache::CachedPart;
use super::rows::{data_generation, restore_async};

/// Blocks read: bytes and each block's generation (what a new parity cover
/// records for a block kept by a partial-row write).
#[derive(Debug)]
pub struct BlocksRead {
    /// `count × block_size` bytes.
    pub data: Vec<u8>,
    /// Per block.
    pub gens: Vec<Generation>,
}

/// Restored rows of one data part: the part's rows from `base`.
struct Source {
    base: u32,
    part: Arc<CachedPart>,
}

impl Volume {
    pub(in crate::volume) fn ec_state(&self) -> Result<&Ec, VolumeError> {
        Ok(&self.erasure_state()?.ec)
    }

    /// The EC state (an error on a replicated volume: a caller's bug).
    pub(in crate::volume) fn erasure_state(&self) -> Result<&super::super::Erasure, VolumeError> {
        self.scheme
            .erasure()
            .ok_or_else(|| VolumeError::Setup("not an erasure-coded volume".into()))
    }

    /// Reads a segment of an EC chunk. The caller holds a lock over the
    /// segment's rows: `held` says which (a shared holder may build cache
    /// entries).
    pub(in crate::volume) async fn ec_read(
        &self,
        s: Segment,
        held: Mode,
    ) -> Result<BlocksRead, VolumeError> {
        let ec = self.ec_state()?;
        let bs = self.bs() as usize;
        let n = s.count as usize;
        let mut data = vec![0u8; n * bs];
        let mut gens: Vec<Option<Generation>> = vec![None; n];
        if !self.allocated.get(s.chunk) {
            return Ok(BlocksRead {
                data,
                gens: vec![Generation::NONE; n],
            });
        }
        let blocks = s.first..s.first + s.count;
        let k = ec.k();
        let wanted: Vec<(usize, Range<u32>)> = (0..k)
            .map(|p| (p, ec.part_rows(p, blocks.clone())))
            .filter(|(_, r)| !r.is_empty())
            .collect();
        let reads = join_all(
            wanted
                .iter()
                .map(|(p, rows)| self.read_data_part(s.chunk, *p, rows.clone())),
        )
        .await;
        let mut missing = PartSet::EMPTY;
        for ((p, rows), read) in wanted.iter().zip(reads) {
            for (i, row) in rows.clone().enumerate() {
                let bi = (row * k as u32 + *p as u32 - s.first) as usize;
                let g = read.as_ref().and_then(|r| data_generation(&r.blocks[i]));
                match (g, &read) {
                    (Some(g), Some(r)) => {
                        data[bi * bs..(bi + 1) * bs].copy_from_slice(&r.data[i * bs..(i + 1) * bs]);
                        gens[bi] = Some(g);
                    }
                    _ => missing.insert(*p),
                }
            }
        }
        if !missing.is_empty() {
            let sources = self.sources(ec, s, missing, held).await?;
            for (p, src) in sources {
                for row in ec.part_rows(p, blocks.clone()) {
                    let bi = (row * k as u32 + p as u32 - s.first) as usize;
                    if gens[bi].is_some() {
                        continue;
                    }
                    let i = (row - src.base) as usize;
                    let Some(g) = src.part.gens.get(i).copied().flatten() else {
                        return Err(VolumeError::Unreadable {
                            chunk: s.chunk,
                            block: s.first + bi as u32,
                            why: "fewer than K consistent parts in its row".into(),
                        });
                    };
                    data[bi * bs..(bi + 1) * bs]
                        .copy_from_slice(&src.part.data[i * bs..(i + 1) * bs]);
                    gens[bi] = Some(g);
                }
            }
        }
        Ok(BlocksRead {
            data,
            gens: gens.into_iter().map(Option::unwrap_or_default).collect(),
        })
    }

    /// A data part's rows, or `None` if the part is unusable.
    async fn read_data_part(&self, chunk: u64, part: usize, rows: Range<u32>) -> Option<PartRead> {
        let slot = self.placement.slot(chunk, part);
        if !self.usable(slot, chunk) {
            return None;
        }
        let id = PartId {
            chunk,
            part: part as u8,
        };
        match self.backends[slot]
            .read(id, rows.start, rows.len() as u32)
            .await
        {
            Ok(r) => Some(r),
            Err(e) => {
                self.part_unreadable(slot, chunk, &e).await;
                None
            }
        }
    }

    /// Restored rows for the data parts in `missing`: cached entries, a
    /// freshly built whole-chunk entry (shared holders), or just the
    /// segment's rows (exclusive holders).
    async fn sources(
        &self,
        ec: &Ec,
        s: Segment,
        missing: PartSet,
        held: Mode,
    ) -> Result<Vec<(usize, Source)>, VolumeError> {
        let mut out = Vec::new();
        let mut todo = PartSet::EMPTY;
        for p in missing.iter() {
            match ec.cache.get(s.chunk, p) {
                Some(part) => out.push((p, Source { base: 0, part })),
                None => todo.insert(p),
            }
        }
        if todo.is_empty() {
            return Ok(out);
        }
        if held == Mode::Shared {
            for (p, part) in self.build_entries(ec, s.chunk, todo).await? {
                out.push((p, Source { base: 0, part }));
            }
            return Ok(out);
        }
        let rows = ec.rows_of(s);
        let run = self.read_run(s.chunk, rows.clone()).await;
        let (_, restored) = restore_async(ec.codec, self.bs() as usize, run, todo).await?;
        for (p, part) in restored {
            let part = Arc::new(part);
            out.push((
                p,
                Source {
                    base: rows.start,
                    part,
                },
            ));
        }
        Ok(out)
    }

    /// Builds (or finds, if another reader just built them) the cache
    /// entries of `parts` of `chunk`, under a shared whole-chunk lock, plus
    /// those of any other data part found unavailable on the way.
    async fn build_entries(
        &self,
        ec: &Ec,
        chunk: u64,
        parts: PartSet,
    ) -> Result<Vec<(usize, Arc<CachedPart>)>, VolumeError> {
        let whole = self.whole_chunk(chunk);
        let (a, b) = self.lock_range(whole);
        let _g = self.locks.lock(a, b, Mode::Shared).await;
        let cached: Vec<(usize, Arc<CachedPart>)> = parts
            .iter()
            .filter_map(|p| ec.cache.get(chunk, p).map(|e| (p, e)))
            .collect();
        if cached.len() == parts.len() {
            return Ok(cached);
        }
        let run = self.read_run(chunk, 0..ec.rows.rows()).await;
        let mut want = parts;
        for p in 0..ec.k() {
            if run.parts[p].metas.contains(&PartMeta::Unavailable) {
                want.insert(p);
            }
        }
        let (run, restored) = restore_async(ec.codec, self.bs() as usize, run, want).await?;
        let mut out = Vec::new();
        for (p, part) in restored {
            self.heal_restored(chunk, p, &run.parts[p].metas, &part)
                .await;
            let part = Arc::new(part);
            ec.cache.insert(chunk, p, part.clone());
            if parts.contains(p) {
                out.push((p, part));
            }
        }
        Ok(out)
    }

    /// Read repair of an EC data part: heals the blocks of a usable data
    /// part that failed their checks and were restored from the row.
    async fn heal_restored(&self, chunk: u64, p: usize, metas: &[PartMeta], part: &CachedPart) {
        let slot = self.placement.slot(chunk, p);
        if !self.usable(slot, chunk) {
            return;
        }
        let bs = self.bs() as usize;
        let id = PartId {
            chunk,
            part: p as u8,
        };
        for (i, meta) in metas.iter().enumerate() {
            let (PartMeta::Unavailable, Some(g)) = (meta, part.gens[i]) else {
                continue;
            };
            let content = Content::Data(&part.data[i * bs..(i + 1) * bs], g);
            match self.heal_block(slot, id, i as u32, content).await {
                Ok(()) => {
                    self.health.note_written(slot, chunk);
                    eprintln!(
                        "qbd-master: healed chunk {chunk} part {p} block {i} on {} from the other parts",
                        self.backends[slot].describe()
                    );
                }
                Err(e) => {
                    eprintln!("qbd-master: heal of chunk {chunk} part {p} failed: {e}");
                    if !matches!(&e, VolumeError::Backend(b) if b.is_fenced()) {
                        self.fail(slot, &e.to_string());
                        let _ = self.degrade(&[slot], &[chunk]).await;
                    }
                    return;
                }
            }
        }
    }
}
