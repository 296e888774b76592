//! The transport suite: node round trips over [`TcpTransport`].
//!
//! One connection (one `TcpTransport`, as a master has per node). A case is
//! an op at a queue depth: QD n runs n tokio tasks on that connection, each
//! looping "build request, `Instant` at submit, `call().await`, `Instant` at
//! completion", so n requests are in flight at all times (no batching: each
//! request is its own `submit`). Each timed run starts with a warm-up whose
//! samples are dropped (the queue is already full when measuring starts);
//! then latency is recorded for every request submitted inside the window
//! and IOPS counts completions inside it. Rounds run every case once, the
//! starting case rotating, so drift on the shared cores spreads over all
//! cases; a case's row holds the medians over rounds and their ranges.
//!
//! Before the cases, the bench sets up a volume on the node through
//! requests: it creates a 4 MiB volume "qbd-bench" (or reuses the one a
//! previous run left on a `--node`), opens it, takes a new epoch with
//! `SaveMeta`, allocates chunk 0's part and writes the blocks that reads
//! then hit (verified data, so the node reads and checks real blocks).
//! Writes use fresh generations of that epoch, so every one is applied.
//!
//! The in-process node runs in its own tokio runtime on its own threads
//! (the bench's client runtime is separate), as two daemons would.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use qbd_core::backend::PartId;
use qbd_core::generation::Generation;
use qbd_core::meta::volume::VolumeMeta;
use qbd_core::placement::BackendId;
use qbd_core::proto::ClusterKey;
use qbd_core::proto::msg::{Request, Response, WireBlockState, WriteMode};
use qbd_core::transport::Transport;
use qbd_transport_tcp::{TcpOptions, TcpTransport};

use crate::cli::{Op, Timing, TransportArgs};
use crate::node::LocalNode;
use crate::report::{RoundResult, Row, table, write_json};
use crate::stats::percentile;

/// The volume the bench uses on the node.
pub const VOLUME_NAME: &str = "qbd-bench";
/// Block size of the bench volume (the request size of read and write).
pub const BLOCK: u32 = 4096;
/// Its chunk size, which is also its size: one chunk, one part file.
const CHUNK: u64 = 4 << 20;
const PART: PartId = PartId { chunk: 0, part: 0 };
/// Requests per batch while filling the blocks.
const FILL_BATCH: u32 = 64;

/// Runs `qbd-bench transport`: measures, prints the table, writes the JSON.
pub fn main(args: &TransportArgs) -> Result<(), String> {
    let timing = args.timing()?;
    let cases = cases(&args.ops, &args.qd);
    if cases.is_empty() {
        return Err("nothing to measure (--ops / --qd empty)".into());
    }
    let local = match &args.node {
        None => Some(LocalNode::start(args.node_threads)?),
        Some(_) => None,
    };
    let (addr, key, node_desc) = match (&local, &args.node, &args.cluster_key) {
        (Some(n), _, _) => (
            n.addr(),
            n.key(),
            format!(
                "in-process qbd-node at {} (data {})",
                n.addr(),
                n.dir().display()
            ),
        ),
        (None, Some(node), Some(file)) => {
            let addr = resolve(node)?;
            (addr, read_key(file)?, format!("qbd-node at {addr}"))
        }
        (None, _, _) => return Err("--node needs --cluster-key".into()),
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all().thread_name("qbd-bench");
    if let Some(n) = args.client_threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.build().map_err(|e| format!("runtime: {e}"))?;

    let load_before = load_average();
    let header = format!(
        "# qbd-bench transport: node round trips over TCP (one connection, QD n = n tasks \
         each looping call().await)\n\
         node: {node_desc}\n\
         cpus: {}  load before: {load_before}  client threads: {}  node threads: {}\n\
         per case: warm-up {:.2} s, timed {:.2} s; {} round(s), cases interleaved; \
         blocks: {} x {BLOCK} B\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        threads_desc(args.client_threads),
        if local.is_some() {
            threads_desc(args.node_threads)
        } else {
            "remote".into()
        },
        timing.warmup.as_secs_f64(),
        timing.duration.as_secs_f64(),
        timing.rounds,
        args.blocks,
    );
    eprint!("{header}");
    let rows = rt.block_on(run(addr, key, args.blocks, &cases, timing))?;
    drop(rt);
    drop(local);
    let load_after = load_average();

    println!("{header}load after: {load_after}\n");
    print!("{}", table(&rows));
    if let Some(dir) = &args.out {
        let path = write_json(dir, &rows)?;
        println!("\nresults: {}", path.display());
    }
    Ok(())
}

/// The cases in a stable order (ops as given, each at every QD), duplicates dropped.
pub fn cases(ops: &[Op], qds: &[u32]) -> Vec<(Op, u32)> {
    let mut out = Vec::new();
    for &op in ops {
        for &qd in qds {
            if !out.contains(&(op, qd)) {
                out.push((op, qd));
            }
        }
    }
    out
}

fn threads_desc(n: Option<usize>) -> String {
    n.map_or_else(|| "default".into(), |n| n.to_string())
}

fn resolve(node: &str) -> Result<SocketAddr, String> {
    node.to_socket_addrs()
        .map_err(|e| format!("--node {node}: {e}"))?
        .next()
        .ok_or_else(|| format!("--node {node}: no address"))
}

fn read_key(file: &std::path::Path) -> Result<ClusterKey, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    ClusterKey::from_hex(&text).map_err(|e| format!("{}: {e}", file.display()))
}

