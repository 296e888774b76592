//! The rows of `results.json` and the printed table.

use serde::Serialize;

use crate::stats::{median, range};

/// The latency percentiles a round records (all of them in fio's default
/// list, so both suites report the same points).
pub const PERCENTILES: [f64; 15] = [
    1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.5, 99.9,
];

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
    /// Latency at each of [`PERCENTILES`], µs.
    pub lat_us: [f64; PERCENTILES.len()],
}

/// Where a run's traffic went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    /// `"veth"` (between two namespaces the bench made), `"loopback"`
    /// (127.0.0.1) or `"remote"` (a `--node`).
    pub link: &'static str,
    /// The link's MTU (`None`: not known, for a remote node).
    pub mtu: Option<u32>,
}

/// One row of `results.json`: a case, medians over its rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `"transport"` or `"e2e"`.
    pub suite: &'static str,
    /// transport: `"tcp"`, `"l2"` or `"l2-loop"`; e2e: `"qbd-tcp"`,
    /// `"qbd-l2"`, `"nbdkit"` or `"qemu-nbd"`.
    pub target: &'static str,
    /// e2e QBD targets: the volume's redundancy (`"replicate:3"`,
    /// `"ec:4+2"`); null for the peers and the transport suite.
    pub redundancy: Option<String>,
    /// `"veth"`, `"bridge"` (namespaces on a bridge), `"loopback"` or
    /// `"remote"`.
    pub link: &'static str,
    /// The link's MTU (null for a remote node).
    pub mtu: Option<u32>,
    /// transport: `"ping"`, `"read"` or `"write"`; e2e: fio's `rw`
    /// (`"randread"`, `"randwrite"`, `"read"`, `"write"`).
    pub op: &'static str,
    /// Payload bytes moved per request (0 for ping, 4096 for 4 KiB
    /// reads/writes, 1048576 for e2e's sequential ones).
    pub size: u64,
    /// Requests in flight.
    pub qd: u32,
    /// Median over rounds of each round's median latency, µs.
    pub median_us: f64,
    /// Median over rounds of each round's p99 latency, µs.
    pub p99_us: f64,
    /// Median over rounds of each round's IOPS.
    pub iops: f64,
    /// Median over rounds of each round's payload throughput, MB/s
    /// (10^6 bytes per second: IOPS × size).
    pub mbps: f64,
    /// Rounds behind the medians.
    pub rounds: u32,
    /// Smallest and largest per-round median latency, µs.
    pub median_us_range: [f64; 2],
    /// Smallest and largest per-round p99 latency, µs.
    pub p99_us_range: [f64; 2],
    /// Smallest and largest per-round IOPS.
    pub iops_range: [f64; 2],
    /// Smallest and largest per-round MB/s.
    pub mbps_range: [f64; 2],
    /// The latency distribution: `[percentile, µs]` pairs, each the median
    /// over rounds of that percentile.
    pub lat_percentiles_us: Vec<[f64; 2]>,
    /// The rounds behind the row, in round order (for paired ratios; not
    /// in the JSON).
    #[serde(skip)]
    pub per_round: Vec<RoundResult>,
}

impl Row {
    /// The row for a case of `target` over `net` from its rounds (at least one).
    pub fn from_rounds(
        target: &'static str,
        net: Net,
        op: &'static str,
        size: u64,
        qd: u32,
        rounds: &[RoundResult],
    ) -> Row {
        let pick = |f: fn(&RoundResult) -> f64| -> (f64, [f64; 2]) {
            let v: Vec<f64> = rounds.iter().map(f).collect();
            let m = median(&v).unwrap_or(f64::NAN);
            let (lo, hi) = range(&v).unwrap_or((f64::NAN, f64::NAN));
            (m, [lo, hi])
        };
        let (median_us, median_us_range) = pick(|r| r.median_us);
        let (p99_us, p99_us_range) = pick(|r| r.p99_us);
        let (iops, iops_range) = pick(|r| r.iops);
        let mb = size as f64 / 1e6;
        let (mbps, mbps_range) = (iops * mb, [iops_range[0] * mb, iops_range[1] * mb]);
        let lat_percentiles_us = PERCENTILES
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let v: Vec<f64> = rounds.iter().map(|r| r.lat_us[i]).collect();
                [p, median(&v).unwrap_or(f64::NAN)]
            })
            .collect();
        Row {
            suite: "transport",
            target,
            redundancy: None,
            link: net.link,
            mtu: net.mtu,
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
            mbps,
            mbps_range,
            lat_percentiles_us,
            per_round: rounds.to_vec(),
        }
    }
}

