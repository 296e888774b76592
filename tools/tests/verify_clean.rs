//! `qbd verify` on a volume written through a real master and left
//! alone: exit 0, state HEALTHY, no problem, every chunk at full
//! redundancy, fast and deep, text and JSON; nothing on the backends
//! changes. On replicate:3 and ec:4+2, over directories and qbd-nodes.

mod common;

use common::damage::tree_hash;
use common::fixture::{CHUNK, Fixture, Kind, SIZE};

fn clean(kind: Kind, redundancy: &str, backends: usize) {
    let f = Fixture::new(kind, "clean", redundancy, backends);
    f.write(7);
    let before = tree_hash(&f.roots());
    for deep in [false, true] {
        let mut extra = vec!["--json"];
        if deep {
            extra.push("--deep");
        }
        let out = f.verify(&extra);
        assert_eq!(out.code, Some(0), "{out:#?}");
        let j = out.json();
        assert_eq!(j["state"], "HEALTHY", "{out:#?}");
        assert_eq!(j["deep"], deep);
        assert_eq!(j["problems"].as_array().map(Vec::len), Some(0), "{out:#?}");
        let chunks = SIZE / CHUNK;
        assert_eq!(j["chunks"]["in_use"], chunks);
        assert_eq!(j["chunks"]["healthy"], chunks);
        if deep {
            assert!(j["blocks_checked"].as_u64().unwrap_or(0) > 0, "{out:#?}");
        }
        assert_eq!(out.stderr, "", "nothing on stderr");
    }
    let text = f.verify(&["--deep"]);
    assert_eq!(text.code, Some(0), "{text:#?}");
    assert!(text.stdout.contains("state: HEALTHY"), "{}", text.stdout);
    assert!(text.stdout.contains("problems: none"), "{}", text.stdout);
    assert_eq!(tree_hash(&f.roots()), before, "verify changed the backends");
}

#[test]
fn replicate3_over_dirs() {
    clean(Kind::Dirs, "replicate:3", 3);
}

#[test]
fn ec4_2_over_dirs() {
    clean(Kind::Dirs, "ec:4+2", 6);
}

#[test]
fn replicate3_over_nodes() {
    clean(Kind::Nodes, "replicate:3", 3);
}

#[test]
fn ec4_2_over_nodes() {
    clean(Kind::Nodes, "ec:4+2", 6);
}
