//! `qbd-master --transport l2` over three `qbd-node`s on a switched Ethernet segment of network
//! namespaces, with no IP address on any link (issue 5's end-to-end suite): a replicate:3 volume
//! copies in and out byte-identical and passes fio's verify, also when every host drops 5 % of
//! the QBD frames it receives; a node killed with SIGKILL during a fio verify run is survived;
//! frames a host on the segment forges, seals under a wrong key or replays change nothing, and
//! the node's reject counters equal what was injected.
//!
//! Layout (`common/l2.rs`): namespace `master` (qbd-master, and the NBD clients talking to it on
//! 127.0.0.1 there), `n0`..`n2` (qbd-node `--iface eth0`, no `--listen`), optionally an attacker,
//! each with one `eth0` on a bridge in its own namespace. Everything is removed when the test
//! ends, also on panic. Needs root: without it every test prints `SKIPPED: ...` and passes,
//! unless `QBD_REQUIRE_PRIVILEGED=1`; a missing client tool skips likewise unless
//! `QBD_REQUIRE_TOOLS=1`.
//!
//! Every wait is bounded and waits for a signal (a ready line, a stderr line, a file growing, a
//! reply), never a fixed sleep.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::attacker::{Attacker, garbage_frames, malformed_messages, wrong_key_pings};
use common::data::{assert_same, random_bytes};
use common::l2::{ETHERTYPE, IFACE, Segment, Stats, fields};
use common::nodes::allocated_bytes;
use common::tools::{assert_fio_passed, fio_randwrite_verify, require_tool, run};
use common::{Backing, Master, wait_until};
use qbd_core::proto::ClusterKey;
use qbd_netlab::{Loss, parse_mac};

/// How long the master may take to log an event (a node found, a backend failing).
const LOG_TIMEOUT: Duration = Duration::from_secs(30);
/// The stats line each daemon prints when it stops.
const NODE_STATS: &str = "qbd-node: stats ";
const MASTER_STATS: &str = "qbd-master: l2 stats ";

/// Three nodes, replicate:3, MTU 9000, found by discovery: 128 MiB of random data copied in and
/// out with nbdcopy is byte-identical, and fio's random writes pass their crc32c verify.
#[test]
fn l2_copy_round_trip_and_fio_verify() {
    let (Some(nbdcopy), Some(fio)) = (require_tool("nbdcopy"), require_tool("fio")) else {
        return;
    };
    let Some(mut seg) = Segment::new("l2_copy_round_trip_and_fio_verify", 3, 0, 9000) else {
        return;
    };
    let started = Instant::now();
    let master = seg.start_master("copy", "128M", 3, &[]);
    assert_found_all_nodes(&seg, &master);
    let ready = started.elapsed();

    copy_round_trip(&seg, &nbdcopy, &master, 0x5eed_12e2);
    assert_fio_passed(&run(fio_randwrite_verify(
        seg.in_master(&fio),
        &master.uri(),
        &[],
    )));
    let stderr = master.stop_cleanly();
    assert!(
        !stderr.contains("failed"),
        "no backend failed with every node up:\n{stderr}"
    );
    let stats = Stats::expect(&stderr, MASTER_STATS);
    println!("master ready after {ready:?}; {}", stats.line());
    assert!(stats.get("frames_sent") > 0 && stats.get("frames_received") > 0);
    stop_nodes_that_rejected_nothing(&mut seg);
}

