//! The per-block meta record: 192 bytes at a fixed position per block.
//!
//! | bytes    | field                                                    |
//! |----------|----------------------------------------------------------|
//! | 0..16    | BLAKE3-128 of the block's data (zero if `ZERO`)          |
//! | 16..24   | generation                                               |
//! | 24..28   | flags ([`flags`])                                        |
//! | 28       | covered count (parity records: k; else 0)                |
//! | 29..32   | reserved (0)                                             |
//! | 32..160  | covered generations: 16 × u64 (parity records)           |
//! | 160..176 | reserved (0)                                             |
//! | 176..192 | BLAKE3-128 of (chunk u64, part u8, block u32, bytes 0..176) |
//!
//! Every record must pass its checksum, which is keyed by its position so a
//! record copied to the wrong place is invalid too. The "never written"
//! record ([`MetaRecord::EMPTY`]) is explicit: flags 0, every field zero,
//! and a valid checksum; it is what a record group is initialised with
//! (see [`super::groups`]). An all-zero record is therefore *not* valid: in
//! an initialised group it is a zeroed (damaged) record. Whether a record
//! is looked at at all is the group bitmap's call: a block of a group never
//! initialised is never written, whatever its record bytes hold.

use super::{checksum128, le_u32, le_u64};
use crate::generation::Generation;
use crate::redundancy::MAX_EC_DATA;
use crate::{CoreError, CoreResult};

/// Encoded record size.
pub const RECORD_SIZE: usize = 192;

/// Record flags.
pub mod flags {
    /// The block was written (always set on a non-empty record).
    pub const WRITTEN: u32 = 1;
    /// The block reads as zeros (trimmed or written with zeros); data may be a hole.
    pub const ZERO: u32 = 2;
    /// The block is resolved through the dedupe pointer file.
    pub const DEDUPED: u32 = 4;
    /// The block is a parity block; `covered` holds the data generations.
    pub const PARITY: u32 = 8;
    /// All flags this version knows.
    pub const KNOWN: u32 = WRITTEN | ZERO | DEDUPED | PARITY;
}

/// Where a record sits: part of its checksum key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPos {
    /// Chunk index.
    pub chunk: u64,
    /// Part index.
    pub part: u8,
    /// Block index within the part.
    pub block: u32,
}

/// A decoded meta record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetaRecord {
    /// Checksum of the data.
    pub data_sum: [u8; 16],
    /// Write generation.
    pub generation: Generation,
    /// Flags.
    pub flags: u32,
    /// Number of meaningful entries in `covered`.
    pub covered_len: u8,
    /// Parity records: generations of the data blocks covered.
    pub covered: [u64; MAX_EC_DATA],
}

impl MetaRecord {
    /// The record of a never-written block.
    pub const EMPTY: MetaRecord = MetaRecord {
        data_sum: [0; 16],
        generation: Generation::NONE,
        flags: 0,
        covered_len: 0,
        covered: [0; MAX_EC_DATA],
    };

    /// A record for freshly written data.
    pub fn for_data(data: &[u8], generation: Generation) -> Self {
        Self::for_sum(checksum128(&[data]), generation)
    }

    /// The record of a data block whose checksum is already known (and
    /// was checked against the data by whoever computed it).
    pub fn for_sum(data_sum: [u8; 16], generation: Generation) -> Self {
        MetaRecord {
            data_sum,
            generation,
            flags: flags::WRITTEN,
            ..MetaRecord::EMPTY
        }
    }

    /// A record for a block that now reads as zeros.
    pub fn for_zero(generation: Generation) -> Self {
        MetaRecord {
            generation,
            flags: flags::WRITTEN | flags::ZERO,
            ..MetaRecord::EMPTY
        }
    }

    /// True for the never-written record.
    pub fn is_empty(&self) -> bool {
        *self == MetaRecord::EMPTY
    }

    /// True if the block reads as zeros without looking at its data.
    pub fn is_zero(&self) -> bool {
        self.flags & flags::ZERO != 0
    }

    /// Does `data` match this record's checksum?
    pub fn matches(&self, data: &[u8]) -> bool {
        checksum128(&[data]) == self.data_sum
    }

    /// Encodes into `out` (exactly [`RECORD_SIZE`] bytes). The empty record
    /// encodes checksummed like any other (flags 0).
    pub fn encode_into(&self, pos: RecordPos, out: &mut [u8]) {
        out.fill(0);
        out[0..16].copy_from_slice(&self.data_sum);
        out[16..24].copy_from_slice(&self.generation.0.to_le_bytes());
        out[24..28].copy_from_slice(&self.flags.to_le_bytes());
        out[28] = self.covered_len;
        for (i, g) in self.covered.iter().enumerate() {
            out[32 + i * 8..40 + i * 8].copy_from_slice(&g.to_le_bytes());
        }
        let sum = checksum128(&[&pos_key(pos), &out[..176]]);
        out[176..192].copy_from_slice(&sum);
    }

    /// Encodes into a new array.
    pub fn encode(&self, pos: RecordPos) -> [u8; RECORD_SIZE] {
        let mut b = [0u8; RECORD_SIZE];
        self.encode_into(pos, &mut b);
        b
    }

