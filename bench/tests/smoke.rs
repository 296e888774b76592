//! CI smoke test: `qbd-bench transport --quick --out DIR` runs against its
//! in-process node and writes `results.json` in the documented schema,
//! `results.md` (the tables) and `transport-latency.svg`: as
//! root, TCP, L2 and L2 closed-loop rows at MTU 1500 and 9000 over veth
//! between namespaces the bench makes; otherwise TCP rows over loopback,
//! with a note.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The keys every row has, and the optional extras the bench adds.
const REQUIRED: [&str; 10] = [
    "suite",
    "target",
    "link",
    "mtu",
    "op",
    "size",
    "qd",
    "median_us",
    "p99_us",
    "iops",
];
const EXTRA: [&str; 8] = [
    "rounds",
    "median_us_range",
    "p99_us_range",
    "iops_range",
    "redundancy",
    "mbps",
    "mbps_range",
    "lat_percentiles_us",
];

fn positive(row: &Value, key: &str) -> f64 {
    let v = row[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {row}"));
    assert!(v.is_finite() && v > 0.0, "{key} must be positive: {row}");
    v
}

#[test]
fn quick_transport_run_writes_the_results_schema() {
    let out = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_qbd-bench"))
        .args(["transport", "--quick", "--out"])
        .arg(out.path())
        .output()
        .expect("run qbd-bench");
    let took = started.elapsed();
    assert!(
        run.status.success(),
        "qbd-bench failed: {}\nstdout:\n{}\nstderr:\n{}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        took < Duration::from_secs(30),
        "--quick took {took:?}; keep it a smoke test"
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("median µs"), "no table printed:\n{stdout}");

    let text = std::fs::read_to_string(out.path().join("results.json")).expect("results.json");
    let rows: Vec<Value> = serde_json::from_str(&text).expect("results.json is a JSON list");
    let privileged = rows.iter().any(|r| r["link"] == "veth");
    if std::env::var("QBD_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1") {
        assert!(
            privileged,
            "QBD_REQUIRE_PRIVILEGED=1 but no veth rows:\n{stdout}"
        );
    }
    if !privileged {
        assert!(
            stdout.contains("TCP over loopback only"),
            "a run without namespaces must say so:\n{stdout}"
        );
    }
    check_rows(&rows, privileged);
    let mut wanted = vec!["## Round trips", "| tcp |"];
    if privileged {
        wanted.extend(["## L2 / TCP", "| l2 |", "| l2-loop |"]);
    }
    common::check_markdown(out.path(), &wanted);
    common::check_svg(out.path(), "transport-latency.svg");
}

/// Every row has the schema's keys and sane values, no case repeats, and
/// the cases the issue names are there (for both targets at both MTUs
/// when `privileged`).
fn check_rows(rows: &[Value], privileged: bool) {
    let allowed: BTreeSet<&str> = REQUIRED.iter().chain(&EXTRA).copied().collect();
    let mut seen = BTreeSet::new();
    for row in rows {
        let obj = row.as_object().expect("each row is an object");
        for key in REQUIRED {
            assert!(obj.contains_key(key), "missing {key}: {row}");
        }
        for key in obj.keys() {
            assert!(
                allowed.contains(key.as_str()),
                "unexpected key {key}: {row}"
            );
        }
        assert_eq!(row["suite"], "transport", "{row}");
        let target = row["target"].as_str().expect("target is a string");
        let mtu = row["mtu"].as_u64().expect("mtu is an integer here");
        if privileged {
            assert_eq!(row["link"], "veth", "{row}");
            assert!(["tcp", "l2", "l2-loop"].contains(&target), "{row}");
            assert!([1500, 9000].contains(&mtu), "{row}");
        } else {
            assert_eq!(row["link"], "loopback", "{row}");
            assert_eq!(target, "tcp", "{row}");
        }
        let op = row["op"].as_str().expect("op is a string");
        assert!(["ping", "read", "write"].contains(&op), "op {op}");
        let size = row["size"].as_u64().expect("size is an integer");
        assert_eq!(size, if op == "ping" { 0 } else { 4096 }, "{row}");
        let qd = row["qd"].as_u64().expect("qd is an integer");
        assert!(qd >= 1, "{row}");
        let median = positive(row, "median_us");
        let p99 = positive(row, "p99_us");
        positive(row, "iops");
        assert!(p99 >= median, "p99 below the median: {row}");
        assert!(row["rounds"].as_u64().is_some_and(|r| r >= 1), "{row}");
        for key in ["median_us_range", "p99_us_range", "iops_range"] {
            let r = row[key].as_array().expect("a range is a list");
            assert_eq!(r.len(), 2, "{key}: {row}");
            let (lo, hi) = (r[0].as_f64(), r[1].as_f64());
            assert!(
                lo.zip(hi).is_some_and(|(lo, hi)| 0.0 < lo && lo <= hi),
                "{key}: {row}"
            );
        }
        assert!(
            seen.insert((target.to_owned(), mtu, op.to_owned(), qd)),
            "duplicate row {target} mtu {mtu} {op} qd {qd}"
        );
    }
    let targets: &[(&str, &[u64])] = if privileged {
        &[
            ("tcp", &[1500, 9000]),
            ("l2", &[1500, 9000]),
            ("l2-loop", &[1500, 9000]),
        ]
    } else {
        &[("tcp", &[])]
    };
    for &(target, mtus) in targets {
        for op in ["ping", "read"] {
            for qd in [1, 32] {
                let found = seen.iter().filter(|(t, m, o, q)| {
                    t == target && o == op && *q == qd && (mtus.is_empty() || mtus.contains(m))
                });
                let want = mtus.len().max(1);
                assert_eq!(
                    found.count(),
                    want,
                    "{target} {op} qd {qd}: want {want} row(s): {seen:?}"
                );
            }
        }
    }
}

#[test]
fn bad_flags_are_refused() {
    let run = Command::new(env!("CARGO_BIN_EXE_qbd-bench"))
        .args(["transport", "--node", "127.0.0.1:1"])
        .output()
        .expect("run qbd-bench");
    assert!(
        !run.status.success(),
        "--node without --cluster-key must fail"
    );
    let run = Command::new(env!("CARGO_BIN_EXE_qbd-bench"))
        .args(["transport", "--rounds", "0"])
        .output()
        .expect("run qbd-bench");
    assert!(!run.status.success(), "--rounds 0 must fail");
    for bad in [
        &["--loopback", "--target", "l2"][..],
        &["--l2-pin", "1"],
        &["--mtu", "576"],
    ] {
        let run = Command::new(env!("CARGO_BIN_EXE_qbd-bench"))
            .arg("transport")
            .args(bad)
            .output()
            .expect("run qbd-bench");
        assert!(!run.status.success(), "{bad:?} must fail");
    }
}

/// `--node` mode against a node the test serves itself (the library's
/// in-process node), twice: the second run reuses the volume the first left.
#[test]
fn node_mode_creates_then_reuses_its_volume() {
    let node = qbd_bench::node::LocalNode::start(qbd_bench::node::NodeOptions::loopback(Some(1)))
        .expect("node");
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("cluster.key");
    std::fs::write(&key_file, format!("{}\n", node.key().to_hex())).expect("key file");
    for run in 0..2 {
        let out = dir.path().join(format!("out{run}"));
        let res = Command::new(env!("CARGO_BIN_EXE_qbd-bench"))
            .args([
                "transport",
                "--quick",
                "--duration",
                "0.05",
                "--warmup",
                "0",
            ])
            .args(["--ops", "read,write", "--qd", "1,4", "--blocks", "64"])
            .arg("--node")
            .arg(node.addr().to_string())
            .arg("--cluster-key")
            .arg(&key_file)
            .arg("--out")
            .arg(&out)
            .output()
            .expect("run qbd-bench");
        assert!(
            res.status.success(),
            "run {run} failed: {}",
            String::from_utf8_lossy(&res.stderr)
        );
        let text = std::fs::read_to_string(out.join("results.json")).expect("results.json");
        let rows: Vec<Value> = serde_json::from_str(&text).expect("JSON");
        assert_eq!(rows.len(), 4, "{text}");
        for row in &rows {
            assert_eq!(row["target"], "tcp", "{row}");
            assert_eq!(row["link"], "remote", "{row}");
            assert!(row["mtu"].is_null(), "{row}");
        }
    }
    // A wrong key is refused at the handshake.
    std::fs::write(&key_file, "00".repeat(32)).expect("key file");
    let res = Command::new(env!("CARGO_BIN_EXE_qbd-bench"))
        .args(["transport", "--quick", "--ops", "ping", "--qd", "1"])
        .arg("--node")
        .arg(node.addr().to_string())
        .arg("--cluster-key")
        .arg(&key_file)
        .output()
        .expect("run qbd-bench");
    assert!(!res.status.success(), "a wrong key must fail");
}