/// The same over lossy links: every host drops about 5 % of the QBD frames arriving on its
/// `eth0` (nftables, netdev ingress, `numgen random`), so every request and response crosses
/// one lossy hop at each end. Data stays identical and fio verifies; every drop counter moved
/// and the master's engines retransmitted.
#[test]
fn l2_copy_round_trip_and_fio_verify_with_5_percent_loss() {
    let (Some(nbdcopy), Some(fio), Some(_)) = (
        require_tool("nbdcopy"),
        require_tool("fio"),
        require_tool("nft"),
    ) else {
        return;
    };
    let test = "l2_copy_round_trip_and_fio_verify_with_5_percent_loss";
    let Some(mut seg) = Segment::new(test, 3, 0, 9000) else {
        return;
    };
    let hosts = std::iter::once(seg.master_ns()).chain(seg.node_namespaces());
    let losses: Vec<Loss> = hosts
        .map(|ns| Loss::install(ns, IFACE, ETHERTYPE, 5).expect("install 5 % loss"))
        .collect();
    let master = seg.start_master("lossy", "128M", 3, &[]);
    assert_found_all_nodes(&seg, &master);

    copy_round_trip(&seg, &nbdcopy, &master, 0x5eed_1055);
    assert_fio_passed(&run(fio_randwrite_verify(
        seg.in_master(&fio),
        &master.uri(),
        &[],
    )));
    let stderr = master.stop_cleanly();
    let stats = Stats::expect(&stderr, MASTER_STATS);
    for (i, loss) in losses.iter().enumerate() {
        let (seen, dropped) = (loss.seen().expect("seen"), loss.dropped().expect("dropped"));
        let host = if i == 0 { "master" } else { "node" };
        println!(
            "{host} {}: {} of {} QBD frames dropped",
            loss.ns().name(),
            dropped.packets,
            seen.packets
        );
        assert!(
            dropped.packets > 0,
            "{host} {}: no frame dropped",
            loss.ns().name()
        );
    }
    println!("{}", stats.line());
    assert!(
        stats.get("retransmissions") > 0,
        "5 % loss and no retransmission: {}",
        stats.line()
    );
    // Retransmitted and duplicated frames never reach the node protocol twice.
    stop_nodes_that_rejected_nothing(&mut seg);
}

/// One of three nodes is killed with SIGKILL while fio writes and verifies at MTU 1500 (a 4 KiB
/// write takes three frames): fio completes and verifies against the two survivors, and the
/// master reports the backend failed.
#[test]
fn l2_node_killed_during_fio_at_mtu_1500() {
    let Some(fio) = require_tool("fio") else {
        return;
    };
    const VICTIM: usize = 1;
    let Some(mut seg) = Segment::new("l2_node_killed_during_fio_at_mtu_1500", 3, 0, 1500) else {
        return;
    };
    let master = seg.start_master("kill", "64M", 3, &[]);
    assert_found_all_nodes(&seg, &master);

    // fio verifies in batches while it writes (verify_backlog), so reads are in flight too when
    // the node dies, and again over everything at the end.
    let fio_cmd = fio_randwrite_verify(
        seg.in_master(&fio),
        &master.uri(),
        &["--verify_backlog=1024"],
    );
    let fio_run = std::thread::spawn(move || run(fio_cmd));

    // The signal that fio is mid-run: the victim has stored a quarter of fio's 64 MiB.
    let stored = 16 << 20;
    let victim_dir = seg.data(VICTIM).to_owned();
    let mid_run = wait_until(LOG_TIMEOUT, || {
        allocated_bytes(&victim_dir) >= stored || fio_run.is_finished()
    });
    assert!(
        mid_run && !fio_run.is_finished(),
        "fio still running once node {VICTIM} stored {stored} bytes (it holds {})",
        allocated_bytes(&victim_dir)
    );
    let victim = seg.node(VICTIM).id.clone();
    let killed = Instant::now();
    seg.crash(VICTIM);

    let out = fio_run.join().expect("fio thread");
    assert_fio_passed(&out);
    println!("fio finished {:?} after the kill", killed.elapsed());
    let failed = format!("backend node {victim} ");
    assert!(
        wait_until(LOG_TIMEOUT, || master
            .stderr()
            .lines()
            .any(|l| l.contains(&failed) && l.contains("failed"))),
        "stderr reports {victim} failed:\n{}",
        master.stderr()
    );
    let stderr = master.stop_cleanly();
    println!("{}", Stats::expect(&stderr, MASTER_STATS).line());
}

/// Messages of the random class, the wrong-key class, the replay class, and raw garbage frames.
const N_RANDOM: usize = 9;
const N_WRONG_KEY: usize = 7;
const N_REPLAY: usize = 5;
const N_GARBAGE: usize = 8;

