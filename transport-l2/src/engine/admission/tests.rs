//! Admission: the pending map is bounded on its own, pending entries never
//! displace authenticated ones, frames of unknown sessions are classified
//! as the spec says, and the answer budget holds.

use std::time::{Duration, Instant};

use super::*;

fn header(ty: FrameType, seq: u32, server_epoch: u32) -> Header {
    Header {
        dst: Mac([2, 0, 0, 0, 0, 1]),
        src: Mac([2, 0, 0, 0, 0, 2]),
        ethertype: crate::engine::DEFAULT_ETHERTYPE,
        ty,
        flags: 0,
        client_epoch: 7,
        server_epoch,
        seq,
        frag_index: 0,
        frag_count: u16::from(ty == FrameType::Request),
        msg_len: 10,
        ack_cum: 1,
        ack_bits: 0,
        credit: 0,
    }
}

#[test]
fn a_flood_of_pending_sessions_stays_bounded_and_never_evicts_an_authenticated_one() {
    let t0 = Instant::now();
    let mut table: Table<u32, &str> = Table::new(2, 4);
    table.insert_pending(1, "master", t0);
    assert_eq!(table.promote(&1), None);
    for k in 100..2100u32 {
        let now = t0 + Duration::from_micros(u64::from(k));
        table.insert_pending(k, "forger", now);
        assert!(table.pending() <= 4);
    }
    assert_eq!((table.authenticated(), table.pending()), (1, 4));
    assert!(table.is_authenticated(&1));
    assert_eq!(table.get_mut(&1).map(|v| *v), Some("master"));
    // The newest pending entries are the ones kept.
    assert!(table.contains(&2099) && !table.contains(&100));
}

#[test]
fn only_a_promotion_evicts_an_authenticated_session_and_then_the_least_recent() {
    let t0 = Instant::now();
    let mut table: Table<u32, u32> = Table::new(2, 8);
    for k in 1..=2 {
        table.insert_pending(k, k, t0);
        table.promote(&k);
    }
    table.touch(&1, t0 + Duration::from_secs(1));
    table.insert_pending(3, 3, t0);
    assert_eq!(table.authenticated(), 2, "pending does not count");
    assert_eq!(table.promote(&3), Some(2), "the least recently heard goes");
    assert!(table.is_authenticated(&1) && table.is_authenticated(&3));
    assert_eq!(table.promote(&99), None, "nothing to promote");
}

#[test]
fn sweep_drops_old_pending_sooner_and_keeps_busy_sessions() {
    let t0 = Instant::now();
    let mut table: Table<u32, bool> = Table::new(4, 4);
    table.insert_pending(1, false, t0);
    table.promote(&1);
    table.insert_pending(2, true, t0); // busy authenticated
    table.promote(&2);
    table.insert_pending(3, false, t0);
    let ages = Ages {
        pending: Duration::from_secs(1),
        authed: Duration::from_secs(60),
    };
    let gone = table.sweep(t0 + Duration::from_secs(2), ages, |busy| *busy);
    assert_eq!(gone, vec![false]);
    assert_eq!((table.authenticated(), table.pending()), (2, 0));
    let gone = table.sweep(t0 + Duration::from_secs(61), ages, |busy| *busy);
    assert_eq!((gone.len(), table.authenticated()), (1, 1));
    assert!(table.is_authenticated(&2));
}

#[test]
fn classify_admits_only_a_whole_message_one_and_resets_the_rest() {
    let ours = 40;
    let opening = header(FrameType::Request, 1, 0);
    assert_eq!(classify(&opening, ours), Unknown::Opening);
    assert_eq!(
        classify(&header(FrameType::Request, 1, ours), ours),
        Unknown::Opening
    );
    let mut split = opening;
    split.frag_count = 2;
    assert_eq!(
        classify(&split, ours),
        Unknown::Drop,
        "hello in fragments, never heard us"
    );
    let mut bundle = opening;
    bundle.flags = FLAG_BUNDLE;
    assert_eq!(classify(&bundle, ours), Unknown::Drop);
    assert_eq!(
        classify(&header(FrameType::Request, 5, ours), ours),
        Unknown::Forgotten
    );
    assert_eq!(
        classify(&header(FrameType::Ack, 0, ours), ours),
        Unknown::Forgotten
    );
    assert_eq!(
        classify(&header(FrameType::Request, 5, 39), ours),
        Unknown::Restarted
    );
    assert_eq!(
        classify(&header(FrameType::Request, 1, 39), ours),
        Unknown::Restarted
    );
    assert_eq!(
        classify(&header(FrameType::Request, 5, 0), ours),
        Unknown::Drop
    );
    assert_eq!(
        classify(&header(FrameType::Response, 5, ours), ours),
        Unknown::Drop
    );
    assert_eq!(
        classify(&header(FrameType::Reset, 0, ours), ours),
        Unknown::Drop
    );
}

#[test]
fn the_reset_answer_carries_the_flag_and_the_epochs_and_is_addressed_back() {
    let h = header(FrameType::Request, 5, 40);
    let mut buf = [0u8; 128];
    let n = reset_frame(&h, h.dst, 40, FLAG_UNKNOWN_SESSION, &mut buf).expect("fits");
    let f = Frame::decode(&buf[..n]).expect("decodes").header;
    assert_eq!((f.ty, f.flags), (FrameType::Reset, FLAG_UNKNOWN_SESSION));
    assert_eq!((f.dst, f.src), (h.src, h.dst));
    assert_eq!((f.client_epoch, f.server_epoch, f.seq), (7, 40, 0));
}

#[test]
fn answer_once_builds_one_response_to_message_one() {
    let cfg = Config {
        epoch: 40,
        ..Config::default()
    };
    let mut h = header(FrameType::Request, 1, 0);
    h.msg_len = 3;
    let frame = Frame {
        header: h,
        payload: b"abc",
    };
    let mut req = vec![0u8; 128];
    let n = frame.encode(&mut req).expect("encodes");
    let mut buf = vec![0u8; cfg.frame_capacity()];
    let m = answer_once(&cfg, h.dst, &req[..n], b"hi".to_vec(), &mut buf).expect("answer");
    let f = Frame::decode(&buf[..m]).expect("decodes");
    assert_eq!(
        (f.header.ty, f.header.seq, f.payload),
        (FrameType::Response, 1, &b"hi"[..])
    );
    assert_eq!(f.header.server_epoch, 40);
}

#[test]
fn the_budget_allows_a_burst_then_refills_at_its_rate() {
    let t0 = Instant::now();
    let mut b = Budget::new(3, 10);
    assert!((0..3).all(|_| b.allow(t0)));
    assert!(!b.allow(t0));
    assert!(b.allow(t0 + Duration::from_millis(100)));
    assert!(!b.allow(t0 + Duration::from_millis(100)));
    assert_eq!(b.refused, 2);
}
