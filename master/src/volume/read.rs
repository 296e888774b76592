//! Reads: one verified copy per block, from the chunk's usable parts.
//!
//! Parts are tried in turn, skipping failed backends and stale parts; each
//! read starts one copy further than the last (a per-volume turn), so
//! reads spread evenly over the healthy replicas. A block that fails its checks
//! on one part is served from another and the bad copy is rewritten with the
//! good one (read repair: a heal, [`super::heal`], under the read's range
//! lock, so no write can interleave). A part that is missing or unusable as a file is
//! recorded as stale, so the resync rebuilds it.

use qbd_core::backend::{BackendError, BlockState, PartId, PartRead};

use super::heal::Content;
use super::io::Segment;
use super::{Scheme, Volume, VolumeError};

/// A verified segment: data and, per block, the state of the copy served.
#[derive(Debug)]
pub(super) struct Verified {
    pub(super) data: Vec<u8>,
    pub(super) states: Vec<BlockState>,
}

impl Volume {
    /// Reads a segment's blocks from whichever parts have good copies.
    /// The caller holds an exclusive lock over it (read-modify-write); the
    /// read path of `read_at` takes shared locks and reads EC itself.
    pub(super) async fn read_segment(&self, s: Segment) -> Result<Vec<u8>, VolumeError> {
        if let Scheme::Erasure(_) = self.scheme {
            return Ok(self
                .ec_read(s, super::range_lock::Mode::Exclusive)
                .await?
                .data);
        }
        Ok(self.read_verified(s).await?.data)
    }

    /// Reads a segment and reports the state of every block served.
    pub(super) async fn read_verified(&self, s: Segment) -> Result<Verified, VolumeError> {
        let bs = self.bs() as usize;
        let n = s.count as usize;
        if !self.allocated.get(s.chunk) {
            return Ok(Verified {
                data: vec![0; n * bs],
                states: vec![BlockState::Unwritten; n],
            });
        }
        let parts = self.geo.redundancy.parts();
        // Why a turn and not `chunk mod parts`: placement puts part p of
        // chunk c on slot (c + p) mod N, so with N = parts that start is
        // slot 0 for every chunk: one backend served every read.
        let turn = self
            .read_turn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let start = (s.chunk as usize).wrapping_add(turn) % parts;
        // Allocated once a copy is not good throughout (the slow path).
        let mut data = Vec::new();
        let mut states: Vec<Option<BlockState>> = Vec::new();
        let mut bad: Vec<(usize, u32)> = Vec::new();
        let mut why = None;
        for i in 0..parts {
            let p = (start + i) % parts;
            let slot = self.placement.slot(s.chunk, p);
            if !self.usable(slot, s.chunk) {
                continue;
            }
            let id = PartId {
                chunk: s.chunk,
                part: p as u8,
            };
            let read = match self.backends[slot].read(id, s.first, s.count).await {
                Ok(r) => r,
                Err(e) => {
                    why = Some(e.to_string());
                    self.part_unreadable(slot, s.chunk, &e).await;
                    continue;
                }
            };
            if states.is_empty() {
                if all_good(&read, n, bs) {
                    // The usual case: the first copy read is good
                    // throughout, and its buffer is the answer (no copy).
                    return Ok(Verified {
                        data: read.data,
                        states: read.blocks,
                    });
                }
                data = vec![0u8; n * bs];
                states = vec![None; n];
            }
            for b in 0..n {
                if states[b].is_some() {
                    continue;
                }
                match &read.blocks[b] {
                    BlockState::Corrupt(reason) => {
                        eprintln!(
                            "qbd-master: chunk {} part {p} block {}: {reason}",
                            s.chunk,
                            s.first + b as u32
                        );
                        why = Some(reason.clone());
                        bad.push((p, b as u32));
                    }
                    good => {
                        data[b * bs..(b + 1) * bs]
                            .copy_from_slice(&read.data[b * bs..(b + 1) * bs]);
                        states[b] = Some(good.clone());
                    }
                }
            }
            if states.iter().all(Option::is_some) {
                break;
            }
        }
        let missing = match states.iter().position(Option::is_none) {
            _ if states.is_empty() => Some(0), // no copy was read
            m => m,
        };
        let Some(missing) = missing else {
            let states: Vec<BlockState> = states.into_iter().flatten().collect();
            self.heal_bad_copies(s, &bad, &data, &states).await;
            return Ok(Verified { data, states });
        };
        Err(VolumeError::Unreadable {
            chunk: s.chunk,
            block: s.first + missing as u32,
            why: why.unwrap_or_else(|| "no usable copy".into()),
        })
    }

    /// A part that cannot be read: stale if its file is missing or unusable
    /// (the resync rebuilds it), the backend failed if it is an I/O error.
    pub(super) async fn part_unreadable(&self, slot: usize, chunk: u64, e: &BackendError) {
        eprintln!(
            "qbd-master: chunk {chunk} on {}: {e}",
            self.backends[slot].describe()
        );
        match e {
            BackendError::PartMissing { .. } | BackendError::PartCorrupt { .. } => {
                if let Err(e) = self.degrade(&[slot], &[chunk]).await {
                    eprintln!("qbd-master: {e}");
                }
            }
            // An I/O error: the part missed nothing yet; later writes will
            // record it as degraded, since the backend is now failed.
            _ => self.fail(slot, &e.to_string()),
        }
    }

    /// Read repair: heals the copies found corrupt while reading with the
    /// good ones, at their generations, under the read's range lock (which
    /// no write of these blocks can hold meanwhile). A copy that cannot be
    /// healed makes its part stale (recorded before the read returns).
    async fn heal_bad_copies(
        &self,
        s: Segment,
        bad: &[(usize, u32)],
        data: &[u8],
        states: &[BlockState],
    ) {
        let bs = self.bs() as usize;
        for &(p, b) in bad {
            let bi = b as usize;
            let content = Content::of(&states[bi], &data[bi * bs..(bi + 1) * bs])
                .unwrap_or(Content::NEVER_WRITTEN);
            let slot = self.placement.slot(s.chunk, p);
            let part = PartId {
                chunk: s.chunk,
                part: p as u8,
            };
            let backend = &self.backends[slot];
            match self.heal_block(slot, part, s.first + b, content).await {
                Ok(()) => {
                    self.health.note_written(slot, s.chunk);
                    eprintln!(
                        "qbd-master: healed chunk {} block {} on {}",
                        s.chunk,
                        s.first + b,
                        backend.describe()
                    );
                }
                Err(e) => {
                    eprintln!(
                        "qbd-master: heal of chunk {} on {} failed: {e}",
                        s.chunk,
                        backend.describe()
                    );
                    if !matches!(&e, VolumeError::Backend(b) if b.is_fenced()) {
                        self.fail(slot, &e.to_string());
                        let _ = self.degrade(&[slot], &[s.chunk]).await;
                    }
                }
            }
        }
    }
}

/// Whether `read` holds `n` blocks of `bs` bytes, none of them corrupt.
fn all_good(read: &PartRead, n: usize, bs: usize) -> bool {
    read.blocks.len() == n
        && read.data.len() == n * bs
        && !read
            .blocks
            .iter()
            .any(|b| matches!(b, BlockState::Corrupt(_)))
}
