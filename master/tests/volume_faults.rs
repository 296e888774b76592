//! The volume behind the NBD server, with the fault wrapper around its
//! directory backend: durability (FLUSH, FUA), out-of-order completion and
//! graceful shutdown, observed through a raw NBD client.
#![allow(clippy::unwrap_used)]

mod nbd_common;

use std::sync::Arc;
use std::time::Duration;

use nbd_common::{Client, EXPORT, Running, serve};
use qbd_core::backend::dir::DirBackend;
use qbd_core::backend::fault::{Action, Event, FaultBackend, Gate, OpKind, Rule};
use qbd_core::backend::{Backend, PartId};
use qbd_core::meta::volume::RequestedShape;
use qbd_master::nbd::wire::{Command, cmd_flags};
use qbd_master::volume::{OpenRequest, Volume, open_volume};

const CHUNK: u64 = 256 << 10;

struct Setup {
    _dir: tempfile::TempDir,
    fault: Arc<FaultBackend>,
    server: Running,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Backend> = Arc::new(DirBackend::open(dir.path()).unwrap());
    let fault = Arc::new(FaultBackend::new(inner, false));
    let req = OpenRequest {
        name: EXPORT.into(),
        shape: RequestedShape {
            size: Some(1 << 20),
            block_size: Some(4096),
            chunk_size: Some(CHUNK),
            redundancy: Some("replicate:1".parse().unwrap()),
        },
        read_only: false,
        state_dir: std::env::temp_dir().join("qbd-test-state"),
    };
    let volume: Volume = open_volume(vec![fault.clone() as Arc<dyn Backend>], &req)
        .await
        .unwrap();
    let server = serve(Arc::new(volume)).await;
    Setup {
        _dir: dir,
        fault,
        server,
    }
}

fn hold(fault: &FaultBackend, op: OpKind, block: Option<u32>) -> Gate {
    let gate = Gate::new();
    fault.add_rule(Rule {
        op,
        chunk: None,
        block,
        action: Action::Hold(gate.clone()),
        times: Some(1),
    });
    gate
}

/// Nothing has arrived on the socket yet (checked without waiting).
fn no_reply_yet(c: &Client) -> bool {
    let mut b = [0u8; 1];
    matches!(c.s.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

fn position(events: &[Event], f: impl Fn(&Event) -> bool) -> Option<usize> {
    events.iter().position(f)
}

#[tokio::test]
async fn flush_from_another_connection_replies_only_after_earlier_writes_are_synced() {
    let s = setup().await;
    let (mut a, _, _) = Client::go(s.server.addr, false).await;
    let (mut b, _, _) = Client::go(s.server.addr, false).await;
    a.write(1, 8192, &[0x5a; 4096]).await;
    assert_eq!(a.simple_reply(0).await.1, 0);
    let gate = hold(&s.fault, OpKind::Sync, None);
    b.request(Command::Flush, 0, 2, 0, 0).await;
    gate.wait_arrivals(1).await;
    assert!(
        no_reply_yet(&b),
        "FLUSH replied while its sync was still held"
    );
    gate.open();
    let (cookie, err, _) = b.simple_reply(0).await;
    assert_eq!((cookie, err), (2, 0));
    let ev = s.fault.events();
    let write =
        position(&ev, |e| matches!(e, Event::Write { first: 2, .. })).expect("write logged");
    let sync = position(&ev, |e| matches!(e, Event::Sync { parts: None })).expect("sync logged");
    assert!(write < sync, "sync must follow the write it covers: {ev:?}");
    s.server.shutdown().await;
}

#[tokio::test]
async fn fua_write_replies_only_after_its_own_part_is_synced() {
    let s = setup().await;
    let (mut c, _, _) = Client::go(s.server.addr, false).await;
    let gate = hold(&s.fault, OpKind::Sync, None);
    c.request(Command::Write, cmd_flags::FUA, 7, CHUNK + 4096, 4096)
        .await;
    tokio::io::AsyncWriteExt::write_all(&mut c.s, &[0x11; 4096])
        .await
        .unwrap();
    gate.wait_arrivals(1).await;
    assert!(
        no_reply_yet(&c),
        "FUA write replied before its sync completed"
    );
    gate.open();
    assert_eq!(c.simple_reply(0).await, (7, 0, vec![]));
    let ev = s.fault.events();
    let part = PartId { chunk: 1, part: 0 };
    let write = position(
        &ev,
        |e| matches!(e, Event::Write { part: p, first: 1, .. } if *p == part),
    )
    .unwrap();
    let sync = position(
        &ev,
        |e| matches!(e, Event::Sync { parts: Some(p) } if p == &vec![part]),
    )
    .unwrap();
    assert!(write < sync, "{ev:?}");
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_later_small_read_overtakes_a_delayed_one_on_the_same_connection() {
    let s = setup().await;
    let (mut c, _, _) = Client::go(s.server.addr, false).await;
    let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    c.write(1, 0, &data).await;
    assert_eq!(c.simple_reply(0).await.1, 0);
    let gate = hold(&s.fault, OpKind::Read, Some(0));
    c.request(Command::Read, 0, 10, 0, 4096).await;
    gate.wait_arrivals(1).await;
    c.request(Command::Read, 0, 11, 4096 + 100, 512).await;
    let (cookie, err, got) = c.simple_reply(512).await;
    assert_eq!((cookie, err), (11, 0), "the small read must complete first");
    assert_eq!(got, data[4196..4708]);
    gate.open();
    let (cookie, err, got) = c.simple_reply(4096).await;
    assert_eq!((cookie, err), (10, 0));
    assert_eq!(got, data[..4096]);
    s.server.shutdown().await;
}

#[tokio::test]
async fn shutdown_answers_requests_in_flight_before_returning() {
    let mut s = setup().await;
    let (mut c, _, _) = Client::go(s.server.addr, false).await;
    c.write(1, 0, &[0x77; 4096]).await;
    assert_eq!(c.simple_reply(0).await.1, 0);
    let gate = hold(&s.fault, OpKind::Read, Some(0));
    c.request(Command::Read, 0, 2, 0, 4096).await;
    gate.wait_arrivals(1).await;
    let _ = s.server.stop.take().unwrap().send(());
    // The listener closes once shutdown has been taken in (bounded poll).
    let mut refused = false;
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(s.server.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(refused, "server still accepting after shutdown");
    assert!(
        !s.server.task.is_finished(),
        "run() returned with a request in flight"
    );
    gate.open();
    assert_eq!(c.simple_reply(4096).await, (2, 0, vec![0x77; 4096]));
    let r = tokio::time::timeout(Duration::from_secs(10), s.server.task).await;
    assert!(
        matches!(r, Ok(Ok(Ok(())))),
        "run() must return after answering"
    );
}

#[tokio::test]
async fn a_failing_backend_write_answers_eio_and_the_server_keeps_serving() {
    let s = setup().await;
    let (mut c, _, _) = Client::go(s.server.addr, false).await;
    s.fault.add_rule(Rule {
        op: OpKind::Write,
        chunk: None,
        block: None,
        action: Action::Fail,
        times: Some(1),
    });
    c.write(1, 0, &[1; 4096]).await;
    assert_eq!(c.simple_reply(0).await, (1, 5, vec![]), "EIO expected");
    c.write(2, 0, &[2; 4096]).await;
    assert_eq!(c.simple_reply(0).await.1, 0);
    c.request(Command::Read, 0, 3, 0, 4096).await;
    assert_eq!(c.simple_reply(4096).await, (3, 0, vec![2; 4096]));
    s.server.shutdown().await;
}
