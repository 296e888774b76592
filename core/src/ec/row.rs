//! EC rows within a chunk: pure geometry.
//!
//! Stripe unit = one block. Row `r` of a chunk is the K consecutive volume
//! blocks `rK .. rK+K` (chunk-relative), block `rK + i` in data part `i` at
//! part block `r`, plus M parity blocks at part block `r` of parity parts
//! `K .. K+M`. So every part holds `blocks_per_chunk / K` part blocks, and a
//! run of rows `r0..r1` is the contiguous part blocks `r0..r1` in *every*
//! part: a batch reconstruction reads one range per part.
//!
//! A write touching a row is *full* when it overwrites every data block of
//! the row entirely (parity is encoded from the new data alone, no reads),
//! else *partial* (the untouched data blocks, and the edges of partly
//! covered blocks, must be read first).

use std::ops::Range;

use super::{EcError, PartSet};
use crate::geometry::Geometry;
use crate::redundancy::{MAX_EC_DATA, MAX_EC_PARITY};

/// The row shape of an EC chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowGeometry {
    k: u32,
    m: u32,
    blocks_per_chunk: u32,
    block_size: u32,
}

/// Where a chunk block lives: its row (= its part-block index) and its data
/// part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowPos {
    /// Row index = block index inside every part file of the chunk.
    pub row: u32,
    /// Data part `0..K`.
    pub part: usize,
}

/// What a write range does to one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowTouch {
    /// The row.
    pub row: u32,
    /// Data parts whose block the range touches at all.
    pub touched: PartSet,
    /// Data parts whose block the range overwrites entirely (⊆ `touched`).
    pub whole: PartSet,
    k: u32,
}

impl RowTouch {
    /// True when every data block of the row is overwritten entirely: the
    /// parity is encoded from the new data, nothing is read.
    pub fn is_full(&self) -> bool {
        self.whole.len() == self.k as usize
    }

    /// Data parts whose old block must be read to compute the new parity
    /// (all but the wholly overwritten ones; empty for a full row).
    pub fn to_read(&self) -> PartSet {
        PartSet::first(self.k as usize).minus(self.whole)
    }
}

impl RowGeometry {
    /// Validates a row shape: K in 1..=16, M in 1..=8, blocks per chunk a
    /// positive multiple of K, a non-zero block size.
    pub fn new(
        k: usize,
        m: usize,
        blocks_per_chunk: u32,
        block_size: u32,
    ) -> Result<Self, EcError> {
        if !(1..=MAX_EC_DATA).contains(&k) || !(1..=MAX_EC_PARITY).contains(&m) {
            return Err(EcError::UnsupportedProfile { k, m });
        }
        if blocks_per_chunk == 0 || !blocks_per_chunk.is_multiple_of(k as u32) || block_size == 0 {
            return Err(EcError::BlocksNotMultipleOfK {
                blocks: blocks_per_chunk,
                k,
            });
        }
        Ok(RowGeometry {
            k: k as u32,
            m: m as u32,
            blocks_per_chunk,
            block_size,
        })
    }

    /// The row shape of an EC volume (a replicated one is an error).
    pub fn for_geometry(g: &Geometry) -> Result<Self, EcError> {
        match g.redundancy {
            crate::redundancy::Redundancy::Ec { k, m } => RowGeometry::new(
                usize::from(k),
                usize::from(m),
                g.blocks_per_chunk(),
                g.block_size,
            ),
            crate::redundancy::Redundancy::Replicate(n) => Err(EcError::UnsupportedProfile {
                k: usize::from(n),
                m: 0,
            }),
        }
    }

    /// K.
    pub fn data_parts(&self) -> usize {
        self.k as usize
    }

    /// M.
    pub fn parity_parts(&self) -> usize {
        self.m as usize
    }

    /// The data parts `0..K`.
    pub fn data_set(&self) -> PartSet {
        PartSet::first(self.k as usize)
    }

    /// The parity parts `K..K+M`.
    pub fn parity_set(&self) -> PartSet {
        PartSet::range(self.k as usize, (self.k + self.m) as usize)
    }

    /// Rows per chunk = blocks in each part file.
    pub fn rows(&self) -> u32 {
        self.blocks_per_chunk / self.k
    }

    /// Bytes of one chunk (volume data, parity excluded).
    pub fn chunk_bytes(&self) -> u64 {
        u64::from(self.blocks_per_chunk) * u64::from(self.block_size)
    }

