//! Golden bytes both ways, round trip, truncated and trailing input, a
//! small seeded fuzz (decode → encode reproduces the input).

use super::*;

fn sample(payload: &[u8]) -> Frame<'_> {
    Frame {
        header: Header {
            dst: Mac([0x02, 0, 0, 0, 0, 0x01]),
            src: Mac([0x02, 0, 0, 0, 0, 0x02]),
            ethertype: DEFAULT_ETHERTYPE,
            ty: FrameType::Request,
            flags: 0,
            client_epoch: 0x0403_0201,
            server_epoch: 0x0807_0605,
            seq: 0x0c0b_0a09,
            frag_index: 1,
            frag_count: 3,
            msg_len: 0x0000_1234,
            ack_cum: 0x1413_1211,
            ack_bits: 0x2827_2625_2423_2221,
            credit: 0x3433_3231,
        },
        payload,
    }
}

const GOLDEN: [u8; 60] = [
    0x02, 0, 0, 0, 0, 0x01, // dst
    0x02, 0, 0, 0, 0, 0x02, // src
    0x88, 0xb5, // EtherType
    1,    // version
    1,    // type: request
    0, 0, // flags
    3, 0, // payload length
    0x01, 0x02, 0x03, 0x04, // client epoch
    0x05, 0x06, 0x07, 0x08, // server epoch
    0x09, 0x0a, 0x0b, 0x0c, // seq
    1, 0, // fragment index
    3, 0, // fragment count
    0x34, 0x12, 0, 0, // message length
    0x11, 0x12, 0x13, 0x14, // ack cumulative
    0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, // ack bits
    0x31, 0x32, 0x33, 0x34, // credit
    b'a', b'b', b'c', // payload
    0,    // padding to 60
];

#[test]
fn golden_encode() {
    let mut buf = [0xeeu8; 100];
    let n = sample(b"abc").encode(&mut buf).expect("fits");
    assert_eq!(&buf[..n], &GOLDEN[..]);
}

#[test]
fn golden_decode() {
    let f = Frame::decode(&GOLDEN).expect("valid");
    assert_eq!(f, sample(b"abc"));
    assert_eq!(
        session_of(&GOLDEN),
        Some((Mac([2, 0, 0, 0, 0, 2]), 0x0403_0201))
    );
}

#[test]
fn round_trip_long_payload() {
    let payload: Vec<u8> = (0..1458u32).map(|i| i as u8).collect();
    let f = sample(&payload);
    let mut buf = vec![0u8; 1514];
    let n = f.encode(&mut buf).expect("fits");
    assert_eq!(n, 1514);
    assert_eq!(Frame::decode(&buf[..n]).expect("valid"), f);
    assert_eq!(f.encode(&mut buf[..1513]), Err(WireError::TooLong));
}

#[test]
fn truncated_rejected() {
    for n in 0..HEADER_LEN + 3 {
        assert_eq!(
            Frame::decode(&GOLDEN[..n]),
            Err(WireError::Truncated),
            "len {n}"
        );
    }
}

#[test]
fn trailing_and_bad_padding_rejected() {
    let mut long = GOLDEN.to_vec();
    long.push(0);
    assert_eq!(Frame::decode(&long), Err(WireError::Trailing));
    let mut dirty = GOLDEN;
    dirty[59] = 1;
    assert_eq!(Frame::decode(&dirty), Err(WireError::Trailing));
    let mut v2 = GOLDEN;
    v2[14] = 2;
    assert_eq!(Frame::decode(&v2), Err(WireError::Version(2)));
}

#[test]
fn unknown_type_kept() {
    let mut b = GOLDEN;
    b[15] = 0x7f;
    let f = Frame::decode(&b).expect("valid");
    assert_eq!(f.header.ty, FrameType::Unknown(0x7f));
    let mut out = [0u8; 60];
    f.encode(&mut out).expect("fits");
    assert_eq!(out, b);
}

#[test]
fn fuzz_decode_encode_reproduces() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = vec![0u8; 2000];
    for _ in 0..5000 {
        let len = (next() % 120) as usize;
        let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if b.len() > 20 && next() % 2 == 0 {
            b[14] = VERSION;
            let pl = (b.len().saturating_sub(HEADER_LEN)) as u16;
            b[18..20].copy_from_slice(&pl.to_le_bytes());
        }
        if let Ok(f) = Frame::decode(&b) {
            let n = f.encode(&mut out).expect("fits");
            assert_eq!(&out[..n], &b[..]);
        }
    }
}

