//! Issue 7's damage — one backend unreachable, a part file deleted,
//! another truncated, bytes flipped in the data of two others and in the
//! header of one more — on replicate:3 and ec:4+2, over directories and
//! qbd-nodes: `qbd verify` reports exactly the missing, truncated and
//! unreachable ones; `--deep` also exactly the flipped ones (as corrupt
//! blocks, the header as a bad header); exit 1, state DEGRADED, no chunk
//! lost; the backends are unchanged.

mod common;

use common::damage::tree_hash;
use common::expect;
use common::fixture::{Fixture, Kind};
use common::scenario::damage;

fn damaged(kind: Kind, redundancy: &str, backends: usize, parts: u8) {
    let mut f = Fixture::new(kind, "damaged", redundancy, backends);
    f.write(11);
    let d = damage(&mut f, parts);
    let before = tree_hash(&f.roots());

    let fast = f.verify(&["--json"]);
    assert_eq!(fast.code, Some(1), "{fast:#?}");
    let j = fast.json();
    assert_eq!(expect::problems(&j), expect::fast(&f, &d), "{fast:#?}");
    assert_eq!(j["state"], "DEGRADED");
    assert_eq!(j["chunks"]["lost"], 0);

    let deep = f.verify(&["--json", "--deep"]);
    assert_eq!(deep.code, Some(1), "{deep:#?}");
    let j = deep.json();
    assert_eq!(expect::problems(&j), expect::deep(&f, &d), "{deep:#?}");
    for p in j["problems"].as_array().into_iter().flatten() {
        if p["kind"] == "corrupt_blocks" {
            assert_eq!(p["count"], 1, "one flipped block: {p}");
            let flipped = d
                .flipped
                .iter()
                .find(|(c, part, _)| p["chunk"] == *c && p["part"] == *part)
                .map(|(_, _, b)| *b);
            assert_eq!(p["first"].as_u64(), flipped.map(u64::from), "{p}");
        }
    }
    assert_eq!(j["state"], "DEGRADED");
    assert_eq!(j["chunks"]["lost"], 0);

    let text = f.verify(&[]);
    println!("{}", text.stdout);
    assert_eq!(text.code, Some(1), "{text:#?}");
    assert!(text.stdout.contains("state: DEGRADED"), "{}", text.stdout);
    assert!(text.stdout.contains("qbd repair"), "{}", text.stdout);
    assert_eq!(tree_hash(&f.roots()), before, "verify changed the backends");
}

#[test]
fn replicate3_over_dirs() {
    damaged(Kind::Dirs, "replicate:3", 3, 3);
}

#[test]
fn ec4_2_over_dirs() {
    damaged(Kind::Dirs, "ec:4+2", 6, 6);
}

#[test]
fn replicate3_over_nodes() {
    damaged(Kind::Nodes, "replicate:3", 3, 3);
}

#[test]
fn ec4_2_over_nodes() {
    damaged(Kind::Nodes, "ec:4+2", 6, 6);
}