/// The 1, 5 and 15 minute load averages (from /proc/loadavg).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

async fn run(
    addr: SocketAddr,
    key: ClusterKey,
    blocks: u32,
    cases: &[(Op, u32)],
    timing: Timing,
) -> Result<Vec<Row>, String> {
    let t = TcpTransport::connect(addr, key, "qbd-bench", TcpOptions::default())
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let target = Arc::new(Target::prepare(t, blocks).await?);
    let mut results: Vec<Vec<RoundResult>> = vec![Vec::new(); cases.len()];
    for round in 0..timing.rounds {
        for k in 0..cases.len() {
            let i = (k + round as usize) % cases.len();
            let (op, qd) = cases[i];
            let r = run_case(&target, op, qd, timing).await?;
            eprintln!(
                "round {}/{} {:<5} qd {:>3}: median {:>7.1} µs  p99 {:>7.1} µs  {:>8.0} IOPS  ({} samples)",
                round + 1,
                timing.rounds,
                op.name(),
                qd,
                r.median_us,
                r.p99_us,
                r.iops,
                r.samples
            );
            results[i].push(r);
        }
    }
    Ok(cases
        .iter()
        .zip(&results)
        .map(|(&(op, qd), rounds)| Row::from_rounds(op.name(), size_of(op), qd, rounds))
        .collect())
}

/// Payload bytes per request.
fn size_of(op: Op) -> u64 {
    match op {
        Op::Ping => 0,
        Op::Read | Op::Write => u64::from(BLOCK),
    }
}

/// The prepared volume on the node, and the connection to it.
#[derive(Debug)]
struct Target {
    t: Arc<TcpTransport>,
    volume: u16,
    epoch: u64,
    blocks: u32,
    /// The next generation counter of `epoch`.
    next_counter: AtomicU64,
    payload: Vec<u8>,
}

