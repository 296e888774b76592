//! Writes a master makes while a node is down are recorded in the other
//! nodes' degraded maps; with the node back (and no master to resync it),
//! `qbd verify` reports exactly those parts stale — the parts of the
//! chunks written meanwhile that live on that node — and, deep, nothing
//! more (stale parts are not scanned: they are known to be behind).

mod common;

use std::collections::BTreeSet;

use common::expect;
use common::fixture::{CHUNK, Fixture, Kind};
use common::raw::Client;

#[test]
fn parts_written_while_their_node_was_down_are_stale() {
    let mut f = Fixture::new(Kind::Nodes, "stale", "replicate:3", 3);
    f.write(21);
    let down = 1;
    let master = f.start_master();
    f.make_unreachable(down);
    let addr = master
        .field("tcp")
        .parse()
        .unwrap_or_else(|e| panic!("tcp=: {e}"));
    let mut c = Client::connect(addr, &f.name);
    let written_chunks = 3u64;
    let data = vec![0x77u8; (written_chunks * CHUNK) as usize];
    assert_eq!(c.write(0, &data), Ok(()), "write with a node down");
    assert_eq!(c.flush(), Ok(()), "flush with a node down");
    c.disconnect();
    master.stop();
    f.make_reachable(down);

    let mut expected = BTreeSet::new();
    for chunk in 0..written_chunks {
        for part in 0..3u8 {
            if f.backend_of(chunk, part) == down {
                expected.insert(format!("part_stale {chunk} {part}"));
            }
        }
    }
    assert_eq!(
        expected.len(),
        written_chunks as usize,
        "one part per chunk on the node"
    );
    for extra in [&["--json"][..], &["--json", "--deep"][..]] {
        let out = f.verify(extra);
        assert_eq!(out.code, Some(1), "{out:#?}");
        let j = out.json();
        assert_eq!(expect::problems(&j), expected, "{out:#?}");
        assert_eq!(j["state"], "DEGRADED");
        assert_eq!(j["chunks"]["degraded"], written_chunks);
    }
}
