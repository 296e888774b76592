//! NBD handshake over a real loopback socket: GO, EXPORT_NAME, INFO == GO,
//! unknown options and exports, LIST, non-fixed clients, the time bound.
#![allow(clippy::unwrap_used)]

mod nbd_common;

use std::sync::Arc;
use std::time::Duration;

use nbd_common::*;
use qbd_master::nbd::ExportConfig;
use qbd_master::nbd::memdev::MemDevice;
use qbd_master::nbd::wire::{client_flags, info, opt, rep, transmission_flags as tf};
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn go_reports_export_flags_and_block_size() {
    let srv = serve(memdev()).await;
    let mut c = Client::connect(srv.addr).await;
    let r = c.info_or_go(opt::GO, EXPORT).await;
    assert_eq!(r.last().unwrap().0, rep::ACK);
    let (size, flags) = export_info(&r);
    assert_eq!(size, SIZE as u64);
    let want = tf::HAS_FLAGS
        | tf::SEND_FLUSH
        | tf::SEND_FUA
        | tf::SEND_TRIM
        | tf::SEND_WRITE_ZEROES
        | tf::CAN_MULTI_CONN;
    assert_eq!(flags, want);
    let bs = r
        .iter()
        .find(|(t, d)| *t == rep::INFO && d[..2] == info::BLOCK_SIZE.to_be_bytes())
        .unwrap();
    assert_eq!(bs.1, [0, 3, 0, 0, 0, 1, 0, 0, 0x10, 0, 0x02, 0, 0, 0]);
    drop(c);
    srv.shutdown().await;
}

#[tokio::test]
async fn info_equals_go_and_empty_name_is_default() {
    let srv = serve(memdev()).await;
    let mut c = Client::connect(srv.addr).await;
    c.option(opt::STRUCTURED_REPLY, &[]).await;
    let info = c.info_or_go(opt::INFO, "").await;
    let go = c.info_or_go(opt::GO, "").await;
    assert_eq!(info, go);
    let (_, flags) = export_info(&go);
    assert_ne!(flags & tf::SEND_DF, 0);
    drop(c);
    srv.shutdown().await;
}

#[tokio::test]
async fn unknown_option_and_export_then_go_works() {
    let srv = serve(memdev()).await;
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(c.option(1234, b"junk").await[0].0, rep::ERR_UNSUP);
    assert_eq!(c.option(opt::STARTTLS, &[]).await[0].0, rep::ERR_UNSUP);
    assert_eq!(c.info_or_go(opt::GO, "other").await[0].0, rep::ERR_UNKNOWN);
    assert_eq!(
        c.info_or_go(opt::GO, EXPORT).await.last().unwrap().0,
        rep::ACK
    );
    drop(c);
    srv.shutdown().await;
}

#[tokio::test]
async fn list_shows_the_export() {
    let mut cfg = ExportConfig::new(EXPORT);
    cfg.description = Some("test volume".into());
    let srv = serve_with(memdev(), cfg).await;
    let mut c = Client::connect(srv.addr).await;
    let r = c.option(opt::LIST, &[]).await;
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].0, rep::SERVER);
    assert_eq!(&r[0].1[..7], &[0, 0, 0, 3, b'v', b'o', b'l']);
    assert_eq!(&r[0].1[7..], b"test volume");
    assert_eq!(r[1], (rep::ACK, vec![]));
    c.send_option(opt::ABORT, &[]).await;
    assert_eq!(c.option_replies(opt::ABORT).await, vec![(rep::ACK, vec![])]);
    assert!(c.closed_by_server().await);
    srv.shutdown().await;
}

#[tokio::test]
async fn export_name_with_and_without_zeroes() {
    let dev = Arc::new(MemDevice::new(SIZE).read_only());
    let srv = serve(dev).await;
    for (flags, len) in [
        (client_flags::FIXED_NEWSTYLE | client_flags::NO_ZEROES, 10),
        (0, 134),
    ] {
        let mut c = Client::connect_with_flags(srv.addr, flags).await;
        c.send_option(opt::EXPORT_NAME, EXPORT.as_bytes()).await;
        let mut reply = vec![0; len];
        c.s.read_exact(&mut reply).await.unwrap();
        assert_eq!(
            u64::from_be_bytes(reply[..8].try_into().unwrap()),
            SIZE as u64
        );
        let flags = u16::from_be_bytes([reply[8], reply[9]]);
        assert_ne!(flags & tf::READ_ONLY, 0);
        assert_eq!(flags & tf::SEND_DF, 0);
        assert!(reply[10..].iter().all(|b| *b == 0));
        // Transmission works: a read returns data.
        c.request(qbd_master::nbd::wire::Command::Read, 0, 5, 0, 512)
            .await;
        assert_eq!(c.simple_reply(512).await, (5, 0, vec![0; 512]));
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn export_name_unknown_drops_client() {
    let srv = serve(memdev()).await;
    let mut c = Client::connect(srv.addr).await;
    c.send_option(opt::EXPORT_NAME, b"nope").await;
    assert!(c.closed_by_server().await);
    srv.shutdown().await;
}

#[tokio::test]
async fn non_fixed_client_sending_options_is_dropped() {
    let srv = serve(memdev()).await;
    let mut c = Client::connect_with_flags(srv.addr, 0).await;
    c.send_option(opt::LIST, &[]).await;
    assert!(c.closed_by_server().await);
    let mut c = Client::connect_with_flags(srv.addr, 1 << 5).await; // unknown client flag
    assert!(c.closed_by_server().await);
    srv.shutdown().await;
}

#[tokio::test]
async fn handshake_is_bounded_in_time() {
    let mut cfg = ExportConfig::new(EXPORT);
    cfg.handshake_timeout = Duration::from_millis(200);
    let srv = serve_with(memdev(), cfg).await;
    let mut c = Client::connect(srv.addr).await; // then says nothing
    assert!(c.closed_by_server().await);
    // Another client still gets through.
    let (c2, _, _) = Client::go(srv.addr, false).await;
    drop(c2);
    srv.shutdown().await;
}

#[tokio::test]
async fn absurd_option_length_drops_client() {
    let srv = serve(memdev()).await;
    let mut c = Client::connect(srv.addr).await;
    let h = qbd_master::nbd::wire::OptionHeader {
        option: opt::GO,
        len: u32::MAX,
    };
    tokio::io::AsyncWriteExt::write_all(&mut c.s, &h.encode())
        .await
        .unwrap();
    assert!(c.closed_by_server().await);
    srv.shutdown().await;
}

#[tokio::test]
async fn shutdown_drops_clients_in_handshake() {
    let srv = serve(memdev()).await;
    let mut c = Client::connect(srv.addr).await;
    c.option(opt::STRUCTURED_REPLY, &[]).await;
    srv.shutdown().await;
    assert!(c.closed_by_server().await);
}
