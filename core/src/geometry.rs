//! Volume geometry: volume → chunk → block → part.
//!
//! A volume of `size` bytes is cut into chunks of `chunk_size` bytes, each a
//! set of part files; a chunk holds `blocks_per_chunk` blocks of `block_size`.
//! For replication every part holds all blocks of its chunk. For EC ("rows"),
//! stripe unit = one block: volume block `b` of a chunk lives in data part
//! `b % k` at part-block `b / k`, and each part holds `blocks_per_chunk / k`
//! blocks.

use crate::redundancy::Redundancy;
use crate::{CoreError, CoreResult};

/// Smallest block size.
pub const MIN_BLOCK_SIZE: u32 = 4096;
/// Largest block size.
pub const MAX_BLOCK_SIZE: u32 = 65536;
/// Largest volume size: NBD sizes must stay below 2^63; we keep far below.
pub const MAX_VOLUME_SIZE: u64 = 1 << 60;

/// The fixed shape of a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Volume size in bytes (need not be a multiple of the chunk size).
    pub size: u64,
    /// Block size in bytes (power of two, 4K..=64K).
    pub block_size: u32,
    /// Chunk size in bytes (a multiple of the block size).
    pub chunk_size: u64,
    /// Redundancy policy.
    pub redundancy: Redundancy,
}

/// Where one volume block lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockAddr {
    /// Chunk index.
    pub chunk: u64,
    /// Block index within the chunk (volume order).
    pub block: u32,
}

impl Geometry {
    /// Validates the shape.
    pub fn new(
        size: u64,
        block_size: u32,
        chunk_size: u64,
        redundancy: Redundancy,
    ) -> CoreResult<Self> {
        let bad = |s: String| Err(CoreError::InvalidSetting(s));
        if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)
        {
            return bad(format!(
                "block size {block_size} must be a power of two from 4K to 64K"
            ));
        }
        if chunk_size == 0 || !chunk_size.is_multiple_of(u64::from(block_size)) {
            return bad(format!(
                "chunk size {chunk_size} must be a non-zero multiple of the block size {block_size}"
            ));
        }
        let blocks = chunk_size / u64::from(block_size);
        if blocks > 1 << 20 {
            return bad(format!(
                "chunk size {chunk_size} holds more than 2^20 blocks"
            ));
        }
        let k = redundancy.data_parts() as u64;
        if !blocks.is_multiple_of(k) {
            return bad(format!(
                "blocks per chunk ({blocks}) must be a multiple of K={k}"
            ));
        }
        if size == 0 || size > MAX_VOLUME_SIZE {
            return bad(format!(
                "volume size {size} must be between 1 byte and 2^60"
            ));
        }
        Ok(Geometry {
            size,
            block_size,
            chunk_size,
            redundancy,
        })
    }

    /// Blocks per chunk (volume order).
    pub fn blocks_per_chunk(&self) -> u32 {
        // Bounded to 2^20 by `new`.
        (self.chunk_size / u64::from(self.block_size)) as u32
    }

    /// Blocks each part file of a chunk holds.
    pub fn blocks_per_part(&self) -> u32 {
        self.blocks_per_chunk() / self.redundancy.data_parts() as u32
    }

    /// Number of chunks (the last may be partial).
    pub fn chunk_count(&self) -> u64 {
        self.size.div_ceil(self.chunk_size)
    }

    /// The block holding byte `offset`.
    pub fn block_of(&self, offset: u64) -> BlockAddr {
        let chunk = offset / self.chunk_size;
        let block = ((offset % self.chunk_size) / u64::from(self.block_size)) as u32;
        BlockAddr { chunk, block }
    }

    /// Byte offset in the volume of a block.
    pub fn offset_of(&self, addr: BlockAddr) -> u64 {
        addr.chunk * self.chunk_size + u64::from(addr.block) * u64::from(self.block_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(bs: u32, cs: u64, r: &str) -> CoreResult<Geometry> {
        Geometry::new(1 << 30, bs, cs, r.parse()?)
    }

    #[test]
    fn validates_shape() {
        assert!(geo(4096, 4 << 20, "replicate:1").is_ok());
        assert!(geo(65536, 32 << 20, "ec:4+2").is_ok());
        assert!(geo(2048, 4 << 20, "replicate:1").is_err());
        assert!(geo(131072, 4 << 20, "replicate:1").is_err());
        assert!(geo(12288, 4 << 20, "replicate:1").is_err());
        assert!(geo(4096, 6144, "replicate:1").is_err());
        assert!(geo(4096, 12288, "ec:2+1").is_err());
        assert!(Geometry::new(0, 4096, 4096, Redundancy::Replicate(1)).is_err());
    }

    #[test]
    fn locates_blocks() -> CoreResult<()> {
        let g = geo(4096, 1 << 20, "replicate:2")?;
        assert_eq!(g.blocks_per_chunk(), 256);
        assert_eq!(g.chunk_count(), 1024);
        let a = g.block_of((3 << 20) + 4096 * 5 + 17);
        assert_eq!(a, BlockAddr { chunk: 3, block: 5 });
        assert_eq!(g.offset_of(a), (3 << 20) + 4096 * 5);
        Ok(())
    }

    #[test]
    fn partial_last_chunk_counts() -> CoreResult<()> {
        let g = Geometry::new((1 << 20) + 1, 4096, 1 << 20, Redundancy::Replicate(1))?;
        assert_eq!(g.chunk_count(), 2);
        Ok(())
    }
}