#[test]
fn frag_acks_golden_and_round_trip() {
    let acks = [
        FragAck {
            seq: 0x0403_0201,
            base: 0x0605,
            bits: 0x0f0e_0d0c_0b0a_0908,
        },
        FragAck {
            seq: 7,
            base: 0,
            bits: 1 << 63,
        },
    ];
    let mut buf = [0xeeu8; 40];
    let n = FragAck::encode_all(&acks, &mut buf);
    assert_eq!(n, 32);
    assert_eq!(
        buf[..16],
        [1, 2, 3, 4, 5, 6, 0, 0, 8, 9, 10, 11, 12, 13, 14, 15]
    );
    let back: Vec<_> = FragAck::decode_all(&buf[..n])
        .expect("whole entries")
        .collect();
    assert_eq!(back, acks);
    assert!(FragAck::decode_all(&buf[..17]).is_none());
    assert_eq!(
        FragAck::encode_all(&acks, &mut buf[..20]),
        16,
        "only what fits"
    );
}

#[test]
fn extend_seq_nearest() {
    assert_eq!(extend_seq(5, 7), 7);
    assert_eq!(extend_seq(5, 3), 3);
    assert_eq!(extend_seq(0xffff_fff0, 2), 0x1_0000_0002);
    assert_eq!(extend_seq(0x1_0000_0002, 0xffff_fff0), 0xffff_fff0);
    assert_eq!(extend_seq(0, 0xffff_fff0), 0xffff_fff0);
}

#[test]
fn ethertypes_parse_hex_or_decimal_and_refuse_lengths() {
    assert_eq!(super::parse_ethertype("0x88B5"), Ok(0x88b5));
    assert_eq!(super::parse_ethertype("0x88b6"), Ok(0x88b6));
    assert_eq!(super::parse_ethertype("34997"), Ok(0x88b5));
    assert!(
        super::parse_ethertype("0x05DC").is_err(),
        "1500 is a length"
    );
    assert!(super::parse_ethertype("88b5").is_err());
    assert!(super::parse_ethertype("0x1FFFF").is_err());
}

/// Two segments: message 5 fragment 0 of 1 ("hi"), message 6 fragment 2
/// of 3 (3 bytes of a 9-byte message).
const BUNDLE_PAYLOAD: [u8; 37] = [
    5, 0, 0, 0, // seq
    0, 0, // fragment index
    1, 0, // fragment count
    2, 0, 0, 0, // message length
    2, 0, // segment length
    0, 0, // reserved
    b'h', b'i', //
    6, 0, 0, 0, // seq
    2, 0, // fragment index
    3, 0, // fragment count
    9, 0, 0, 0, // message length
    3, 0, // segment length
    0, 0, // reserved
    b'x', b'y', b'z', //
];

#[test]
fn bundle_segments_golden() {
    let segs: Vec<Segment<'_>> = segments(&BUNDLE_PAYLOAD).expect("valid").collect();
    let want = [
        Segment {
            seq: 5,
            frag_index: 0,
            frag_count: 1,
            msg_len: 2,
            data: b"hi",
        },
        Segment {
            seq: 6,
            frag_index: 2,
            frag_count: 3,
            msg_len: 9,
            data: b"xyz",
        },
    ];
    assert_eq!(segs, want);
    let mut encoded = Vec::new();
    for s in &segs {
        let len = u16::try_from(s.data.len()).expect("short");
        encoded.extend_from_slice(&Segment::encode_header(
            s.seq,
            s.frag_index,
            s.frag_count,
            s.msg_len,
            len,
        ));
        encoded.extend_from_slice(s.data);
    }
    assert_eq!(encoded, BUNDLE_PAYLOAD);
    let frame = sample(b"");
    let h = segs[1].header(&Header {
        flags: FLAG_BUNDLE,
        ..frame.header
    });
    assert_eq!((h.seq, h.frag_index, h.frag_count, h.msg_len), (6, 2, 3, 9));
    assert_eq!(h.flags, 0);
    assert_eq!(h.ack_bits, frame.header.ack_bits);
}

#[test]
fn bundle_rejects_bad_segments() {
    // Empty, cut inside a header, cut inside the data.
    assert!(segments(&[]).is_none());
    for cut in [1, 15, 17, 20, 36] {
        assert!(segments(&BUNDLE_PAYLOAD[..cut]).is_none(), "cut at {cut}");
    }
    // Fragment count 0, reserved bytes set.
    let mut b = BUNDLE_PAYLOAD;
    b[6] = 0;
    assert!(segments(&b).is_none());
    let mut b = BUNDLE_PAYLOAD;
    b[33] = 1;
    assert!(segments(&b).is_none());
    // A length that runs past the end.
    let mut b = BUNDLE_PAYLOAD;
    b[30] = 4;
    assert!(segments(&b).is_none());
}
