//! Frames with a detached tail (`FLAG_DETACHED_TAIL`): read answers whose
//! data the stored checksums vouch for instead of the MAC.

use super::*;
use crate::format::checksum128;
use crate::proto::frame::FLAG_DETACHED_TAIL;
use crate::proto::msg::{MISMATCH, VouchedState, WireBlockState, op};

fn pair() -> (Session, Session) {
    let key = ClusterKey([7; 32]);
    let hello = NodeHello {
        backend: Uuid::from_bytes([1; 16]),
        name: "n".into(),
    };
    let (hs, ch) = ClientHandshake::start(&key, [1; 32], "m");
    let (node, _, sh) = accept(&key, [2; 32], &hello, &ch).expect("accepts");
    let (client, _) = hs.finish(&sh).expect("finishes");
    (client, node)
}

/// A node's answer to a two-block read: one data block, one zero block.
fn answer() -> (Response, Vec<u8>) {
    let block: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    let mut data = block.clone();
    data.resize(8192, 0);
    let resp = Response::VouchedBlocks {
        states: vec![
            VouchedState::Data {
                generation: 9,
                sum: checksum128(&[&block]),
            },
            VouchedState::Zero(4),
        ],
        data: data.clone(),
    };
    (resp, data)
}

fn sealed_answer(node: &mut Session) -> Vec<u8> {
    let (resp, _) = answer();
    let (mut sealer, _) = std::mem::replace(node, pair().1).split();
    let mut out = Vec::new();
    sealer.seal_message(11, &resp, &mut Vec::new(), &mut out);
    out
}

#[test]
fn a_vouched_answer_opens_as_checked_blocks() {
    let (mut client, mut node) = pair();
    let frame = sealed_answer(&mut node);
    let header = FrameHeader::decode(&frame).expect("header");
    assert_eq!(header.flags, FLAG_DETACHED_TAIL);
    assert_eq!(header.opcode, op::BLOCKS_VOUCHED);
    assert_eq!(header.mac_covered(), header.payload_len as usize - 8192);
    let (h, resp) = client.opener.open_response(&frame).expect("opens");
    let resp = resp.expect("decodes");
    assert_eq!(h.request_id, 11);
    let (_, data) = answer();
    assert_eq!(
        resp,
        Response::Blocks {
            states: vec![WireBlockState::Data(9), WireBlockState::Zero(4)],
            data,
        }
    );
}

#[test]
fn a_flipped_data_byte_reads_as_a_corrupt_block_never_as_data() {
    let (mut client, mut node) = pair();
    let mut frame = sealed_answer(&mut node);
    let data_start = frame.len() - MAC_LEN - 8192;
    frame[data_start + 100] ^= 0x40;
    // A flipped byte of the zero block is not data either: it reads as zeros.
    frame[data_start + 5000] ^= 0x01;
    let (_, resp) = client.opener.open_response(&frame).expect("the MAC holds");
    let resp = resp.expect("decodes");
    assert_eq!(
        resp,
        Response::Blocks {
            states: vec![
                WireBlockState::Corrupt(MISMATCH.into()),
                WireBlockState::Zero(4)
            ],
            data: vec![0; 8192],
        }
    );
}

#[test]
fn every_flipped_bit_of_the_covered_part_fails_the_mac() {
    let (_, mut node) = pair();
    let frame = sealed_answer(&mut node);
    let covered = HEADER_LEN + FrameHeader::decode(&frame).expect("header").mac_covered();
    for i in (0..covered).chain(frame.len() - MAC_LEN..frame.len()) {
        let (mut client, mut node) = pair();
        let mut f = sealed_answer(&mut node);
        f[i] ^= 0x10;
        let got = client.opener.open_response(&f);
        assert!(got.is_err(), "byte {i}: {got:?}");
    }
}

#[test]
fn open_refuses_a_detached_tail_and_only_vouched_blocks_may_have_one() {
    let (mut client, mut node) = pair();
    let frame = sealed_answer(&mut node);
    assert!(
        client.open(&frame).is_err(),
        "open() never returns an unchecked tail"
    );
    // A frame whose tail is detached but whose message is not VouchedBlocks
    // (a node cannot send one, but the opener must not trust the flag).
    let (mut client, node) = pair();
    let (mut sealer, _) = node.split();
    let mut out = Vec::new();
    sealer.seal_with_tail(
        FrameKind::Response,
        op::META,
        1,
        &[1, 4, 0, 0, 0, b'a', b'b', b'c', b'd'],
        4,
        &mut out,
    );
    let got = client.opener.open_response(&out);
    assert!(matches!(got, Ok((_, Err(_)))), "{got:?}");
}

#[test]
fn a_covered_part_too_long_for_the_header_falls_back_to_a_whole_mac() {
    let (mut client, node) = pair();
    let (mut sealer, _) = node.split();
    let n = 3000; // 3000 states of 25 bytes: over 65535 covered bytes
    let block = [5u8; 16];
    let states = (0..n)
        .map(|g| VouchedState::Data {
            generation: g,
            sum: checksum128(&[&block]),
        })
        .collect();
    let resp = Response::VouchedBlocks {
        states,
        data: block.repeat(n as usize),
    };
    let mut out = Vec::new();
    sealer.seal_message(2, &resp, &mut Vec::new(), &mut out);
    assert_eq!(FrameHeader::decode(&out).expect("header").flags, 0);
    let (_, resp) = client.opener.open_response(&out).expect("opens");
    let resp = resp.expect("decodes");
    let Response::Blocks { states, .. } = resp else {
        panic!("{resp:?}")
    };
    assert!(states.iter().all(|s| matches!(s, WireBlockState::Data(_))));
}

fn vouched_write() -> Request {
    Request::Write {
        volume: 3,
        epoch: 1,
        part: crate::backend::PartId { chunk: 1, part: 0 },
        first: 2,
        count: 2,
        generation: 5,
        mode: crate::proto::msg::WriteMode::Data,
        heal: false,
        data: (0..8192u32).map(|i| (i % 251) as u8).collect(),
    }
    .vouched()
}

#[test]
fn a_vouched_write_opens_and_a_forged_tail_neither_opens_nor_uses_up_its_number() {
    let (client, mut node) = pair();
    let (mut sealer, _) = client.split();
    let req = vouched_write();
    let mut genuine = Vec::new();
    sealer.seal_message(4, &req, &mut Vec::new(), &mut genuine);
    assert_eq!(
        FrameHeader::decode(&genuine).expect("header").flags,
        FLAG_DETACHED_TAIL
    );
    let mut forged = genuine.clone();
    let at = forged.len() - MAC_LEN - 10;
    forged[at] ^= 0x80;
    assert!(matches!(
        node.opener.open_request(&forged),
        Err(ProtoError::BadTail(_))
    ));
    // The genuine frame (same sequence number) still opens, once.
    let (h, got) = node.opener.open_request(&genuine).expect("genuine opens");
    assert_eq!((h.request_id, got), (4, Ok(req)));
    assert!(matches!(
        node.opener.open_request(&genuine),
        Err(ProtoError::Replay(_))
    ));
}

#[test]
fn an_authentic_request_that_does_not_decode_is_an_inner_error() {
    let (client, mut node) = pair();
    let (mut sealer, _) = client.split();
    let mut out = Vec::new();
    sealer.seal(FrameKind::Request, 0x7f7f, 1, b"?", &mut out);
    let got = node.opener.open_request(&out);
    assert!(matches!(got, Ok((_, Err(_)))), "{got:?}");
}
