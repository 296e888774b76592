//! The rounds: every workload on every target, targets interleaved per
//! workload. Round r starts at workload r (mod the count) and, within
//! workload k of the round, at target k + r, so drift on the shared cores
//! spreads over targets and workloads alike. A row holds one target's
//! medians over rounds and their ranges.

use std::path::Path;
use std::time::Duration;

use super::fio::{self, RunTime, Workload};
use super::targets::Target;
use crate::report::{RoundResult, Row};

/// Slack over a run's own time before it counts as hung (fio's start,
/// the NBD handshake, its JSON).
const SLACK: Duration = Duration::from_secs(60);

/// Writes every target in full, in turn.
pub fn fill(fio_bin: &Path, targets: &[Target], size: u64, json_dir: &Path) -> Result<(), String> {
    // 20 MB/s at the least, plus the slack.
    let bound = SLACK + Duration::from_secs(size / 20_000_000);
    for t in targets {
        eprintln!("qbd-bench: writing {} MiB to {} ...", size >> 20, t.label());
        let json = json_dir.join(format!("fill-{}.json", slug(&t.label())));
        fio::run(fio::fill_command(fio_bin, t, size, &json), bound)
            .map_err(|e| format!("filling {}: {e}{}", t.label(), t.stderr_tail()))?;
    }
    Ok(())
}

/// Runs the rounds; one row per workload and target (workloads in
/// order, targets in order within each).
pub fn run(
    fio_bin: &Path,
    targets: &[Target],
    workloads: &[Workload],
    (time, rounds, size): (RunTime, u32, u64),
    json_dir: &Path,
) -> Result<Vec<Row>, String> {
    let bound = time.runtime + time.ramp + SLACK;
    let mut results = vec![vec![Vec::<RoundResult>::new(); targets.len()]; workloads.len()];
    let total = rounds as usize * workloads.len() * targets.len();
    let mut done = 0;
    for round in 0..rounds as usize {
        for k in 0..workloads.len() {
            let wi = (k + round) % workloads.len();
            let w = workloads[wi];
            for j in 0..targets.len() {
                let ti = (j + k + round) % targets.len();
                let t = &targets[ti];
                let json = json_dir.join(format!(
                    "r{}-{}-{}.json",
                    round + 1,
                    slug(&w.label()),
                    slug(&t.label())
                ));
                let cmd = fio::command(fio_bin, t, w, time, size, &json);
                fio::run(cmd, bound).map_err(|e| {
                    format!("{} on {}: {e}{}", w.label(), t.label(), t.stderr_tail())
                })?;
                let text = std::fs::read_to_string(&json)
                    .map_err(|e| format!("cannot read {}: {e}", json.display()))?;
                let r = fio::parse(&text, w)
                    .map_err(|e| format!("{} on {}: {e}", w.label(), t.label()))?;
                done += 1;
                eprintln!(
                    "[{done}/{total}] round {}/{rounds} {:<18} {:<22} {:>9.0} IOPS {:>8.1} MB/s  \
                     p50 {:>8.1} µs  p99 {:>8.1} µs",
                    round + 1,
                    w.label(),
                    t.label(),
                    r.iops,
                    r.iops * w.bs as f64 / 1e6,
                    r.median_us,
                    r.p99_us
                );
                results[wi][ti].push(r);
            }
        }
    }
    let mut rows = Vec::new();
    for (w, per_target) in workloads.iter().zip(&results) {
        for (t, rounds) in targets.iter().zip(per_target) {
            let mut row = Row::from_rounds(t.kind.name(), t.net, w.rw, w.bs, w.qd, rounds);
            row.suite = "e2e";
            row.redundancy = t.redundancy.clone();
            rows.push(row);
        }
    }
    Ok(rows)
}

/// A file-name-safe form of a label.
fn slug(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}
