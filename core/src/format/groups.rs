//! The record-group bitmap: which groups of meta records a part file has
//! initialised.
//!
//! Records are initialised lazily, [`GROUP_RECORDS`] at a time (64 records
//! of 192 bytes = 12 KiB, exactly three 4 KiB pages), so a part with one
//! written block costs its first page, three record pages and the block.
//! Before the first write to a block of a group, every record of the group
//! is written as the explicit, checksummed "unwritten" record and synced;
//! only then is the group's bit set. So:
//!
//! - a block of a group whose bit is clear is never written (its record
//!   bytes are not looked at);
//! - in a group whose bit is set, every record was written and synced, so
//!   a record that fails its checksum (all zeros included) is damage.
//!
//! The bitmap lives in the part file's first page, after the header, in
//! 512-byte sectors, each checksummed on its own and keyed by its place
//! (chunk, part, sector), so a torn page write leaves every sector either
//! old or new, both valid. Sector `s` (0-based) sits at
//! [`BITMAP_OFFSET`]` + s × 512`:
//!
//! | bytes    | field                                                   |
//! |----------|---------------------------------------------------------|
//! | 0..496   | bits of groups `s × 3968 ..`: group `g` is bit `g % 8` of byte `(g % 3968) / 8` |
//! | 496..512 | BLAKE3-128 of (chunk u64, part u8, sector u32, bytes 0..496) |
//!
//! A part has `ceil(groups / 3968)` sectors (one for any chunk up to 3968 ×
//! 64 blocks); all are written when the part file is created, so an
//! all-zero sector is damage too. Bits are only ever set.

use super::checksum128;
use crate::{CoreError, CoreResult};

/// Records per group.
pub const GROUP_RECORDS: u32 = 64;
/// Bitmap sector size.
pub const SECTOR: usize = 512;
/// Offset of the first bitmap sector in the part file.
pub const BITMAP_OFFSET: u64 = 512;
/// Bitmap bytes per sector.
const BITS_BYTES: usize = 496;
/// Groups per sector.
pub const GROUPS_PER_SECTOR: u32 = BITS_BYTES as u32 * 8;
/// Sectors that fit between the header sector and the end of the first page.
pub const MAX_SECTORS: u32 = 7;
/// The most blocks a part file can have.
pub const MAX_BLOCKS: u32 = MAX_SECTORS * GROUPS_PER_SECTOR * GROUP_RECORDS;

// Geometry allows up to 2^20 blocks per chunk (so per part); the bitmap
// must cover them.
const _: () = assert!(MAX_BLOCKS >= 1 << 20);

/// Which record groups of one part are initialised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMap {
    chunk: u64,
    part: u8,
    groups: u32,
    bits: Vec<u8>,
}

impl GroupMap {
    /// The map of a fresh part of `blocks` blocks: no group initialised.
    pub fn new(chunk: u64, part: u8, blocks: u32) -> Self {
        let groups = groups_of(blocks);
        GroupMap {
            chunk,
            part,
            groups,
            bits: vec![0; sectors_of(groups) as usize * BITS_BYTES],
        }
    }

    /// Number of groups.
    pub fn groups(&self) -> u32 {
        self.groups
    }

    /// The group of `block`.
    pub fn group_of(block: u32) -> u32 {
        block / GROUP_RECORDS
    }

    /// Is group `g` initialised?
    pub fn is_init(&self, g: u32) -> bool {
        g < self.groups && self.bits[(g / 8) as usize] & (1 << (g % 8)) != 0
    }

    /// Is `block`'s group initialised?
    pub fn block_init(&self, block: u32) -> bool {
        self.is_init(Self::group_of(block))
    }

    /// Sets group `g`; returns the sector to persist if it changed.
    pub fn set(&mut self, g: u32) -> Option<u32> {
        if g >= self.groups || self.is_init(g) {
            return None;
        }
        self.bits[(g / 8) as usize] |= 1 << (g % 8);
        Some(g / GROUPS_PER_SECTOR)
    }

    /// Number of bitmap sectors.
    pub fn sectors(&self) -> u32 {
        sectors_of(self.groups)
    }

    /// Byte length of the bitmap (all its sectors).
    pub fn byte_len(&self) -> usize {
        self.sectors() as usize * SECTOR
    }

    /// File offset of sector `s`.
    pub fn sector_offset(s: u32) -> u64 {
        BITMAP_OFFSET + u64::from(s) * SECTOR as u64
    }

