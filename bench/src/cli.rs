//! Command-line flags of `qbd-bench`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Benchmarks of QBD's parts. Traffic stays inside network namespaces the
/// bench creates (as root), on 127.0.0.1, or goes to the node given.
#[derive(Debug, Parser)]
#[command(name = "qbd-bench", version, about, long_about = None)]
pub struct Cli {
    /// The suite to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The suites.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Node round trips over the TCP and the L2 transport: ping, 4 KiB
    /// read, 4 KiB write, at each queue depth (QD n = n tasks on one
    /// connection, each looping `call().await`, so n requests are always in
    /// flight). As root: between two network namespaces joined by a veth
    /// pair, at each --mtu, both targets alternated; otherwise TCP over
    /// loopback.
    Transport(TransportArgs),
    /// End to end through NBD: fio's nbd engine against qbd-master
    /// (replicate:3 and ec:4+2, over TCP nodes on 127.0.0.1 and, as root,
    /// over QBD-L2 nodes in network namespaces on a bridge) and against
    /// the peers nbdkit (file plugin) and qemu-nbd, all on tmpfs; workloads
    /// interleaved over targets, rounds repeated, medians and ranges.
    E2e(crate::e2e::E2eArgs),
    /// The torture harness: a seeded workload (tagged writes, reads,
    /// FLUSH, FUA, TRIM, WRITE_ZEROES over several NBD connections)
    /// against real qbd-master and qbd-node processes while faults are
    /// injected (SIGKILL, SIGSTOP, on-disk damage, a second master, frame
    /// loss on L2); every block is checked against a model after every
    /// fault, and verify + repair must end HEALTHY. Exits non-zero on any
    /// finding and keeps the logs and the volume. See docs/torture.md.
    Torture(crate::torture::TortureArgs),
}

/// One request type of the transport suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Op {
    /// `Ping` → `Pong`: the bare round trip (MAC, framing, dispatch).
    Ping,
    /// A 4 KiB single-block `Read` of a written block.
    Read,
    /// A 4 KiB single-block `Write` with a fresh generation.
    Write,
}

impl Op {
    /// The name in results (`ping`, `read`, `write`).
    pub fn name(self) -> &'static str {
        match self {
            Op::Ping => "ping",
            Op::Read => "read",
            Op::Write => "write",
        }
    }
}

/// A transport the suite measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum TargetKind {
    /// `TcpTransport` (qbd-transport-tcp).
    Tcp,
    /// `L2Transport` over an `L2Link` (qbd-transport-l2, AF_PACKET),
    /// through the `Transport` trait from tokio tasks (the product path).
    L2,
    /// The same transport driven by a closed loop on the link's polling
    /// thread (`L2Transport::run_closed_loop`): no thread hop per request,
    /// as the floor probe measured.
    #[value(name = "l2-loop")]
    L2Loop,
}

impl TargetKind {
    /// Whether it runs over QBD-L2.
    pub fn is_l2(self) -> bool {
        matches!(self, TargetKind::L2 | TargetKind::L2Loop)
    }

    /// The name in results (`tcp`, `l2`).
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Tcp => "tcp",
            TargetKind::L2 => "l2",
            TargetKind::L2Loop => "l2-loop",
        }
    }
}

/// How idle threads wait for the next frame or completion (`--wait`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Wait {
    /// As shipped: L2's polling threads spin (50 µs) then block; tokio
    /// workers (TCP's, and the client's for both) block in epoll.
    Product,
    /// Every waiting thread blocks at once: L2 polling threads with no
    /// spin, tokio workers in epoll.
    Block,
    /// The threads that wait on a socket busy-poll while a case runs:
    /// L2's polling threads as shipped (they spin while frames keep
    /// coming); for TCP cases, spinner tasks keep the client's and the
    /// node's tokio worker polling epoll. Both runtimes get one worker, so
    /// the spinning worker owns the I/O driver. The client's tokio worker
    /// still blocks during L2 cases: it waits for the L2 polling thread,
    /// not for a socket (spinning it too would need a third CPU).
    Spin,
}

impl Wait {
    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Wait::Product => "product",
            Wait::Block => "block",
            Wait::Spin => "spin",
        }
    }
}

/// Flags of `qbd-bench transport`.
#[derive(Debug, Clone, Args)]
pub struct TransportArgs {
    /// Measure a running qbd-node instead of an in-process one. The bench
    /// creates (or reuses) a 4 MiB volume named "qbd-bench" on it and
    /// overwrites its first --blocks blocks.
    #[arg(long, value_name = "HOST:PORT", requires = "cluster_key")]
    pub node: Option<String>,

    /// The cluster key file of --node (64 hex characters, `qbd keygen`).
    #[arg(long, value_name = "FILE", requires = "node")]
    pub cluster_key: Option<PathBuf>,

    /// Transports to measure, alternated case by case [default:
    /// tcp,l2,l2-loop as root; tcp over loopback without the privileges for
    /// namespaces].
    #[arg(long, value_delimiter = ',')]
    pub target: Vec<TargetKind>,

