//! Resync and reconcile of EC chunks. The caller holds an exclusive lock
//! over the whole chunk.
//!
//! **Resync** of a stale part: every row is restored from the other parts
//! (one read per part, one decode per erasure pattern); a data part gets
//! its blocks back at the generations the rows' versions give them, a
//! parity part is re-encoded from the (restored) data with covers of those
//! generations. The part is recreated empty first and healed
//! (`super::super::heal`); never-written rows stay holes.
//!
//! **Reconcile** after a crash (chunks in the write-intent log): blocks of
//! usable data parts that fail their checks are restored from the row's
//! decode set, or, when the row cannot be decoded, keep their raw bytes
//! under a new generation (a block written after the last FLUSH may hold
//! its old or its new value, either is allowed); then every usable parity
//! block whose cover differs from the row's data generations is
//! re-encoded. Afterwards every row is one codeword again.

use std::ops::Range;

use qbd_core::backend::PartId;
use qbd_core::ec::{Cover, PartMeta, PartSet};
use qbd_core::generation::Generation;

use super::super::heal::{Apply, Content};
use super::super::{Volume, VolumeError};
use super::cache::CachedPart;
use super::parity::ParityWrite;
use super::rows::restore_async;

/// Consecutive indices with the same `Some` key.
pub(in crate::volume) fn runs<T: PartialEq + Copy>(
    n: usize,
    key: impl Fn(usize) -> Option<T>,
) -> Vec<(Range<usize>, T)> {
    let mut out: Vec<(Range<usize>, T)> = Vec::new();
    for i in 0..n {
        let Some(kv) = key(i) else { continue };
        match out.last_mut() {
            Some((r, t)) if r.end == i && *t == kv => r.end = i + 1,
            _ => out.push((i..i + 1, kv)),
        }
    }
    out
}

impl Volume {
    /// Rebuilds stale part `part` on backend `slot` from the other parts
    /// (data blocks at their own generations: a heal, `super::super::heal`).
    /// The caller holds the chunk's exclusive lock and clears the stale
    /// mark before releasing it.
    pub(in crate::volume) async fn ec_resync_part(
        &self,
        slot: usize,
        part: PartId,
    ) -> Result<(), VolumeError> {
        let ec = self.ec_state()?;
        let (k, bs) = (ec.k(), self.bs() as usize);
        let p = usize::from(part.part);
        let run = self.read_run(part.chunk, 0..ec.rows.rows()).await;
        let want = if p < k {
            PartSet::from_iter([p])
        } else {
            ec.rows.data_set()
        };
        let (_, restored) = restore_async(ec.codec, bs, run, want).await?;
        if let Some(row) = restored
            .iter()
            .find_map(|(_, c)| c.gens.iter().position(Option::is_none))
        {
            return Err(VolumeError::Unreadable {
                chunk: part.chunk,
                block: row as u32,
                why: "a row has fewer than K consistent parts".into(),
            });
        }
        let target = &self.backends[slot];
        target.recreate(part).await?;
        if p < k {
            self.resync_data(slot, part, &restored[0].1).await?;
        } else {
            let parity = self.encode_parity_of(&restored, p - k)?;
            let gens = row_gens(&restored, k);
            let generation = self
                .generations
                .next()
                .ok_or(VolumeError::GenerationsExhausted)?;
            let written = |r: usize| gens[r].iter().any(|g| *g != Generation::NONE).then_some(());
            for (r, ()) in runs(gens.len(), written) {
                let pw = ParityWrite {
                    part,
                    first: r.start as u32,
                    bytes: Some(parity[r.start * bs..r.end * bs].to_vec()),
                    covers: gens[r]
                        .iter()
                        .map(|g| Cover::new(g))
                        .collect::<Result<_, _>>()?,
                    generation,
                };
                self.write_parity(slot, pw, Apply::Heal).await?;
            }
        }
        target.sync(Some(vec![part])).await?;
        Ok(())
    }

    pub(in crate::volume) async fn resync_data(
        &self,
        slot: usize,
        part: PartId,
        c: &CachedPart,
    ) -> Result<(), VolumeError> {
        let bs = self.bs() as usize;
        for (i, g) in c.gens.iter().enumerate() {
            let Some(g) = g.filter(|g| *g != Generation::NONE) else {
                continue;
            };
            let content = Content::Data(&c.data[i * bs..(i + 1) * bs], g);
            self.heal_block(slot, part, i as u32, content).await?;
        }
        Ok(())
    }

