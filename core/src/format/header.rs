//! The part file header: the first 128 bytes of every part file. The
//! record-group bitmap follows it in the first page ([`super::groups`]).
//!
//! | bytes   | field                                   |
//! |---------|-----------------------------------------|
//! | 0..8    | magic `QBDPART\0`                       |
//! | 8..10   | format version (2)                      |
//! | 10..12  | header length (128)                     |
//! | 12..16  | flags (0)                               |
//! | 16..32  | volume UUID                             |
//! | 32..40  | chunk index                             |
//! | 40      | part index                              |
//! | 41      | parts per chunk                         |
//! | 42      | data parts (k; 1 for replication)       |
//! | 43      | reserved (0)                            |
//! | 44..48  | block size                              |
//! | 48..52  | blocks in this part                     |
//! | 52..56  | meta record size (192)                  |
//! | 56..64  | meta region offset                      |
//! | 64..72  | data region offset                      |
//! | 72..80  | file size                               |
//! | 80..112 | reserved (0)                            |
//! | 112..128| BLAKE3-128 of bytes 0..112              |

use uuid::Uuid;

use super::{checksum128, le_u16, le_u32, le_u64};
use crate::{CoreError, CoreResult};

/// Header magic.
pub const MAGIC: [u8; 8] = *b"QBDPART\0";
/// Current format version. Version 2 added the record-group bitmap: in
/// version 1 an all-zero record meant "never written".
pub const VERSION: u16 = 2;
/// The version before record groups, refused with [`OLD_FORMAT_ADVICE`].
pub const OLD_VERSION: u16 = 1;
/// What to do with a part file of [`OLD_VERSION`].
pub const OLD_FORMAT_ADVICE: &str = "it is the old part-file format 1 (an all-zero meta record \
    meant \"never written\", so zeroed records went unnoticed); this qbd reads format 2 only: \
    read the volume out with the qbd release that wrote it (e.g. nbdcopy from its export) \
    and write it into a volume created by this release";
/// Encoded header length.
pub const HEADER_LEN: usize = 128;

/// A decoded part file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartHeader {
    /// The volume this part belongs to.
    pub volume: Uuid,
    /// Chunk index.
    pub chunk: u64,
    /// Part index (0 = `a`).
    pub part: u8,
    /// Parts per chunk.
    pub parts: u8,
    /// Data parts per chunk.
    pub data_parts: u8,
    /// Block size.
    pub block_size: u32,
    /// Blocks stored in this part.
    pub blocks: u32,
    /// Meta record size.
    pub record_size: u32,
    /// Offset of the meta region.
    pub meta_offset: u64,
    /// Offset of the data region.
    pub data_offset: u64,
    /// Total file size.
    pub file_size: u64,
}

impl PartHeader {
    /// Encodes to exactly [`HEADER_LEN`] bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&VERSION.to_le_bytes());
        b[10..12].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        b[16..32].copy_from_slice(self.volume.as_bytes());
        b[32..40].copy_from_slice(&self.chunk.to_le_bytes());
        b[40] = self.part;
        b[41] = self.parts;
        b[42] = self.data_parts;
        b[44..48].copy_from_slice(&self.block_size.to_le_bytes());
        b[48..52].copy_from_slice(&self.blocks.to_le_bytes());
        b[52..56].copy_from_slice(&self.record_size.to_le_bytes());
        b[56..64].copy_from_slice(&self.meta_offset.to_le_bytes());
        b[64..72].copy_from_slice(&self.data_offset.to_le_bytes());
        b[72..80].copy_from_slice(&self.file_size.to_le_bytes());
        let sum = checksum128(&[&b[..112]]);
        b[112..128].copy_from_slice(&sum);
        b
    }

    /// The format version of a part file's first bytes, if they carry the
    /// magic (no other check: this is how the old format is told apart).
    pub fn version_of(b: &[u8]) -> Option<u16> {
        (b.len() >= 10 && b[0..8] == MAGIC).then(|| le_u16(b, 8))
    }

    /// Decodes and checks magic, version, length and checksum.
    pub fn decode(b: &[u8]) -> CoreResult<Self> {
        let bad = |why: &str| Err(CoreError::malformed("part header", why));
        if b.len() < HEADER_LEN {
            return bad("truncated");
        }
        if b[0..8] != MAGIC {
            return bad("bad magic (not a QBD part file)");
        }
        if checksum128(&[&b[..112]]) != b[112..128] {
            return bad("header checksum mismatch");
        }
        match le_u16(b, 8) {
            VERSION => {}
            OLD_VERSION => return bad(OLD_FORMAT_ADVICE),
            v => return bad(&format!("unsupported format version {v}")),
        }
        if usize::from(le_u16(b, 10)) != HEADER_LEN {
            return bad("unexpected header length");
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[16..32]);
        Ok(PartHeader {
            volume: Uuid::from_bytes(uuid),
            chunk: le_u64(b, 32),
            part: b[40],
            parts: b[41],
            data_parts: b[42],
            block_size: le_u32(b, 44),
            blocks: le_u32(b, 48),
            record_size: le_u32(b, 52),
            meta_offset: le_u64(b, 56),
            data_offset: le_u64(b, 64),
            file_size: le_u64(b, 72),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PartHeader {
        PartHeader {
            volume: Uuid::from_u128(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff),
            chunk: 7,
            part: 1,
            parts: 3,
            data_parts: 1,
            block_size: 4096,
            blocks: 1024,
            record_size: 192,
            meta_offset: 4096,
            data_offset: 200_704,
            file_size: 200_704 + 4 * 1024 * 1024,
        }
    }

    #[test]
    fn golden_bytes() {
        let b = sample().encode();
        assert_eq!(&b[0..16], b"QBDPART\0\x02\x00\x80\x00\x00\x00\x00\x00");
        assert_eq!(
            &b[16..32],
            &0x0011_2233_4455_6677_8899_aabb_ccdd_eeffu128.to_be_bytes()
        );
        assert_eq!(&b[32..44], &[7, 0, 0, 0, 0, 0, 0, 0, 1, 3, 1, 0]);
        assert_eq!(&b[44..56], &[0, 0x10, 0, 0, 0, 4, 0, 0, 192, 0, 0, 0]);
        assert_eq!(&b[56..64], &4096u64.to_le_bytes());
        assert!(b[80..112].iter().all(|&x| x == 0));
        let decoded = PartHeader::decode(&b).expect("golden header decodes");
        assert_eq!(decoded, sample());
    }

    #[test]
    fn round_trip() {
        let h = sample();
        assert_eq!(PartHeader::decode(&h.encode()).ok(), Some(h));
    }

    #[test]
    fn truncated_is_rejected() {
        let b = sample().encode();
        for n in [0, 1, 64, HEADER_LEN - 1] {
            assert!(PartHeader::decode(&b[..n]).is_err());
        }
    }

    #[test]
    fn the_old_format_is_refused_with_advice() {
        let mut b = sample().encode();
        b[8..10].copy_from_slice(&OLD_VERSION.to_le_bytes());
        let sum = checksum128(&[&b[..112]]);
        b[112..128].copy_from_slice(&sum);
        let e = PartHeader::decode(&b);
        assert!(
            e.as_ref()
                .is_err_and(|e| e.to_string().contains("old part-file format 1")),
            "{e:?}"
        );
    }

    #[test]
    fn any_flipped_bit_is_rejected() {
        let b = sample().encode();
        for i in 0..HEADER_LEN * 8 {
            let mut c = b;
            c[i / 8] ^= 1 << (i % 8);
            assert!(PartHeader::decode(&c).is_err(), "bit {i}");
        }
    }
}
