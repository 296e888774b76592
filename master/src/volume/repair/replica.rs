//! Repair of one replicated chunk (the caller holds no lock; this takes
//! the chunk's exclusive range lock for the whole of it).
//!
//! Every part is read whole. A part that cannot be used as a file
//! (missing, bad header or size) or that the degraded map calls stale is
//! rebuilt whole; in the others, every block that fails its checks or
//! holds an older generation than the block's winner (reconcile's rule:
//! the highest valid generation among the usable copies) is rewritten with
//! the winner. A block without any valid copy is lost: rebuilt parts get
//! an invalid record for it, so it reads as EIO, never as zeros.

use qbd_core::backend::{BackendError, BlockState, PartId, PartRead};

use super::super::heal::{Content, image_of};
use super::super::range_lock::Mode;
use super::super::recover::{block_generation, block_winner};
use super::super::{Volume, VolumeError};
use super::report::{ChunkOutcome, Problem};

/// How one part was found.
enum Probe {
    Read(PartRead),
    Whole(Problem),
    Unreachable(String),
}

impl Volume {
    /// Repairs (or, if `dry`, only examines) replicated chunk `chunk`.
    pub(super) async fn repair_replica_chunk(
        &self,
        chunk: u64,
        dry: bool,
    ) -> Result<ChunkOutcome, VolumeError> {
        let s = self.whole_chunk(chunk);
        let (a, b) = self.lock_range(s);
        let _g = self.locks.lock(a, b, Mode::Exclusive).await;
        let mut out = ChunkOutcome::default();
        let parts = self.geo.redundancy.parts();
        let mut copies: Vec<(usize, PartRead)> = Vec::new();
        let mut whole = Vec::new();
        for p in 0..parts {
            let slot = self.placement.slot(chunk, p);
            let describe = self.backends[slot].describe();
            match self.probe_replica(chunk, p, s.count).await {
                Probe::Read(r) => {
                    out.bytes_read += s.count as u64 * self.bs();
                    copies.push((p, r));
                }
                Probe::Whole(problem) => {
                    out.found(chunk, p, describe, problem);
                    whole.push(p);
                }
                Probe::Unreachable(why) => {
                    out.found(chunk, p, describe, Problem::Unreachable { why })
                }
            }
        }
        if copies.is_empty() {
            if out.findings.iter().all(|f| f.problem.is_whole()) {
                out.lost_blocks += u64::from(s.count);
            }
            return Ok(out);
        }
        let image = winners(&copies, s.count as usize);
        out.lost_blocks += image.iter().filter(|w| w.is_none()).count() as u64;
        for (p, r) in &copies {
            let bad = outdated(r, &image);
            if bad.is_empty() {
                continue;
            }
            let slot = self.placement.slot(chunk, *p);
            let problem = Problem::BadBlocks {
                count: bad.len() as u64,
            };
            out.found(chunk, *p, self.backends[slot].describe(), problem);
            if dry {
                out.repaired(*p);
                out.blocks_repaired += bad.len() as u64;
                continue;
            }
            match self.fix_blocks(chunk, *p, &bad, &image, &copies).await {
                Ok(n) => {
                    out.repaired(*p);
                    out.blocks_repaired += n;
                    out.bytes_written += n * self.bs();
                }
                Err(e) => self.repair_failed(&mut out, chunk, *p, e),
            }
        }
        let data = image_bytes(&copies, &image, self.bs() as usize);
        for p in whole {
            out.parts_rebuilt += 1;
            if dry {
                out.repaired(p);
                continue;
            }
            match self.rebuild_whole(chunk, p, &data, &image).await {
                Ok(n) => {
                    out.repaired(p);
                    out.bytes_written += n * self.bs();
                    out.stale_cleared += 1;
                }
                Err(e) => {
                    out.parts_rebuilt -= 1;
                    self.repair_failed(&mut out, chunk, p, e);
                }
            }
        }
        Ok(out)
    }

    async fn probe_replica(&self, chunk: u64, p: usize, count: u32) -> Probe {
        let slot = self.placement.slot(chunk, p);
        if self.health.is_failed(slot) {
            return Probe::Unreachable("backend failed or not reachable".into());
        }
        let stale = self.health.is_stale(slot, chunk);
        let id = PartId {
            chunk,
            part: p as u8,
        };
        match self.backends[slot].read(id, 0, count).await {
            Ok(_) if stale => Probe::Whole(Problem::Stale),
            Ok(r) => Probe::Read(r),
            Err(e) => whole_or_unreachable(self, slot, e),
        }
    }

    /// Rewrites blocks `bad` of part `p` with their winners.
    async fn fix_blocks(
        &self,
        chunk: u64,
        p: usize,
        bad: &[usize],
        image: &[Option<BlockState>],
        copies: &[(usize, PartRead)],
    ) -> Result<u64, VolumeError> {
        let bs = self.bs() as usize;
        let part = PartId {
            chunk,
            part: p as u8,
        };
        let slot = self.placement.slot(chunk, p);
        for &b in bad {
            let Some(st) = &image[b] else { continue };
            let src = copies
                .iter()
                .find(|(_, r)| &r.blocks[b] == st)
                .map(|(_, r)| &r.data[b * bs..(b + 1) * bs]);
            // A block that must read as never written gets zeros at
            // generation 0, as reconcile does.
            let content = match (Content::of(st, src.unwrap_or_default()), src) {
                (Some(c), Some(_)) => c,
                _ => Content::NEVER_WRITTEN,
            };
            self.heal_block(slot, part, b as u32, content).await?;
        }
        self.backends[slot].sync(Some(vec![part])).await?;
        Ok(bad.len() as u64)
    }

