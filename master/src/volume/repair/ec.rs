//! Repair of one erasure-coded chunk, under its exclusive whole-chunk lock.
//!
//! Every part is read whole (parity with its covers) without side effects
//! ([`Volume::probe_run`]); the K data parts are restored from the rows'
//! consistent decode sets (one decode per erasure pattern, the degraded
//! read's machinery). Then, as resync and reconcile do it:
//! - a data part that is missing, has a bad file or is stale is recreated
//!   and gets every written row back at the row version's generation; in a
//!   good data part, blocks failing their checks are rewritten;
//! - a parity part that is missing, bad or stale is recreated and
//!   re-encoded from the restored data, with covers of those generations;
//!   in a good parity part, every row whose cover differs from the row's
//!   data generations (or whose block fails its checks) is re-encoded.
//!
//! Rows that cannot be restored (fewer than K consistent parts) are lost:
//! rebuilt parts get an invalid record there, so they read as EIO.

use std::ops::Range;

use qbd_core::backend::PartId;
use qbd_core::ec::{Cover, PartMeta};
use qbd_core::generation::Generation;

use super::super::ec::cache::CachedPart;
use super::super::ec::parity::ParityWrite;
use super::super::ec::recover::{row_gens, runs};
use super::super::ec::rows::{PartProbe, PartRun, RunRead, restore_async};
use super::super::heal::{Apply, Content};
use super::super::range_lock::Mode;
use super::super::{Volume, VolumeError};
use super::replica::classify_error;
use super::report::{ChunkOutcome, Problem};

/// What a chunk's parts need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Read: fix what is wrong in it.
    Blocks,
    /// Rebuild from scratch.
    Whole,
    /// Unreachable: leave it.
    Nothing,
}

/// The restored chunk.
struct Restored {
    run: RunRead,
    data: Vec<(usize, CachedPart)>,
    /// Per row: some data block could not be restored.
    lost: Vec<bool>,
}

impl Volume {
    /// Repairs (or, if `dry`, only examines) EC chunk `chunk`.
    pub(super) async fn repair_ec_chunk(
        &self,
        chunk: u64,
        dry: bool,
    ) -> Result<ChunkOutcome, VolumeError> {
        let ec = self.ec_state()?;
        let bs = self.bs() as usize;
        let rows = ec.rows.rows();
        let (a, b) = self.lock_range(self.whole_chunk(chunk));
        let _g = self.locks.lock(a, b, Mode::Exclusive).await;
        let mut out = ChunkOutcome::default();
        let (run, probes) = self.probe_run(chunk, 0..rows).await;
        let needs: Vec<Need> = probes
            .into_iter()
            .enumerate()
            .map(|(p, probe)| self.ec_need(chunk, p, probe, &mut out))
            .collect();
        out.bytes_read += needs.iter().filter(|n| **n == Need::Blocks).count() as u64
            * u64::from(rows)
            * bs as u64;
        let (run, mut data) = restore_async(ec.codec, bs, run, ec.rows.data_set()).await?;
        self.restore_from_stale(chunk, &needs, &run, &mut data)
            .await?;
        let lost: Vec<bool> = (0..rows as usize)
            .map(|r| data.iter().any(|(_, c)| c.gens[r].is_none()))
            .collect();
        if !needs.contains(&Need::Nothing) {
            out.lost_blocks += data
                .iter()
                .map(|(_, c)| c.gens.iter().filter(|g| g.is_none()).count() as u64)
                .sum::<u64>();
        }
        let restored = Restored { run, data, lost };
        let mut wrote = false;
        for (p, need) in needs.iter().enumerate() {
            let r = match need {
                Need::Nothing => continue,
                Need::Blocks => self.ec_fix_blocks(chunk, p, &restored, dry, &mut out).await,
                Need::Whole => self.ec_rebuild(chunk, p, &restored, dry, &mut out).await,
            };
            match r {
                Ok(w) => wrote |= w,
                Err(e) => self.repair_failed(&mut out, chunk, p, e),
            }
        }
        if wrote {
            ec.cache.invalidate(chunk);
        }
        Ok(out)
    }

