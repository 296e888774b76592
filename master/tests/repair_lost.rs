//! A block with no good copy left is lost, never zeros: replicate:3 with
//! one part file deleted and the same block flipped in both other copies.
//! The repair rebuilds the deleted part, reports the block lost (not all
//! repaired), and afterwards that block reads as an error from every
//! copy — the rebuilt one included — while every other block reads back.
#![allow(clippy::unwrap_used)]

mod repair_support;

use qbd_master::device::BlockDevice;
use qbd_master::volume::OpenMode;
use repair_support::{BLOCK, CHUNK, Cluster};

#[tokio::test]
async fn block_without_a_good_copy_stays_an_error_after_repair() {
    let c = Cluster::new("replicate:3", 3, 2);
    let want = c.fill(0x1057).await;
    let lost_block = 6;
    c.delete(1, 0);
    c.flip_data(1, 1, lost_block);
    c.flip_data(1, 2, lost_block);

    let r = c.repair(false, &[]).await;
    assert_eq!(
        (r.missing, r.parts_rebuilt, r.lost_blocks),
        (1, 1, 1),
        "{r:?}"
    );
    assert!(!r.all_repaired(), "a lost block is a problem left: {r:?}");

    let v = c.open(OpenMode::Serve, &[]).await;
    let at = CHUNK + u64::from(lost_block) * BLOCK;
    assert!(
        v.read(at, BLOCK as u32).await.is_err(),
        "the lost block reads as an error, not as zeros"
    );
    for b in (0..2 * CHUNK / BLOCK).filter(|&b| b * BLOCK != at) {
        let got = v.read(b * BLOCK, BLOCK as u32).await.unwrap();
        let i = (b * BLOCK) as usize;
        assert!(got == want[i..i + BLOCK as usize], "block {b} reads back");
    }
}