    /// Row and data part of chunk block `block`.
    pub fn locate(&self, block: u32) -> Result<RowPos, EcError> {
        self.check_blocks(block..block + 1)?;
        Ok(RowPos {
            row: block / self.k,
            part: (block % self.k) as usize,
        })
    }

    /// The chunk block held by data part `part` in row `row`.
    pub fn block_at(&self, pos: RowPos) -> Result<u32, EcError> {
        if pos.part >= self.k as usize || pos.row >= self.rows() {
            let (start, limit) = (u64::from(pos.row), u64::from(self.rows()));
            return Err(EcError::OutOfChunk {
                start,
                end: start + 1,
                limit,
            });
        }
        Ok(pos.row * self.k + pos.part as u32)
    }

    /// The chunk blocks of row `row` (in data-part order).
    pub fn row_blocks(&self, row: u32) -> Range<u32> {
        row * self.k..(row + 1) * self.k
    }

    /// The rows a chunk block range touches.
    pub fn rows_of_blocks(&self, blocks: Range<u32>) -> Result<Range<u32>, EcError> {
        self.check_blocks(blocks.clone())?;
        if blocks.is_empty() {
            return Ok(0..0);
        }
        Ok(blocks.start / self.k..(blocks.end - 1) / self.k + 1)
    }

    /// Each row a chunk block range writes, with the data parts it
    /// overwrites (whole blocks).
    pub fn touch_blocks(&self, blocks: Range<u32>) -> Result<Vec<RowTouch>, EcError> {
        let bs = u64::from(self.block_size);
        self.touch_bytes(u64::from(blocks.start) * bs..u64::from(blocks.end) * bs)
    }

    /// Each row a chunk byte range writes: the data blocks it touches and
    /// those it overwrites entirely. Rows come in increasing order.
    pub fn touch_bytes(&self, bytes: Range<u64>) -> Result<Vec<RowTouch>, EcError> {
        if bytes.start > bytes.end || bytes.end > self.chunk_bytes() {
            return Err(EcError::OutOfChunk {
                start: bytes.start,
                end: bytes.end,
                limit: self.chunk_bytes(),
            });
        }
        let bs = u64::from(self.block_size);
        let first = (bytes.start / bs) as u32;
        let end = bytes.end.div_ceil(bs) as u32;
        let rows = self.rows_of_blocks(first..end)?;
        Ok(rows
            .map(|row| {
                let mut t = RowTouch {
                    row,
                    touched: PartSet::EMPTY,
                    whole: PartSet::EMPTY,
                    k: self.k,
                };
                for b in self.row_blocks(row).filter(|b| (first..end).contains(b)) {
                    let part = (b % self.k) as usize;
                    t.touched.insert(part);
                    let span = u64::from(b) * bs..u64::from(b + 1) * bs;
                    if bytes.start <= span.start && span.end <= bytes.end {
                        t.whole.insert(part);
                    }
                }
                t
            })
            .collect())
    }

    /// The bytes of chunk block `block` that the chunk byte range `bytes`
    /// covers, relative to the block (empty if none).
    pub fn block_span(&self, block: u32, bytes: &Range<u64>) -> Range<u32> {
        let bs = u64::from(self.block_size);
        let start = u64::from(block) * bs;
        let lo = bytes.start.clamp(start, start + bs);
        let hi = bytes.end.clamp(lo, start + bs);
        (lo - start) as u32..(hi - start) as u32
    }

