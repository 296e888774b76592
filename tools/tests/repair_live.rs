//! Repair while the master serves the volume: `qbd repair` finds the
//! master's admin socket and runs inside it, rate-limited so it is still
//! going while fio writes 4 KiB blocks with verification through the same
//! master. fio passes (no write lost, every block reads back), the repair
//! exits 0, and `qbd verify --deep` is clean afterwards. Part files were
//! damaged before the master started (deleted, truncated, flipped).
//! A `--replace` whose OLD is none of the master's backends is refused by
//! the master (exit 2).

mod common;
#[path = "common/repair_support.rs"]
mod repair_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::fixture::{Fixture, Kind};
use common::{damage, run_bounded, wait_bounded};
use repair_support::command;

fn live(kind: Kind, redundancy: &str, backends: usize) {
    if Command::new("fio").arg("--version").output().is_err() {
        println!("SKIPPED: fio not installed");
        return;
    }
    let f = Fixture::new(kind, "live", redundancy, backends);
    f.write(7);
    damage::delete(&f.part_path(1, 0));
    damage::truncate(&f.part_path(3, 1), 4096);
    damage::flip_data(&f.part_path(5, 2), 0);
    let master = f.start_master();
    let uri = format!("nbd://{}/live", master.field("tcp"));

    // 2 MiB/s: the repair of 16 chunks takes seconds, fio well under that.
    let mut rep = command(&f, &["--json", "--max-rate", "2M"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn qbd repair: {e}"));
    let (tx, rx) = mpsc::channel();
    let stderr = rep.stderr.take();
    std::thread::spawn(move || {
        let Some(s) = stderr else { return };
        for line in BufReader::new(s).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let started = rx
        .iter()
        .find(|l| l.contains("through the running master"))
        .is_some();
    assert!(started, "qbd repair did not go through the admin socket");

    let mut fio = Command::new("fio");
    fio.args([
        "--name=v",
        "--ioengine=nbd",
        &format!("--uri={uri}"),
        "--rw=randwrite",
        "--bs=4k",
        "--iodepth=16",
        "--size=4M",
        "--loops=3",
        "--verify=crc32c",
        "--do_verify=1",
        "--verify_fatal=1",
        "--verify_state_save=0",
    ]);
    let out = run_bounded(fio, Duration::from_secs(120));
    assert_eq!(out.code, Some(0), "fio: {out:#?}");
    assert!(out.stdout.contains("err= 0"), "fio: {out:#?}");
    assert!(
        !out.stderr.contains("verify"),
        "fio verify failed: {out:#?}"
    );
    assert!(
        matches!(rep.try_wait(), Ok(None)),
        "the repair was still running while fio wrote"
    );
    let status = wait_bounded(&mut rep, Duration::from_secs(120));
    let mut json = String::new();
    if let Some(mut o) = rep.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut o, &mut json);
    }
    assert_eq!(status.and_then(|s| s.code()), Some(0), "qbd repair: {json}");
    let r: qbd_master::volume::repair::RepairReport =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("report ({e}): {json}"));
    assert!(r.all_repaired() && r.chunks_done == 16, "{r:#?}");
    let refused = repair_support::repair(&f, &["--replace", "a=b"]);
    assert_eq!(
        refused.code,
        Some(2),
        "--replace through a master: {refused:#?}"
    );
    assert!(
        refused.stderr.contains("none of this master's backends"),
        "{refused:#?}"
    );
    master.stop();
    let deep = f.verify(&["--deep"]);
    assert_eq!(deep.code, Some(0), "verify --deep after: {deep:#?}");
}

#[test]
fn replicate3_over_dirs_while_fio_writes() {
    live(Kind::Dirs, "replicate:3", 3);
}

#[test]
fn ec4_2_over_dirs_while_fio_writes() {
    live(Kind::Dirs, "ec:4+2", 6);
}

#[test]
fn replicate3_over_nodes_while_fio_writes() {
    live(Kind::Nodes, "replicate:3", 3);
}

#[test]
fn ec4_2_over_nodes_while_fio_writes() {
    live(Kind::Nodes, "ec:4+2", 6);
}