    /// Encodes sector `s`.
    pub fn encode_sector(&self, s: u32) -> [u8; SECTOR] {
        let mut b = [0u8; SECTOR];
        let start = s as usize * BITS_BYTES;
        b[..BITS_BYTES].copy_from_slice(&self.bits[start..start + BITS_BYTES]);
        let sum = sector_sum(self.chunk, self.part, s, &b[..BITS_BYTES]);
        b[BITS_BYTES..].copy_from_slice(&sum);
        b
    }

    /// Encodes every sector, in order (what a new part file carries).
    pub fn encode(&self) -> Vec<u8> {
        (0..self.sectors())
            .flat_map(|s| self.encode_sector(s))
            .collect()
    }

    /// Decodes the bitmap of a part of `blocks` blocks from `bytes` (its
    /// [`byte_len`](Self::byte_len) bytes from [`BITMAP_OFFSET`]).
    pub fn decode(bytes: &[u8], chunk: u64, part: u8, blocks: u32) -> CoreResult<Self> {
        if blocks > MAX_BLOCKS {
            return Err(CoreError::malformed(
                "record group bitmap",
                format!("{blocks} blocks exceed the format's {MAX_BLOCKS}"),
            ));
        }
        let mut map = GroupMap::new(chunk, part, blocks);
        if bytes.len() != map.byte_len() {
            return Err(CoreError::malformed("record group bitmap", "wrong length"));
        }
        for (s, sector) in bytes.chunks_exact(SECTOR).enumerate() {
            let s = s as u32;
            if sector_sum(chunk, part, s, &sector[..BITS_BYTES]) != sector[BITS_BYTES..] {
                return Err(CoreError::malformed(
                    "record group bitmap",
                    format!("sector {s} zeroed or damaged (checksum mismatch)"),
                ));
            }
            let start = s as usize * BITS_BYTES;
            map.bits[start..start + BITS_BYTES].copy_from_slice(&sector[..BITS_BYTES]);
        }
        Ok(map)
    }
}

fn groups_of(blocks: u32) -> u32 {
    blocks.div_ceil(GROUP_RECORDS)
}

fn sectors_of(groups: u32) -> u32 {
    groups.div_ceil(GROUPS_PER_SECTOR).max(1)
}

fn sector_sum(chunk: u64, part: u8, s: u32, bits: &[u8]) -> [u8; 16] {
    checksum128(&[&chunk.to_le_bytes(), &[part], &s.to_le_bytes(), bits])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sector_covers_a_default_chunk() {
        let m = GroupMap::new(3, 1, 1024);
        assert_eq!(m.groups(), 16);
        assert_eq!(m.sectors(), 1);
        assert_eq!(GroupMap::new(0, 0, 1 << 20).sectors(), 5);
        assert_eq!(GroupMap::sector_offset(1), 1024);
    }

    #[test]
    fn set_reports_the_sector_once() {
        let mut m = GroupMap::new(0, 0, 1 << 20);
        assert_eq!(m.set(2), Some(0));
        assert_eq!(m.set(2), None);
        assert_eq!(m.set(GROUPS_PER_SECTOR + 1), Some(1));
        assert_eq!(m.set(m.groups()), None, "outside the part");
        assert!(m.block_init(2 * 64 + 63) && !m.block_init(3 * 64));
    }

    #[test]
    fn round_trip() -> CoreResult<()> {
        let mut m = GroupMap::new(9, 2, 300_000);
        m.set(0);
        m.set(4000);
        let d = GroupMap::decode(&m.encode(), 9, 2, 300_000)?;
        assert_eq!(d, m);
        Ok(())
    }

    #[test]
    fn golden_sector() {
        let mut m = GroupMap::new(1, 0, 1024);
        m.set(0);
        m.set(9);
        let b = m.encode_sector(0);
        assert_eq!(&b[..3], &[0x01, 0x02, 0x00]);
        assert!(b[3..496].iter().all(|&x| x == 0));
        let sum = checksum128(&[&1u64.to_le_bytes(), &[0], &0u32.to_le_bytes(), &b[..496]]);
        assert_eq!(&b[496..], &sum);
    }

    #[test]
    fn zeroed_flipped_truncated_or_misplaced_is_rejected() {
        let mut m = GroupMap::new(4, 0, 1024);
        m.set(3);
        let b = m.encode();
        assert!(
            GroupMap::decode(&[0u8; SECTOR], 4, 0, 1024).is_err(),
            "zeroed"
        );
        assert!(GroupMap::decode(&b[..SECTOR - 1], 4, 0, 1024).is_err());
        assert!(GroupMap::decode(&b, 5, 0, 1024).is_err(), "another chunk's");
        for i in 0..SECTOR * 8 {
            let mut c = b.clone();
            c[i / 8] ^= 1 << (i % 8);
            assert!(GroupMap::decode(&c, 4, 0, 1024).is_err(), "bit {i}");
        }
    }
}
