//! Writes and flushes across the parts of a chunk.
//!
//! A write goes to every usable part and completes when all of them have it.
//! A part that is stale or on a failed backend is skipped; a part whose
//! write fails makes its backend failed. Either way the chunk is recorded in
//! the degraded map on the healthy backends before the write is
//! acknowledged. With no part written, the write fails (EIO). The chunk's
//! write-intent bit is durable before any part is written.

use futures_util::future::join_all;
use qbd_core::backend::{BackendError, BlockWrite, PartId, WriteData};

use super::io::Segment;
use super::{Scheme, Volume, VolumeError};

impl Volume {
    /// Writes a segment's new blocks to every usable part of its chunk.
    pub(super) async fn write_parts(
        &self,
        s: Segment,
        data: WriteData,
        fua: bool,
    ) -> Result<(), VolumeError> {
        self.intent.begin(s.chunk)?;
        let r = match self.scheme {
            Scheme::Erasure(_) => self.ec_write(s, data, fua).await,
            Scheme::Replicated => self.write_replicas(s, data, fua).await,
        };
        self.intent.end(s.chunk);
        r
    }

    async fn write_replicas(
        &self,
        s: Segment,
        data: WriteData,
        fua: bool,
    ) -> Result<(), VolumeError> {
        let generation = self
            .generations
            .next()
            .ok_or(VolumeError::GenerationsExhausted)?;
        let parts = self.geo.redundancy.parts();
        let (targets, mut missed): (Vec<usize>, Vec<usize>) =
            (0..parts).partition(|&p| self.usable(self.placement.slot(s.chunk, p), s.chunk));
        let payloads = copies(data, targets.len());
        let writes = targets.iter().zip(payloads).map(|(&p, data)| {
            let part = PartId {
                chunk: s.chunk,
                part: p as u8,
            };
            let w = BlockWrite {
                part,
                first: s.first,
                count: s.count,
                data,
                generation,
            };
            async move {
                let backend = self.backend(s.chunk, p);
                backend.write(w).await?;
                if fua {
                    backend.sync(Some(vec![part])).await?;
                }
                Ok::<(), VolumeError>(())
            }
        });
        let results = join_all(writes).await;
        let mut written = 0;
        let mut failures = Vec::new();
        for (&p, r) in targets.iter().zip(results) {
            let slot = self.placement.slot(s.chunk, p);
            match r {
                Ok(()) if !fua => {
                    written += 1;
                    self.health.note_written(slot, s.chunk);
                }
                Ok(()) => written += 1,
                Err(e) => failures.push((p, slot, e)),
            }
        }
        // Nothing written: the client gets the error and nothing acknowledged
        // went missing, so no backend needs to be failed for it.
        if written == 0 {
            return match failures.into_iter().next() {
                Some((_, _, e)) => Err(e),
                None => Err(VolumeError::NoCopy(format!(
                    "no usable part of chunk {}",
                    s.chunk
                ))),
            };
        }
        for (p, slot, e) in failures {
            // A missing or unusable part file is that part's problem (it is
            // recorded stale and rebuilt); anything else fails the backend.
            if !e.is_part_fault() {
                self.fail(slot, &e.to_string());
            } else {
                eprintln!(
                    "qbd-master: chunk {} on {}: {e}",
                    s.chunk,
                    self.backends[slot].describe()
                );
            }
            missed.push(p);
        }
        let slots: Vec<usize> = missed
            .iter()
            .map(|&p| self.placement.slot(s.chunk, p))
            .collect();
        self.degrade(&slots, &[s.chunk]).await
    }

    /// Sets the chunk's allocation bit and creates its parts before its first write.
    pub(super) async fn ensure_allocated(&self, chunk: u64) -> Result<(), VolumeError> {
        if self.allocated.get(chunk) {
            return Ok(());
        }
        let _g = self.alloc_lock.lock().await;
        if self.allocated.get(chunk) {
            return Ok(());
        }
        // Dirty before the first part is created: a crash half-way through
        // leaves the chunk in the write-intent log, and the next start
        // completes the allocation (`complete_allocation`).
        self.intent.begin(chunk)?;
        let r = self.allocate_parts(chunk).await;
        self.intent.end(chunk);
        r
    }

