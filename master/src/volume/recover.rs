//! Recovery before serving: replay the EC journal, reconcile the chunks a
//! crash may have left inconsistent, then resync stale parts.
//!
//! **Replay** (EC volumes): every redo record the previous master left in
//! its journal is written again, in order, to the usable parts of its rows
//! as a heal, at the record's own generations and covers
//! (so replaying twice is harmless: the same blocks with the same records);
//! parts that cannot take it are recorded stale. Then every backend is
//! synced and the journal cut. The journal keeps every live record and,
//! for each row it holds a record of, that row's newest record
//! (`journal/keep.rs`); overlapping row updates were journaled in their
//! row-lock order, so replaying in journal order ends at each block's last
//! written value. Every write here is a heal ([`super::heal`]).
//!
//! **Reconcile** (chunks in the write-intent log, or every written chunk if
//! the log cannot be trusted): per block, the copy with the highest valid
//! generation wins and the other parts are healed with it. If no copy is valid (every replica torn by the crash), the
//! first readable copy's bytes win under a fresh generation: a block in a
//! dirty chunk that no copy vouches for was written after the last FLUSH,
//! so its old or its new value are both allowed — what matters is that
//! every replica then agrees.
//!
//! **Resync** (stale parts on usable backends): the part is recreated empty
//! and every written block healed from a good part; then the degraded map
//! entry is cleared on every backend, before the chunk lock is released.
//! `qbd repair` ([`super::repair`]) reuses the winner rule and the heal.
//!
//! All three write only through the heal operation ([`super::heal`],
//! `docs/heal.md`): fenced by this master's session epoch, never by a
//! block's generation.

use qbd_core::backend::{BlockState, PartId, PartRead, WriteData};
use qbd_core::generation::Generation;

use super::heal::{Apply, Content, image_of};
use super::io::Segment;
use super::journal::{Outstanding, RowUpdate};
use super::range_lock::Mode;
use super::{Scheme, Volume, VolumeError};

/// Failed chunks in a row after which a resync gives the backend up.
pub(super) const RESYNC_GIVE_UP: u32 = 2;

impl Volume {
    /// Redoes the row updates the previous master journaled but did not
    /// see synced, syncs the backends, and cuts the journal.
    pub(super) async fn replay_journal(&self, out: Outstanding) -> Result<(), VolumeError> {
        for note in &out.notes {
            eprintln!("qbd-master: {note}");
        }
        let Scheme::Erasure(e) = &self.scheme else {
            return Ok(());
        };
        let journal = &e.journal;
        if out.records.is_empty() {
            return journal.replayed().await;
        }
        let k = self.geo.redundancy.data_parts();
        let n = out.records.len();
        for r in out.records {
            let u = r.update;
            self.check_update(&u).map_err(|why| {
                VolumeError::Journal(format!("record {} (chunk {}): {why}", r.seq, u.chunk))
            })?;
            self.ensure_allocated(u.chunk).await?;
            let targets: Vec<usize> = (0..self.geo.redundancy.parts())
                .filter(|&p| self.usable(self.placement.slot(u.chunk, p), u.chunk))
                .collect();
            let results = self
                .apply_row_update(&u, &targets, Apply::Heal, false)
                .await;
            if let Err(e) = self
                .settle_row_writes(u.chunk, k, &targets, results, false)
                .await
            {
                eprintln!(
                    "qbd-master: replay of journal record {} (chunk {}, rows from {}): {e}",
                    r.seq, u.chunk, u.first_row
                );
            }
        }
        self.flush_all().await?;
        journal.replayed().await?;
        eprintln!("qbd-master: replayed {n} journal record(s)");
        Ok(())
    }

    /// A record's shape against the volume's (its checksum held: a
    /// mismatch is a bug or a foreign file, never replayed).
    fn check_update(&self, u: &RowUpdate) -> Result<(), String> {
        let ec = self.ec_state().map_err(|e| e.to_string())?;
        let (k, bs) = (ec.k(), self.bs() as usize);
        let rows = ec.rows.rows();
        let in_chunk = |first: u32, count: u32| first.checked_add(count).is_some_and(|e| e <= rows);
        if u.chunk >= self.geo.chunk_count()
            || !in_chunk(u.first_row, u.covers.len() as u32)
            || u.covers.iter().any(|c| c.gens().len() != k)
        {
            return Err("rows or covers outside the volume's geometry".into());
        }
        for p in &u.parts {
            let len_ok = match &p.data {
                WriteData::Bytes(b) => b.len() == p.count as usize * bs,
                WriteData::Zero { .. } => true,
            };
            if usize::from(p.part) >= k + ec.m() || !in_chunk(p.first, p.count) || !len_ok {
                return Err(format!("bad entry for part {}", p.part));
            }
        }
        Ok(())
    }