/// Writes `dir/results.json` (a JSON list of rows), making `dir` if needed.
pub fn write_json(dir: &std::path::Path, rows: &[Row]) -> Result<std::path::PathBuf, String> {
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
        "{:<7}{:>6}{:<7}{:>6}{:>5}{:>24}{:>24}{:>26}\n",
        "target",
        "mtu",
        "  op",
        "size",
        "qd",
        "median µs (range)",
        "p99 µs (range)",
        "IOPS (range)"
    );
    let cell =
        |m: f64, r: [f64; 2], prec: usize| format!("{m:.prec$} ({:.prec$}-{:.prec$})", r[0], r[1]);
    for r in rows {
        s.push_str(&format!(
            "{:<7}{:>6}  {:<5}{:>6}{:>5}{:>24}{:>24}{:>26}\n",
            r.target,
            r.mtu.map_or_else(|| "-".to_owned(), |m| m.to_string()),
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

/// One case of two targets measured in the same run, as ratios `a / b`
/// (`b` is TCP).
#[derive(Debug, Clone)]
pub struct Ratio {
    /// The target `a`.
    pub target: &'static str,
    /// The link's MTU.
    pub mtu: Option<u32>,
    /// The op.
    pub op: &'static str,
    /// Requests in flight.
    pub qd: u32,
    /// Median latency: `a`'s median over rounds / `b`'s.
    pub median: f64,
    /// Smallest and largest ratio of one round's medians (rounds paired
    /// by index: each ran `a` and `b` back to back).
    pub median_range: [f64; 2],
    /// IOPS: `a`'s median over rounds / `b`'s.
    pub iops: f64,
    /// Smallest and largest ratio of one round's IOPS.
    pub iops_range: [f64; 2],
}

impl Ratio {
    /// `target`'s rounds `a` against TCP's `b` for the case `op` at `qd`
    /// over `net`.
    pub fn of(
        target: &'static str,
        net: Net,
        op: &'static str,
        qd: u32,
        (a, b): (&[RoundResult], &[RoundResult]),
    ) -> Ratio {
        let pick = |f: fn(&RoundResult) -> f64| -> (f64, [f64; 2]) {
            let med = |v: &[RoundResult]| median(&v.iter().map(f).collect::<Vec<_>>());
            let ratio = match (med(a), med(b)) {
                (Some(x), Some(y)) => x / y,
                _ => f64::NAN,
            };
            let per_round: Vec<f64> = a.iter().zip(b).map(|(x, y)| f(x) / f(y)).collect();
            let (lo, hi) = range(&per_round).unwrap_or((f64::NAN, f64::NAN));
            (ratio, [lo, hi])
        };
        let (median, median_range) = pick(|r| r.median_us);
        let (iops, iops_range) = pick(|r| r.iops);
        Ratio {
            target,
            mtu: net.mtu,
            op,
            qd,
            median,
            median_range,
            iops,
            iops_range,
        }
    }
}

/// The ratios table: each L2 target against TCP, case by case.
pub fn ratio_table(ratios: &[Ratio]) -> String {
    let mut s = format!(
        "{:<9}{:>6}  {:<5}{:>5}{:>28}{:>28}\n",
        "target", "mtu", "op", "qd", "/tcp median (range)", "/tcp IOPS (range)"
    );
    let cell = |m: f64, r: [f64; 2]| format!("{m:.2} ({:.2}-{:.2})", r[0], r[1]);
    for r in ratios {
        s.push_str(&format!(
            "{:<9}{:>6}  {:<5}{:>5}{:>28}{:>28}\n",
            r.target,
            r.mtu.map_or_else(|| "-".to_owned(), |m| m.to_string()),
            r.op,
            r.qd,
            cell(r.median, r.median_range),
            cell(r.iops, r.iops_range),
        ));
    }
    s
}