    /// MTUs of the veth pair between the namespaces; each gets its own
    /// namespaces and node, and its rows their "mtu".
    #[arg(long, value_delimiter = ',', default_value = "1500,9000",
          value_parser = clap::value_parser!(u32).range(1280..=65535))]
    pub mtu: Vec<u32>,

    /// TCP over 127.0.0.1 in the bench's own namespace, as without root
    /// (no L2, no namespaces).
    #[arg(long, conflicts_with = "node")]
    pub loopback: bool,

    /// How idle threads wait (see the values); the same for every target.
    #[arg(long, value_enum, default_value = "product")]
    pub wait: Wait,

    /// Spin of both L2 polling threads (master link and node server)
    /// before they block, in µs [default: the transport's, 50; 0 with
    /// --wait block].
    #[arg(long, value_name = "US")]
    pub l2_spin_us: Option<u64>,

    /// Diagnosis: the L2 engines' RTO floor, µs [default: the engine's, 300].
    #[arg(long, value_name = "US")]
    pub l2_min_rto_us: Option<u64>,

    /// Diagnosis: the L2 engines' smallest congestion window, frames
    /// [default: the engine's, 4]; at the ceiling, AIMD never shrinks it.
    #[arg(long, value_name = "FRAMES")]
    pub l2_min_cwnd: Option<u32>,

    /// Diagnosis: send one fragment per frame, no bundles (both ends).
    #[arg(long)]
    pub l2_no_bundle: bool,

    /// Pin the L2 polling threads: CLIENT,NODE CPU numbers (e.g. 0,1).
    #[arg(long, value_name = "CPU,CPU", value_delimiter = ',')]
    pub l2_pin: Vec<usize>,

    /// Request types to measure.
    #[arg(long, value_delimiter = ',', default_value = "ping,read,write")]
    pub ops: Vec<Op>,

    /// Queue depths to measure (requests kept in flight).
    #[arg(long, value_delimiter = ',', default_value = "1,32",
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub qd: Vec<u32>,

    /// Seconds of measurement per case and round [default: 1; 0.3 with
    /// --quick]. The defaults (2 MTUs × 3 targets × 6 cases × 3 rounds ×
    /// 1.2 s) take about 2.5 minutes.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,

    /// Seconds of warm-up before each timed run (queue already full, samples
    /// discarded) [default: 0.2; 0.05 with --quick].
    #[arg(long, value_name = "SECONDS")]
    pub warmup: Option<f64>,

    /// Rounds; each runs every case once, cases interleaved (the starting
    /// case rotates per round) [default: 3; 1 with --quick].
    #[arg(long)]
    pub rounds: Option<u32>,

    /// A quick run (CI smoke): 0.3 s per case, 1 round.
    #[arg(long)]
    pub quick: bool,

    /// Write `results.json` to this directory (created if needed).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Blocks (4 KiB) that reads and writes spread over, at most 1024 (one
    /// 4 MiB chunk): written once before the cases run.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub blocks: u32,

    /// Worker threads of the bench's (client's) tokio runtime [default: one
    /// per CPU; 1 with --wait spin].
    #[arg(long, value_name = "N")]
    pub client_threads: Option<usize>,

    /// Worker threads of the in-process node's own tokio runtime [default:
    /// one per CPU; 1 with --wait spin].
    #[arg(long, value_name = "N", conflicts_with = "node")]
    pub node_threads: Option<usize>,
}

/// The effective timing of a run, defaults and --quick applied.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Measured time per case and round.
    pub duration: Duration,
    /// Warm-up per case and round.
    pub warmup: Duration,
    /// Rounds.
    pub rounds: u32,
}

impl TransportArgs {
    /// Checks the flags that clap cannot check alone.
    pub fn check(&self) -> Result<(), String> {
        if !matches!(self.l2_pin.len(), 0 | 2) {
            return Err("--l2-pin takes two CPU numbers: CLIENT,NODE".into());
        }
        if self.wait == Wait::Block && self.l2_spin_us.is_some_and(|us| us > 0) {
            return Err("--wait block means no spin: drop --l2-spin-us".into());
        }
        let one = |n: Option<usize>| n.is_none_or(|n| n == 1);
        if self.wait == Wait::Spin && !(one(self.client_threads) && one(self.node_threads)) {
            return Err(
                "--wait spin runs each runtime on one worker (the spinning worker \
                        must own the I/O driver): drop --client-threads/--node-threads"
                    .into(),
            );
        }
        Ok(())
    }

    /// Worker threads of the client's runtime (`None`: tokio's default).
    pub fn client_workers(&self) -> Option<usize> {
        match self.wait {
            Wait::Spin => Some(1),
            _ => self.client_threads,
        }
    }

    /// Worker threads of the in-process node's runtime.
    pub fn node_workers(&self) -> Option<usize> {
        match self.wait {
            Wait::Spin => Some(1),
            _ => self.node_threads,
        }
    }

    /// The spin of the L2 polling threads (`None`: the transport's default).
    pub fn l2_spin(&self) -> Option<Duration> {
        match (self.wait, self.l2_spin_us) {
            (Wait::Block, _) => Some(Duration::ZERO),
            (_, us) => us.map(Duration::from_micros),
        }
    }

    /// Duration, warm-up and rounds, checked.
    pub fn timing(&self) -> Result<Timing, String> {
        let (d, w, r) = if self.quick {
            (0.3, 0.05, 1)
        } else {
            (1.0, 0.2, 3)
        };
        let secs = |v: Option<f64>, default: f64, what: &str| {
            let v = v.unwrap_or(default);
            if v.is_finite() && (0.0..=3600.0).contains(&v) {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(format!("--{what} must be 0..3600 seconds, got {v}"))
            }
        };
        let duration = secs(self.duration, d, "duration")?;
        if duration.is_zero() {
            return Err("--duration must be positive".into());
        }
        let rounds = self.rounds.unwrap_or(r);
        if rounds == 0 {
            return Err("--rounds must be at least 1".into());
        }
        Ok(Timing {
            duration,
            warmup: secs(self.warmup, w, "warmup")?,
            rounds,
        })
    }
}