/// An attacker on the segment (the real cluster key, its own MAC and client epoch) does a
/// genuine handshake with node n0 and five genuine pings, then injects, at one sequence number
/// it has not used, messages of random bytes, pings sealed under another key and replays of its
/// own earlier pings, plus garbage frames; a genuine ping at that number afterwards proves the
/// node processed them all. Meanwhile the master (nodes pinned by MAC) serves the volume, whose
/// data stays as written. The node's counters equal the injection exactly: bad_mac = the
/// wrong-key ones, replay = the replays, malformed = the random ones; l2_malformed counts at
/// least the garbage frames; and the node never acknowledged a rejected message.
#[test]
fn l2_forged_wrong_key_and_replayed_frames_are_rejected_and_counted() {
    let Some(nbdcopy) = require_tool("nbdcopy") else {
        return;
    };
    let test = "l2_forged_wrong_key_and_replayed_frames_are_rejected_and_counted";
    let Some(mut seg) = Segment::new(test, 3, 1, 9000) else {
        return;
    };
    let pinned: Vec<String> = (0..3).map(|i| seg.node(i).mac.clone()).collect();
    let mut extra = Vec::new();
    for mac in &pinned {
        extra.extend(["--node", mac.as_str()]);
    }
    let master = seg.start_master("forged", "32M", 3, &extra);
    assert_found_all_nodes(&seg, &master);
    let scratch = common::temp_dir(Backing::Shm);
    let expected = random_bytes(0x5eed_f0e6, 32 << 20);
    let input = scratch.path().join("in.bin");
    std::fs::write(&input, &expected).expect("write input file");
    nbdcopy_in(&seg, &nbdcopy, &input, &master.uri());

    let key_text = std::fs::read_to_string(seg.key()).expect("read cluster key");
    let key = ClusterKey::from_hex(&key_text).expect("cluster key");
    let wrong = ClusterKey([0x42; 32]);
    assert_ne!(key, wrong);
    let target = seg.node(0);
    let node_mac = parse_mac(&target.mac).expect("node MAC");
    let mut attacker = Attacker::open(seg.host(0), node_mac, 0x0a77_ac4e);
    let hello = attacker.handshake(&key, [0x11; 32]);
    assert_eq!(
        (hello.backend.to_string(), hello.name.as_str()),
        (target.backend.clone(), target.id.as_str())
    );
    let genuine: Vec<Vec<u8>> = (0..N_REPLAY).map(|_| attacker.ping()).collect();

    // A reader keeps the master busy while the frames go in.
    let out = scratch.path().join("during.bin");
    let reader = {
        let cmd = nbdcopy_cmd(&seg, &nbdcopy, &master.uri(), &out);
        std::thread::spawn(move || run(cmd))
    };
    let seq = attacker.next_seq();
    let mut messages = Vec::new();
    let (random, forged) = (
        malformed_messages(0x5eed_0bad, N_RANDOM),
        wrong_key_pings(&wrong, N_WRONG_KEY),
    );
    for i in 0..N_RANDOM.max(N_WRONG_KEY).max(N_REPLAY) {
        let classes = [random.get(i), forged.get(i), genuine.get(i)];
        messages.extend(classes.into_iter().flatten().cloned());
    }
    let garbage = garbage_frames(node_mac, attacker.mac(), attacker.epoch(), N_GARBAGE);
    attacker.inject(seq, &messages, &garbage);
    attacker.ping();
    assert_eq!(
        attacker.next_seq(),
        seq + 1,
        "the genuine ping used the injected number"
    );
    assert!(
        !attacker.rejected_seq_was_acked(),
        "the node acknowledged a message it must have rejected ({})",
        attacker.engine_stats()
    );

    reader.join().expect("reader thread").assert_success();
    let during = std::fs::read(&out).expect("read copy made during the injection");
    assert_same("copied out during the injection", &expected, &during);
    drop(during);
    let after = copy_out(&seg, &nbdcopy, &master, &out);
    assert_same("copied out after the injection", &expected, &after);
    let master_stderr = master.stop_cleanly();
    drop(attacker);

    let stderr = seg.stop(0);
    let stats = Stats::expect(&stderr, NODE_STATS);
    println!("{}", stats.line());
    let got = [
        ("bad_mac", stats.get("bad_mac")),
        ("replay", stats.get("replay")),
        ("malformed", stats.get("malformed")),
        ("handshake_failed", stats.get("handshake_failed")),
    ];
    let want = [
        ("bad_mac", N_WRONG_KEY as u64),
        ("replay", N_REPLAY as u64),
        ("malformed", N_RANDOM as u64),
        ("handshake_failed", 0),
    ];
    assert_eq!(got, want, "{}\nnode stderr:\n{stderr}", stats.line());
    assert!(
        stats.get("l2_malformed") >= N_GARBAGE as u64,
        "{}",
        stats.line()
    );
    assert!(
        !master_stderr.contains("failed"),
        "the master saw no failure:\n{master_stderr}"
    );
}