    fn check_blocks(&self, blocks: Range<u32>) -> Result<(), EcError> {
        if blocks.start > blocks.end || blocks.end > self.blocks_per_chunk {
            return Err(EcError::OutOfChunk {
                start: u64::from(blocks.start),
                end: u64::from(blocks.end),
                limit: u64::from(self.blocks_per_chunk),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redundancy::Redundancy;

    fn rg(k: usize, m: usize, blocks: u32) -> RowGeometry {
        RowGeometry::new(k, m, blocks, 4096).expect("valid row geometry")
    }

    #[test]
    fn validates_shape() {
        assert!(RowGeometry::new(4, 2, 1024, 4096).is_ok());
        assert!(RowGeometry::new(3, 2, 1024, 4096).is_err());
        assert!(RowGeometry::new(0, 2, 1024, 4096).is_err());
        assert!(RowGeometry::new(4, 9, 1024, 4096).is_err());
        assert!(RowGeometry::new(4, 2, 0, 4096).is_err());
        let g =
            Geometry::new(1 << 30, 4096, 4 << 20, Redundancy::Ec { k: 4, m: 2 }).expect("geometry");
        let r = RowGeometry::for_geometry(&g).expect("ec");
        assert_eq!(r.rows(), g.blocks_per_part());
        assert_eq!(r.chunk_bytes(), 4 << 20);
        let g = Geometry::new(1 << 30, 4096, 4 << 20, Redundancy::Replicate(2)).expect("geometry");
        assert!(RowGeometry::for_geometry(&g).is_err());
    }

    #[test]
    fn locates_blocks_both_ways() -> Result<(), EcError> {
        let r = rg(4, 2, 64);
        assert_eq!(r.rows(), 16);
        assert_eq!(r.locate(0)?, RowPos { row: 0, part: 0 });
        assert_eq!(r.locate(13)?, RowPos { row: 3, part: 1 });
        assert_eq!(r.locate(63)?, RowPos { row: 15, part: 3 });
        assert!(r.locate(64).is_err());
        for b in 0..64 {
            assert_eq!(r.block_at(r.locate(b)?)?, b);
        }
        assert!(r.block_at(RowPos { row: 0, part: 4 }).is_err());
        assert!(r.block_at(RowPos { row: 16, part: 0 }).is_err());
        assert_eq!(r.row_blocks(3), 12..16);
        assert_eq!(r.data_set().iter().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        assert_eq!(r.parity_set().iter().collect::<Vec<_>>(), vec![4, 5]);
        Ok(())
    }

    #[test]
    fn rows_of_block_ranges() -> Result<(), EcError> {
        let r = rg(4, 2, 64);
        assert_eq!(r.rows_of_blocks(0..4)?, 0..1);
        assert_eq!(r.rows_of_blocks(3..5)?, 0..2);
        assert_eq!(r.rows_of_blocks(5..5)?, 0..0);
        assert_eq!(r.rows_of_blocks(0..64)?, 0..16);
        assert!(r.rows_of_blocks(60..65).is_err());
        Ok(())
    }

    #[test]
    fn classifies_full_and_partial_rows() -> Result<(), EcError> {
        let r = rg(4, 2, 64);
        // Blocks 2..9: row 0 partial (parts 2, 3), row 1 full, row 2 partial (part 0).
        let t = r.touch_blocks(2..9)?;
        assert_eq!(t.len(), 3);
        assert_eq!((t[0].row, t[0].is_full()), (0, false));
        assert_eq!(t[0].whole.iter().collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(t[0].to_read().iter().collect::<Vec<_>>(), vec![0, 1]);
        assert!(t[1].is_full() && t[1].to_read().is_empty());
        assert_eq!(t[2].whole.iter().collect::<Vec<_>>(), vec![0]);
        assert!(r.touch_blocks(4..4)?.is_empty());
        Ok(())
    }

    #[test]
    fn unaligned_bytes_make_edge_blocks_partial() -> Result<(), EcError> {
        let r = rg(2, 1, 8);
        // Bytes 512 .. 2*8192+100: block 0 partly, 1..3 wholly, block 4 partly.
        let range = 512..(4 * 4096 + 100);
        let t = r.touch_bytes(range.clone())?;
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].touched.iter().collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(t[0].whole.iter().collect::<Vec<_>>(), vec![1]);
        assert!(t[1].is_full());
        assert_eq!(t[2].touched.iter().collect::<Vec<_>>(), vec![0]);
        assert!(t[2].whole.is_empty());
        assert_eq!(r.block_span(0, &range), 512..4096);
        assert_eq!(r.block_span(2, &range), 0..4096);
        assert_eq!(r.block_span(4, &range), 0..100);
        assert_eq!(r.block_span(5, &range), 0..0);
        assert!(r.touch_bytes(0..8 * 4096 + 1).is_err());
        assert!(
            r.touch_bytes(0..8 * 4096)
                .is_ok_and(|t| t.iter().all(RowTouch::is_full))
        );
        Ok(())
    }

    #[test]
    fn one_data_part_rows_are_single_blocks() -> Result<(), EcError> {
        let r = rg(1, 1, 16);
        assert_eq!(r.rows(), 16);
        assert_eq!(r.locate(7)?, RowPos { row: 7, part: 0 });
        let t = r.touch_bytes(4096..4096 + 10)?;
        assert_eq!(t.len(), 1);
        assert!(!t[0].is_full());
        Ok(())
    }
}
