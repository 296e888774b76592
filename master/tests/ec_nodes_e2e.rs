//! `qbd-master --redundancy ec:4+2` over six real `qbd-node` daemons (TCP on 127.0.0.1), driven
//! by real NBD clients: parity blocks and their covers travel as `Write` + `WriteRaw` and are read
//! back with `ReadRaw` (docs/node-protocol.md §5).
//!
//! One test, in phases (each needs the state the previous one left):
//! 1. all six up: 128 MiB of random data copied in and out with nbdcopy is byte-identical, and
//!    fio's random 4 KiB writes over the first half pass their crc32c verify;
//! 2. two nodes are killed with SIGKILL while fio writes and verifies the second half: fio
//!    passes, degraded; the first half, written before the kill, reads back identical (its blocks
//!    on the dead nodes reconstructed from the four survivors);
//! 3. a third node is killed: only three parts of every chunk are left, fewer than K = 4, so no
//!    row can be decoded. Every 4 KiB block is read on its own (nbdsh, pipelined): a block whose
//!    data part (docs/format.md §3: part `b mod 4` of chunk `c`, on placement slot
//!    `(c + b mod 4) mod 6`) is on the third node fails with EIO; a block whose data part is on a
//!    live node reads back its exact value; a block on one of the first two dead nodes fails with
//!    EIO or reads back its exact value (the master may still hold the restored part in its
//!    reconstruction cache, which every write keeps current). Nothing else is accepted.
//!
//! Every wait is bounded and waits for a signal (a ready line, a stderr line, a part file
//! written), never a fixed sleep. A missing client tool skips the test (fails under
//! `QBD_REQUIRE_TOOLS=1`). Runtime: see the doc of the test.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::data::{assert_same, random_bytes};
use common::nodes::Cluster;
use common::tools::{Outcome, assert_fio_passed, fio_randwrite_verify, nbdsh, require_tool, run};
use common::{Backing, Master, wait_until};
use qbd_core::meta::volume::VolumeMeta;

const NODES: usize = 6;
const K: u64 = 4;
const SIZE: usize = 128 << 20;
const HALF: usize = SIZE / 2;
const BLOCK: usize = 4096;
const CHUNK: usize = 4 << 20;
/// How long the master may take to log an event (a failure).
const LOG_TIMEOUT: Duration = Duration::from_secs(30);
/// The nodes killed while fio runs, then the third (cluster indices).
const FIRST_VICTIMS: [usize; 2] = [1, 4];
const THIRD_VICTIM: usize = 2;

/// Master arguments for an `ec:4+2` volume of 128 MiB over every node of `cluster`.
fn ec_args(cluster: &Cluster) -> Vec<String> {
    let mut args = cluster.master_args("ecn", "128M", 1, &[]);
    let i = args
        .iter()
        .position(|a| a == "--redundancy")
        .expect("--redundancy in the cluster's arguments");
    args[i + 1] = "ec:4+2".to_owned();
    args
}

/// `nbdcopy FROM TO`.
fn nbdcopy(tool: &Path, from: &str, to: &str) -> Outcome {
    let mut cmd = Command::new(tool);
    cmd.args([from, to]);
    run(cmd)
}

/// Copies the whole export out to `file` with nbdcopy and returns its bytes.
fn copy_out(tool: &Path, master: &Master, file: &Path) -> Vec<u8> {
    nbdcopy(tool, &master.uri(), &file.display().to_string()).assert_success();
    let bytes = std::fs::read(file).expect("read copied-out file");
    std::fs::remove_file(file).expect("remove copied-out file");
    bytes
}

/// The placement slot of each node (its index in the volume's placement table, as stored in
/// `.meta` on every node; the ready line gives each node's backend identity).
fn slots(cluster: &Cluster) -> Vec<usize> {
    let path = common::volume_dir(cluster.data(0)).join(".meta");
    let text = std::fs::read_to_string(&path).expect("read .meta");
    let meta: VolumeMeta = toml::from_str(&text).expect(".meta parses");
    assert_eq!(meta.placement.len(), NODES, "{text}");
    (0..NODES)
        .map(|i| {
            let id = &cluster.node(i).backend;
            meta.placement
                .iter()
                .position(|p| p.to_string() == *id)
                .unwrap_or_else(|| panic!("node {i} ({id}) is not in the placement:\n{text}"))
        })
        .collect()
}