/// One call; a node's error reply becomes an error too.
async fn call(t: &TcpTransport, req: Request, what: &str) -> Result<Response, String> {
    match t.call(req).await {
        Ok(Response::Error { code, message }) => {
            Err(format!("{what}: node refused ({code:?}): {message}"))
        }
        Ok(r) => Ok(r),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

fn unexpected(what: &str, r: &Response) -> String {
    format!("{what}: unexpected answer {r:?}")
}

fn meta_text(m: &VolumeMeta) -> Result<String, String> {
    toml::to_string(m).map_err(|e| format!("cannot encode .meta: {e}"))
}

impl Target {
    /// Creates (or reuses) the volume, opens it, takes a new epoch,
    /// allocates its part and writes its first `blocks` blocks.
    async fn prepare(t: Arc<TcpTransport>, blocks: u32) -> Result<Target, String> {
        let node = t.node();
        let existing = match call(
            &t,
            Request::VolumeNumber {
                name: VOLUME_NAME.into(),
            },
            "VolumeNumber",
        )
        .await?
        {
            Response::Number(n) => n,
            r => return Err(unexpected("VolumeNumber", &r)),
        };
        let mut meta = match existing {
            Some(number) => {
                let text = match call(&t, Request::LoadMeta { number }, "LoadMeta").await? {
                    Response::Meta(Some(text)) => text,
                    r => return Err(unexpected("LoadMeta", &r)),
                };
                let meta: VolumeMeta = toml::from_str(&text)
                    .map_err(|e| format!("volume {VOLUME_NAME} on the node: bad .meta: {e}"))?;
                if meta.block_size != BLOCK
                    || meta.chunk_size < u64::from(blocks) * u64::from(BLOCK)
                {
                    return Err(format!(
                        "volume {VOLUME_NAME} on the node has another shape (block size {}, \
                         chunk size {}); remove it or use another node",
                        meta.block_size, meta.chunk_size
                    ));
                }
                meta
            }
            None => {
                let numbers = match call(&t, Request::VolumeNumbers, "VolumeNumbers").await? {
                    Response::Numbers(v) => v,
                    r => return Err(unexpected("VolumeNumbers", &r)),
                };
                let number = (1..=u16::MAX)
                    .find(|n| !numbers.contains(n))
                    .ok_or("no free volume number on the node")?;
                let meta = VolumeMeta {
                    format_version: 1,
                    name: VOLUME_NAME.into(),
                    uuid: uuid::Uuid::new_v4(),
                    number,
                    size: CHUNK,
                    block_size: BLOCK,
                    chunk_size: CHUNK,
                    redundancy: "replicate:1".into(),
                    read_only: false,
                    append_only: false,
                    epoch: 0,
                    master: "qbd-bench".into(),
                    placement: vec![BackendId(node.backend)],
                };
                let create = Request::CreateVolume {
                    meta: meta_text(&meta)?,
                };
                expect_done(call(&t, create, "CreateVolume").await?, "CreateVolume")?;
                meta
            }
        };
        let open = Request::OpenVolume {
            meta: meta_text(&meta)?,
        };
        match call(&t, open, "OpenVolume").await? {
            Response::Opened { .. } => {}
            r => return Err(unexpected("OpenVolume", &r)),
        }
        meta.epoch += 1;
        meta.master = "qbd-bench".into();
        let save = Request::SaveMeta {
            meta: meta_text(&meta)?,
        };
        expect_done(call(&t, save, "SaveMeta").await?, "SaveMeta")?;
        let alloc = Request::Allocate {
            volume: meta.number,
            epoch: meta.epoch,
            part: PART,
        };
        expect_done(call(&t, alloc, "Allocate").await?, "Allocate")?;

        let target = Target {
            t,
            volume: meta.number,
            epoch: meta.epoch,
            blocks,
            next_counter: AtomicU64::new(1),
            payload: (0..BLOCK).map(|i| (i % 251) as u8).collect(),
        };
        target.fill().await?;
        Ok(target)
    }

    /// Writes every block once, `FILL_BATCH` requests per submit.
    async fn fill(&self) -> Result<(), String> {
        let mut first = 0;
        while first < self.blocks {
            let last = (first + FILL_BATCH).min(self.blocks);
            let batch: Vec<Request> = (first..last).map(|b| self.write_req(b)).collect();
            for pending in self.t.submit(batch) {
                let r = pending.await.map_err(|e| format!("filling: {e}"))?;
                match r {
                    Response::Written { applied: 1, .. } => {}
                    r => return Err(unexpected("filling", &r)),
                }
            }
            first = last;
        }
        Ok(())
    }

    fn write_req(&self, block: u32) -> Request {
        let counter = self.next_counter.fetch_add(1, Ordering::Relaxed);
        Request::Write {
            volume: self.volume,
            part: PART,
            first: block,
            count: 1,
            generation: Generation::new(self.epoch, counter).0,
            mode: WriteMode::Data,
            repair: false,
            data: self.payload.clone(),
        }
    }

    fn request(&self, op: Op, rng: &mut u64) -> Request {
        match op {
            Op::Ping => Request::Ping,
            Op::Read => Request::Read {
                volume: self.volume,
                part: PART,
                first: (next_random(rng) % u64::from(self.blocks)) as u32,
                count: 1,
            },
            Op::Write => {
                // Consecutive blocks, so concurrent writes never share a
                // block (QD < blocks) and every write is applied.
                let counter = self.next_counter.fetch_add(1, Ordering::Relaxed);
                Request::Write {
                    volume: self.volume,
                    part: PART,
                    first: (counter % u64::from(self.blocks)) as u32,
                    count: 1,
                    generation: Generation::new(self.epoch, counter).0,
                    mode: WriteMode::Data,
                    repair: false,
                    data: self.payload.clone(),
                }
            }
        }
    }
}

fn expect_done(r: Response, what: &str) -> Result<(), String> {
    match r {
        Response::Done => Ok(()),
        r => Err(unexpected(what, &r)),
    }
}

/// xorshift64*: cheap, good enough to spread reads over the blocks.
fn next_random(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// What one task of a case saw.
#[derive(Debug, Default)]
struct WorkerOut {
    /// Latency (ns) of every request submitted in the timed window.
    lat_ns: Vec<u64>,
    /// Completions inside the timed window.
    completed: u64,
    /// Writes the node skipped (stored generation not older): should stay 0.
    skipped: u64,
}

/// Checks an answer; returns the number of skipped writes.
fn check(op: Op, r: Response) -> Result<u64, String> {
    match (op, r) {
        (Op::Ping, Response::Pong) => Ok(0),
        (Op::Read, Response::Blocks { states, data })
            if data.len() == BLOCK as usize
                && matches!(states.as_slice(), [WireBlockState::Data(_)]) =>
        {
            Ok(0)
        }
        (Op::Write, Response::Written { applied, skipped }) if applied + skipped == 1 => {
            Ok(u64::from(skipped))
        }
        (op, r) => Err(unexpected(op.name(), &r)),
    }
}

async fn worker(
    target: Arc<Target>,
    op: Op,
    seed: u64,
    measure: Instant,
    end: Instant,
) -> Result<WorkerOut, String> {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = WorkerOut {
        lat_ns: Vec::with_capacity(1 << 14),
        ..WorkerOut::default()
    };
    loop {
        let req = target.request(op, &mut rng);
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let answer = target.t.call(req).await;
        let done = Instant::now();
        let answer = answer.map_err(|e| format!("{}: {e}", op.name()))?;
        out.skipped += check(op, answer)?;
        if sent >= measure {
            out.lat_ns
                .push(u64::try_from((done - sent).as_nanos()).unwrap_or(u64::MAX));
        }
        if done >= measure && done < end {
            out.completed += 1;
        }
    }
    Ok(out)
}

async fn run_case(
    target: &Arc<Target>,
    op: Op,
    qd: u32,
    timing: Timing,
) -> Result<RoundResult, String> {
    let start = Instant::now();
    let measure = start + timing.warmup;
    let end = measure + timing.duration;
    let tasks: Vec<_> = (0..qd)
        .map(|i| {
            let seed = u64::from(i) + 1 + (start.elapsed().subsec_nanos() as u64);
            tokio::spawn(worker(Arc::clone(target), op, seed, measure, end))
        })
        .collect();
    let mut lat = Vec::new();
    let (mut completed, mut skipped) = (0u64, 0u64);
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(out)) => {
                lat.extend(out.lat_ns);
                completed += out.completed;
                skipped += out.skipped;
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(format!("a {} task failed: {e}", op.name()));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    if skipped > 0 {
        eprintln!(
            "qbd-bench: warning: the node skipped {skipped} {} writes (stale generation)",
            op.name()
        );
    }
    lat.sort_unstable();
    let us = |ns: Option<u64>| ns.map_or(f64::NAN, |n| n as f64 / 1000.0);
    Ok(RoundResult {
        median_us: us(percentile(&lat, 50.0)),
        p99_us: us(percentile(&lat, 99.0)),
        iops: completed as f64 / timing.duration.as_secs_f64(),
        samples: lat.len() as u64,
    })
}