    /// Rows of an EC `chunk` that are not one codeword (torn, or without a
    /// decode set): none after recovery. For scrubbing and tests.
    pub async fn ec_inconsistent_rows(&self, chunk: u64) -> Result<Vec<u32>, VolumeError> {
        let ec = self.ec_state()?;
        if !self.allocated.get(chunk) {
            return Ok(Vec::new());
        }
        let (a, b) = self.lock_range(self.whole_chunk(chunk));
        let _g = self.locks.lock(a, b, Mode::Shared).await;
        let run = self.read_run(chunk, 0..ec.rows.rows()).await;
        let mut bad = Vec::new();
        for i in 0..run.rows.len() {
            let v = run.verdict(ec.k(), ec.m(), i)?;
            if v.is_torn() || v.decode_set().is_none() {
                bad.push(run.rows.start + i as u32);
            }
        }
        Ok(bad)
    }

    pub(super) fn whole_chunk(&self, chunk: u64) -> Segment {
        let count = self.geo.blocks_per_chunk();
        Segment {
            chunk,
            first: 0,
            count,
            start: chunk * self.geo.chunk_size,
        }
    }

    /// Reconciles the replicas of every chunk in `chunks`.
    pub async fn reconcile(&self, chunks: &[u64]) -> Result<(), VolumeError> {
        let mut fixed = 0u64;
        for &c in chunks {
            if self.allocated.get(c) {
                fixed += self.reconcile_chunk(c).await?;
            }
        }
        if !chunks.is_empty() {
            eprintln!(
                "qbd-master: reconciled {} chunk(s), {fixed} block copies rewritten",
                chunks.len()
            );
        }
        Ok(())
    }

    async fn reconcile_chunk(&self, chunk: u64) -> Result<u64, VolumeError> {
        let s = self.whole_chunk(chunk);
        let (a, b) = self.lock_range(s);
        let _g = self.locks.lock(a, b, Mode::Exclusive).await;
        if let Scheme::Erasure(_) = self.scheme {
            return self.ec_reconcile_chunk(chunk).await;
        }
        let mut copies: Vec<(usize, PartRead)> = Vec::new();
        for p in 0..self.geo.redundancy.parts() {
            let slot = self.placement.slot(chunk, p);
            if !self.usable(slot, chunk) {
                continue;
            }
            match self.backends[slot]
                .read(
                    PartId {
                        chunk,
                        part: p as u8,
                    },
                    0,
                    s.count,
                )
                .await
            {
                Ok(r) => copies.push((p, r)),
                Err(e) => {
                    eprintln!(
                        "qbd-master: reconcile: chunk {chunk} on {}: {e}",
                        self.backends[slot].describe()
                    );
                    self.degrade(&[slot], &[chunk]).await?;
                }
            }
        }
        let mut fixed = 0;
        for b in 0..s.count as usize {
            fixed += self.reconcile_block(chunk, b as u32, &copies).await?;
        }
        for (p, _) in &copies {
            let slot = self.placement.slot(chunk, *p);
            self.backends[slot]
                .sync(Some(vec![PartId {
                    chunk,
                    part: *p as u8,
                }]))
                .await?;
        }
        Ok(fixed)
    }

    /// Heals block `b` of every copy that disagrees with the winner (the
    /// highest valid generation), or, if no copy is valid, with the first
    /// readable copy's bytes under a fresh generation. Returns the copies
    /// healed.
    async fn reconcile_block(
        &self,
        chunk: u64,
        b: u32,
        copies: &[(usize, PartRead)],
    ) -> Result<u64, VolumeError> {
        let bs = self.bs() as usize;
        let bi = b as usize;
        let torn_bytes;
        let (content, agree): (Content<'_>, Vec<usize>) = match block_winner(copies, bi) {
            Some((g, r)) => {
                let content = match &r.blocks[bi] {
                    BlockState::Data(_) => Content::Data(&r.data[bi * bs..(bi + 1) * bs], g),
                    _ => Content::Zero(g),
                };
                let same = copies
                    .iter()
                    .filter(|(_, c)| c.blocks[bi] == r.blocks[bi])
                    .map(|(p, _)| *p)
                    .collect();
                (content, same)
            }
            None => {
                let Some((p, _)) = copies.first() else {
                    return Ok(0);
                };
                let id = PartId {
                    chunk,
                    part: *p as u8,
                };
                let slot = self.placement.slot(chunk, *p);
                torn_bytes = self.backends[slot].read_raw(id, b).await?.data;
                let g = self
                    .generations
                    .next()
                    .ok_or(VolumeError::GenerationsExhausted)?;
                (Content::Data(&torn_bytes, g), Vec::new())
            }
        };
        let mut fixed = 0;
        for (p, _) in copies.iter().filter(|(p, _)| !agree.contains(p)) {
            let id = PartId {
                chunk,
                part: *p as u8,
            };
            self.heal_block(self.placement.slot(chunk, *p), id, b, content)
                .await?;
            fixed += 1;
        }
        Ok(fixed)
    }

