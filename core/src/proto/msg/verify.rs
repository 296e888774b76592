//! Codecs of the verify requests and responses (`docs/node-protocol.md`
//! §5, §6): `ListVolume`/`VolumeFiles`, `ListParts`/`PartList`,
//! `ScanParts`/`PartScans`. Same rules as the parent module: canonical,
//! every length checked before use, trailing bytes rejected by the caller.
//!
//! A scan of one part on the wire: part (PartId), file tag u8 (0 ok,
//! 1 missing, 2 wrong size + u64, 3 bad header + str, 4 I/O error + str),
//! then list<block>. A block: tag u8 (0 unwritten, 1 valid + summary,
//! 2 bad record, 3 bad data + summary); a summary: flags u32, generation
//! u64, covered count u8 (≤ 16) and that many u64.

use uuid::Uuid;

use super::{
    ProtoError, Reader, Request, Response, op, put_bytes, put_len, put_part, put_u32, put_u64,
};
use crate::redundancy::MAX_EC_DATA;
use crate::verify::{BlockMeta, FileCheck, PartScan, RecordSummary};

const FILE_OK: u8 = 0;
const FILE_MISSING: u8 = 1;
const FILE_WRONG_SIZE: u8 = 2;
const FILE_BAD_HEADER: u8 = 3;
const FILE_IO: u8 = 4;

const BLOCK_UNWRITTEN: u8 = 0;
const BLOCK_VALID: u8 = 1;
const BLOCK_BAD_RECORD: u8 = 2;
const BLOCK_BAD_DATA: u8 = 3;

/// Encodes one of the verify requests.
pub(super) fn encode_request(req: &Request, out: &mut Vec<u8>) {
    match req {
        Request::ListVolume { volume } => out.extend_from_slice(&volume.to_le_bytes()),
        Request::ListParts {
            volume,
            part,
            from,
            max,
        } => {
            out.extend_from_slice(&volume.to_le_bytes());
            out.push(*part);
            put_u64(out, *from);
            put_u32(out, *max);
        }
        Request::ScanParts { meta, parts } => {
            put_bytes(out, meta.as_bytes());
            put_len(out, parts.len());
            for p in parts {
                put_part(out, *p);
            }
        }
        _ => {}
    }
}

/// Decodes one of the verify requests.
pub(super) fn decode_request(opcode: u16, r: &mut Reader<'_>) -> Result<Request, ProtoError> {
    Ok(match opcode {
        op::LIST_VOLUME => Request::ListVolume { volume: r.u16()? },
        op::LIST_PARTS => Request::ListParts {
            volume: r.u16()?,
            part: r.u8()?,
            from: r.u64()?,
            max: r.u32()?,
        },
        _ => {
            let meta = r.string()?;
            let n = r.count(9)?;
            let mut parts = Vec::with_capacity(n);
            for _ in 0..n {
                parts.push(r.part()?);
            }
            Request::ScanParts { meta, parts }
        }
    })
}

/// Encodes one of the verify responses.
pub(super) fn encode_response(resp: &Response, out: &mut Vec<u8>) {
    match resp {
        Response::VolumeFiles {
            alloc,
            stale,
            part_dirs,
            strays,
        } => {
            match alloc {
                None => out.push(0),
                Some(a) => {
                    out.push(1);
                    put_bytes(out, a);
                }
            }
            put_len(out, stale.len());
            for (id, map) in stale {
                out.extend_from_slice(id.as_bytes());
                put_bytes(out, map);
            }
            put_bytes(out, part_dirs);
            put_named_sizes(out, strays);
        }
        Response::PartList {
            files,
            strays,
            next,
        } => {
            put_len(out, files.len());
            for (c, size) in files {
                put_u64(out, *c);
                put_u64(out, *size);
            }
            put_named_sizes(out, strays);
            match next {
                None => out.push(0),
                Some(n) => {
                    out.push(1);
                    put_u64(out, *n);
                }
            }
        }
        Response::PartScans(scans) => {
            put_len(out, scans.len());
            for s in scans {
                put_scan(out, s);
            }
        }
        _ => {}
    }
}

