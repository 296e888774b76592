//! `results.md`: the run's header, its figures and their ratios as
//! Markdown tables (medians over rounds, the rounds' range in brackets).
//!
//! Ratios are of medians, with the range of the per-round ratios (rounds
//! paired by index). For `e2e`, each target's IOPS against each
//! peer's (QBD/nbdkit, QBD/qemu-nbd: above 1 is faster than the peer) and
//! each `qbd-l2` volume against the `qbd-tcp` one of the same redundancy
//! (IOPS, and median latency: below 1 is quicker). For `transport`, the
//! ratio table the suite already computes (each L2 target against TCP).

use crate::report::{Ratio, RoundResult, Row};
use crate::stats;

/// The `transport` suite's Markdown.
pub fn transport(header: &str, rows: &[Row], ratios: &[Ratio]) -> String {
    let mut s = preamble(header);
    s.push_str("## Round trips\n\n| target | mtu | op | qd | p50 µs | p99 µs | IOPS |\n");
    s.push_str("|---|---:|---|---:|---:|---:|---:|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.target,
            mtu(r.mtu),
            r.op,
            r.qd,
            cell(r.median_us, r.median_us_range, 1),
            cell(r.p99_us, r.p99_us_range, 1),
            cell(r.iops, r.iops_range, 0)
        ));
    }
    if !ratios.is_empty() {
        s.push_str(
            "\n## L2 / TCP\n\nMedian latency and IOPS of each L2 target over TCP's \
             (range: per-round ratios).\n\n| target | mtu | op | qd | p50 latency / tcp | \
             IOPS / tcp |\n|---|---:|---|---:|---:|---:|\n",
        );
        for r in ratios {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                r.target,
                mtu(r.mtu),
                r.op,
                r.qd,
                cell(r.median, r.median_range, 2),
                cell(r.iops, r.iops_range, 2)
            ));
        }
    }
    s
}

/// The `e2e` suite's Markdown.
pub fn e2e(header: &str, rows: &[Row]) -> String {
    let mut s = preamble(header);
    s.push_str(
        "## Figures\n\nfio ioengine=nbd; IOPS and MB/s (10^6 B/s) over the measured time, \
         latency from submit to completion. `/ nbdkit`, `/ qemu-nbd`: the target's IOPS over \
         the peer's.\n\n| workload | target | redundancy | IOPS | MB/s | p50 µs | p99 µs | \
         / nbdkit | / qemu-nbd |\n|---|---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let peer = |name: &str| {
            find(rows, r, name, None).map_or_else(|| "–".to_owned(), |p| ratio(r, p, iops))
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            workload(r),
            r.target,
            r.redundancy.as_deref().unwrap_or("–"),
            cell(r.iops, r.iops_range, 0),
            cell(r.mbps, r.mbps_range, 1),
            cell(r.median_us, r.median_us_range, 1),
            cell(r.p99_us, r.p99_us_range, 1),
            peer("nbdkit"),
            peer("qemu-nbd"),
        ));
    }
    let l2: Vec<(&Row, &Row)> = rows
        .iter()
        .filter(|r| r.target == "qbd-l2")
        .filter_map(|r| Some((r, find(rows, r, "qbd-tcp", r.redundancy.as_deref())?)))
        .collect();
    if !l2.is_empty() {
        s.push_str(
            "\n## L2 / TCP\n\nThe same volume over QBD-L2 against over TCP: IOPS (above 1: L2 \
             is faster) and median latency (below 1: L2 is quicker).\n\n| workload | \
             redundancy | IOPS L2/TCP | p50 latency L2/TCP |\n|---|---|---:|---:|\n",
        );
        for (a, b) in l2 {
            s.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                workload(a),
                a.redundancy.as_deref().unwrap_or("–"),
                ratio(a, b, iops),
                ratio(a, b, median)
            ));
        }
    }
    s
}

