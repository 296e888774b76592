//! Where things sit in a part file.
//!
//! ```text
//! 0                 header (128 bytes), rest of the first sector reserved
//! 512               record-group bitmap: 1..=7 sectors of 512 bytes
//!                   (see `groups`), rest of the first 4 KiB reserved
//! 4096              meta region: blocks × 192-byte records, padded to 4 KiB;
//!                   groups of 64 records (12 KiB, three pages) are
//!                   initialised lazily, so the region stays sparse
//! data_offset       data region: blocks × block_size, data_offset a multiple
//!                   of the block size so every block is block-aligned
//! file_size         = data_offset + blocks × block_size (fixed at creation)
//! ```
//!
//! Data blocks stay aligned (O_DIRECT possible, no read-modify-write inside
//! the disk, TRIM punches whole blocks); records sit at pure-arithmetic
//! positions in the meta region, so there is no index to get wrong.

use uuid::Uuid;

use super::groups::{GROUP_RECORDS, GroupMap};
use super::header::PartHeader;
use super::record::RECORD_SIZE;
use crate::{CoreError, CoreResult};

/// Offset of the meta region.
pub const META_OFFSET: u64 = 4096;

/// The arithmetic of one part file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartLayout {
    /// Block size.
    pub block_size: u32,
    /// Blocks in the part.
    pub blocks: u32,
    /// Offset of the data region.
    pub data_offset: u64,
    /// Total file size.
    pub file_size: u64,
}

impl PartLayout {
    /// The layout of a part holding `blocks` blocks of `block_size` bytes.
    pub fn new(block_size: u32, blocks: u32) -> Self {
        let meta_len = (u64::from(blocks) * RECORD_SIZE as u64).next_multiple_of(4096);
        let data_offset = (META_OFFSET + meta_len).next_multiple_of(u64::from(block_size));
        let file_size = data_offset + u64::from(blocks) * u64::from(block_size);
        PartLayout {
            block_size,
            blocks,
            data_offset,
            file_size,
        }
    }

    /// Offset of block `i`'s meta record.
    pub fn record_offset(&self, block: u32) -> u64 {
        META_OFFSET + u64::from(block) * RECORD_SIZE as u64
    }

    /// The blocks of record group `g`: (first, count), clipped to the part.
    pub fn group_blocks(&self, g: u32) -> (u32, u32) {
        let first = g.saturating_mul(GROUP_RECORDS).min(self.blocks);
        (first, (self.blocks - first).min(GROUP_RECORDS))
    }

    /// The record groups that blocks `first .. first + count` touch.
    pub fn groups_of_range(&self, first: u32, count: u32) -> std::ops::Range<u32> {
        if count == 0 {
            return 0..0;
        }
        GroupMap::group_of(first)..GroupMap::group_of(first + count - 1) + 1
    }

    /// The empty group bitmap of a part with this layout.
    pub fn empty_groups(&self, chunk: u64, part: u8) -> GroupMap {
        GroupMap::new(chunk, part, self.blocks)
    }

    /// Offset of block `i`'s data.
    pub fn data_offset_of(&self, block: u32) -> u64 {
        self.data_offset + u64::from(block) * u64::from(self.block_size)
    }

    /// The header a part file with this layout carries.
    pub fn header(
        &self,
        volume: Uuid,
        chunk: u64,
        part: u8,
        parts: u8,
        data_parts: u8,
    ) -> PartHeader {
        PartHeader {
            volume,
            chunk,
            part,
            parts,
            data_parts,
            block_size: self.block_size,
            blocks: self.blocks,
            record_size: RECORD_SIZE as u32,
            meta_offset: META_OFFSET,
            data_offset: self.data_offset,
            file_size: self.file_size,
        }
    }

    /// Checks that a header found on disk is the one expected here.
    pub fn check_header(&self, found: &PartHeader, expected: &PartHeader) -> CoreResult<()> {
        if found.volume != expected.volume {
            return Err(CoreError::malformed(
                "part header",
                "belongs to another volume",
            ));
        }
        if found.chunk != expected.chunk || found.part != expected.part {
            return Err(CoreError::malformed(
                "part header",
                "belongs to another chunk or part",
            ));
        }
        if found != expected {
            return Err(CoreError::malformed(
                "part header",
                "shape differs from the volume's",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_shape_is_aligned() {
        let l = PartLayout::new(4096, 1024);
        assert_eq!(l.data_offset, 4096 + 196_608);
        assert_eq!(l.data_offset % 4096, 0);
        assert_eq!(l.file_size, l.data_offset + (4 << 20));
        assert_eq!(l.record_offset(1), 4096 + 192);
    }

    #[test]
    fn groups_are_whole_pages_of_records() {
        let l = PartLayout::new(4096, 1000);
        assert_eq!(GROUP_RECORDS as usize * RECORD_SIZE % 4096, 0);
        assert_eq!(l.group_blocks(1), (64, 64));
        assert_eq!(l.group_blocks(15), (960, 40), "the last group is clipped");
        assert_eq!(l.groups_of_range(63, 2), 0..2);
        assert_eq!(l.groups_of_range(64, 64), 1..2);
        assert_eq!(l.empty_groups(0, 0).groups(), 16);
    }

    #[test]
    fn large_blocks_align_data_to_the_block() {
        let l = PartLayout::new(65536, 64);
        assert_eq!(l.data_offset, 65536);
        assert_eq!(l.data_offset_of(2), 65536 * 3);
    }
}
