//! CI smoke test: `qbd-bench e2e --quick --out DIR` starts real daemons and
//! the peers, runs every fio workload on every target, and writes
//! `results.json` (the list schema with suite "e2e", target, redundancy,
//! mbps), `results.md` (the figures and their ratios to the peers) and
//! two SVG charts. As root the qbd-l2 targets run too (in namespaces the
//! bench makes) and qbd-tcp runs over the same kind of bridge; otherwise
//! qbd-tcp runs on 127.0.0.1 and the run says qbd-l2 was skipped, and under
//! `QBD_REQUIRE_PRIVILEGED=1` that is a failure. Missing fio, nbdkit or
//! qemu-nbd skips the test (fails under `QBD_REQUIRE_TOOLS=1`).

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

const TARGETS: [&str; 4] = ["qbd-tcp", "qbd-l2", "nbdkit", "qemu-nbd"];
const WORKLOADS: [(&str, u64, u64); 6] = [
    ("randread", 4096, 1),
    ("randread", 4096, 32),
    ("randwrite", 4096, 1),
    ("randwrite", 4096, 32),
    ("read", 1 << 20, 8),
    ("write", 1 << 20, 8),
];

#[test]
fn quick_e2e_run_writes_results_table_and_charts() {
    if ["fio", "nbdkit", "qemu-nbd"]
        .iter()
        .any(|t| common::require_tool(t).is_none())
    {
        return;
    }
    common::build_daemons();
    let out = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_qbd-bench"))
        .args(["e2e", "--quick", "--out"])
        .arg(out.path())
        .output()
        .expect("run qbd-bench");
    let took = started.elapsed();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(
        run.status.success(),
        "qbd-bench e2e failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        run.status
    );
    println!("qbd-bench e2e --quick took {took:?}");
    assert!(
        took < Duration::from_secs(180),
        "--quick took {took:?}; keep it a smoke test"
    );

    let rows = common::rows(out.path());
    let l2 = rows.iter().any(|r| r["target"] == "qbd-l2");
    if std::env::var("QBD_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1") {
        assert!(l2, "QBD_REQUIRE_PRIVILEGED=1 but no qbd-l2 rows:\n{stderr}");
    }
    if !l2 {
        assert!(
            stdout.contains("qbd-l2 rows skipped") && stderr.contains("qbd-l2 rows skipped"),
            "a run without namespaces must say the L2 rows were skipped:\n{stderr}"
        );
    }
    let seen = check_rows(&rows, l2);
    for &target in &TARGETS {
        if target == "qbd-l2" && !l2 {
            continue;
        }
        let redundancies: &[Option<&str>] = if target.starts_with("qbd-") {
            &[Some("replicate:3"), Some("ec:4+2")]
        } else {
            &[None]
        };
        for red in redundancies {
            for (op, size, qd) in WORKLOADS {
                let key = (
                    target.to_owned(),
                    red.map(str::to_owned),
                    op.to_owned(),
                    size,
                    qd,
                );
                assert!(seen.contains(&key), "no row {key:?}");
            }
        }
    }

    let mut wanted = vec!["/ nbdkit", "/ qemu-nbd", "randread 4k qd1", "write 1m qd8"];
    if l2 {
        wanted.push("L2/TCP");
    }
    common::check_markdown(out.path(), &wanted);
    common::check_svg(out.path(), "e2e-throughput.svg");
    common::check_svg(out.path(), "e2e-latency.svg");
}

/// Every row has the e2e schema's fields with sane values; returns the
/// cases seen (no duplicates).
/// With namespaces (`l2`), qbd-tcp runs over a bridge like qbd-l2.
fn check_rows(rows: &[Value], l2: bool) -> BTreeSet<(String, Option<String>, String, u64, u64)> {
    let mut seen = BTreeSet::new();
    for row in rows {
        assert_eq!(row["suite"], "e2e", "{row}");
        let target = row["target"].as_str().expect("target is a string");
        assert!(TARGETS.contains(&target), "{row}");
        let red = row["redundancy"].as_str().map(str::to_owned);
        assert_eq!(red.is_some(), target.starts_with("qbd-"), "{row}");
        let link = row["link"].as_str().expect("link");
        let bridged = target == "qbd-l2" || (target == "qbd-tcp" && l2);
        let want_link = if bridged { "bridge" } else { "loopback" };
        assert_eq!(link, want_link, "{row}");
        if bridged {
            assert_eq!(row["mtu"], 9000, "{row}");
        }
        for key in ["median_us", "p99_us", "iops", "mbps"] {
            let v = row[key].as_f64().unwrap_or_else(|| panic!("{key}: {row}"));
            assert!(v.is_finite() && v > 0.0, "{key} must be positive: {row}");
        }
        for key in [
            "median_us_range",
            "p99_us_range",
            "iops_range",
            "mbps_range",
        ] {
            let r = row[key]
                .as_array()
                .unwrap_or_else(|| panic!("{key}: {row}"));
            assert_eq!(r.len(), 2, "{key}: {row}");
        }
        let size = row["size"].as_u64().expect("size");
        let iops = row["iops"].as_f64().unwrap_or(0.0);
        let mbps = row["mbps"].as_f64().unwrap_or(0.0);
        assert!(
            (mbps - iops * size as f64 / 1e6).abs() < 1e-6 * mbps.max(1.0),
            "{row}"
        );
        assert!(row["p99_us"].as_f64() >= row["median_us"].as_f64(), "{row}");
        let pcts = row["lat_percentiles_us"].as_array().expect("percentiles");
        assert!(pcts.len() >= 10, "{row}");
        let key = (
            target.to_owned(),
            red,
            row["op"].as_str().expect("op").to_owned(),
            size,
            row["qd"].as_u64().expect("qd"),
        );
        assert!(seen.insert(key.clone()), "duplicate row {key:?}");
    }
    seen
}