    /// Resyncs every stale part whose backend is usable; returns how many.
    /// After [`RESYNC_GIVE_UP`] chunks failing in a row the backend's pass
    /// ends, and a backend named by the error is failed (and resynced again
    /// once readmitted).
    pub async fn resync(&self) -> Result<u64, VolumeError> {
        let mut done = 0;
        for slot in 0..self.backends.len() {
            if self.health.is_failed(slot) {
                continue;
            }
            let chunks = self.health.stale_chunks(slot);
            if chunks.is_empty() {
                continue;
            }
            eprintln!(
                "qbd-master: resyncing {} stale chunk(s) on {}",
                chunks.len(),
                self.backends[slot].describe()
            );
            let mut in_a_row = 0;
            for c in chunks {
                match self.resync_chunk(slot, c).await {
                    Ok(()) => {
                        done += 1;
                        in_a_row = 0;
                    }
                    Err(VolumeError::Backend(e)) if e.is_fenced() => return Err(e.into()),
                    Err(e) => {
                        eprintln!(
                            "qbd-master: resync of chunk {c} on {} failed, it stays stale: {e}",
                            self.backends[slot].describe()
                        );
                        in_a_row += 1;
                        // A backend that stopped answering would cost a
                        // request deadline per chunk, each under the chunk
                        // lock: end this pass (the next maintenance pass
                        // tries again). If the error names the target, fail
                        // it too: it is resynced once readmitted. A source's
                        // failure does not fail the target.
                        if in_a_row >= RESYNC_GIVE_UP {
                            let target = self.backends[slot].describe();
                            if e.to_string().contains(&target) {
                                let why = format!("resync failed {in_a_row} chunks in a row: {e}");
                                self.fail(slot, &why);
                            }
                            break;
                        }
                    }
                }
            }
        }
        if done > 0 {
            eprintln!("qbd-master: resync complete ({done} part(s))");
        }
        Ok(done)
    }

    async fn resync_chunk(&self, slot: usize, chunk: u64) -> Result<(), VolumeError> {
        let Some(p) =
            (0..self.geo.redundancy.parts()).find(|&p| self.placement.slot(chunk, p) == slot)
        else {
            return self.clear_stale_everywhere(slot, chunk).await; // not a part of this chunk
        };
        let part = PartId {
            chunk,
            part: p as u8,
        };
        // The chunk lock is held across "rebuild, then clear the stale
        // mark": a write in between would skip the part (still stale),
        // record nothing (already stale) and be lost once the mark is
        // cleared (issue 14, defect 2).
        let (a, b) = self.lock_range(self.whole_chunk(chunk));
        let _g = self.locks.lock(a, b, Mode::Exclusive).await;
        if !self.allocated.get(chunk) {
            // Never written: nothing to rebuild.
        } else if let Scheme::Erasure(_) = self.scheme {
            self.ec_resync_part(slot, part).await?;
        } else {
            let good = self.read_verified(self.whole_chunk(chunk)).await?;
            let states: Vec<Option<BlockState>> = good.states.into_iter().map(Some).collect();
            let image = image_of(&states, &good.data, self.bs() as usize);
            self.heal_whole_part(slot, part, &image).await?;
        }
        self.heal_done(slot, part).await
    }

    pub(super) async fn clear_stale_everywhere(
        &self,
        slot: usize,
        chunk: u64,
    ) -> Result<(), VolumeError> {
        let of = self.backends[slot].id();
        for h in 0..self.backends.len() {
            if h != slot && !self.health.is_failed(h) {
                self.backends[h].clear_stale(of, vec![chunk]).await?;
            }
        }
        self.health.clear_stale(slot, chunk);
        Ok(())
    }
}

/// The copy of block `b` with the highest valid generation, if any copy is
/// valid (the winner of reconcile and of `qbd repair`).
pub(super) fn block_winner(
    copies: &[(usize, PartRead)],
    b: usize,
) -> Option<(Generation, &PartRead)> {
    copies
        .iter()
        .filter_map(|(_, r)| block_generation(&r.blocks[b]).map(|g| (g, r)))
        .max_by_key(|(g, _)| *g)
}

/// The generation a block state vouches for (`None`: it fails its checks).
pub(super) fn block_generation(st: &BlockState) -> Option<Generation> {
    match st {
        BlockState::Unwritten => Some(Generation::NONE),
        BlockState::Data(g) | BlockState::Zero(g) => Some(*g),
        BlockState::Corrupt(_) => None,
    }
}