/// The placement slot holding volume block `block`: data part `b mod K` of its chunk `c`
/// (block `b` of the chunk) is on slot `(c + b mod K) mod N` (docs/format.md §3).
fn data_slot(block: usize) -> usize {
    let per_chunk = CHUNK / BLOCK;
    let (c, b) = ((block / per_chunk) as u64, (block % per_chunk) as u64);
    ((c + b % K) % NODES as u64) as usize
}

/// Checks the rule against the files: node `i` (at `slot`) holds part file `<p>/<c>` of every
/// chunk exactly for the part `p` that the placement puts on its slot.
fn assert_parts_follow_placement(cluster: &Cluster, slots: &[usize]) {
    let chunks = (SIZE / CHUNK) as u64;
    for (i, &slot) in slots.iter().enumerate() {
        let dir = common::volume_dir(cluster.data(i));
        for c in 0..chunks {
            let p = (slot as u64 + NODES as u64 - c % NODES as u64) % NODES as u64;
            let letter = char::from(b'a' + p as u8);
            let file = dir.join(letter.to_string()).join(c.to_string());
            assert!(file.is_file(), "{} is missing", file.display());
        }
        assert_eq!(
            common::part_files(cluster.data(i)).len(),
            chunks as usize,
            "node {i} holds one part of every chunk"
        );
    }
}

/// Whether a part file under `dir` was modified after `since`.
fn written_since(dir: &Path, since: SystemTime) -> bool {
    let Ok(dir) = std::fs::read_dir(common::volume_dir(dir)) else {
        return false;
    };
    dir.filter_map(Result::ok)
        .filter_map(|part| std::fs::read_dir(part.path()).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|f| f.metadata().ok()?.modified().ok())
        .any(|t| t > since)
}

/// Reads every 4 KiB block of the export on its own (4 in flight: concurrent misses of one
/// chunk would each rebuild it) and compares it with
/// `expected` (a file of the whole export): one character per block, `.` same bytes, `W` other
/// bytes, `E` EIO, `X` another error.
const SWEEP: &str = r#"
import os
expected = open(os.environ["QBD_EXPECTED"], "rb").read()
bs = 4096
n = len(expected) // bs
res = bytearray(b"?" * n)
def done(i, buf):
    def f(err):
        if err.value == 0:
            same = bytes(buf.to_bytearray()) == expected[i * bs:(i + 1) * bs]
            res[i] = ord(".") if same else ord("W")
        else:
            res[i] = ord("E") if err.value == 5 else ord("X")
        return 1
    return f
for i in range(n):
    while h.aio_in_flight() >= 4:
        h.poll(-1)
    buf = nbd.Buffer(bs)
    h.aio_pread(buf, i * bs, completion=done(i, buf))
while h.aio_in_flight() > 0:
    h.poll(-1)
print(res.decode())
"#;

