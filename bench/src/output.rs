//! What a suite leaves in `--out DIR`: `results.json` (the rows),
//! `results.md` (header and tables, [`crate::markdown`]) and SVG charts
//! ([`crate::chart`]):
//!
//! - `transport`: `transport-latency.svg`, one panel per op and queue
//!   depth, a latency-distribution line per target and MTU.
//! - `e2e`: `e2e-throughput.svg`, one panel per workload, a bar per target
//!   (IOPS for 4 KiB, MB/s for 1 MiB); `e2e-latency.svg`, one panel per
//!   workload, a latency-distribution line per target.

use std::path::{Path, PathBuf};

use crate::chart::{self, BarPanel, LinePanel};
use crate::markdown;
use crate::report::{Ratio, Row, write_json};

/// Writes the `transport` suite's files to `dir`; returns their paths.
pub fn transport(
    dir: &Path,
    header: &str,
    rows: &[Row],
    ratios: &[Ratio],
) -> Result<Vec<PathBuf>, String> {
    let mut files = vec![write_json(dir, rows)?];
    files.push(write(
        dir,
        "results.md",
        &markdown::transport(header, rows, ratios),
    )?);
    let mut panels: Vec<LinePanel> = Vec::new();
    for r in rows {
        let title = format!("{} {} B, qd {}", r.op, r.size, r.qd);
        let label = match r.mtu {
            Some(m) => format!("{} mtu {m}", r.target),
            None => r.target.to_owned(),
        };
        let series = (label, r.lat_percentiles_us.clone());
        match panels.iter_mut().find(|p| p.title == title) {
            Some(p) => p.series.push(series),
            None => panels.push(LinePanel {
                title,
                series: vec![series],
            }),
        }
    }
    let svg = dir.join("transport-latency.svg");
    chart::percentile_lines(&svg, "qbd-bench transport: latency distribution", &panels)?;
    files.push(svg);
    Ok(files)
}

/// Prints the `e2e` report and, with `out`, writes its files there.
pub fn e2e(out: Option<&Path>, header: &str, rows: &[Row]) -> Result<(), String> {
    let md = markdown::e2e(header, rows);
    println!("{md}");
    let Some(dir) = out else {
        return Ok(());
    };
    let mut files = vec![write_json(dir, rows)?];
    files.push(write(dir, "results.md", &md)?);
    let (mut bars, mut lines): (Vec<BarPanel>, Vec<LinePanel>) = (Vec::new(), Vec::new());
    for r in rows {
        let w = markdown::workload(r);
        let label = match &r.redundancy {
            Some(red) => format!("{} {red}", r.target),
            None => r.target.to_owned(),
        };
        let seq = r.size >= 1 << 20;
        let title = format!("{w}: {}", if seq { "MB/s" } else { "IOPS" });
        let bar = if seq {
            (label.clone(), r.mbps, r.mbps_range)
        } else {
            (label.clone(), r.iops, r.iops_range)
        };
        match bars.iter_mut().find(|p| p.title == title) {
            Some(p) => p.bars.push(bar),
            None => bars.push(BarPanel {
                title,
                bars: vec![bar],
            }),
        }
        let series = (label, r.lat_percentiles_us.clone());
        match lines.iter_mut().find(|p| p.title == w) {
            Some(p) => p.series.push(series),
            None => lines.push(LinePanel {
                title: w,
                series: vec![series],
            }),
        }
    }
    let svg = dir.join("e2e-throughput.svg");
    chart::bars(
        &svg,
        "qbd-bench e2e: medians over rounds, whiskers: range",
        &bars,
    )?;
    files.push(svg);
    let svg = dir.join("e2e-latency.svg");
    chart::percentile_lines(&svg, "qbd-bench e2e: latency distribution", &lines)?;
    files.push(svg);
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf, String> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}