    /// Parity shard `j` of restored data parts (all K, in part order).
    pub(in crate::volume) fn encode_parity_of(
        &self,
        data: &[(usize, CachedPart)],
        j: usize,
    ) -> Result<Vec<u8>, VolumeError> {
        let ec = self.ec_state()?;
        let shards: Vec<&[u8]> = data.iter().map(|(_, c)| c.data.as_slice()).collect();
        let mut parity = ec.codec.encode(&shards)?;
        if j >= parity.len() {
            return Err(VolumeError::Setup(format!("no parity shard {j}")));
        }
        Ok(parity.swap_remove(j))
    }

    /// Makes every row of `chunk` one codeword again after a crash;
    /// returns the blocks rewritten.
    pub(in crate::volume) async fn ec_reconcile_chunk(
        &self,
        chunk: u64,
    ) -> Result<u64, VolumeError> {
        let ec = self.ec_state()?;
        let (k, bs) = (ec.k(), self.bs() as usize);
        let run = self.read_run(chunk, 0..ec.rows.rows()).await;
        let (run, mut data) = restore_async(ec.codec, bs, run, ec.rows.data_set()).await?;
        let mut fixed = 0u64;
        for (p, c) in data.iter_mut() {
            let slot = self.placement.slot(chunk, *p);
            if !self.usable(slot, chunk) {
                continue;
            }
            let id = PartId {
                chunk,
                part: *p as u8,
            };
            for (i, meta) in run.parts[*p].metas.iter().enumerate() {
                if *meta != PartMeta::Unavailable {
                    continue;
                }
                let generation = match c.gens[i] {
                    Some(g) => g,
                    None => {
                        let raw = self.backends[slot].read_raw(id, i as u32).await?;
                        c.data[i * bs..(i + 1) * bs].copy_from_slice(&raw.data);
                        let g = self
                            .generations
                            .next()
                            .ok_or(VolumeError::GenerationsExhausted)?;
                        c.gens[i] = Some(g);
                        g
                    }
                };
                let content = Content::Data(&c.data[i * bs..(i + 1) * bs], generation);
                self.heal_block(slot, id, i as u32, content).await?;
                fixed += 1;
            }
        }
        if data.iter().any(|(_, c)| c.gens.iter().any(Option::is_none)) {
            eprintln!(
                "qbd-master: reconcile: chunk {chunk} has rows that cannot be restored; they read as EIO"
            );
            return Ok(fixed);
        }
        let gens = row_gens(&data, k);
        let shards: Vec<&[u8]> = data.iter().map(|(_, c)| c.data.as_slice()).collect();
        let parity = ec.codec.encode(&shards)?;
        let generation = self
            .generations
            .next()
            .ok_or(VolumeError::GenerationsExhausted)?;
        for (j, par) in parity.iter().enumerate() {
            let p = k + j;
            let slot = self.placement.slot(chunk, p);
            if !self.usable(slot, chunk) {
                continue;
            }
            let stale = |r: usize| {
                let want = Cover::new(&gens[r]).ok()?;
                (run.parts[p].metas[r] != PartMeta::Parity(want)).then_some(())
            };
            for (r, ()) in runs(gens.len(), stale) {
                let pw = ParityWrite {
                    part: PartId {
                        chunk,
                        part: p as u8,
                    },
                    first: r.start as u32,
                    bytes: Some(par[r.start * bs..r.end * bs].to_vec()),
                    covers: gens[r.clone()]
                        .iter()
                        .map(|g| Cover::new(g))
                        .collect::<Result<_, _>>()?,
                    generation,
                };
                self.write_parity(slot, pw, Apply::Heal).await?;
                fixed += r.len() as u64;
            }
        }
        ec.cache.invalidate(chunk);
        Ok(fixed)
    }
}

/// Per row, the K data generations of restored data parts (all known).
pub(in crate::volume) fn row_gens(data: &[(usize, CachedPart)], k: usize) -> Vec<Vec<Generation>> {
    let rows = data.first().map_or(0, |(_, c)| c.gens.len());
    (0..rows)
        .map(|r| {
            (0..k)
                .map(|p| data[p].1.gens[r].unwrap_or_default())
                .collect()
        })
        .collect()
}