/// Phases 1–3 of the module doc. About 25 s on two cores (test profile): copies 1.3 s, fio with
/// all up 3.6 s, fio with two nodes dying 13 s (degraded writes restore the rows they keep,
/// verify reads rebuild chunks their writes invalidated), degraded copy 3.5 s, sweep 2.6 s.
#[test]
fn ec_4_2_over_six_nodes_copy_fio_two_dead_then_three_dead_is_eio_only_on_lost_blocks() {
    let (Some(nbdcopy_path), Some(fio), Some(nbdsh_path)) = (
        require_tool("nbdcopy"),
        require_tool("fio"),
        require_tool("nbdsh"),
    ) else {
        return;
    };
    let mut cluster = Cluster::start(NODES);
    let master = Master::start(&ec_args(&cluster));
    let scratch = common::temp_dir(Backing::Shm);
    let out = scratch.path().join("out.bin");

    // 1. All up: copy round trip, then fio over the first half.
    let input = scratch.path().join("in.bin");
    let expected = random_bytes(0x5eed_ec42, SIZE);
    std::fs::write(&input, &expected).expect("write input file");
    nbdcopy(&nbdcopy_path, &input.display().to_string(), &master.uri()).assert_success();
    std::fs::remove_file(&input).expect("remove input file");
    let got = copy_out(&nbdcopy_path, &master, &out);
    assert_same("copied out over six nodes, ec:4+2", &expected, &got);
    let slots = slots(&cluster);
    assert_parts_follow_placement(&cluster, &slots);

    let uri = master.uri();
    assert_fio_passed(&run(fio_randwrite_verify(Command::new(&fio), &uri, &[])));
    let before = copy_out(&nbdcopy_path, &master, &out);
    assert_same(
        "the second half, which fio did not touch",
        &expected[HALF..],
        &before[HALF..],
    );
    drop((got, expected));

    // 2. Two nodes die while fio writes and verifies the second half.
    let started = SystemTime::now();
    let offset = format!("--offset={HALF}");
    let extra = [offset.as_str(), "--verify_backlog=4096"];
    let fio_cmd = fio_randwrite_verify(Command::new(&fio), &uri, &extra);
    let fio_run = std::thread::spawn(move || run(fio_cmd));
    let victim_dir = cluster.data(FIRST_VICTIMS[0]).to_owned();
    let writing = wait_until(LOG_TIMEOUT, || {
        written_since(&victim_dir, started) || fio_run.is_finished()
    });
    assert!(
        writing && !fio_run.is_finished(),
        "fio still running once node {} stored some of its writes",
        FIRST_VICTIMS[0]
    );
    let mut dead: Vec<String> = Vec::new();
    for v in FIRST_VICTIMS {
        dead.push(cluster.node(v).id.clone());
        cluster.crash(v);
    }
    let fio_out = fio_run.join().expect("fio thread");
    assert_fio_passed(&fio_out);
    for id in &dead {
        let failed = format!("backend node {id} (");
        assert!(
            master.wait_stderr(&failed, LOG_TIMEOUT),
            "stderr reports {id} failed:\n{}",
            master.stderr()
        );
    }
    let degraded = copy_out(&nbdcopy_path, &master, &out);
    assert_same(
        "the first half, written before two nodes died, read back degraded",
        &before[..HALF],
        &degraded[..HALF],
    );
    drop(before);

    // 3. A third node dies: every block reads back exactly, or fails with EIO where it must.
    cluster.crash(THIRD_VICTIM);
    nbdcopy(&nbdcopy_path, &master.uri(), &out.display().to_string()).assert_failure();
    let reference = scratch.path().join("reference.bin");
    std::fs::write(&reference, &degraded).expect("write reference file");
    drop(degraded);
    let mut cmd = nbdsh(&nbdsh_path);
    cmd.env("QBD_EXPECTED", &reference)
        .args(["-u", &master.uri(), "-c", SWEEP]);
    let sweep = run(cmd);
    sweep.assert_success();
    let seen = sweep.stdout.trim().as_bytes();
    assert_eq!(seen.len(), SIZE / BLOCK, "one result per block: {sweep}");
    let third = slots[THIRD_VICTIM];
    let first = FIRST_VICTIMS.map(|v| slots[v]);
    let mut counts = [0usize; 3]; // EIO on the third node, cached or EIO on the first two, read
    for (block, &got) in seen.iter().enumerate() {
        let slot = data_slot(block);
        let ok = if slot == third {
            counts[0] += 1;
            got == b'E'
        } else if first.contains(&slot) {
            counts[1] += usize::from(got == b'E');
            got == b'E' || got == b'.'
        } else {
            counts[2] += 1;
            got == b'.'
        };
        assert!(
            ok,
            "block {block} (offset {}, data part on slot {slot}; dead: {first:?} then {third}) \
             answered {:?}; master stderr:\n{}",
            block * BLOCK,
            char::from(got),
            master.stderr()
        );
    }
    println!(
        "ec_nodes_e2e: {} blocks EIO on the third dead node, {} EIO on the first two \
         (the rest served from the reconstruction cache), {} read from live nodes",
        counts[0], counts[1], counts[2]
    );
    assert!(counts[0] > 0 && counts[2] > 0, "{counts:?}");
}
