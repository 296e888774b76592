//! Command-line flags of `qbd-bench`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Benchmarks of QBD's parts. Traffic goes to 127.0.0.1 or to the node given.
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
    /// Node round trips over the TCP transport: ping, 4 KiB read, 4 KiB
    /// write, at each queue depth (QD n = n tasks on one connection, each
    /// looping `call().await`, so n requests are always in flight).
    Transport(TransportArgs),
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

    /// Request types to measure.
    #[arg(long, value_delimiter = ',', default_value = "ping,read,write")]
    pub ops: Vec<Op>,

    /// Queue depths to measure (requests kept in flight).
    #[arg(long, value_delimiter = ',', default_value = "1,32",
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub qd: Vec<u32>,

    /// Seconds of measurement per case and round [default: 3; 0.3 with --quick].
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,

    /// Seconds of warm-up before each timed run (queue already full, samples
    /// discarded) [default: 0.3; 0.05 with --quick].
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

    /// Worker threads of the bench's (client's) tokio runtime [default: one per CPU].
    #[arg(long, value_name = "N")]
    pub client_threads: Option<usize>,

    /// Worker threads of the in-process node's own tokio runtime [default: one per CPU].
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
    /// Duration, warm-up and rounds, checked.
    pub fn timing(&self) -> Result<Timing, String> {
        let (d, w, r) = if self.quick {
            (0.3, 0.05, 1)
        } else {
            (3.0, 0.3, 3)
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