/// The row of `target` (with `redundancy`) for `r`'s workload.
fn find<'a>(rows: &'a [Row], r: &Row, target: &str, redundancy: Option<&str>) -> Option<&'a Row> {
    rows.iter().find(|x| {
        x.target == target
            && x.op == r.op
            && x.size == r.size
            && x.qd == r.qd
            && x.redundancy.as_deref() == redundancy
    })
}

/// `randread 4k qd1`.
pub fn workload(r: &Row) -> String {
    let size = if r.size >= 1 << 20 {
        format!("{}m", r.size >> 20)
    } else {
        format!("{}k", r.size >> 10)
    };
    format!("{} {size} qd{}", r.op, r.qd)
}

fn preamble(header: &str) -> String {
    let mut lines = header.lines();
    let title = lines
        .next()
        .unwrap_or("# qbd-bench")
        .trim_start_matches("# ");
    let rest: Vec<&str> = lines.collect();
    format!("# {title}\n\n```\n{}\n```\n\n", rest.join("\n"))
}

fn mtu(m: Option<u32>) -> String {
    m.map_or_else(|| "–".into(), |m| m.to_string())
}

fn cell(m: f64, r: [f64; 2], prec: usize) -> String {
    if r[0] == r[1] {
        format!("{m:.prec$}")
    } else {
        format!("{m:.prec$} ({:.prec$}–{:.prec$})", r[0], r[1])
    }
}

fn iops(r: &RoundResult) -> f64 {
    r.iops
}

fn median(r: &RoundResult) -> f64 {
    r.median_us
}

/// `f` of `a` over `f` of `b`: the ratio of their medians over rounds,
/// and in brackets the range of the per-round ratios (rounds paired by
/// index: within a round both ran the same workload back to back).
fn ratio(a: &Row, b: &Row, f: fn(&RoundResult) -> f64) -> String {
    if std::ptr::eq(a, b) {
        return "1".into();
    }
    let med = |r: &Row| stats::median(&r.per_round.iter().map(f).collect::<Vec<_>>());
    let (Some(x), Some(y)) = (med(a), med(b)) else {
        return "–".into();
    };
    if !(y > 0.0 && x.is_finite() && y.is_finite()) {
        return "–".into();
    }
    let paired: Vec<f64> = a
        .per_round
        .iter()
        .zip(&b.per_round)
        .map(|(p, q)| f(p) / f(q))
        .collect();
    match stats::range(&paired) {
        Some((lo, hi)) if paired.len() > 1 => format!("{:.2} ({lo:.2}–{hi:.2})", x / y),
        _ => format!("{:.2}", x / y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Net, PERCENTILES};

    fn row(target: &'static str, iops: &[f64]) -> Row {
        let rounds: Vec<RoundResult> = iops
            .iter()
            .map(|&iops| RoundResult {
                median_us: 1e6 / iops,
                p99_us: 2e6 / iops,
                iops,
                samples: 1,
                lat_us: [1.0; PERCENTILES.len()],
            })
            .collect();
        let net = Net {
            link: "loopback",
            mtu: None,
        };
        let mut r = Row::from_rounds(target, net, "randread", 4096, 1, &rounds);
        r.suite = "e2e";
        r
    }

    #[test]
    fn ratios_are_of_medians_with_paired_round_ranges() {
        let a = row("qbd-tcp", &[100.0, 300.0, 200.0]);
        let b = row("nbdkit", &[100.0, 100.0, 400.0]);
        // Medians 200 / 100; per round 1.0, 3.0, 0.5.
        assert_eq!(ratio(&a, &b, iops), "2.00 (0.50–3.00)");
        let single = row("qbd-tcp", &[50.0]);
        let peer = row("nbdkit", &[100.0]);
        assert_eq!(ratio(&single, &peer, iops), "0.50");
        let md = e2e("# qbd-bench e2e: t\nline", &[a, b]);
        assert!(
            md.contains("| randread 4k qd1 | qbd-tcp | – | 200 (100–300) |"),
            "{md}"
        );
        assert!(md.contains("| 2.00 (0.50–3.00) | – |"), "{md}");
    }
}