    /// Creates `chunk`'s parts on the usable backends (at least one), records
    /// the others stale, then sets the chunk's bit in memory.
    async fn allocate_parts(&self, chunk: u64) -> Result<(), VolumeError> {
        let mut created = 0;
        let mut missed = Vec::new();
        let mut backend_faults = Vec::new();
        let mut first_error = None;
        for p in 0..self.geo.redundancy.parts() {
            let slot = self.placement.slot(chunk, p);
            if !self.usable(slot, chunk) {
                missed.push(slot);
                continue;
            }
            match self.backends[slot]
                .allocate(PartId {
                    chunk,
                    part: p as u8,
                })
                .await
            {
                Ok(()) => created += 1,
                Err(e) => {
                    eprintln!(
                        "qbd-master: allocating chunk {chunk} on {}: {e}",
                        self.backends[slot].describe()
                    );
                    missed.push(slot);
                    if !matches!(
                        e,
                        BackendError::PartMissing { .. } | BackendError::PartCorrupt { .. }
                    ) {
                        backend_faults.push(slot);
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        if created == 0 {
            return Err(match first_error {
                Some(e) => e.into(),
                None => VolumeError::NoCopy(format!("no usable part of chunk {chunk}")),
            });
        }
        for &slot in &backend_faults {
            self.fail(slot, "allocation failed");
        }
        self.degrade(&missed, &[chunk]).await?;
        self.allocated.set(chunk);
        Ok(())
    }

    /// Completes the allocation of `chunk` that a crash may have cut short
    /// (its parts are created one backend after another before its first
    /// write): a part absent on a backend whose own allocation bit is clear
    /// was never created, and is created now, empty; a part that exists is
    /// left as it is, and one whose bit is set but whose file is gone is
    /// damage, left to reconcile and resync (`Backend::allocate` refuses it).
    pub(super) async fn complete_allocation(&self, chunk: u64) -> Result<(), VolumeError> {
        for p in 0..self.geo.redundancy.parts() {
            let slot = self.placement.slot(chunk, p);
            if !self.usable(slot, chunk) {
                continue;
            }
            let part = PartId {
                chunk,
                part: p as u8,
            };
            match self.backends[slot].allocate(part).await {
                Ok(()) => {}
                Err(BackendError::PartMissing { .. } | BackendError::PartCorrupt { .. }) => {}
                Err(e) if e.is_fenced() => return Err(e.into()),
                Err(e) => self.fail(slot, &format!("allocating chunk {chunk}: {e}")),
            }
        }
        Ok(())
    }

    /// Makes every write completed before the call durable on every healthy
    /// backend; a backend whose sync fails is failed and the chunks it had
    /// not synced are recorded as degraded before this returns.
    pub async fn flush_all(&self) -> Result<(), VolumeError> {
        self.fence.check()?;
        let mark = self.intent.flush_started();
        let journal = self.scheme.erasure().map(|e| &e.journal);
        let journal_mark = journal.map(|j| j.flush_started());
        // A failed backend misses this FLUSH: what it had not synced is stale.
        for s in (0..self.backends.len()).filter(|&s| self.health.is_failed(s)) {
            let chunks = self.health.take_unsynced(s);
            self.degrade(&[s], &chunks).await?;
        }
        let slots: Vec<usize> = (0..self.backends.len())
            .filter(|&s| !self.health.is_failed(s))
            .collect();
        let pending: Vec<Vec<u64>> = slots
            .iter()
            .map(|&s| self.health.take_unsynced(s))
            .collect();
        let results = join_all(slots.iter().map(|&s| self.backends[s].sync(None))).await;
        let mut synced = 0;
        for ((&slot, chunks), r) in slots.iter().zip(pending).zip(results) {
            match r {
                Ok(()) => synced += 1,
                Err(e) => {
                    self.fail(slot, &format!("sync: {e}"));
                    self.degrade(&[slot], &chunks).await?;
                }
            }
        }
        if synced == 0 {
            return Err(VolumeError::NoCopy("no backend could sync".into()));
        }
        self.intent.flushed(mark);
        if let (Some(j), Some(m)) = (journal, journal_mark) {
            j.flushed(m).await;
        }
        Ok(())
    }
}

/// `n` payloads for `n` parts (the last one takes the original buffer).
fn copies(data: WriteData, n: usize) -> Vec<WriteData> {
    let mut v = Vec::with_capacity(n);
    match data {
        WriteData::Bytes(d) => {
            for _ in 1..n {
                v.push(WriteData::Bytes(d.clone()));
            }
            if n > 0 {
                v.push(WriteData::Bytes(d));
            }
        }
        WriteData::Zero { punch } => v.extend((0..n).map(|_| WriteData::Zero { punch })),
    }
    v
}
