//! An interrupted `qbd repair` resumes: a rate-limited run is killed
//! (SIGKILL) once its checkpoint exists; the next run starts from the
//! checkpoint's chunk, repairs what is left (a part deleted near the end)
//! and removes the checkpoint; `--restart` starts from chunk 0 again. The
//! volume reads back byte-identical.

mod common;
#[path = "common/repair_support.rs"]
mod repair_support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::fixture::{CHUNK, Fixture, Kind, SIZE};
use common::{damage, signal};
use repair_support::{command, repair, report, state};

/// The checkpoint file in the state directory, once one exists (a bounded
/// wait on the file, which is what the test waits for).
fn wait_checkpoint(dir: &PathBuf, limit: Duration) -> Option<PathBuf> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let found = std::fs::read_dir(dir).ok().and_then(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "repair"))
        });
        if found.is_some() {
            return found;
        }
        std::thread::park_timeout(Duration::from_millis(20));
    }
    None
}

#[test]
fn killed_repair_resumes_from_its_checkpoint() {
    let f = Fixture::new(Kind::Dirs, "resumed", "replicate:3", 3);
    let want = f.write(9);
    let chunks = SIZE / CHUNK;
    damage::delete(&f.part_path(chunks - 1, 0));
    // 1 MiB/s: three 256 KiB parts read per chunk, ~0.75 s a chunk.
    let mut slow = command(&f, &["--max-rate", "1M"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn qbd repair: {e}"));
    let cp = wait_checkpoint(&state(&f), Duration::from_secs(60));
    signal(&slow, "KILL");
    let _ = slow.wait();
    let cp = cp.unwrap_or_else(|| panic!("no checkpoint appeared"));
    let text = std::fs::read_to_string(&cp).unwrap_or_else(|e| panic!("read checkpoint: {e}"));
    let next: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("next_chunk = "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no next_chunk in {text}"));
    assert!(next > 0 && next < chunks, "{text}");

    let out = repair(&f, &["--json"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let r = report(&out);
    assert_eq!(r.first_chunk, next, "resumed from the checkpoint: {r:#?}");
    assert_eq!(r.chunks_total, chunks - next, "{r:#?}");
    assert_eq!((r.missing, r.parts_rebuilt), (1, 1), "{r:#?}");
    assert!(!cp.exists(), "a completed run removes its checkpoint");

    let all = repair(&f, &["--json", "--restart", "--dry-run"]);
    assert_eq!(all.code, Some(0), "{all:#?}");
    let r = report(&all);
    assert_eq!(
        (r.first_chunk, r.chunks_total, r.chunks_healthy),
        (0, chunks, chunks)
    );
    assert!(
        f.read_back() == want,
        "the volume reads back what was written"
    );
}
