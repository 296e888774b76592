//! `ec:4+2` over six directories: a deleted data part, a truncated parity
//! part, a flipped data block and a flipped parity record are found by a
//! dry run (which writes nothing) and rebuilt; every data part then holds
//! exactly what was written, every row is one codeword, and with two
//! backends gone the volume still reads back from the rebuilt parity.
#![allow(clippy::unwrap_used)]

mod repair_support;

use qbd_master::volume::OpenMode;
use repair_support::{Cluster, assert_reads_back};

#[tokio::test]
async fn ec_4_2_damaged_parts_are_found_rebuilt_and_read_back() {
    let c = Cluster::new("ec:4+2", 6, 4);
    let want = c.fill(0xec42).await;
    c.delete(0, 1);
    c.truncate(1, 4);
    c.flip_data(2, 0, 2);
    c.flip_record(3, 5, 1);
    let before = c.tree_hash();
    let dry = c.repair(true, &[]).await;
    assert_eq!(c.tree_hash(), before, "a dry run writes nothing");
    assert_eq!(
        (dry.missing, dry.bad_files, dry.bad_blocks),
        (1, 1, 2),
        "found exactly the damage: {dry:?}"
    );
    assert_eq!((dry.parts_rebuilt, dry.blocks_repaired), (2, 2), "{dry:?}");

    let r = c.repair(false, &[]).await;
    assert!(r.all_repaired(), "{r:?}");
    let after = c.repair(true, &[]).await;
    assert_eq!(after.chunks_healthy, after.chunks_total, "{after:?}");
    c.assert_parts_hold(&want).await;
    {
        let v = c.open(OpenMode::Serve, &[]).await;
        for chunk in 0..4 {
            assert!(v.ec_inconsistent_rows(chunk).await.unwrap().is_empty());
        }
        assert_reads_back(&v, &want).await;
    }
    // Two backends away: every chunk is decoded from the rest, the
    // rebuilt parity included.
    let v = c.open(OpenMode::Repair, &[0, 1]).await;
    assert_reads_back(&v, &want).await;
}
