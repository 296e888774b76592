//! The rows of `results.json` and the printed table.

use std::path::Path;

use serde::Serialize;

use crate::stats::{median, range};

/// One case measured in one round.
#[derive(Debug, Clone, Copy)]
pub struct RoundResult {
    /// Median latency, µs (submit → completion).
    pub median_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Completions per second in the timed window.
    pub iops: f64,
    /// Latency samples behind the percentiles.
    pub samples: u64,
}

/// One row of `results.json`: a case, medians over its rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `"transport"`.
    pub suite: &'static str,
    /// `"tcp"`.
    pub target: &'static str,
    /// `"ping"`, `"read"` or `"write"`.
    pub op: &'static str,
    /// Payload bytes moved per request (0 for ping, 4096 for read/write).
    pub size: u64,
    /// Requests in flight.
    pub qd: u32,
    /// Median over rounds of each round's median latency, µs.
    pub median_us: f64,
    /// Median over rounds of each round's p99 latency, µs.
    pub p99_us: f64,
    /// Median over rounds of each round's IOPS.
    pub iops: f64,
    /// Rounds behind the medians.
    pub rounds: u32,
    /// Smallest and largest per-round median latency, µs.
    pub median_us_range: [f64; 2],
    /// Smallest and largest per-round p99 latency, µs.
    pub p99_us_range: [f64; 2],
    /// Smallest and largest per-round IOPS.
    pub iops_range: [f64; 2],
}

impl Row {
    /// The row for a case from its rounds (at least one).
    pub fn from_rounds(op: &'static str, size: u64, qd: u32, rounds: &[RoundResult]) -> Row {
        let pick = |f: fn(&RoundResult) -> f64| -> (f64, [f64; 2]) {
            let v: Vec<f64> = rounds.iter().map(f).collect();
            let m = median(&v).unwrap_or(f64::NAN);
            let (lo, hi) = range(&v).unwrap_or((f64::NAN, f64::NAN));
            (m, [lo, hi])
        };
        let (median_us, median_us_range) = pick(|r| r.median_us);
        let (p99_us, p99_us_range) = pick(|r| r.p99_us);
        let (iops, iops_range) = pick(|r| r.iops);
        Row {
            suite: "transport",
            target: "tcp",
            op,
            size,
            qd,
            median_us,
            p99_us,
            iops,
            rounds: u32::try_from(rounds.len()).unwrap_or(u32::MAX),
            median_us_range,
            p99_us_range,
            iops_range,
        }
    }
}

/// Writes `dir/results.json` (a JSON list of rows), making `dir` if needed.
pub fn write_json(dir: &Path, rows: &[Row]) -> Result<std::path::PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("results.json");
    let mut text =
        serde_json::to_string_pretty(rows).map_err(|e| format!("cannot encode results: {e}"))?;
    text.push('\n');
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// The table: one line per case, medians with the round range.
pub fn table(rows: &[Row]) -> String {
    let mut s = format!(
        "{:<6}{:>6}{:>5}{:>24}{:>24}{:>26}\n",
        "op", "size", "qd", "median µs (range)", "p99 µs (range)", "IOPS (range)"
    );
    let cell =
        |m: f64, r: [f64; 2], prec: usize| format!("{m:.prec$} ({:.prec$}-{:.prec$})", r[0], r[1]);
    for r in rows {
        s.push_str(&format!(
            "{:<6}{:>6}{:>5}{:>24}{:>24}{:>26}\n",
            r.op,
            r.size,
            r.qd,
            cell(r.median_us, r.median_us_range, 1),
            cell(r.p99_us, r.p99_us_range, 1),
            cell(r.iops, r.iops_range, 0),
        ));
    }
    s
}