/// Decodes one of the verify responses.
pub(super) fn decode_response(opcode: u16, r: &mut Reader<'_>) -> Result<Response, ProtoError> {
    Ok(match opcode {
        op::VOLUME_FILES => {
            let alloc = if r.option()? {
                Some(r.bytes()?.to_vec())
            } else {
                None
            };
            let n = r.count(16 + 4)?;
            let mut stale = Vec::with_capacity(n);
            for _ in 0..n {
                let id: Uuid = r.uuid()?;
                stale.push((id, r.bytes()?.to_vec()));
            }
            Response::VolumeFiles {
                alloc,
                stale,
                part_dirs: r.bytes()?.to_vec(),
                strays: named_sizes(r)?,
            }
        }
        op::PART_LIST => {
            let n = r.count(16)?;
            let mut files = Vec::with_capacity(n);
            for _ in 0..n {
                files.push((r.u64()?, r.u64()?));
            }
            let strays = named_sizes(r)?;
            let next = if r.option()? { Some(r.u64()?) } else { None };
            Response::PartList {
                files,
                strays,
                next,
            }
        }
        _ => {
            let n = r.count(9 + 1 + 4)?;
            let mut scans = Vec::with_capacity(n);
            for _ in 0..n {
                scans.push(scan(r)?);
            }
            Response::PartScans(scans)
        }
    })
}

fn put_named_sizes(out: &mut Vec<u8>, list: &[(String, u64)]) {
    put_len(out, list.len());
    for (name, size) in list {
        put_bytes(out, name.as_bytes());
        put_u64(out, *size);
    }
}

fn named_sizes(r: &mut Reader<'_>) -> Result<Vec<(String, u64)>, ProtoError> {
    let n = r.count(4 + 8)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push((r.string()?, r.u64()?));
    }
    Ok(v)
}

fn put_scan(out: &mut Vec<u8>, s: &PartScan) {
    put_part(out, s.part);
    match &s.file {
        FileCheck::Ok => out.push(FILE_OK),
        FileCheck::Missing => out.push(FILE_MISSING),
        FileCheck::WrongSize(n) => {
            out.push(FILE_WRONG_SIZE);
            put_u64(out, *n);
        }
        FileCheck::BadHeader(why) => {
            out.push(FILE_BAD_HEADER);
            put_bytes(out, why.as_bytes());
        }
        FileCheck::Io(why) => {
            out.push(FILE_IO);
            put_bytes(out, why.as_bytes());
        }
    }
    put_len(out, s.blocks.len());
    for b in &s.blocks {
        match b {
            BlockMeta::Unwritten => out.push(BLOCK_UNWRITTEN),
            BlockMeta::Valid(sum) => {
                out.push(BLOCK_VALID);
                put_summary(out, sum);
            }
            BlockMeta::BadRecord => out.push(BLOCK_BAD_RECORD),
            BlockMeta::BadData(sum) => {
                out.push(BLOCK_BAD_DATA);
                put_summary(out, sum);
            }
        }
    }
}

fn put_summary(out: &mut Vec<u8>, s: &RecordSummary) {
    put_u32(out, s.flags);
    put_u64(out, s.generation);
    debug_assert!(s.covered.len() <= MAX_EC_DATA);
    out.push(s.covered.len() as u8);
    for g in &s.covered {
        put_u64(out, *g);
    }
}

fn scan(r: &mut Reader<'_>) -> Result<PartScan, ProtoError> {
    let part = r.part()?;
    let file = match r.u8()? {
        FILE_OK => FileCheck::Ok,
        FILE_MISSING => FileCheck::Missing,
        FILE_WRONG_SIZE => FileCheck::WrongSize(r.u64()?),
        FILE_BAD_HEADER => FileCheck::BadHeader(r.string()?),
        FILE_IO => FileCheck::Io(r.string()?),
        t => return Err(r.err(format!("file check tag {t}"))),
    };
    let n = r.count(1)?;
    let mut blocks = Vec::with_capacity(n);
    for _ in 0..n {
        blocks.push(match r.u8()? {
            BLOCK_UNWRITTEN => BlockMeta::Unwritten,
            BLOCK_VALID => BlockMeta::Valid(summary(r)?),
            BLOCK_BAD_RECORD => BlockMeta::BadRecord,
            BLOCK_BAD_DATA => BlockMeta::BadData(summary(r)?),
            t => return Err(r.err(format!("block meta tag {t}"))),
        });
    }
    Ok(PartScan { part, file, blocks })
}

