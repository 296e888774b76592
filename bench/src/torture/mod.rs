//! `qbd-bench torture`: the project's own checker, in the manner of ZFS's
//! ztest and TigerBeetle's VOPR, over real processes. A seeded workload
//! (`workload`) runs against a real `qbd-master` over real `qbd-node`s
//! (`cluster`) while faults are injected (`faults`, `damage`); after each
//! fault every block is read and checked against the model (`model`,
//! `check`), and now and then `qbd verify --deep`, `qbd repair` and
//! `qbd verify --deep` must bring the volume to HEALTHY with the model's
//! content. See docs/torture.md.
//!
//! Module map: `config` (presets), `rng` (SplitMix64), `pattern` (what a
//! block holds), `client` (the NBD client), `run` (one cycle after
//! another), `report` (the tally).

pub mod check;
pub mod client;
pub mod cluster;
pub mod config;
pub mod damage;
pub mod faults;
pub mod forger;
pub mod model;
pub mod pattern;
pub mod report;
pub mod rng;
pub mod run;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Flags of `qbd-bench torture`.
#[derive(Debug, Args)]
pub struct TortureArgs {
    /// The cluster: redundancy and transport (the L2 ones need root).
    #[arg(long, value_enum)]
    pub config: config::Preset,
    /// The seed (default: from the clock; printed, so a run can be replayed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// How long to inject faults: `90s`, `10m`, `2h`.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stop after this many fault cycles (default: no limit).
    #[arg(long)]
    pub cycles: Option<u64>,
    /// Volume size in MiB.
    #[arg(long, default_value_t = 32)]
    pub size_mib: u64,
    /// Percent of QBD-L2 frames dropped at every host (default: 5 for
    /// r3-l2, 0 otherwise).
    #[arg(long)]
    pub loss: Option<u8>,
    /// Percent of QBD-L2 frames the switch sends twice (default 1; 0 is off).
    #[arg(long)]
    pub dup: Option<u8>,
    /// NBD connections of the workload (each one request at a time).
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// Where the run's directories go (nodes' data, master state, logs);
    /// default a fresh directory on /dev/shm, deleted after a clean run
    /// and kept after a failing one.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only these faults (comma-separated): master-kill, master-stop,
    /// node-kill, node-stop, damage, second-master, forge (default: all).
    #[arg(long, value_delimiter = ',', value_parser = parse_fault)]
    pub faults: Vec<String>,
    /// Checks the checker: in the first cycle, with the master stopped,
    /// delete every copy of chunk 0 on every node (data no redundancy can
    /// bring back). The run must then fail.
    #[arg(long)]
    pub self_test: bool,
    /// A JSON summary of the run goes here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn parse_fault(s: &str) -> Result<String, String> {
    if faults::KINDS.contains(&s) {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?}: one of {}", faults::KINDS.join(", ")))
    }
}

/// `90s`, `10m`, `2h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with s, m or h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?}: the unit is s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

/// Runs the harness; an error (or a finding) fails the command.
pub fn main(args: &TortureArgs) -> Result<(), String> {
    run::main(args)
}
