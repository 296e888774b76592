//! `VouchedBlocks` (opcode 0x8f): a node's answer to `Read` whose block
//! data is vouched for by the blocks' stored checksums instead of by the
//! frame MAC (`docs/node-protocol.md` §4.3).
//!
//! Why: answering a 4 KiB read used to cost the node two BLAKE3 passes over
//! the data (checking the stored checksum, then the MAC), half its CPU per
//! read. Now the node sends each block's stored checksum (BLAKE3-128 of the
//! data, from its meta record) inside the MAC-covered part of the frame and
//! the data after it, outside the MAC (`frame::FLAG_DETACHED_TAIL`); the
//! receiver hashes each block once and compares. That one pass checks the
//! disk and the wire together, end to end. Forging data would need a
//! second BLAKE3 preimage; what does not match reads as a corrupt block
//! (the master then uses another copy), never as data.
//!
//! Payload: u32 count, then per block a state (tag u8: 0 unwritten,
//! 1 data + u64 generation + 16-byte checksum, 2 zero + u64 generation,
//! 3 corrupt + string), then the data as bytes (u32 length, `count ×
//! block_size` bytes) — last, so the MAC-covered part is a prefix.
//! Decoding returns `Response::Blocks` with only checked data in it.

use super::{
    ProtoError, Reader, Request, Response, WireBlockState, WriteMode, put_bool, put_bytes, put_len,
    put_part, put_u16, put_u32, put_u64,
};
use crate::format::checksum128;

// The state tags are `Blocks`' (`STATE_*`); `Data` adds the checksum.
use super::{
    STATE_CORRUPT as TAG_CORRUPT, STATE_DATA as TAG_DATA, STATE_UNWRITTEN as TAG_UNWRITTEN,
    STATE_ZERO as TAG_ZERO,
};

/// Checksum length (BLAKE3 truncated to 128 bits, as in meta records).
pub const SUM_LEN: usize = 16;

/// What a node's meta record claims for one block, before anyone checked
/// the data against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VouchedState {
    /// Never written: zeros.
    Unwritten,
    /// Data at this generation whose BLAKE3-128 the record says is `sum`.
    Data {
        /// Write generation.
        generation: u64,
        /// The stored checksum of the data.
        sum: [u8; SUM_LEN],
    },
    /// Zeros at this generation.
    Zero(u64),
    /// The record itself failed its checks.
    Corrupt(String),
}

/// Why a block whose data does not match its stored checksum is refused.
pub const MISMATCH: &str =
    "data does not match its stored checksum (damaged on disk or on the way)";

/// Encodes the payload.
pub(super) fn encode(states: &[VouchedState], data: &[u8], out: &mut Vec<u8>) {
    out.reserve(4 + 25 * states.len() + 4 + data.len());
    put_len(out, states.len());
    for s in states {
        match s {
            VouchedState::Unwritten => out.push(TAG_UNWRITTEN),
            VouchedState::Data { generation, sum } => {
                out.push(TAG_DATA);
                put_u64(out, *generation);
                out.extend_from_slice(sum);
            }
            VouchedState::Zero(g) => {
                out.push(TAG_ZERO);
                put_u64(out, *g);
            }
            VouchedState::Corrupt(why) => {
                out.push(TAG_CORRUPT);
                put_bytes(out, why.as_bytes());
            }
        }
    }
    put_bytes(out, data);
}

/// Decodes the payload into a checked `Response::Blocks`. `covered` is how
/// many leading payload bytes the frame MAC covered: every state and
/// checksum must lie inside them (`total` is the payload length).
pub(super) fn decode(
    r: &mut Reader<'_>,
    total: usize,
    covered: usize,
) -> Result<Response, ProtoError> {
    let n = r.count(1)?;
    let mut claims = Vec::with_capacity(n);
    for _ in 0..n {
        claims.push(match r.u8()? {
            TAG_UNWRITTEN => VouchedState::Unwritten,
            TAG_DATA => VouchedState::Data {
                generation: r.u64()?,
                sum: r.array()?,
            },
            TAG_ZERO => VouchedState::Zero(r.u64()?),
            TAG_CORRUPT => VouchedState::Corrupt(r.string()?),
            t => return Err(r.err(format!("block state tag {t}"))),
        });
    }
    // The data's length prefix is the last covered field we rely on.
    let len_end = total - r.b.len() + 4;
    if len_end > covered {
        return Err(r.err(format!(
            "the MAC covers {covered} bytes, the states and checksums run to {len_end}"
        )));
    }
    let data = r.bytes()?;
    let block = match (n, data.len()) {
        (0, 0) => 0,
        (0, _) => return Err(r.err("data without blocks")),
        (n, len) if len % n == 0 => len / n,
        (n, len) => return Err(r.err(format!("{len} data bytes are not {n} whole blocks"))),
    };
    let mut data = data.to_vec();
    let states = claims
        .into_iter()
        .enumerate()
        .map(|(i, claim)| check(claim, &mut data[i * block..(i + 1) * block]))
        .collect();
    Ok(Response::Blocks { states, data })
}

