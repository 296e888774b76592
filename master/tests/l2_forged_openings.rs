//! Issue 15 (L2 admission), through real processes: a `qbd-master` serving replicate:3 over
//! three real `qbd-node`s on an L2 segment, and an untrusted host on the same switch that sends
//! 2,000 forged session-opening frames to each node (a third replayed genuine hellos, a third
//! hellos under another key, a third random bytes, each from a random source MAC). During and
//! after the flood, a write and a read through the master each complete within a second and
//! return the right data; when the nodes stop, their counters say the master's session was
//! never evicted and nothing was retransmitted to an unauthenticated peer.
//!
//! Needs root and network namespaces (skipped otherwise; a failure under
//! `QBD_REQUIRE_PRIVILEGED=1`).

mod common;

use std::time::{Duration, Instant};

use common::l2::{ETHERTYPE, IFACE, Segment, Stats};
use common::raw::Client;
use qbd_core::proto::ClusterKey;
use qbd_core::proto::session::ClientHandshake;
use qbd_netlab::parse_mac;
use qbd_transport_l2::af_packet::PacketSocket;
use qbd_transport_l2::engine::Mac;
use qbd_transport_l2::engine::admission::opening_frame;

const NODE_STATS: &str = "qbd-node: stats ";
/// Forged openings per node.
const FORGED: usize = 2000;
/// Frames sent between two timed I/Os through the master.
const BURST: usize = 250;
const BLOCK: usize = 4096;

/// `n` forged openings to `node`: replayed genuine hellos, wrong-key hellos, random bytes.
fn forged(node: [u8; 6], key: &ClusterKey, n: usize, seed: u64) -> Vec<Vec<u8>> {
    let (_, genuine) = ClientHandshake::start(key, [1; 32], "replayed");
    let (_, wrong) = ClientHandshake::start(&ClusterKey([9; 32]), [2; 32], "forger");
    let mut x = seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let r = next().to_le_bytes();
            let src = [(r[0] & 0xfc) | 0x02, r[1], r[2], r[3], r[4], r[5]];
            let payload = match i % 3 {
                0 => genuine.clone(),
                1 => wrong.clone(),
                _ => (0..64).map(|_| next() as u8).collect(),
            };
            let epoch = (next() as u32) | 1;
            opening_frame(ETHERTYPE, Mac(node), Mac(src), epoch, &payload)
                .expect("a forged frame encodes")
        })
        .collect()
}

/// A write then a read of block `block` through the master, each within a second.
fn timed_io(client: &mut Client, block: u64, fill: u8, what: &str) {
    let data = vec![fill; BLOCK];
    let t0 = Instant::now();
    client.write(block * BLOCK as u64, &data).expect("write");
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "{what}: write took {:?}",
        t0.elapsed()
    );
    let t0 = Instant::now();
    let back = client
        .read(block * BLOCK as u64, BLOCK as u32)
        .expect("read");
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "{what}: read took {:?}",
        t0.elapsed()
    );
    assert_eq!(back, data, "{what}: block {block} reads what was written");
}

#[test]
fn forged_openings_to_every_real_node_leave_the_master_serving_without_retransmissions() {
    let Some(mut seg) = Segment::new("l2_forged_openings", 3, 1, 1500) else {
        return;
    };
    let key = ClusterKey::load(seg.key()).expect("the segment's key");
    let master = seg.start_master("forged", "8M", 3, &[]);
    let addr = master.addr;
    let mut client = seg.master_ns().run(|| Client::connect(addr, "forged"));
    timed_io(&mut client, 0, 0x11, "before the flood");

    let attacker = seg.host(0).clone();
    let mut sock = attacker.run(|| PacketSocket::open(IFACE, ETHERTYPE).expect("packet socket"));
    let mut frames = Vec::new();
    for i in 0..3 {
        let mac = parse_mac(&seg.node(i).mac).expect("node MAC");
        frames.extend(forged(mac, &key, FORGED, 0x5eed + i as u64));
    }
    for (n, burst) in frames.chunks(BURST).enumerate() {
        let refs: Vec<&[u8]> = burst.iter().map(Vec::as_slice).collect();
        let mut sent = 0;
        for _ in 0..1000 {
            sent += sock.send_batch(&refs[sent..]).expect("send forged frames");
            if sent == refs.len() {
                break;
            }
        }
        timed_io(
            &mut client,
            1 + n as u64,
            n as u8,
            &format!("during the flood ({n})"),
        );
    }
    timed_io(&mut client, 100, 0x77, "after the flood");
    client.flush().expect("flush");
    drop(client);
    drop(master);

    for i in 0..3 {
        let stderr = seg.stop(i);
        let stats = Stats::expect(&stderr, NODE_STATS);
        println!("node {i}: {}", stats.line());
        assert_eq!(
            stats.get("l2_evicted"),
            0,
            "node {i}: the master's session was evicted"
        );
        assert_eq!(
            stats.get("l2_unauth_retransmissions"),
            0,
            "node {i}: retransmitted to an unauthenticated peer"
        );
        assert!(
            stats.get("l2_pending") <= 64,
            "node {i}: pending sessions bounded"
        );
        assert!(
            stats.get("l2_unauth_refused") > 0,
            "node {i}: the forged frames arrived and were refused"
        );
    }
}
