//! A node's part directory larger than one `ListParts` page (65 536
//! files): 70 000 chunks of a replicate:1 volume on one node are all
//! listed (exit 0, every chunk in use and healthy), and a wrong size and a
//! stray on the second page are reported exactly (the wrong-size chunk,
//! with no other copy, as lost: FAULTED).

mod common;

use std::fs::File;

use common::damage::{truncate, volume_dir};
use common::expect;
use common::fixture::{Fixture, Kind};
use qbd_core::format::layout::PartLayout;

const CHUNKS: u64 = 70_000;
const CHUNK: u64 = 4096;

#[test]
fn listings_longer_than_a_page_are_complete() {
    let f = Fixture::new(Kind::Nodes, "paged", "replicate:1", 1);
    let mut args = f.master_args();
    for (flag, value) in [("--size", CHUNKS * CHUNK), ("--chunk-size", CHUNK)] {
        let i = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("no {flag}"));
        args[i + 1] = value.to_string();
    }
    let mut cmd = std::process::Command::new(&common::bins().master);
    cmd.args(&args);
    common::Daemon::start(cmd, "qbd-master: ready ").stop();

    // Sparse part files of the right size (the fast check opens none).
    let dir = volume_dir(f.root(0)).join("a");
    let size = PartLayout::new(CHUNK as u32, 1).file_size;
    for c in 0..CHUNKS {
        let p = dir.join(c.to_string());
        File::create(&p)
            .and_then(|file| file.set_len(size))
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
    let out = f.verify(&["--json"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let j = out.json();
    assert_eq!(j["chunks"]["in_use"], CHUNKS);
    assert_eq!(j["chunks"]["healthy"], CHUNKS);

    truncate(&dir.join((CHUNKS - 1).to_string()), 1);
    std::fs::write(dir.join(".5.new"), b"x").unwrap_or_else(|e| panic!("stray: {e}"));
    let out = f.verify(&["--json"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let want = [
        format!("part_wrong_size {} 0", CHUNKS - 1),
        // Its only part is unusable: the chunk is lost.
        format!("chunk_lost {}", CHUNKS - 1),
        "stray a/.5.new".to_owned(),
    ];
    let j = out.json();
    assert_eq!(expect::problems(&j), want.into_iter().collect());
    assert_eq!(j["state"], "FAULTED");
    assert_eq!(j["chunks"]["lost"], 1);
}
