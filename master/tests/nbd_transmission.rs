//! NBD transmission over a real loopback socket: data path, errors, and
//! out-of-order completion.
#![allow(clippy::unwrap_used)]

mod nbd_common;

use std::sync::Arc;

use nbd_common::*;
use qbd_master::nbd::memdev::MemDevice;
use qbd_master::nbd::wire::{Command, MAX_PAYLOAD, REPLY_FLAG_DONE, cmd_flags, errno, reply_type};

#[tokio::test]
async fn write_read_flush_trim_zeroes_simple() {
    let dev = memdev();
    let srv = serve(Arc::clone(&dev)).await;
    let (mut c, _, _) = Client::go(srv.addr, false).await;
    let data: Vec<u8> = (0..8192u32).map(|i| i as u8).collect();
    c.write(1, 4096, &data).await;
    assert_eq!(c.simple_reply(0).await, (1, 0, vec![]));
    c.request(Command::Read, 0, 2, 4096, 8192).await;
    assert_eq!(c.simple_reply(8192).await, (2, 0, data.clone()));
    c.request(Command::Flush, 0, 3, 0, 0).await;
    assert_eq!(c.simple_reply(0).await.1, 0);
    c.request(Command::Trim, cmd_flags::FUA, 4, 4096, 100).await;
    assert_eq!(c.simple_reply(0).await.1, 0);
    c.request(Command::WriteZeroes, cmd_flags::NO_HOLE, 5, 8192, 100)
        .await;
    assert_eq!(c.simple_reply(0).await.1, 0);
    let contents = dev.contents();
    assert!(contents[4096..4196].iter().all(|b| *b == 0));
    assert_eq!(contents[4196..8192], data[100..4096]);
    assert!(contents[8192..8292].iter().all(|b| *b == 0));
    // Zero-length requests succeed without touching the device.
    c.request(Command::Read, 0, 6, 0, 0).await;
    assert_eq!(c.simple_reply(0).await, (6, 0, vec![]));
    c.request(Command::Disc, 0, 7, 0, 0).await;
    assert!(c.closed_by_server().await);
    srv.shutdown().await;
}

#[tokio::test]
async fn structured_reads_are_one_final_chunk() {
    let dev = memdev();
    let srv = serve(Arc::clone(&dev)).await;
    let (mut c, _, _) = Client::go(srv.addr, true).await;
    c.write(1, 100, b"hello").await;
    assert_eq!(c.simple_reply(0).await.1, 0);
    c.request(Command::Read, cmd_flags::DF, 2, 100, 5).await;
    let (h, d) = c.chunk().await;
    assert_eq!(
        (h.flags, h.chunk_type, h.cookie),
        (REPLY_FLAG_DONE, reply_type::OFFSET_DATA, 2)
    );
    assert_eq!(&d[..8], &100u64.to_be_bytes());
    assert_eq!(&d[8..], b"hello");
    // Out of range: an ERROR chunk, never a simple reply.
    c.request(Command::Read, 0, 3, SIZE as u64, 1).await;
    let (h, d) = c.chunk().await;
    assert_eq!(
        (h.flags, h.chunk_type, h.cookie),
        (REPLY_FLAG_DONE, reply_type::ERROR, 3)
    );
    assert_eq!(&d[..4], &errno::EINVAL.to_be_bytes());
    // Zero-length read: a NONE chunk.
    c.request(Command::Read, 0, 4, 0, 0).await;
    let (h, _) = c.chunk().await;
    assert_eq!(
        (h.flags, h.chunk_type, h.length),
        (REPLY_FLAG_DONE, reply_type::NONE, 0)
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn errors_and_the_connection_keeps_going() {
    let srv = serve(memdev()).await;
    let (mut c, _, _) = Client::go(srv.addr, false).await;
    c.request(Command::Read, 0, 1, SIZE as u64 - 1, 2).await;
    assert_eq!(c.simple_reply(0).await, (1, errno::EINVAL, vec![]));
    c.write(2, SIZE as u64 - 1, b"ab").await;
    assert_eq!(c.simple_reply(0).await, (2, errno::ENOSPC, vec![]));
    c.request(Command::Unknown(5), 0, 3, 0, 512).await; // CACHE, not advertised
    assert_eq!(c.simple_reply(0).await, (3, errno::EINVAL, vec![]));
    c.request(Command::Read, 0, 4, 0, MAX_PAYLOAD + 1).await;
    assert_eq!(c.simple_reply(0).await, (4, errno::EINVAL, vec![]));
    // An oversized WRITE: refused, its payload consumed, the stream stays in sync.
    let big = vec![7u8; MAX_PAYLOAD as usize + 4096];
    c.write(5, 0, &big).await;
    assert_eq!(c.simple_reply(0).await, (5, errno::EINVAL, vec![]));
    c.request(Command::Read, 0, 6, 0, 4).await;
    assert_eq!(c.simple_reply(4).await, (6, 0, vec![0; 4]));
    // A 4 GiB-ish TRIM is fine when in range (here: out of range → EINVAL).
    c.request(Command::Trim, 0, 7, 0, u32::MAX).await;
    assert_eq!(c.simple_reply(0).await.1, errno::EINVAL);
    srv.shutdown().await;
}

#[tokio::test]
async fn read_only_refuses_writes_with_eperm() {
    let srv = serve(Arc::new(MemDevice::new(SIZE).read_only())).await;
    let (mut c, _, _) = Client::go(srv.addr, false).await;
    c.write(1, 0, b"abc").await;
    assert_eq!(c.simple_reply(0).await, (1, errno::EPERM, vec![]));
    c.request(Command::Trim, 0, 2, 0, 512).await;
    assert_eq!(c.simple_reply(0).await, (2, errno::EPERM, vec![]));
    c.request(Command::WriteZeroes, 0, 3, 0, 512).await;
    assert_eq!(c.simple_reply(0).await, (3, errno::EPERM, vec![]));
    c.request(Command::Read, 0, 4, 0, 3).await;
    assert_eq!(c.simple_reply(3).await, (4, 0, vec![0; 3]));
    srv.shutdown().await;
}

#[tokio::test]
async fn replies_complete_out_of_order() {
    let dev = Arc::new(GatedDevice::new());
    let gate = dev.gate(0);
    let srv = serve(Arc::clone(&dev)).await;
    let (mut c, _, _) = Client::go(srv.addr, false).await;
    c.request(Command::Read, 0, 0xA, 0, 512).await;
    dev.entered.notified().await; // A is inside the device, blocked
    c.request(Command::Read, 0, 0xB, 4096, 512).await;
    assert_eq!(c.simple_reply(512).await.0, 0xB);
    gate.notify_one();
    assert_eq!(c.simple_reply(512).await.0, 0xA);
    srv.shutdown().await;
}

#[tokio::test]
async fn several_connections_at_once() {
    let dev = memdev();
    let srv = serve(Arc::clone(&dev)).await;
    let mut tasks = Vec::new();
    for i in 0..4u64 {
        let addr = srv.addr;
        tasks.push(tokio::spawn(async move {
            let (mut c, _, _) = Client::go(addr, i % 2 == 0).await;
            for j in 0..32u64 {
                let off = (i * 32 + j) * 512;
                c.write(j, off, &[i as u8 + 1; 512]).await;
            }
            for _ in 0..32 {
                assert_eq!(c.simple_reply(0).await.1, 0);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let contents = dev.contents();
    for i in 0..4usize {
        assert!(
            contents[i * 32 * 512..(i + 1) * 32 * 512]
                .iter()
                .all(|b| *b == i as u8 + 1)
        );
    }
    srv.shutdown().await;
}