    /// Decodes and verifies a record found at `pos`.
    pub fn decode(b: &[u8], pos: RecordPos) -> CoreResult<Self> {
        if b.len() != RECORD_SIZE {
            return Err(CoreError::malformed("meta record", "wrong length"));
        }
        if b.iter().all(|&x| x == 0) {
            // Why not "never written": records are initialised before use,
            // so zeros where a record was written are damage.
            return Err(CoreError::malformed(
                "meta record",
                "record zeroed (damaged)",
            ));
        }
        if checksum128(&[&pos_key(pos), &b[..176]]) != b[176..192] {
            return Err(CoreError::malformed(
                "meta record",
                "record checksum mismatch",
            ));
        }
        let fl = le_u32(b, 24);
        if fl == 0 {
            return Self::decode_empty(b);
        }
        if fl & !flags::KNOWN != 0 || fl & flags::WRITTEN == 0 {
            return Err(CoreError::malformed(
                "meta record",
                "unknown or missing flags",
            ));
        }
        let covered_len = b[28];
        if usize::from(covered_len) > MAX_EC_DATA {
            return Err(CoreError::malformed(
                "meta record",
                "covered count too large",
            ));
        }
        let mut data_sum = [0u8; 16];
        data_sum.copy_from_slice(&b[0..16]);
        let mut covered = [0u64; MAX_EC_DATA];
        for (i, g) in covered.iter_mut().enumerate() {
            *g = le_u64(b, 32 + i * 8);
        }
        Ok(MetaRecord {
            data_sum,
            generation: Generation(le_u64(b, 16)),
            flags: fl,
            covered_len,
            covered,
        })
    }
}

impl MetaRecord {
    /// A checked record with no flags: the "never written" record, whose
    /// other fields must all be zero.
    fn decode_empty(b: &[u8]) -> CoreResult<Self> {
        if b[..176].iter().any(|&x| x != 0) {
            return Err(CoreError::malformed(
                "meta record",
                "unwritten record with non-zero fields",
            ));
        }
        Ok(MetaRecord::EMPTY)
    }
}

fn pos_key(pos: RecordPos) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[0..8].copy_from_slice(&pos.chunk.to_le_bytes());
    k[8] = pos.part;
    k[9..13].copy_from_slice(&pos.block.to_le_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    const POS: RecordPos = RecordPos {
        chunk: 2,
        part: 0,
        block: 9,
    };

    #[test]
    fn golden_bytes() {
        let r = MetaRecord::for_data(&[0u8; 4096], Generation(0x0102_0304_0506_0708));
        let b = r.encode(POS);
        // BLAKE3 of 4096 zero bytes, first 16 bytes.
        let zsum = blake3::hash(&[0u8; 4096]);
        assert_eq!(&b[0..16], &zsum.as_bytes()[..16]);
        assert_eq!(&b[16..24], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&b[24..32], &[1, 0, 0, 0, 0, 0, 0, 0]);
        assert!(b[32..176].iter().all(|&x| x == 0));
        assert_eq!(MetaRecord::decode(&b, POS).ok(), Some(r));
    }

    #[test]
    fn round_trip_parity_record() {
        let mut r = MetaRecord::for_data(b"parity", Generation(77));
        r.flags |= flags::PARITY;
        r.covered_len = 16;
        r.covered = core::array::from_fn(|i| i as u64 * 1000 + 1);
        assert_eq!(MetaRecord::decode(&r.encode(POS), POS).ok(), Some(r));
    }

    #[test]
    fn all_zero_is_damage_and_never_written_is_explicit() {
        let e = MetaRecord::decode(&[0u8; RECORD_SIZE], POS);
        assert!(
            e.as_ref().is_err_and(|e| e.to_string().contains("zeroed")),
            "{e:?}"
        );
        let b = MetaRecord::EMPTY.encode(POS);
        assert!(b[..176].iter().all(|&x| x == 0));
        assert_ne!(b, [0u8; RECORD_SIZE], "the unwritten record is checksummed");
        assert_eq!(MetaRecord::decode(&b, POS).ok(), Some(MetaRecord::EMPTY));
        assert!(
            MetaRecord::decode(&b, RecordPos { block: 8, ..POS }).is_err(),
            "keyed by position"
        );
    }

    #[test]
    fn unwritten_record_with_fields_is_invalid() {
        // A checksum-valid record with no flags but a generation: not a
        // record any writer makes.
        let mut b = [0u8; RECORD_SIZE];
        b[16] = 5;
        let sum = checksum128(&[&pos_key(POS), &b[..176]]);
        b[176..].copy_from_slice(&sum);
        assert!(MetaRecord::decode(&b, POS).is_err());
    }

    #[test]
    fn truncated_is_rejected() {
        let b = MetaRecord::for_zero(Generation(5)).encode(POS);
        assert!(MetaRecord::decode(&b[..RECORD_SIZE - 1], POS).is_err());
        assert!(MetaRecord::decode(&[], POS).is_err());
    }

    #[test]
    fn flipped_bits_and_wrong_position_are_invalid() {
        let b = MetaRecord::for_data(b"x", Generation(5)).encode(POS);
        for i in 0..RECORD_SIZE * 8 {
            let mut c = b;
            c[i / 8] ^= 1 << (i % 8);
            assert!(MetaRecord::decode(&c, POS).is_err(), "bit {i}");
        }
        assert!(MetaRecord::decode(&b, RecordPos { block: 10, ..POS }).is_err());
    }
}
