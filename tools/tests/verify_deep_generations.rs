//! `--deep` compares generations across parts, so it finds parts that
//! missed writes even when no degraded map says so (here the maps are
//! deleted after a node missed writes): on replicate:3 the node's copies
//! of the chunks written meanwhile are stale blocks (every block of them);
//! on ec:4+2 those chunks' rows are torn, on exactly the node's parts
//! (a data part behind the parity's cover, or a parity part whose cover
//! is behind the data). The fast check, which
//! trusts the maps, sees nothing; neither reports any other chunk.

mod common;

use std::collections::BTreeSet;

use common::damage::volume_dir;
use common::fixture::{CHUNK, Fixture, Kind};
use common::raw::Client;

const WRITTEN: u64 = 3;

/// Writes chunks 0..WRITTEN while backend `down` is stopped, then deletes
/// every degraded map.
fn miss_writes(f: &mut Fixture, down: usize) {
    let master = f.start_master();
    f.make_unreachable(down);
    let addr = master
        .field("tcp")
        .parse()
        .unwrap_or_else(|e| panic!("tcp=: {e}"));
    let mut c = Client::connect(addr, &f.name);
    let data = vec![0x3cu8; (WRITTEN * CHUNK) as usize];
    assert_eq!(c.write(0, &data), Ok(()));
    assert_eq!(c.flush(), Ok(()));
    c.disconnect();
    master.stop();
    f.make_reachable(down);
    let mut removed = 0;
    for root in f.roots() {
        let dir = volume_dir(&root);
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(".stale.") {
                std::fs::remove_file(e.path()).unwrap_or_else(|err| panic!("rm: {err}"));
                removed += 1;
            }
        }
    }
    assert!(removed > 0, "the master recorded the missed writes");
}

/// Each problem as `kind chunk part count first`.
fn problem_lines(j: &serde_json::Value) -> BTreeSet<String> {
    j["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            format!(
                "{} {} {} {} {}",
                p["kind"].as_str().unwrap_or("?"),
                p["chunk"],
                p["part"],
                p["count"],
                p["first"]
            )
        })
        .collect()
}

/// Runs the scenario with `down` missing the writes; the deep report must
/// hold exactly `kind` on `down`'s parts of the written chunks, `count`
/// each from part block 0.
fn scenario(redundancy: &str, backends: usize, down_holds: u8, kind: &str, count: u64) {
    let mut f = Fixture::new(Kind::Nodes, "gens", redundancy, backends);
    f.write(31);
    let down = f.backend_of(0, down_holds);
    miss_writes(&mut f, down);
    let fast = f.verify(&["--json"]);
    assert_eq!(fast.code, Some(0), "the maps are gone: {fast:#?}");
    let deep = f.verify(&["--json", "--deep"]);
    assert_eq!(deep.code, Some(1), "{deep:#?}");
    let j = deep.json();
    let mut expected = BTreeSet::new();
    for chunk in 0..WRITTEN {
        for part in 0..backends as u8 {
            if f.backend_of(chunk, part) == down {
                expected.insert(format!("{kind} {chunk} {part} {count} 0"));
            }
        }
    }
    assert_eq!(problem_lines(&j), expected, "{deep:#?}");
    assert_eq!(j["chunks"]["lost"], 0);
}

#[test]
fn stale_replicas_without_a_degraded_map() {
    scenario("replicate:3", 3, 2, "stale_blocks", CHUNK / 4096);
}

#[test]
fn torn_ec_rows_without_a_degraded_map() {
    // The node holds data parts of chunks 0 and 1 and a parity part of
    // chunk 2: both ways of being behind are exercised.
    scenario("ec:4+2", 6, 1, "torn_rows", CHUNK / 4096 / 4);
}