impl Request {
    /// The `VouchedWrite` form of a `Write` of data blocks (its checksums
    /// computed here, one BLAKE3 pass, which replaces the MAC's pass over
    /// the data); any other request, or a write whose data is not whole
    /// blocks, unchanged.
    pub fn vouched(self) -> Request {
        match self {
            Request::Write {
                volume,
                epoch,
                part,
                first,
                count,
                generation,
                mode: WriteMode::Data,
                heal,
                data,
            } if count > 0 && !data.is_empty() && data.len() % count as usize == 0 => {
                let sums = data
                    .chunks_exact(data.len() / count as usize)
                    .map(|b| checksum128(&[b]))
                    .collect();
                Request::VouchedWrite {
                    volume,
                    epoch,
                    part,
                    first,
                    count,
                    generation,
                    heal,
                    sums,
                    data,
                }
            }
            other => other,
        }
    }
}

/// Encodes a `VouchedWrite`: volume u16, epoch u64, part, first u32, count u32,
/// generation u64, heal bool, `count` checksums of 16 bytes, then the
/// data as bytes (last, outside the MAC).
pub(super) fn encode_write(req: &Request, out: &mut Vec<u8>) {
    let Request::VouchedWrite {
        volume,
        epoch,
        part,
        first,
        count,
        generation,
        heal,
        sums,
        data,
    } = req
    else {
        return;
    };
    out.reserve(32 + SUM_LEN * sums.len() + 4 + data.len());
    put_u16(out, *volume);
    put_u64(out, *epoch);
    put_part(out, *part);
    put_u32(out, *first);
    put_u32(out, *count);
    put_u64(out, *generation);
    put_bool(out, *heal);
    for s in sums {
        out.extend_from_slice(s);
    }
    put_bytes(out, data);
}

/// Decodes a `VouchedWrite` and checks every block against its checksum:
/// a mismatch is [`ProtoError::BadTail`] (forged or damaged data, to be
/// treated like a bad MAC), never a write. The count, the checksums and
/// the data's length must lie in the `covered` bytes.
pub(super) fn decode_write(
    r: &mut Reader<'_>,
    total: usize,
    covered: usize,
) -> Result<Request, ProtoError> {
    let volume = r.u16()?;
    let epoch = r.u64()?;
    let part = r.part()?;
    let first = r.u32()?;
    let count = r.u32()?;
    let generation = r.u64()?;
    let heal = r.bool()?;
    if count == 0 {
        return Err(r.err("a vouched write of no blocks"));
    }
    let n = count as usize;
    if n.saturating_mul(SUM_LEN) > r.b.len() {
        return Err(r.err(format!("truncated: {n} checksums announced")));
    }
    let sums = (0..n).map(|_| r.array()).collect::<Result<Vec<_>, _>>()?;
    let len_end = total - r.b.len() + 4;
    if len_end > covered {
        return Err(r.err(format!(
            "the MAC covers {covered} bytes, the checksums run to {len_end}"
        )));
    }
    let data = r.bytes()?;
    if data.is_empty() || data.len() % n != 0 {
        return Err(r.err(format!(
            "{} data bytes are not {n} whole blocks",
            data.len()
        )));
    }
    let block = data.len() / n;
    for (i, (sum, bytes)) in sums.iter().zip(data.chunks_exact(block)).enumerate() {
        if checksum128(&[bytes]) != *sum {
            return Err(ProtoError::BadTail(format!("block {i} of {n}")));
        }
    }
    Ok(Request::VouchedWrite {
        volume,
        epoch,
        part,
        first,
        count,
        generation,
        heal,
        sums,
        data: data.to_vec(),
    })
}

/// The checked state of one block; its bytes are zeroed unless they are
/// data that matched its checksum (whatever the tail carried for them).
fn check(claim: VouchedState, bytes: &mut [u8]) -> WireBlockState {
    let state = match claim {
        VouchedState::Data { generation, sum } if checksum128(&[bytes]) == sum => {
            return WireBlockState::Data(generation);
        }
        VouchedState::Data { .. } => WireBlockState::Corrupt(MISMATCH.to_owned()),
        VouchedState::Unwritten => WireBlockState::Unwritten,
        VouchedState::Zero(g) => WireBlockState::Zero(g),
        VouchedState::Corrupt(why) => WireBlockState::Corrupt(why),
    };
    bytes.fill(0);
    state
}

#[cfg(test)]
mod tests {
    use super::super::op;
    use super::*;

    fn sample() -> (Vec<VouchedState>, Vec<u8>) {
        let mut data = vec![0u8; 4 * 8];
        data[..8].copy_from_slice(b"blockone");
        data[8..16].copy_from_slice(b"flipped!");
        data[16..24].copy_from_slice(b"leftover");
        let states = vec![
            VouchedState::Data {
                generation: 5,
                sum: checksum128(&[b"blockone"]),
            },
            VouchedState::Data {
                generation: 6,
                sum: checksum128(&[b"original"]),
            },
            VouchedState::Zero(7),
            VouchedState::Corrupt("bad record".into()),
        ];
        (states, data)
    }

