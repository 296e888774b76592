//! The rounds: every workload on every target, targets interleaved per
//! workload. Round r starts at workload r (mod the count) and, within
//! workload k of the round, at target k + r, so drift on the shared cores
//! spreads over targets and workloads alike. A row holds one target's
//! medians over rounds and their ranges.
//!
//! A target whose fio run fails (an I/O error, a hang past the bound) is
//! out for the rest of the run: it gets no rows, and its failure (with
//! its server's last stderr lines) is returned for the report, so one
//! broken system does not throw away the others' figures. An interrupt
//! ends the whole run.

use std::path::Path;
use std::time::Duration;

use super::fio::{self, RunTime, Workload};
use super::targets::Target;
use crate::report::{RoundResult, Row};

/// Slack over a run's own time before it counts as hung (fio's start,
/// the NBD handshake, its JSON).
const SLACK: Duration = Duration::from_secs(60);

/// What the rounds produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// One per workload and target that did not fail.
    pub rows: Vec<Row>,
    /// `(target label, why)` for each target that failed.
    pub failures: Vec<(String, String)>,
}

/// The per-target failure slots of a run.
type Failed = Vec<Option<String>>;

/// Writes every target in full, in turn; a target that fails is marked.
pub fn fill(
    fio_bin: &Path,
    targets: &[Target],
    size: u64,
    json_dir: &Path,
) -> Result<Failed, String> {
    // 20 MB/s at the least, plus the slack.
    let bound = SLACK + Duration::from_secs(size / 20_000_000);
    let mut failed = vec![None; targets.len()];
    for (t, slot) in targets.iter().zip(&mut failed) {
        eprintln!("qbd-bench: writing {} MiB to {} ...", size >> 20, t.label());
        let json = json_dir.join(format!("fill-{}.json", slug(&t.label())));
        if let Err(e) = fio::run(fio::fill_command(fio_bin, t, size, &json), bound) {
            crate::interrupt::check()?;
            *slot = Some(fail(t, &format!("writing it in full: {e}")));
        }
    }
    Ok(failed)
}

/// Runs the rounds on the targets not yet `failed`.
pub fn run(
    fio_bin: &Path,
    targets: &[Target],
    workloads: &[Workload],
    (time, rounds, size): (RunTime, u32, u64),
    (json_dir, mut failed): (&Path, Failed),
) -> Result<Outcome, String> {
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
                done += 1;
                if failed[ti].is_some() {
                    continue;
                }
                let t = &targets[ti];
                let json = json_dir.join(format!(
                    "r{}-{}-{}.json",
                    round + 1,
                    slug(&w.label()),
                    slug(&t.label())
                ));
                match one(fio_bin, t, w, (time, size, bound), &json) {
                    Ok(r) => {
                        eprintln!(
                            "[{done}/{total}] round {}/{rounds} {:<18} {:<22} {:>9.0} IOPS \
                             {:>8.1} MB/s  p50 {:>8.1} µs  p99 {:>8.1} µs",
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
                    Err(e) => {
                        crate::interrupt::check()?;
                        failed[ti] = Some(fail(t, &format!("{}: {e}", w.label())));
                    }
                }
            }
        }
    }
    let mut out = Outcome::default();
    for (w, per_target) in workloads.iter().zip(&results) {
        for ((t, rounds), failed) in targets.iter().zip(per_target).zip(&failed) {
            if failed.is_some() {
                continue;
            }
            let mut row = Row::from_rounds(t.kind.name(), t.net, w.rw, w.bs, w.qd, rounds);
            row.suite = "e2e";
            row.redundancy = t.redundancy.clone();
            out.rows.push(row);
        }
    }
    out.failures = targets
        .iter()
        .zip(failed)
        .filter_map(|(t, f)| Some((t.label(), f?)))
        .collect();
    Ok(out)
}

/// One fio run of `w` on `t`, parsed.
fn one(
    fio_bin: &Path,
    t: &Target,
    w: Workload,
    (time, size, bound): (RunTime, u64, Duration),
    json: &Path,
) -> Result<RoundResult, String> {
    fio::run(fio::command(fio_bin, t, w, time, size, json), bound)?;
    let text = std::fs::read_to_string(json)
        .map_err(|e| format!("cannot read {}: {e}", json.display()))?;
    fio::parse(&text, w)
}

/// Reports `t`'s failure now and returns it with the server's last words.
fn fail(t: &Target, why: &str) -> String {
    let first = why.lines().next().unwrap_or(why);
    let msg = format!("{first}{}", t.stderr_tail());
    eprintln!(
        "qbd-bench: {} FAILED, left out of the rest of the run: {msg}",
        t.label()
    );
    msg
}

/// A file-name-safe form of a label.
fn slug(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}
