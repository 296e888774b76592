//! The volume data path.
//!
//! Requests are split at chunk boundaries into segments of whole blocks.
//! Each segment holds a range lock over its blocks (shared for reads,
//! exclusive for writes) for the whole operation, including the reads of a
//! read-modify-write. Replication is a loop over the chunk's parts: reads try
//! parts until every block has a verified copy; writes go to every part and
//! complete when all have it.

use futures_util::future::join_all;
use qbd_core::backend::{BlockState, BlockWrite, PartId, WriteData};

use super::range_lock::Mode;
use super::{Volume, VolumeError};

/// One chunk's share of a request, in whole blocks.
#[derive(Debug, Clone, Copy)]
struct Segment {
    chunk: u64,
    /// First block within the chunk.
    first: u32,
    /// Blocks covered.
    count: u32,
    /// Byte offset of the segment's first block in the volume.
    start: u64,
}

impl Volume {
    fn bs(&self) -> u64 {
        u64::from(self.geo.block_size)
    }

    /// The segments covering bytes `offset..offset+len` (len > 0).
    fn segments(&self, offset: u64, len: u64) -> impl Iterator<Item = Segment> + '_ {
        let bs = self.bs();
        let bpc = u64::from(self.geo.blocks_per_chunk());
        let first = offset / bs;
        let end = (offset + len).div_ceil(bs);
        let mut b = first;
        std::iter::from_fn(move || {
            if b >= end {
                return None;
            }
            let chunk = b / bpc;
            let seg_end = end.min((chunk + 1) * bpc);
            let s = Segment {
                chunk,
                first: (b % bpc) as u32,
                count: (seg_end - b) as u32,
                start: b * bs,
            };
            b = seg_end;
            Some(s)
        })
    }

    fn lock_range(&self, s: Segment) -> (u64, u64) {
        let bpc = u64::from(self.geo.blocks_per_chunk());
        let g = s.chunk * bpc + u64::from(s.first);
        (g, g + u64::from(s.count))
    }

    /// Reads `len` bytes at `offset`.
    pub async fn read_at(&self, offset: u64, len: u32) -> Result<Vec<u8>, VolumeError> {
        let bs = self.bs();
        let mut segs = self.segments(offset, u64::from(len)).peekable();
        let mut out = Vec::new();
        while let Some(s) = segs.next() {
            let (a, b) = self.lock_range(s);
            let guard = self.locks.lock(a, b, Mode::Shared).await;
            let data = self.read_segment(s).await?;
            drop(guard);
            let aligned = offset.is_multiple_of(bs) && u64::from(len).is_multiple_of(bs);
            if aligned && out.is_empty() && segs.peek().is_none() {
                return Ok(data);
            }
            if out.is_empty() {
                out = vec![0u8; len as usize];
            }
            copy_overlap(&data, s.start, &mut out, offset);
        }
        Ok(out)
    }

    /// Reads a segment's blocks from whichever parts have good copies.
    async fn read_segment(&self, s: Segment) -> Result<Vec<u8>, VolumeError> {
        let bs = self.bs() as usize;
        if !self.allocated.get(s.chunk) {
            return Ok(vec![0; s.count as usize * bs]);
        }
        let parts = self.geo.redundancy.parts();
        let start = (s.chunk % parts as u64) as usize;
        let mut out: Option<Vec<u8>> = None;
        let mut bad: Vec<u32> = (0..s.count).collect();
        let mut why = String::from("no replica answered");
        for i in 0..parts {
            let p = (start + i) % parts;
            let id = PartId {
                chunk: s.chunk,
                part: p as u8,
            };
            let read = match self.backend(s.chunk, p).read(id, s.first, s.count).await {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("qbd-master: read of {id:?} failed: {e}");
                    why = e.to_string();
                    continue;
                }
            };
            let buf = out.get_or_insert_with(|| vec![0u8; s.count as usize * bs]);
            bad.retain(|&b| match &read.blocks[b as usize] {
                BlockState::Corrupt(reason) => {
                    eprintln!(
                        "qbd-master: chunk {} part {p} block {}: {reason}",
                        s.chunk,
                        s.first + b
                    );
                    why = reason.clone();
                    true
                }
                _ => {
                    let r = b as usize * bs..(b as usize + 1) * bs;
                    buf[r.clone()].copy_from_slice(&read.data[r]);
                    false
                }
            });
            if bad.is_empty() {
                break;
            }
        }
        match (bad.first(), out) {
            (None, Some(buf)) => Ok(buf),
            (first_bad, _) => Err(VolumeError::Unreadable {
                chunk: s.chunk,
                block: s.first + first_bad.copied().unwrap_or(0),
                why,
            }),
        }
    }

    /// Writes `data` at `offset`; durable before return if `fua`.
    pub async fn write_at(&self, offset: u64, data: Vec<u8>, fua: bool) -> Result<(), VolumeError> {
        let bs = self.bs();
        let len = data.len() as u64;
        let segs: Vec<Segment> = self.segments(offset, len).collect();
        if offset.is_multiple_of(bs) && len.is_multiple_of(bs) && segs.len() == 1 {
            return self.write_whole(segs[0], data, fua).await;
        }
        for s in segs {
            self.write_partial(s, &data, offset, fua).await?;
        }
        Ok(())
    }

    /// Writes a segment whose blocks the request covers whole.
    async fn write_whole(&self, s: Segment, blocks: Vec<u8>, fua: bool) -> Result<(), VolumeError> {
        self.ensure_allocated(s.chunk).await?;
        let (a, b) = self.lock_range(s);
        let _guard = self.locks.lock(a, b, Mode::Exclusive).await;
        self.write_parts(s, WriteData::Bytes(blocks), fua).await
    }

    /// Writes the part of `src` (at volume offset `src_at`) that falls in
    /// segment `s`, reading the first and last block first where the request
    /// covers them only partly (read-modify-write, under the same lock).
    async fn write_partial(
        &self,
        s: Segment,
        src: &[u8],
        src_at: u64,
        fua: bool,
    ) -> Result<(), VolumeError> {
        self.ensure_allocated(s.chunk).await?;
        let bs = self.bs() as usize;
        let (a, b) = self.lock_range(s);
        let _guard = self.locks.lock(a, b, Mode::Exclusive).await;
        let mut buf = vec![0u8; s.count as usize * bs];
        let seg_end = s.start + u64::from(s.count) * bs as u64;
        let head_partial = src_at > s.start;
        let tail_partial = src_at + (src.len() as u64) < seg_end;
        if head_partial {
            let old = self.read_segment(Segment { count: 1, ..s }).await?;
            buf[..bs].copy_from_slice(&old);
        }
        if tail_partial && !(head_partial && s.count == 1) {
            let last = Segment {
                first: s.first + s.count - 1,
                count: 1,
                start: seg_end - bs as u64,
                ..s
            };
            let old = self.read_segment(last).await?;
            buf[(s.count as usize - 1) * bs..].copy_from_slice(&old);
        }
        copy_overlap(src, src_at, &mut buf, s.start);
        self.write_parts(s, WriteData::Bytes(buf), fua).await
    }

    /// Writes a segment's new blocks to every part of its chunk.
    async fn write_parts(&self, s: Segment, data: WriteData, fua: bool) -> Result<(), VolumeError> {
        let generation = self
            .generations
            .next()
            .ok_or(VolumeError::GenerationsExhausted)?;
        let parts = self.geo.redundancy.parts();
        let mut payloads = Vec::with_capacity(parts);
        match data {
            WriteData::Bytes(d) => {
                for _ in 1..parts {
                    payloads.push(WriteData::Bytes(d.clone()));
                }
                payloads.push(WriteData::Bytes(d));
            }
            WriteData::Zero { punch } => {
                payloads.extend((0..parts).map(|_| WriteData::Zero { punch }))
            }
        }
        let writes = payloads.into_iter().enumerate().map(|(p, data)| {
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
        for r in join_all(writes).await {
            r?;
        }
        Ok(())
    }

    /// Sets the chunk's allocation bit and creates its parts before its first write.
    async fn ensure_allocated(&self, chunk: u64) -> Result<(), VolumeError> {
        if self.allocated.get(chunk) {
            return Ok(());
        }
        let _g = self.alloc_lock.lock().await;
        if self.allocated.get(chunk) {
            return Ok(());
        }
        for p in 0..self.geo.redundancy.parts() {
            self.backend(chunk, p)
                .allocate(PartId {
                    chunk,
                    part: p as u8,
                })
                .await?;
        }
        self.allocated.set(chunk);
        Ok(())
    }

    /// Zeroes `len` bytes at `offset` (TRIM when `punch`, else WRITE_ZEROES).
    /// Whole blocks get zero records (and holes when `punch`); partly covered
    /// edge blocks are zeroed by read-modify-write.
    pub async fn zero_at(
        &self,
        offset: u64,
        len: u64,
        punch: bool,
        fua: bool,
    ) -> Result<(), VolumeError> {
        let bs = self.bs();
        let end = offset + len;
        for s in self.segments(offset, len) {
            if !self.allocated.get(s.chunk) {
                continue; // never written: already zeros
            }
            let mut whole = s;
            if offset > s.start {
                let head = Segment { count: 1, ..s };
                let hi = end.min(s.start + bs);
                self.write_partial(head, &vec![0u8; (hi - offset) as usize], offset, fua)
                    .await?;
                whole = Segment {
                    first: s.first + 1,
                    count: s.count - 1,
                    start: s.start + bs,
                    ..s
                };
            }
            let whole_end = whole.start + u64::from(whole.count) * bs;
            if whole.count > 0 && end < whole_end {
                let tail = Segment {
                    first: whole.first + whole.count - 1,
                    count: 1,
                    start: whole_end - bs,
                    ..s
                };
                self.write_partial(
                    tail,
                    &vec![0u8; (end - tail.start) as usize],
                    tail.start,
                    fua,
                )
                .await?;
                whole.count -= 1;
            }
            if whole.count > 0 {
                let (a, b) = self.lock_range(whole);
                let _guard = self.locks.lock(a, b, Mode::Exclusive).await;
                self.write_parts(whole, WriteData::Zero { punch }, fua)
                    .await?;
            }
        }
        Ok(())
    }

    /// Makes every write completed before the call durable on every backend.
    pub async fn flush_all(&self) -> Result<(), VolumeError> {
        for r in join_all(self.backends.iter().map(|b| b.sync(None))).await {
            r?;
        }
        Ok(())
    }
}

/// Copies the overlap of `src` (at volume offset `src_at`) into `dst` (at `dst_at`).
fn copy_overlap(src: &[u8], src_at: u64, dst: &mut [u8], dst_at: u64) {
    let lo = src_at.max(dst_at);
    let hi = (src_at + src.len() as u64).min(dst_at + dst.len() as u64);
    if lo >= hi {
        return;
    }
    let n = (hi - lo) as usize;
    let s = (lo - src_at) as usize;
    let d = (lo - dst_at) as usize;
    dst[d..d + n].copy_from_slice(&src[s..s + n]);
}

#[cfg(test)]
mod tests {
    use super::copy_overlap;

    #[test]
    fn overlap_copies_only_the_intersection() {
        let mut dst = [0u8; 8];
        copy_overlap(&[1, 2, 3, 4], 6, &mut dst, 4);
        assert_eq!(dst, [0, 0, 1, 2, 3, 4, 0, 0]);
        copy_overlap(&[9; 4], 0, &mut dst, 4);
        assert_eq!(dst, [0, 0, 1, 2, 3, 4, 0, 0]);
        copy_overlap(&[7; 4], 10, &mut dst, 4);
        assert_eq!(dst, [0, 0, 1, 2, 3, 4, 7, 7]);
    }
}