    /// Rows the usable parts cannot restore are not lost yet: parts the
    /// degraded map only *believes* stale are read and their blocks
    /// checked. A row is restored from them only through a consistent
    /// decode set, and a stale data block is used only where it is the
    /// row's version (the generation the row's parity covers): a block
    /// that missed a write never comes back as data.
    async fn restore_from_stale(
        &self,
        chunk: u64,
        needs: &[Need],
        run: &RunRead,
        data: &mut [(usize, CachedPart)],
    ) -> Result<(), VolumeError> {
        let ec = self.ec_state()?;
        let (k, m, bs) = (ec.k(), ec.m(), self.bs() as usize);
        let lost: Vec<usize> = (0..run.rows.len())
            .filter(|&r| data.iter().any(|(_, c)| c.gens[r].is_none()))
            .collect();
        let stale: Vec<usize> = (0..needs.len())
            .filter(|&p| {
                needs[p] == Need::Whole && !self.health.is_failed(self.placement.slot(chunk, p))
            })
            .collect();
        if lost.is_empty() || stale.is_empty() {
            return Ok(());
        }
        let mut second = RunRead {
            rows: run.rows.clone(),
            parts: run
                .parts
                .iter()
                .map(|p| PartRun {
                    data: p.data.clone(),
                    metas: p.metas.clone(),
                })
                .collect(),
        };
        for &p in &stale {
            if let (part, PartProbe::Read) =
                self.read_part_run_anyway(chunk, p, run.rows.clone()).await
            {
                second.parts[p] = part;
            }
        }
        for &r in &lost {
            let v = second.verdict(k, m, r)?;
            if v.is_torn() {
                // Some part disagrees with the version the stale parts
                // would give: they may be the ones that missed a write.
                for &p in &stale {
                    second.parts[p].metas[r] = PartMeta::Unavailable;
                }
                continue;
            }
            for &p in stale.iter().filter(|&&p| p < k) {
                if let PartMeta::Data(g) = second.parts[p].metas[r]
                    && v.version_generation(p) != Some(g)
                {
                    second.parts[p].metas[r] = PartMeta::Unavailable;
                }
            }
        }
        let again = restore_async(ec.codec, bs, second, ec.rows.data_set())
            .await?
            .1;
        for ((_, c), (_, a)) in data.iter_mut().zip(again) {
            for &r in &lost {
                if c.gens[r].is_none() && a.gens[r].is_some() {
                    c.data[r * bs..(r + 1) * bs].copy_from_slice(&a.data[r * bs..(r + 1) * bs]);
                    c.gens[r] = a.gens[r];
                }
            }
        }
        Ok(())
    }

    fn ec_need(&self, chunk: u64, p: usize, probe: PartProbe, out: &mut ChunkOutcome) -> Need {
        let slot = self.placement.slot(chunk, p);
        let describe = self.backends[slot].describe();
        let problem = match probe {
            PartProbe::Read => return Need::Blocks,
            PartProbe::Unusable if self.health.is_failed(slot) => Problem::Unreachable {
                why: "backend failed or not reachable".into(),
            },
            PartProbe::Unusable => Problem::Stale,
            PartProbe::Failed(e) => classify_error(self, slot, e),
        };
        let need = if problem.is_whole() {
            Need::Whole
        } else {
            Need::Nothing
        };
        out.found(chunk, p, describe, problem);
        need
    }

    /// Rewrites the bad blocks of a part that was read; true if it wrote.
    async fn ec_fix_blocks(
        &self,
        chunk: u64,
        p: usize,
        r: &Restored,
        dry: bool,
        out: &mut ChunkOutcome,
    ) -> Result<bool, VolumeError> {
        let k = self.geo.redundancy.data_parts();
        let metas = &r.run.parts[p].metas;
        let bad: Vec<bool> = if p < k {
            let gens = &r.data[p].1.gens;
            (0..metas.len())
                .map(|i| metas[i] == PartMeta::Unavailable && gens[i].is_some())
                .collect()
        } else {
            let gens = row_gens(&r.data, k);
            (0..metas.len())
                .map(|i| {
                    !r.lost[i]
                        && Cover::new(&gens[i]).is_ok_and(|c| metas[i] != PartMeta::Parity(c))
                })
                .collect()
        };
        let count = bad.iter().filter(|b| **b).count() as u64;
        if count == 0 {
            return Ok(false);
        }
        let slot = self.placement.slot(chunk, p);
        let describe = self.backends[slot].describe();
        out.found(chunk, p, describe, Problem::BadBlocks { count });
        if !dry {
            let part = PartId {
                chunk,
                part: p as u8,
            };
            self.ec_put_rows(slot, part, r, &bad).await?;
            self.backends[slot].sync(Some(vec![part])).await?;
            out.bytes_written += count * self.bs();
        }
        out.blocks_repaired += count;
        out.repaired(p);
        Ok(!dry)
    }

