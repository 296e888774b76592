//! SIGTERM in the middle of `qbd-bench e2e`: the run stops with a non-zero
//! status saying it was interrupted, and leaves nothing behind: no process
//! still using its tmpfs work directory (nbdkit, fio, qbd daemons), the
//! directory gone, and (as root, with the qbd-l2 target) none of its
//! network namespaces (`qbdt-<pid>-*`) left.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long the run may take to reach its first measured line, and to exit.
const BOUND: Duration = Duration::from_secs(120);

#[test]
fn sigterm_mid_run_stops_everything_it_started() {
    if ["fio", "nbdkit"]
        .iter()
        .any(|t| common::require_tool(t).is_none())
    {
        return;
    }
    common::build_daemons();
    let mut child = Command::new(env!("CARGO_BIN_EXE_qbd-bench"))
        .args([
            "e2e",
            "--quick",
            "--runtime",
            "2",
            "--redundancy",
            "replicate:3",
        ])
        .args(["--target", "qbd-tcp,qbd-l2,nbdkit"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qbd-bench");
    let pid = child.id();
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let mut work = None;
    // Up to the first measured run: every target is up, fio is running.
    loop {
        let line = rx.recv_timeout(BOUND).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("no measured run within {BOUND:?}:\n{}", log.join("\n"))
        });
        if let Some(dir) = line.strip_prefix("qbd-bench: work directory ") {
            work = Some(dir.to_owned());
        }
        let measured = line.starts_with('[');
        log.push(line);
        if measured {
            break;
        }
    }
    let work = work.expect("the run names its work directory");
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid}");
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let exit = done_rx
        .recv_timeout(BOUND)
        .expect("qbd-bench exits after SIGTERM")
        .expect("wait for qbd-bench");
    log.extend(rx.try_iter());
    let log = log.join("\n");
    assert!(!exit.success(), "an interrupted run must fail:\n{log}");
    assert!(log.contains("interrupted"), "it says why:\n{log}");

    assert!(
        !std::path::Path::new(&work).exists(),
        "{work} left behind:\n{log}"
    );
    let users = processes_mentioning(&work);
    assert!(users.is_empty(), "still running: {users:?}\n{log}");
    let prefix = format!("qbdt-{pid}-");
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "namespaces left: {left:?}\n{log}");
}

/// Command lines (of live processes) that contain `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(Result::ok)
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}