    fn encoded(states: &[VouchedState], data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(states, data, &mut out);
        out
    }

    #[test]
    fn decode_keeps_matching_data_and_refuses_the_rest() {
        let (states, data) = sample();
        let bytes = encoded(&states, &data);
        let got = Response::decode(op::BLOCKS_VOUCHED, &bytes).expect("decodes");
        let mut want = vec![0u8; 32];
        want[..8].copy_from_slice(b"blockone");
        assert_eq!(
            got,
            Response::Blocks {
                states: vec![
                    WireBlockState::Data(5),
                    WireBlockState::Corrupt(MISMATCH.into()),
                    WireBlockState::Zero(7),
                    WireBlockState::Corrupt("bad record".into()),
                ],
                data: want,
            }
        );
    }

    #[test]
    fn states_outside_the_covered_prefix_are_refused() {
        let (states, data) = sample();
        let bytes = encoded(&states, &data);
        let prefix = bytes.len() - data.len();
        assert!(Response::decode_covered(op::BLOCKS_VOUCHED, &bytes, prefix).is_ok());
        let short = Response::decode_covered(op::BLOCKS_VOUCHED, &bytes, prefix - 1);
        assert!(short.is_err(), "{short:?}");
    }

    #[test]
    fn ragged_data_and_data_without_blocks_are_refused() {
        let (states, mut data) = sample();
        data.push(0);
        assert!(Response::decode(op::BLOCKS_VOUCHED, &encoded(&states, &data)).is_err());
        assert!(Response::decode(op::BLOCKS_VOUCHED, &encoded(&[], b"x")).is_err());
        let empty = Response::decode(op::BLOCKS_VOUCHED, &encoded(&[], b""));
        assert_eq!(
            empty,
            Ok(Response::Blocks {
                states: vec![],
                data: vec![]
            })
        );
    }

    fn write() -> Request {
        let mut data = vec![3u8; 64];
        data[40] = 9;
        Request::Write {
            volume: 2,
            epoch: 1,
            part: crate::backend::PartId { chunk: 5, part: 1 },
            first: 6,
            count: 2,
            generation: 77,
            mode: WriteMode::Data,
            heal: true,
            data,
        }
        .vouched()
    }

    #[test]
    fn a_vouched_write_round_trips_and_its_sums_are_the_datas() {
        let req = write();
        let Request::VouchedWrite { sums, data, .. } = &req else {
            panic!("{req:?}");
        };
        assert_eq!(sums[0], checksum128(&[&data[..32]]));
        assert_eq!(sums[1], checksum128(&[&data[32..]]));
        let mut b = Vec::new();
        req.encode(&mut b);
        assert_eq!(req.detached_tail(), 64);
        assert_eq!(Request::decode(op::WRITE_VOUCHED, &b), Ok(req.clone()));
        for n in 0..b.len() {
            assert!(Request::decode(op::WRITE_VOUCHED, &b[..n]).is_err(), "{n}");
        }
        let prefix = b.len() - 64;
        assert!(Request::decode_covered(op::WRITE_VOUCHED, &b, prefix).is_ok());
        assert!(Request::decode_covered(op::WRITE_VOUCHED, &b, prefix - 1).is_err());
    }

    #[test]
    fn a_vouched_write_whose_data_does_not_match_is_a_bad_tail() {
        let mut b = Vec::new();
        write().encode(&mut b);
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(matches!(
            Request::decode(op::WRITE_VOUCHED, &b),
            Err(ProtoError::BadTail(_))
        ));
    }

    #[test]
    fn only_data_writes_of_whole_blocks_become_vouched() {
        let zero = Request::Write {
            volume: 1,
            epoch: 1,
            part: crate::backend::PartId { chunk: 0, part: 0 },
            first: 0,
            count: 1,
            generation: 1,
            mode: WriteMode::ZeroFill,
            heal: false,
            data: vec![],
        };
        assert_eq!(zero.clone().vouched(), zero);
        let ragged = Request::Write {
            volume: 1,
            epoch: 1,
            part: crate::backend::PartId { chunk: 0, part: 0 },
            first: 0,
            count: 2,
            generation: 1,
            mode: WriteMode::Data,
            heal: false,
            data: vec![1; 5],
        };
        assert_eq!(ragged.clone().vouched(), ragged);
        assert_eq!(Request::Ping.vouched(), Request::Ping);
    }

    #[test]
    fn every_truncation_is_refused() {
        let (states, data) = sample();
        let bytes = encoded(&states, &data);
        for n in 0..bytes.len() {
            assert!(
                Response::decode(op::BLOCKS_VOUCHED, &bytes[..n]).is_err(),
                "{n}"
            );
        }
    }
}
