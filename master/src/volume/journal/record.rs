//! The journal's on-disk format: a file header and redo records of EC row
//! updates, fixed little-endian layouts, a BLAKE3 checksum on each (see
//! `docs/erasure-coding.md` §6 for the tables).
//!
//! Decoding never trusts a length before checking it against the bytes at
//! hand: a torn or corrupt record is an error (`Torn`), never a panic.

use qbd_core::backend::WriteData;
use qbd_core::ec::Cover;
use qbd_core::generation::Generation;
use uuid::Uuid;

/// File header: magic, version, volume, owner epoch, checksum.
pub const HEADER_LEN: usize = 72;
const HEADER_MAGIC: &[u8; 8] = b"QBDJRNL\0";
const VERSION: u32 = 1;

/// Record magic.
const RECORD_MAGIC: &[u8; 4] = b"QJR1";
/// Bytes of a record before its covers (magic .. block size).
const FIXED_LEN: usize = 72;
/// Per-part entry header.
const ENTRY_LEN: usize = 12;
/// BLAKE3 checksum.
const SUM_LEN: usize = 32;
/// No record is larger (a 16+8 row update of a whole 64 MiB chunk is far below).
pub const MAX_RECORD: usize = 1 << 30;

/// Payload kinds of a part entry.
const KIND_BYTES: u8 = 0;
const KIND_ZERO: u8 = 1;
const KIND_PUNCH: u8 = 2;

/// The journal file's header: whose journal it is and which master epoch
/// owns it (records are trusted only if that is the volume's previous epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The volume.
    pub volume: Uuid,
    /// The epoch of the master that owns the file.
    pub epoch: u64,
}

impl Header {
    /// Encodes the header (72 bytes).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(HEADER_MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[16..32].copy_from_slice(self.volume.as_bytes());
        b[32..40].copy_from_slice(&self.epoch.to_le_bytes());
        let sum = blake3::hash(&b[..40]);
        b[40..72].copy_from_slice(sum.as_bytes());
        b
    }

    /// Decodes a header; `None` if it is not one (wrong magic, version or checksum).
    pub fn decode(b: &[u8]) -> Option<Header> {
        let b = b.get(..HEADER_LEN)?;
        if &b[0..8] != HEADER_MAGIC || le32(b, 8)? != VERSION {
            return None;
        }
        if blake3::hash(&b[..40]).as_bytes() != &b[40..72] {
            return None;
        }
        Some(Header {
            volume: Uuid::from_slice(&b[16..32]).ok()?,
            epoch: le64(b, 32)?,
        })
    }
}

/// New blocks of one part in a row update.
#[derive(Debug)]
pub struct PartPut {
    /// Part index (data parts 0..K, parity K..K+M).
    pub part: u8,
    /// First part block (= row).
    pub first: u32,
    /// Blocks.
    pub count: u32,
    /// The bytes, or zeros.
    pub data: WriteData,
}

/// One row update: everything needed to redo it on every part.
#[derive(Debug)]
pub struct RowUpdate {
    /// Chunk.
    pub chunk: u64,
    /// First row touched.
    pub first_row: u32,
    /// The update's generation (data blocks written and parity blocks).
    pub generation: Generation,
    /// Per touched row, the K data generations the new parity covers.
    pub covers: Vec<Cover>,
    /// Data parts with their written blocks, parity parts with every row.
    pub parts: Vec<PartPut>,
}

/// A decoded record.
#[derive(Debug)]
pub struct Record {
    /// Sequence number (increasing within a file).
    pub seq: u64,
    /// Volume.
    pub volume: Uuid,
    /// Epoch of the master that wrote it.
    pub epoch: u64,
    /// The row update.
    pub update: RowUpdate,
}

/// Why bytes are not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Torn {
    /// Fewer bytes than the record needs (a crash during the append).
    #[error("truncated record")]
    Short,
    /// Not a record's magic, or an impossible field.
    #[error("not a record: {0}")]
    Garbage(&'static str),
    /// The checksum does not match.
    #[error("checksum mismatch")]
    Checksum,
}

impl Record {
    /// Encodes the record (`k` data parts, blocks of `bs` bytes).
    pub fn encode(&self, k: u8, m: u8, bs: u32) -> Vec<u8> {
        encode(self.seq, self.volume, self.epoch, &self.update, [k, m], bs)
    }

