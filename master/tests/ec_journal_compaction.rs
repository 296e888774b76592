//! Issue 14, defect 3, through a real `qbd-master`: journal compaction
//! must never roll back a FUA write.
//!
//! ec:2+1 over three `--dir` backends. Block X is written with A (no FUA,
//! no FLUSH: its journal record stays live), then with B under FUA (its
//! record retires at once), then 3000 FUA writes elsewhere push the journal
//! past its compaction threshold (16 MiB; a 4 KiB write is an ~8.3 KiB
//! record). The master is killed (SIGKILL) and restarted over the same
//! `--state`: the journal's replay must leave X at B — a compaction that
//! kept A's live record but dropped B's newer, retired one replayed A over
//! it — every FUA write reads back, and `qbd verify --deep` says HEALTHY.
//!
//! Everything lives on tmpfs so that the 3000 FUA round trips (each one
//! journal `fdatasync` and one sync per part) take seconds.

mod common;
mod ec_support;

use std::time::Duration;

use common::data::{assert_same, random_bytes};
use common::nodes::bins;
use common::raw::Client;
use common::tools::run;
use common::{Backing, Master, Volume};
use ec_support::journal_file;

const BLOCK: u64 = 4096;
/// Block X (chunk 0, row 0).
const X: u64 = 0;
/// FUA writes after B, to blocks 1..=FUA_WRITES.
const FUA_WRITES: u64 = 3000;
const SIZE: &str = "16M";

fn ec_args(volume: &Volume) -> Vec<String> {
    let mut args = volume.args(SIZE, &[]);
    let i = args
        .iter()
        .position(|a| a == "--redundancy")
        .expect("--redundancy in the common arguments");
    args[i + 1] = "ec:2+1".to_owned();
    args
}

/// A block's worth of bytes distinct for each `(seed, block)`.
fn block_data(seed: u64, block: u64) -> Vec<u8> {
    random_bytes(seed ^ (block << 20), BLOCK as usize)
}

#[test]
fn compaction_never_rolls_back_a_fua_write() {
    let volume = Volume::spread("ecj", 1, 3, Backing::Shm);
    let args = ec_args(&volume);
    let a = block_data(0xa, X);
    let b = block_data(0xb, X);
    let master = Master::start(&args);
    let mut c = Client::connect(master.addr, &master.volume);
    assert_eq!(c.write(X * BLOCK, &a), Ok(()), "write A (no FUA)");
    assert_eq!(c.write_fua(X * BLOCK, &b), Ok(()), "write B (FUA)");
    let mut elsewhere = Vec::with_capacity((FUA_WRITES * BLOCK) as usize);
    for blk in 1..=FUA_WRITES {
        let d = block_data(0xf, blk);
        assert_eq!(c.write_fua(blk * BLOCK, &d), Ok(()), "FUA write {blk}");
        elsewhere.extend_from_slice(&d);
    }
    let journal = journal_file(volume.state());
    let len = std::fs::metadata(&journal).expect("journal").len();
    assert!(
        len < 16 << 20,
        "the journal was compacted ({len} bytes, ~25 MB of records written)"
    );
    master.crash();
    drop(c);

    let master = Master::start(&args);
    assert!(
        master.wait_stderr("journal record(s)", Duration::from_secs(5)),
        "the journal was replayed; stderr:\n{}",
        master.stderr()
    );
    let mut c = Client::connect(master.addr, &master.volume);
    let x = c.read(X * BLOCK, BLOCK as u32).expect("read X");
    assert!(
        x == b,
        "X rolled back: it reads {}",
        if x == a { "A" } else { "neither A nor B" }
    );
    let mut got = Vec::with_capacity(elsewhere.len());
    for off in (BLOCK..(FUA_WRITES + 1) * BLOCK).step_by(1 << 20) {
        let len = (1 << 20).min((FUA_WRITES + 1) * BLOCK - off);
        got.extend(c.read(off, len as u32).expect("read back"));
    }
    assert_same("the FUA writes after B", &elsewhere, &got);
    c.disconnect();
    master.stop_cleanly();

    let mut verify = std::process::Command::new(&bins().qbd);
    verify.args(["verify", "--volume", "ecj", "--deep"]);
    for dir in volume.dirs() {
        verify.arg("--dir").arg(dir);
    }
    let out = run(verify);
    out.assert_success();
    assert!(out.stdout.contains("state: HEALTHY"), "{out}");
}