/// Stops every node (SIGTERM, exit 0) and checks from its stats line that it rejected no
/// message and refused no handshake: with only genuine masters on the segment, nothing the
/// node protocol sees is forged, and the engine never delivers a message twice (which the node
/// protocol would count as a replay).
fn stop_nodes_that_rejected_nothing(seg: &mut Segment) {
    for i in 0..seg.node_namespaces().len() {
        let stderr = seg.stop(i);
        let stats = Stats::expect(&stderr, NODE_STATS);
        println!("n{i}: {}", stats.line());
        for key in ["bad_mac", "replay", "malformed", "handshake_failed"] {
            assert_eq!(stats.get(key), 0, "n{i} {key}: {}", stats.line());
        }
    }
}

/// Waits until the master has reported every node of the segment as found, with its backend,
/// MAC and MTU.
fn assert_found_all_nodes(seg: &Segment, master: &Master) {
    for i in 0..seg.node_namespaces().len() {
        let node = seg.node(i);
        let found = |log: &str| {
            log.lines().any(|line| {
                let Some(rest) = line.strip_prefix("qbd-master: l2: found node ") else {
                    return false;
                };
                let (name, _) = rest.split_once(' ').unwrap_or((rest, ""));
                let f = fields(rest, name).unwrap_or_default();
                let get = |k: &str| f.get(k).map(String::as_str);
                name == node.id
                    && get("backend") == Some(&node.backend)
                    && get("mac") == Some(&node.mac)
                    && get("mtu") == Some(&seg.mtu().to_string())
            })
        };
        assert!(
            wait_until(LOG_TIMEOUT, || found(&master.stderr())),
            "the master reports {} (backend={} mac={} mtu={}) found:\n{}",
            node.id,
            node.backend,
            node.mac,
            seg.mtu(),
            master.stderr()
        );
    }
}

/// 128 MiB of random data (`seed`) copied into the volume and out again with nbdcopy, run in
/// the master's namespace: byte-identical.
fn copy_round_trip(seg: &Segment, nbdcopy: &Path, master: &Master, seed: u64) {
    let scratch = common::temp_dir(Backing::Shm);
    let input = scratch.path().join("in.bin");
    let expected = random_bytes(seed, 128 << 20);
    std::fs::write(&input, &expected).expect("write input file");
    let started = Instant::now();
    nbdcopy_in(seg, nbdcopy, &input, &master.uri());
    let copied_in = started.elapsed();
    std::fs::remove_file(&input).expect("remove input file");
    let got = copy_out(seg, nbdcopy, master, &scratch.path().join("out.bin"));
    println!(
        "nbdcopy 128 MiB over L2: in {copied_in:?}, out {:?}",
        started.elapsed() - copied_in
    );
    assert_same("copied out over L2", &expected, &got);
}

/// `nbdcopy FROM TO` in the master's namespace.
fn nbdcopy_cmd(seg: &Segment, nbdcopy: &Path, from: &str, to: &Path) -> Command {
    let mut cmd = seg.in_master(nbdcopy);
    cmd.arg(from).arg(to);
    cmd
}

/// Copies `file` into the export at `uri`; must succeed.
fn nbdcopy_in(seg: &Segment, nbdcopy: &Path, file: &Path, uri: &str) {
    let mut cmd = seg.in_master(nbdcopy);
    cmd.arg(file).arg(uri);
    run(cmd).assert_success();
}

/// Copies the whole export out to `file` and returns its bytes (the file is removed).
fn copy_out(seg: &Segment, nbdcopy: &Path, master: &Master, file: &Path) -> Vec<u8> {
    run(nbdcopy_cmd(seg, nbdcopy, &master.uri(), file)).assert_success();
    let bytes = std::fs::read(file).expect("read copied-out file");
    std::fs::remove_file(file).expect("remove copied-out file");
    bytes
}
