//! Torn EC rows: a data block newer than the parity that should cover it
//! is detected and never used for reconstruction; reconcile after a master
//! crash makes the row one codeword again.
#![allow(clippy::unwrap_used)]

mod ec_support;

use ec_support::{BLOCK, Cluster, Rng, kill};
use qbd_core::backend::Backend;
use qbd_core::backend::fault::CrashMode;
use qbd_master::device::BlockDevice;

const CHUNK: u64 = 64 << 10;

fn block(data: &[u8], b: u64) -> &[u8] {
    &data[(b * BLOCK) as usize..((b + 1) * BLOCK) as usize]
}

/// ec:2+1, one chunk: row r = blocks 2r (part a, backend 0) and 2r+1
/// (part b, backend 1), parity part c on backend 2.
#[tokio::test]
async fn a_torn_row_is_never_decoded_and_reconcile_repairs_it() {
    let c = Cluster::new(2, 1, CHUNK, CHUNK);
    let mut rng = Rng(0x7042);
    let a = rng.bytes(CHUNK as usize);
    let b0 = rng.bytes(BLOCK as usize);
    {
        let (v, _) = c.open(false).await;
        v.write(0, a.clone(), false).await.unwrap();
        v.flush().await.unwrap();
    }
    let parity = c.part_file(2, 2, 0);
    let old_parity = std::fs::read(&parity).unwrap();
    {
        let (v, _) = c.open(false).await;
        v.write(0, b0.clone(), false).await.unwrap();
        v.flush().await.unwrap();
    }
    // The parity update of that write is lost: row 0 is torn (data block 0
    // at the new generation, parity covering the old one).
    std::fs::write(&parity, &old_parity).unwrap();
    {
        let (v, faults) = c.open(false).await;
        kill(&faults[1]);
        assert_eq!(
            v.read(0, BLOCK as u32).await.unwrap(),
            b0,
            "own part: read directly"
        );
        let torn = v.read(BLOCK, BLOCK as u32).await;
        assert!(
            torn.is_err(),
            "block 1 of the torn row must be EIO, a naive decode gives wrong bytes"
        );
        assert_eq!(
            v.read(3 * BLOCK, BLOCK as u32).await.unwrap(),
            block(&a, 3),
            "an intact row decodes"
        );
    }
    // Without a trusted write-intent log every written chunk is reconciled:
    // the parity is re-encoded from the data, and block 1 decodes again.
    for e in std::fs::read_dir(c.state.path()).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let (v, faults) = c.open(false).await;
    kill(&faults[1]);
    assert_eq!(v.read(BLOCK, BLOCK as u32).await.unwrap(), block(&a, 1));
    assert_eq!(v.read(0, BLOCK as u32).await.unwrap(), b0);
}

/// The crash wrapper loses the parity backend's unsynced writes while the
/// data backend had synced: after the master restarts, the write-intent
/// log's reconcile makes the row consistent, and every block reads as its
/// flushed or its later written value, also with a data backend down.
#[tokio::test]
async fn parity_lost_in_a_crash_is_reconciled_at_restart() {
    for mode in [CrashMode::All, CrashMode::DataOnly, CrashMode::MetaOnly] {
        let c = Cluster::new(2, 1, CHUNK, CHUNK);
        let mut rng = Rng(0x7043);
        let a = rng.bytes(CHUNK as usize);
        let b = rng.bytes(4 * BLOCK as usize);
        {
            let (v, faults) = c.open(true).await;
            v.write(0, a.clone(), false).await.unwrap();
            v.flush().await.unwrap();
            // Blocks 0..4 = rows 0 and 1; only the data backends sync.
            v.write(0, b.clone(), false).await.unwrap();
            faults[0].sync(None).await.unwrap();
            faults[1].sync(None).await.unwrap();
            faults[2].crash(mode).await.unwrap();
        } // the master dies without a FLUSH
        let (v, faults) = c.open(false).await;
        kill(&faults[0]);
        for blk in 0..4u64 {
            let got = v.read(blk * BLOCK, BLOCK as u32).await.unwrap();
            assert_eq!(got, block(&b, blk), "{mode:?}: block {blk}");
        }
        assert_eq!(
            v.read(4 * BLOCK, BLOCK as u32).await.unwrap(),
            block(&a, 4),
            "{mode:?}"
        );
    }
}