    /// The length of the record starting at `b` (header fields only, not
    /// checked): what to read before [`decode`](Self::decode).
    pub fn peek_len(b: &[u8]) -> Result<usize, Torn> {
        let head = b.get(..8).ok_or(Torn::Short)?;
        if &head[..4] != RECORD_MAGIC {
            return Err(Torn::Garbage("magic"));
        }
        let body = le32(head, 4).ok_or(Torn::Short)? as usize;
        if body + 8 < FIXED_LEN || body + 8 + SUM_LEN > MAX_RECORD {
            return Err(Torn::Garbage("length"));
        }
        Ok(8 + body + SUM_LEN)
    }

    /// Decodes one record from exactly its bytes, checking the checksum
    /// first and then every length against the bytes present.
    pub fn decode(b: &[u8]) -> Result<Record, Torn> {
        let len = Self::peek_len(b)?;
        if b.len() < len {
            return Err(Torn::Short);
        }
        if b.len() > len {
            return Err(Torn::Garbage("trailing bytes"));
        }
        let (body, sum) = b.split_at(len - SUM_LEN);
        if blake3::hash(body).as_bytes() != sum {
            return Err(Torn::Checksum);
        }
        let bad = Torn::Garbage;
        let seq = le64(body, 8).ok_or(Torn::Short)?;
        let volume = Uuid::from_slice(&body[16..32]).map_err(|_| bad("uuid"))?;
        let epoch = le64(body, 32).ok_or(Torn::Short)?;
        let chunk = le64(body, 40).ok_or(Torn::Short)?;
        let generation = Generation(le64(body, 48).ok_or(Torn::Short)?);
        let first_row = le32(body, 56).ok_or(Torn::Short)?;
        let rows = le32(body, 60).ok_or(Torn::Short)? as usize;
        let (k, n_parts) = (usize::from(body[64]), usize::from(body[66]));
        let bs = le32(body, 68).ok_or(Torn::Short)? as usize;
        if k == 0 || bs == 0 {
            return Err(bad("geometry"));
        }
        let mut at = FIXED_LEN;
        let mut covers = Vec::with_capacity(rows.min(body.len() / 8));
        for _ in 0..rows {
            let gens = (0..k)
                .map(|i| le64(body, at + i * 8).map(Generation))
                .collect::<Option<Vec<_>>>()
                .ok_or(Torn::Short)?;
            covers.push(Cover::new(&gens).map_err(|_| bad("cover"))?);
            at += k * 8;
        }
        let mut parts = Vec::with_capacity(n_parts);
        for _ in 0..n_parts {
            let e = body.get(at..at + ENTRY_LEN).ok_or(Torn::Short)?;
            let (part, kind) = (e[0], e[1]);
            let first = le32(e, 4).ok_or(Torn::Short)?;
            let count = le32(e, 8).ok_or(Torn::Short)?;
            at += ENTRY_LEN;
            let data = match kind {
                KIND_BYTES => {
                    let n = (count as usize).checked_mul(bs).ok_or(bad("count"))?;
                    let d = body.get(at..at + n).ok_or(Torn::Short)?;
                    at += n;
                    WriteData::Bytes(d.to_vec())
                }
                KIND_ZERO => WriteData::Zero { punch: false },
                KIND_PUNCH => WriteData::Zero { punch: true },
                _ => return Err(bad("payload kind")),
            };
            parts.push(PartPut {
                part,
                first,
                count,
                data,
            });
        }
        if at != body.len() {
            return Err(bad("body length"));
        }
        Ok(Record {
            seq,
            volume,
            epoch,
            update: RowUpdate {
                chunk,
                first_row,
                generation,
                covers,
                parts,
            },
        })
    }
}

