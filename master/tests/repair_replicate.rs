//! `replicate:3` over four directories: a deleted, a truncated part file
//! and flipped data and record bytes are found by a dry run (which writes
//! nothing), rebuilt by the repair, and every replica then holds exactly
//! what was written.
#![allow(clippy::unwrap_used)]

mod repair_support;

use qbd_master::volume::OpenMode;
use repair_support::{Cluster, assert_reads_back};

#[tokio::test]
async fn replicate_3_damaged_parts_are_found_rebuilt_and_read_back() {
    let c = Cluster::new("replicate:3", 4, 6);
    let want = c.fill(0x5eed).await;
    c.delete(0, 0);
    c.truncate(1, 1);
    c.flip_data(2, 2, 3);
    c.flip_record(3, 0, 5);
    let before = c.tree_hash();
    let dry = c.repair(true, &[]).await;
    assert_eq!(c.tree_hash(), before, "a dry run writes nothing");
    assert_eq!(
        (dry.missing, dry.bad_files, dry.bad_blocks),
        (1, 1, 2),
        "found exactly the damage: {dry:?}"
    );
    assert_eq!((dry.parts_rebuilt, dry.blocks_repaired), (2, 2), "{dry:?}");
    assert!(dry.all_repaired() && dry.dry_run, "{dry:?}");

    let r = c.repair(false, &[]).await;
    assert!(r.all_repaired(), "{r:?}");
    assert_eq!(r.chunks_done, 6);
    let after = c.repair(true, &[]).await;
    assert_eq!(after.chunks_healthy, after.chunks_total, "{after:?}");
    c.assert_parts_hold(&want).await;
    let v = c.open(OpenMode::Serve, &[]).await;
    assert_reads_back(&v, &want).await;
}
