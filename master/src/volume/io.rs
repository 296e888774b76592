//! The volume data path.
//!
//! Requests are split at chunk boundaries into segments of whole blocks.
//! Each segment holds a range lock over its blocks (shared for reads,
//! exclusive for writes) for the whole operation, including the reads of a
//! read-modify-write. Replication is a loop over the chunk's parts: reads try
//! parts until every block has a verified copy; writes go to every part and
//! complete when all have it.

use qbd_core::backend::WriteData;

use super::range_lock::Mode;
use super::{Scheme, Volume, VolumeError};

/// One chunk's share of a request, in whole blocks.
#[derive(Debug, Clone, Copy)]
pub(super) struct Segment {
    pub(super) chunk: u64,
    /// First block within the chunk.
    pub(super) first: u32,
    /// Blocks covered.
    pub(super) count: u32,
    /// Byte offset of the segment's first block in the volume.
    pub(super) start: u64,
}

impl Volume {
    pub(super) fn bs(&self) -> u64 {
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

    /// The volume blocks a segment locks: its own, rounded out to whole
    /// rows for EC (parity orders the writes of a row, not of a block).
    pub(super) fn lock_range(&self, s: Segment) -> (u64, u64) {
        let bpc = u64::from(self.geo.blocks_per_chunk());
        let base = s.chunk * bpc;
        let (first, end) = match self.scheme.erasure().map(|e| &e.ec) {
            Some(ec) => {
                let k = ec.k() as u32;
                let rows = ec.rows_of(s);
                (rows.start * k, rows.end * k)
            }
            None => (s.first, s.first + s.count),
        };
        (base + u64::from(first), base + u64::from(end))
    }

    /// Reads `len` bytes at `offset`.
    pub async fn read_at(&self, offset: u64, len: u32) -> Result<Vec<u8>, VolumeError> {
        self.fence.check()?;
        let bs = self.bs();
        let mut segs = self.segments(offset, u64::from(len)).peekable();
        let mut out = Vec::new();
        while let Some(s) = segs.next() {
            let (a, b) = self.lock_range(s);
            let guard = self.locks.lock(a, b, Mode::Shared).await;
            let data = match self.scheme {
                Scheme::Erasure(_) => self.ec_read(s, Mode::Shared).await?.data,
                Scheme::Replicated => self.read_segment(s).await?,
            };
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

    /// Writes `data` at `offset`; durable before return if `fua`.
    pub async fn write_at(&self, offset: u64, data: Vec<u8>, fua: bool) -> Result<(), VolumeError> {
        self.fence.check()?;
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
        self.fence.check()?;
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