/// Encodes a record of `u` (see [`Record::encode`]).
pub fn encode(seq: u64, volume: Uuid, epoch: u64, u: &RowUpdate, km: [u8; 2], bs: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(FIXED_LEN + payload_len(u) + SUM_LEN);
    b.extend_from_slice(RECORD_MAGIC);
    b.extend_from_slice(&[0; 4]); // body length, below
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(volume.as_bytes());
    b.extend_from_slice(&epoch.to_le_bytes());
    b.extend_from_slice(&u.chunk.to_le_bytes());
    b.extend_from_slice(&u.generation.0.to_le_bytes());
    b.extend_from_slice(&u.first_row.to_le_bytes());
    b.extend_from_slice(&(u.covers.len() as u32).to_le_bytes());
    b.extend_from_slice(&[km[0], km[1], u.parts.len() as u8, 0]);
    b.extend_from_slice(&bs.to_le_bytes());
    for c in &u.covers {
        for g in c.gens() {
            b.extend_from_slice(&g.0.to_le_bytes());
        }
    }
    for p in &u.parts {
        let kind = match p.data {
            WriteData::Bytes(_) => KIND_BYTES,
            WriteData::Zero { punch: false } => KIND_ZERO,
            WriteData::Zero { punch: true } => KIND_PUNCH,
        };
        b.extend_from_slice(&[p.part, kind, 0, 0]);
        b.extend_from_slice(&p.first.to_le_bytes());
        b.extend_from_slice(&p.count.to_le_bytes());
        if let WriteData::Bytes(d) = &p.data {
            b.extend_from_slice(d);
        }
    }
    let body = (b.len() - 8) as u32;
    b[4..8].copy_from_slice(&body.to_le_bytes());
    let sum = blake3::hash(&b);
    b.extend_from_slice(sum.as_bytes());
    b
}

fn payload_len(u: &RowUpdate) -> usize {
    let covers: usize = u.covers.iter().map(|c| c.gens().len() * 8).sum();
    let parts: usize = u
        .parts
        .iter()
        .map(|p| match &p.data {
            WriteData::Bytes(d) => ENTRY_LEN + d.len(),
            WriteData::Zero { .. } => ENTRY_LEN,
        })
        .sum();
    covers + parts
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOL: Uuid = Uuid::from_u128(0x1234);

    fn record(seq: u64) -> Record {
        let g = |x| Generation(x);
        Record {
            seq,
            volume: VOL,
            epoch: 3,
            update: RowUpdate {
                chunk: 7,
                first_row: 2,
                generation: g(0x300_0000_0009),
                covers: vec![Cover::new(&[g(9), g(5)]).expect("cover")],
                parts: vec![
                    PartPut {
                        part: 0,
                        first: 2,
                        count: 1,
                        data: WriteData::Bytes(vec![0xab; 8]),
                    },
                    PartPut {
                        part: 2,
                        first: 2,
                        count: 1,
                        data: WriteData::Zero { punch: true },
                    },
                ],
            },
        }
    }

    fn same(a: &Record, b: &Record) -> bool {
        a.encode(2, 1, 8) == b.encode(2, 1, 8)
    }

    #[test]
    fn golden_bytes_both_ways() {
        let bytes = record(1).encode(2, 1, 8);
        assert_eq!(bytes.len(), 72 + 16 + 12 + 8 + 12 + 32);
        assert_eq!(&bytes[..4], b"QJR1");
        assert_eq!(&bytes[4..8], &((bytes.len() - 40) as u32).to_le_bytes());
        assert_eq!(&bytes[8..16], &1u64.to_le_bytes());
        assert_eq!(&bytes[40..48], &7u64.to_le_bytes());
        assert_eq!(&bytes[64..68], &[2, 1, 2, 0]);
        assert_eq!(&bytes[72..80], &9u64.to_le_bytes());
        assert_eq!(&bytes[88..92], &[0, 0, 0, 0]);
        assert_eq!(&bytes[100..108], &[0xab; 8]);
        assert_eq!(&bytes[108..112], &[2, 2, 0, 0]);
        let back = Record::decode(&bytes).expect("decode");
        assert!(same(&back, &record(1)));
        assert_eq!(back.update.generation, Generation(0x300_0000_0009));
    }

    #[test]
    fn truncated_and_flipped_records_are_rejected() {
        let bytes = record(5).encode(2, 1, 8);
        for cut in 0..bytes.len() {
            assert!(Record::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(Record::decode(&b).is_err(), "flip at {i}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            Record::decode(&long).err(),
            Some(Torn::Garbage("trailing bytes"))
        );
    }

    #[test]
    fn header_round_trip_and_checksum() {
        let h = Header {
            volume: VOL,
            epoch: 42,
        };
        let b = h.encode();
        assert_eq!(Header::decode(&b), Some(h));
        let mut bad = b;
        bad[33] ^= 1;
        assert_eq!(Header::decode(&bad), None);
        assert_eq!(Header::decode(&b[..HEADER_LEN - 1]), None);
    }
}