    /// Records the part stale (so a crash mid-rebuild never serves the
    /// half-empty file), rebuilds it, and clears the entry.
    async fn rebuild_whole(
        &self,
        chunk: u64,
        p: usize,
        data: &[u8],
        image: &[Option<BlockState>],
    ) -> Result<u64, VolumeError> {
        let slot = self.placement.slot(chunk, p);
        self.degrade(&[slot], &[chunk]).await?;
        let part = PartId {
            chunk,
            part: p as u8,
        };
        let image = image_of(image, data, self.bs() as usize);
        let n = self.heal_whole_part(slot, part, &image).await?;
        self.heal_done(slot, part).await?;
        Ok(n)
    }

    /// A part whose repair failed: left, and its backend failed unless the
    /// fault is the part file's own.
    pub(super) fn repair_failed(
        &self,
        out: &mut ChunkOutcome,
        chunk: u64,
        p: usize,
        e: VolumeError,
    ) {
        let slot = self.placement.slot(chunk, p);
        if !e.is_part_fault() {
            self.fail(slot, &e.to_string());
        }
        out.found(
            chunk,
            p,
            self.backends[slot].describe(),
            Problem::Failed { why: e.to_string() },
        );
    }
}

/// A read error as a whole-part problem, or the backend unreachable.
fn whole_or_unreachable(v: &Volume, slot: usize, e: BackendError) -> Probe {
    match classify_error(v, slot, e) {
        Problem::Unreachable { why } => Probe::Unreachable(why),
        p => Probe::Whole(p),
    }
}

/// A part's read error as a problem: the part file's own fault (rebuild
/// it) or its backend's (fails the backend; the part is left).
pub(super) fn classify_error(v: &Volume, slot: usize, e: BackendError) -> Problem {
    match e {
        BackendError::PartMissing { .. } => Problem::Missing,
        BackendError::PartCorrupt { why, .. } => Problem::BadFile { why },
        e => {
            v.fail(slot, &e.to_string());
            Problem::Unreachable { why: e.to_string() }
        }
    }
}

/// Per block, the winning state (`None`: no valid copy).
fn winners(copies: &[(usize, PartRead)], n: usize) -> Vec<Option<BlockState>> {
    (0..n)
        .map(|b| block_winner(copies, b).map(|(_, r)| r.blocks[b].clone()))
        .collect()
}

/// Blocks of `r` that differ from their winner (failing checks, or older).
fn outdated(r: &PartRead, image: &[Option<BlockState>]) -> Vec<usize> {
    (0..image.len())
        .filter(|&b| match &image[b] {
            None => false,
            Some(w) => !same(&r.blocks[b], w),
        })
        .collect()
}

/// Two copies agree: same generation and same kind (never-written and
/// zero-at-generation-0 are the same).
fn same(a: &BlockState, b: &BlockState) -> bool {
    let data = |s: &BlockState| matches!(s, BlockState::Data(_));
    match (block_generation(a), block_generation(b)) {
        (Some(x), Some(y)) => x == y && data(a) == data(b),
        _ => false,
    }
}

/// The winners' bytes, block by block.
fn image_bytes(copies: &[(usize, PartRead)], image: &[Option<BlockState>], bs: usize) -> Vec<u8> {
    let mut data = vec![0u8; image.len() * bs];
    for (b, w) in image.iter().enumerate() {
        let Some(w @ BlockState::Data(_)) = w else {
            continue;
        };
        if let Some((_, r)) = copies.iter().find(|(_, r)| &r.blocks[b] == w) {
            data[b * bs..(b + 1) * bs].copy_from_slice(&r.data[b * bs..(b + 1) * bs]);
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use qbd_core::generation::Generation;

    fn read(states: Vec<BlockState>) -> PartRead {
        PartRead {
            data: vec![0; states.len() * 4096],
            blocks: states,
        }
    }

    #[test]
    fn corrupt_and_older_blocks_are_outdated_never_written_is_not() {
        let g = |n| Generation(n);
        let copies = vec![
            (
                0,
                read(vec![
                    BlockState::Data(g(5)),
                    BlockState::Unwritten,
                    BlockState::Corrupt("x".into()),
                ]),
            ),
            (
                1,
                read(vec![
                    BlockState::Data(g(4)),
                    BlockState::Zero(Generation::NONE),
                    BlockState::Corrupt("y".into()),
                ]),
            ),
        ];
        let image = winners(&copies, 3);
        assert_eq!(image[0], Some(BlockState::Data(g(5))));
        assert_eq!(image[2], None, "no valid copy: lost");
        assert!(outdated(&copies[0].1, &image).is_empty());
        assert_eq!(outdated(&copies[1].1, &image), vec![0]);
    }
}