fn summary(r: &mut Reader<'_>) -> Result<RecordSummary, ProtoError> {
    let flags = r.u32()?;
    let generation = r.u64()?;
    let n = usize::from(r.u8()?);
    if n > MAX_EC_DATA {
        return Err(r.err(format!("covered count {n}")));
    }
    let mut covered = Vec::with_capacity(n);
    for _ in 0..n {
        covered.push(r.u64()?);
    }
    Ok(RecordSummary {
        flags,
        generation,
        covered,
    })
}

#[cfg(test)]
fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).unwrap_or(0xff))
        .collect()
}

/// Golden vectors of the verify requests (joined to the parent's).
#[cfg(test)]
pub(super) fn golden_requests() -> Vec<(Request, Vec<u8>)> {
    use crate::backend::PartId;
    vec![
        (Request::ListVolume { volume: 3 }, hex("0300")),
        (
            Request::ListParts {
                volume: 3,
                part: 1,
                from: 0x100,
                max: 65536,
            },
            hex("0300 01 0001000000000000 00000100"),
        ),
        (
            Request::ScanParts {
                meta: "m".into(),
                parts: vec![PartId { chunk: 2, part: 1 }],
            },
            hex("01000000 6d 01000000 0200000000000000 01"),
        ),
    ]
}

/// Golden vectors of the verify responses (joined to the parent's).
#[cfg(test)]
pub(super) fn golden_responses() -> Vec<(Response, Vec<u8>)> {
    use crate::backend::PartId;
    let sum = RecordSummary {
        flags: 9,
        generation: 7,
        covered: vec![5],
    };
    vec![
        (
            Response::VolumeFiles {
                alloc: Some(vec![1, 2]),
                stale: vec![(Uuid::from_u128(0x0102), vec![9])],
                part_dirs: vec![0, 1],
                strays: vec![("z".into(), 4)],
            },
            hex("01 02000000 0102 01000000 \
                 00000000000000000000000000000102 01000000 09 \
                 02000000 0001 01000000 01000000 7a 0400000000000000"),
        ),
        (
            Response::PartList {
                files: vec![(4, 0x10)],
                strays: vec![],
                next: Some(5),
            },
            hex("01000000 0400000000000000 1000000000000000 00000000 01 0500000000000000"),
        ),
        (
            Response::PartScans(vec![
                PartScan {
                    part: PartId { chunk: 1, part: 0 },
                    file: FileCheck::Ok,
                    blocks: vec![
                        BlockMeta::Unwritten,
                        BlockMeta::Valid(sum.clone()),
                        BlockMeta::BadRecord,
                        BlockMeta::BadData(sum),
                    ],
                },
                PartScan {
                    part: PartId { chunk: 1, part: 1 },
                    file: FileCheck::WrongSize(3),
                    blocks: vec![],
                },
            ]),
            hex("02000000 \
                 0100000000000000 00 00 04000000 \
                 00 \
                 01 09000000 0700000000000000 01 0500000000000000 \
                 02 \
                 03 09000000 0700000000000000 01 0500000000000000 \
                 0100000000000000 01 02 0300000000000000 00000000"),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::PartId;

    #[test]
    fn every_file_check_round_trips() {
        let scans: Vec<PartScan> = [
            FileCheck::Ok,
            FileCheck::Missing,
            FileCheck::WrongSize(u64::MAX),
            FileCheck::BadHeader("bad magic".into()),
            FileCheck::Io("EIO".into()),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, file)| PartScan {
            part: PartId {
                chunk: i as u64,
                part: 2,
            },
            file,
            blocks: vec![],
        })
        .collect();
        let resp = Response::PartScans(scans);
        let mut b = Vec::new();
        resp.encode(&mut b);
        assert_eq!(Response::decode(op::PART_SCANS, &b), Ok(resp));
    }

    #[test]
    fn covered_count_over_sixteen_is_rejected() {
        let b = hex("01000000 0100000000000000 00 00 01000000 01 00000000 0000000000000000 11");
        assert!(Response::decode(op::PART_SCANS, &b).is_err());
    }
}