    /// Rebuilds a part whole: recorded stale first (a crash mid-way never
    /// serves the half-empty file), recreated, filled, synced, cleared.
    async fn ec_rebuild(
        &self,
        chunk: u64,
        p: usize,
        r: &Restored,
        dry: bool,
        out: &mut ChunkOutcome,
    ) -> Result<bool, VolumeError> {
        out.parts_rebuilt += 1;
        if dry {
            out.repaired(p);
            return Ok(false);
        }
        let k = self.geo.redundancy.data_parts();
        let slot = self.placement.slot(chunk, p);
        let part = PartId {
            chunk,
            part: p as u8,
        };
        self.degrade(&[slot], &[chunk]).await?;
        self.backends[slot].recreate(part).await?;
        let written: Vec<bool> = if p < k {
            r.data[p]
                .1
                .gens
                .iter()
                .map(|g| g.is_some_and(|g| g != Generation::NONE))
                .collect()
        } else {
            row_gens(&r.data, k)
                .iter()
                .zip(&r.lost)
                .map(|(g, lost)| !lost && g.iter().any(|g| *g != Generation::NONE))
                .collect()
        };
        self.ec_put_rows(slot, part, r, &written).await?;
        for (i, _) in r.lost.iter().enumerate().filter(|(_, l)| **l) {
            self.heal_block(slot, part, i as u32, Content::Lost).await?;
        }
        self.heal_done(slot, part).await?;
        out.bytes_written += written.iter().filter(|w| **w).count() as u64 * self.bs();
        out.stale_cleared += 1;
        out.repaired(p);
        Ok(true)
    }

    /// Restored data blocks `rows` of a data part, at their generations
    /// (never-written rows of a whole rebuild are skipped by the caller).
    /// Writes the rows of part `part` (index `part.part`) that `mask`
    /// selects, from `r`: data blocks as restored, parity re-encoded.
    async fn ec_put_rows(
        &self,
        slot: usize,
        part: PartId,
        r: &Restored,
        mask: &[bool],
    ) -> Result<(), VolumeError> {
        let p = usize::from(part.part);
        let k = self.geo.redundancy.data_parts();
        for (rg, ()) in runs(mask.len(), |i| mask[i].then_some(())) {
            if p < k {
                self.ec_write_data(slot, part, &r.data[p].1, rg).await?;
            } else {
                self.ec_write_parity(slot, part, r, rg).await?;
            }
        }
        Ok(())
    }

    async fn ec_write_data(
        &self,
        slot: usize,
        part: PartId,
        c: &CachedPart,
        rows: Range<usize>,
    ) -> Result<(), VolumeError> {
        let bs = self.bs() as usize;
        for i in rows {
            let Some(g) = c.gens[i] else { continue };
            let content = Content::Data(&c.data[i * bs..(i + 1) * bs], g);
            self.heal_block(slot, part, i as u32, content).await?;
        }
        Ok(())
    }

    /// Parity of `rows` re-encoded from the restored data, with its covers.
    async fn ec_write_parity(
        &self,
        slot: usize,
        part: PartId,
        r: &Restored,
        rows: Range<usize>,
    ) -> Result<(), VolumeError> {
        let k = self.geo.redundancy.data_parts();
        let bs = self.bs() as usize;
        let parity = self.encode_parity_of(&r.data, usize::from(part.part) - k)?;
        let gens = row_gens(&r.data, k);
        let generation = self
            .generations
            .next()
            .ok_or(VolumeError::GenerationsExhausted)?;
        let pw = ParityWrite {
            part,
            first: rows.start as u32,
            bytes: Some(parity[rows.start * bs..rows.end * bs].to_vec()),
            covers: gens[rows]
                .iter()
                .map(|g| Cover::new(g))
                .collect::<Result<_, _>>()?,
            generation,
        };
        self.write_parity(slot, pw, Apply::Heal).await
    }
}
