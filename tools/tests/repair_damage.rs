//! Issue 7's damage — one backend unreachable, a part file deleted,
//! another truncated, bytes flipped in the data of two others and in the
//! header of one more — on replicate:3 and ec:4+2, over directories and
//! qbd-nodes. `qbd repair --dry-run` reports it all and changes nothing;
//! `qbd repair` rebuilds every damaged part and leaves (and reports) the
//! unreachable backend's parts: exit 1. With the backend back, a second
//! repair exits 0, `qbd verify --deep` is clean, and the volume reads back
//! byte-identical through a master.

mod common;
#[path = "common/repair_support.rs"]
mod repair_support;

use common::damage::tree_hash;
use common::fixture::{Fixture, Kind, SIZE};
use common::scenario::damage;
use repair_support::{repair, report};

fn repaired(kind: Kind, redundancy: &str, backends: usize, parts: u8) {
    let mut f = Fixture::new(kind, "damaged", redundancy, backends);
    let want = f.write(11);
    let d = damage(&mut f, parts);
    let chunks = SIZE / common::fixture::CHUNK;

    let before = tree_hash(&f.roots());
    let dry = repair(&f, &["--dry-run", "--json"]);
    assert_eq!(
        dry.code,
        Some(1),
        "unreachable parts cannot be fixed: {dry:#?}"
    );
    assert_eq!(
        tree_hash(&f.roots()),
        before,
        "a dry run changed the backends"
    );
    let r = report(&dry);
    assert_eq!((r.missing, r.bad_files, r.bad_blocks), (1, 2, 2), "{r:#?}");
    assert_eq!((r.parts_rebuilt, r.blocks_repaired), (3, 2), "{r:#?}");

    let out = repair(&f, &["--json"]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    let r = report(&out);
    assert_eq!((r.missing, r.bad_files, r.bad_blocks), (1, 2, 2), "{r:#?}");
    assert_eq!((r.parts_rebuilt, r.blocks_repaired), (3, 2), "{r:#?}");
    assert_eq!(r.parts_left, chunks, "one part per chunk left: {r:#?}");
    assert_eq!(r.lost_blocks, 0, "{r:#?}");
    let gone = f.address(d.unreachable);
    assert!(
        r.unreachable.iter().any(|u| u.starts_with(&gone)),
        "{gone} reported unreachable: {r:#?}"
    );

    f.make_reachable(d.unreachable);
    let out = repair(&f, &[]);
    println!("{}", out.stdout);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(out.stdout.contains("state: "), "{}", out.stdout);
    let deep = f.verify(&["--deep"]);
    assert_eq!(deep.code, Some(0), "verify --deep after repair: {deep:#?}");
    assert!(
        f.read_back() == want,
        "the volume reads back what was written"
    );
}

#[test]
fn replicate3_over_dirs() {
    repaired(Kind::Dirs, "replicate:3", 3, 3);
}

#[test]
fn ec4_2_over_dirs() {
    repaired(Kind::Dirs, "ec:4+2", 6, 6);
}

#[test]
fn replicate3_over_nodes() {
    repaired(Kind::Nodes, "replicate:3", 3, 3);
}

#[test]
fn ec4_2_over_nodes() {
    repaired(Kind::Nodes, "ec:4+2", 6, 6);
}
