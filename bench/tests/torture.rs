//! The torture harness, bounded for CI: `qbd-bench torture` against real
//! daemons in each configuration for a short budget (TCP always; QBD-L2 in
//! namespaces as root, skipped with a note otherwise and a failure under
//! `QBD_REQUIRE_PRIVILEGED=1`). A run passes only if no block was lost or
//! wrong and verify + repair ended HEALTHY; and the checker is checked:
//! with every copy of a chunk deleted (`--self-test`) the run must fail.
//! Longer runs by hand: docs/torture.md.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Seconds of faults per configuration in CI.
const BUDGET: &str = "45s";

/// One run at a time: each starts up to seven daemons, and the fault
/// timing assumes the machine is not shared with another run.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Runs one configuration; returns (exit success, output, JSON summary).
fn torture(config: &str, seed: &str, extra: &[&str], dir: &Path) -> (bool, String, Value) {
    let _one = serial();
    let json = dir.join(format!("{config}.json"));
    let out = Command::new(env!("CARGO_BIN_EXE_qbd-bench"))
        .args(["torture", "--config", config, "--seed", seed])
        .args(["--duration", BUDGET, "--json"])
        .arg(&json)
        .args(extra)
        .output()
        .expect("run qbd-bench torture");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = std::fs::read_to_string(&json)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    (out.status.success(), text, summary)
}

fn assert_passed(config: &str, seed: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, text, summary) = torture(config, seed, &[], dir.path());
    assert!(ok, "{config}: torture run failed:\n{text}");
    assert_eq!(summary["passed"], Value::Bool(true), "{config}:\n{text}");
    assert!(
        summary["cycles"].as_u64().unwrap_or(0) >= 3,
        "{config}: fewer than 3 fault cycles in {BUDGET}:\n{text}"
    );
    let writes = summary["requests"]["write"].as_u64().unwrap_or(0);
    assert!(writes > 0, "{config}: the workload wrote nothing:\n{text}");
    println!("{config}: {text}");
}

#[test]
fn replicated_over_tcp_loses_nothing_under_faults() {
    common::build_daemons();
    assert_passed("r3-tcp", "101");
}

#[test]
fn erasure_coded_over_tcp_loses_nothing_under_faults() {
    common::build_daemons();
    assert_passed("ec42-tcp", "102");
}

fn privileged(what: &str) -> bool {
    if is_root() {
        return true;
    }
    let reason = format!("{what} needs root (network namespaces)");
    if std::env::var("QBD_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1") {
        panic!("{reason}, and QBD_REQUIRE_PRIVILEGED=1");
    }
    println!("SKIPPED: {reason}");
    false
}

#[test]
fn replicated_over_l2_with_loss_loses_nothing_under_faults() {
    if !privileged("torture r3-l2") {
        return;
    }
    common::build_daemons();
    assert_passed("r3-l2", "103");
}

#[test]
fn erasure_coded_over_l2_loses_nothing_under_faults() {
    if !privileged("torture ec42-l2") {
        return;
    }
    common::build_daemons();
    assert_passed("ec42-l2", "104");
}

#[test]
fn the_checker_catches_a_chunk_lost_on_every_node() {
    common::build_daemons();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("run");
    let out = out.to_str().expect("utf-8 path");
    let (ok, text, summary) = torture("r3-tcp", "105", &["--self-test", "--out", out], dir.path());
    assert!(
        !ok,
        "every copy of chunk 0 was deleted, yet the run passed:\n{text}"
    );
    assert_eq!(summary["passed"], Value::Bool(false), "{text}");
    assert!(
        text.contains("FINDING") || text.contains("FAILED: check pass"),
        "the failure names what was found:\n{text}"
    );
    assert!(
        text.contains("kept in"),
        "a failing run keeps its logs:\n{text}"
    );
}
