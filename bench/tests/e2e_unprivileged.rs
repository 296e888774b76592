//! `qbd-bench e2e` without the privileges for network namespaces (run
//! here as root with CAP_NET_ADMIN, CAP_NET_RAW and CAP_SYS_ADMIN dropped
//! from the bounding set by `setpriv`): the qbd-tcp rows are measured, the
//! qbd-l2 ones are skipped with a note saying why; with
//! `QBD_REQUIRE_PRIVILEGED=1` the same run is refused instead. Needs root
//! (to drop capabilities) and fio/setpriv; skipped otherwise.

mod common;

use std::process::{Command, Output};

fn run_without_caps(require_privileged: bool, out: &std::path::Path) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--bounding-set", "-net_admin,-net_raw,-sys_admin"])
        .arg(env!("CARGO_BIN_EXE_qbd-bench"))
        .args(["e2e", "--quick", "--target", "qbd-tcp,qbd-l2"])
        .args(["--redundancy", "replicate:3", "--out"])
        .arg(out)
        .env_remove("RUST_BACKTRACE");
    if require_privileged {
        cmd.env("QBD_REQUIRE_PRIVILEGED", "1");
    } else {
        cmd.env_remove("QBD_REQUIRE_PRIVILEGED");
    }
    cmd.output().expect("run setpriv qbd-bench")
}

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"));
    uid.and_then(|f| f.split_whitespace().nth(1)) == Some("0")
}

#[test]
fn without_namespaces_l2_is_skipped_with_a_note_or_refused_when_required() {
    if ["fio", "setpriv"]
        .iter()
        .any(|t| common::require_tool(t).is_none())
    {
        return;
    }
    if !is_root() {
        if std::env::var("QBD_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1") {
            panic!("not root, and QBD_REQUIRE_PRIVILEGED=1");
        }
        println!("SKIPPED: not root (cannot drop capabilities to test their absence)");
        return;
    }
    common::build_daemons();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = run_without_caps(false, dir.path());
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(run.status.success(), "{}\n{stdout}\n{stderr}", run.status);
    for text in [&stdout, &stderr] {
        assert!(
            text.contains("qbd-l2 rows skipped") && text.contains("CAP_NET_ADMIN"),
            "the skip and its reason are reported:\n{text}"
        );
    }
    let rows = common::rows(dir.path());
    assert!(rows.iter().all(|r| r["target"] == "qbd-tcp"), "{rows:?}");
    assert_eq!(rows.len(), 6, "one row per workload: {rows:?}");
    common::check_markdown(dir.path(), &["qbd-l2 rows skipped", "| qbd-tcp |"]);

    let refused = run_without_caps(true, &dir.path().join("refused"));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "must be refused:\n{stderr}");
    assert!(
        stderr.contains("QBD_REQUIRE_PRIVILEGED") && stderr.contains("qbd-l2 needs"),
        "the refusal says why:\n{stderr}"
    );
    assert!(
        !stderr.contains("stack backtrace"),
        "no panic dump:\n{stderr}"
    );
    assert!(!dir.path().join("refused").exists(), "nothing written");
}
