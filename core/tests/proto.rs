//! The node protocol end to end, without I/O: handshake, then requests and
//! responses encoded, sealed, opened and decoded.

use qbd_core::backend::PartId;
use qbd_core::proto::frame::{FrameHeader, FrameKind, HEADER_LEN, MAC_LEN};
use qbd_core::proto::msg::{
    ErrorCode, Request, Response, WRITE_DATA_OFFSET, WireBlockState, WriteMode,
};
use qbd_core::proto::session::{self, ClientHandshake, NodeHello, Session};
use qbd_core::proto::{ClusterKey, ProtoError};
use uuid::Uuid;

fn connect(key: &ClusterKey) -> Result<(Session, Session), ProtoError> {
    let hello = NodeHello {
        backend: Uuid::from_bytes([7; 16]),
        name: "n1".into(),
    };
    let (hs, ch) = ClientHandshake::start(key, [1; 32], "master");
    let (node, client_name, sh) = session::accept(key, [2; 32], &hello, &ch)?;
    assert_eq!(client_name, "master");
    let (client, got) = hs.finish(&sh)?;
    assert_eq!(got, hello);
    Ok((client, node))
}

#[test]
fn requests_and_responses_cross_a_session() -> Result<(), ProtoError> {
    let key = ClusterKey([9; 32]);
    let (mut client, mut node) = connect(&key)?;
    let part = PartId { chunk: 3, part: 1 };
    let requests = [
        Request::Ping,
        Request::LoadMeta { number: 4 },
        Request::Write {
            volume: 4,
            epoch: 1,
            part,
            first: 0,
            count: 1,
            generation: (2 << 40) | 1,
            mode: WriteMode::Data,
            heal: false,
            data: vec![0xab; 4096],
        },
        Request::Read {
            volume: 4,
            epoch: 1,
            part,
            first: 0,
            count: 1,
        },
    ];
    let answers = [
        Response::Pong,
        Response::Meta(None),
        Response::Written {
            applied: 1,
            skipped: 0,
        },
        Response::Blocks {
            states: vec![WireBlockState::Data((2 << 40) | 1)],
            data: vec![0xab; 4096],
        },
    ];
    // One batch of sealed requests in one buffer, as a stream would carry it.
    let mut wire = Vec::new();
    let mut payload = Vec::new();
    for (id, req) in requests.iter().enumerate() {
        payload.clear();
        req.encode(&mut payload);
        client.seal(
            FrameKind::Request,
            req.opcode(),
            id as u64 + 10,
            &payload,
            &mut wire,
        );
    }
    // The Write's data sits at a fixed offset in its frame.
    let mut at = 0;
    let mut frames = Vec::new();
    while at < wire.len() {
        let h = FrameHeader::decode(&wire[at..])?;
        frames.push(&wire[at..at + h.frame_len()]);
        at += h.frame_len();
    }
    let w = frames[2];
    assert_eq!(
        &w[HEADER_LEN + WRITE_DATA_OFFSET..w.len() - MAC_LEN],
        &[0xab; 4096][..]
    );

    // The node answers out of order.
    let mut back = Vec::new();
    for (i, f) in frames.iter().enumerate().rev() {
        let (h, p) = node.open(f)?;
        assert_eq!(h.kind, FrameKind::Request);
        assert_eq!(h.request_id, i as u64 + 10);
        assert_eq!(Request::decode(h.opcode, p)?, requests[i]);
        payload.clear();
        answers[i].encode(&mut payload);
        node.seal(
            FrameKind::Response,
            answers[i].opcode(),
            h.request_id,
            &payload,
            &mut back,
        );
    }
    let mut at = 0;
    let mut got = 0;
    while at < back.len() {
        let len = FrameHeader::decode(&back[at..])?.frame_len();
        let (h, p) = client.open(&back[at..at + len])?;
        let i = (h.request_id - 10) as usize;
        assert_eq!(Response::decode(h.opcode, p)?, answers[i]);
        at += len;
        got += 1;
    }
    assert_eq!(got, 4);
    // Nothing opens twice.
    assert_eq!(node.open(frames[0]), Err(ProtoError::Replay(1)));
    Ok(())
}

#[test]
fn an_error_reply_with_an_unknown_code_survives() -> Result<(), ProtoError> {
    let (mut client, mut node) = connect(&ClusterKey::INSECURE)?;
    let resp = Response::Error {
        code: ErrorCode::Unknown(999),
        message: "from the future".into(),
    };
    let mut p = Vec::new();
    resp.encode(&mut p);
    let mut f = Vec::new();
    node.seal(FrameKind::Response, resp.opcode(), 1, &p, &mut f);
    let (h, payload) = client.open(&f)?;
    assert_eq!(Response::decode(h.opcode, payload)?, resp);
    Ok(())
}

#[test]
fn keys_that_differ_never_meet() {
    let hello = NodeHello {
        backend: Uuid::nil(),
        name: "n".into(),
    };
    let (_, ch) = ClientHandshake::start(&ClusterKey([1; 32]), [1; 32], "m");
    let r = session::accept(&ClusterKey([2; 32]), [2; 32], &hello, &ch);
    assert!(matches!(r, Err(ProtoError::Handshake(_))));
}
