//! EC volumes over directories: round trips, degraded reads and writes,
//! data loss as EIO, torn rows, resync.
#![allow(clippy::unwrap_used)]

mod ec_support;

use ec_support::{BLOCK, Cluster, Rng, check_all, kill, random_writes};
use qbd_master::device::BlockDevice;

const CHUNK: u64 = 64 << 10;

async fn round_trip(k: usize, m: usize, seed: u64) {
    let size = 6 * CHUNK + 5 * BLOCK;
    let c = Cluster::new(k, m, size, CHUNK);
    let mut model = vec![0u8; size as usize];
    let mut rng = Rng(seed);
    {
        let (v, _) = c.open(false).await;
        check_all(&v, &model, "fresh volume").await;
        random_writes(&v, &mut model, &mut rng, 60, CHUNK).await;
        check_all(&v, &model, "after writes").await;
        // Zero and trim, aligned and not.
        v.write_zeroes(3 * BLOCK + 100, 5 * BLOCK, false, false)
            .await
            .unwrap();
        model[(3 * BLOCK + 100) as usize..(8 * BLOCK + 100) as usize].fill(0);
        v.trim(CHUNK, CHUNK + 3 * BLOCK, false).await.unwrap();
        model[CHUNK as usize..(2 * CHUNK + 3 * BLOCK) as usize].fill(0);
        check_all(&v, &model, "after zeroes").await;
        v.flush().await.unwrap();
    }
    let (v, _) = c.open(false).await;
    check_all(&v, &model, "after reopen").await;
}

#[tokio::test]
async fn ec_2_1_round_trips_random_writes() {
    round_trip(2, 1, 0x2b1).await;
}

#[tokio::test]
async fn ec_4_2_round_trips_random_writes() {
    round_trip(4, 2, 0x4b2).await;
}

/// `dead` backends fail everything from the start of the second phase:
/// every byte still reads back, writes go on, and after a restart with the
/// backends back the stale parts are resynced and serve alone.
async fn degraded(k: usize, m: usize, dead: &[usize], seed: u64) {
    let size = 5 * CHUNK;
    let c = Cluster::new(k, m, size, CHUNK);
    let mut model = vec![0u8; size as usize];
    let mut rng = Rng(seed);
    {
        let (v, faults) = c.open(false).await;
        random_writes(&v, &mut model, &mut rng, 30, CHUNK).await;
        v.flush().await.unwrap();
        for &d in dead {
            kill(&faults[d]);
        }
        check_all(&v, &model, "degraded reads").await;
        random_writes(&v, &mut model, &mut rng, 40, CHUNK).await;
        check_all(&v, &model, "degraded writes").await;
        v.flush().await.unwrap();
    }
    // Restart with every backend healthy: the stale parts are resynced.
    {
        let (v, _) = c.open(false).await;
        check_all(&v, &model, "after resync").await;
    }
    // Now the dead ones alone must be enough together with K - |dead| others:
    // kill M other backends than the resynced ones, if possible.
    let others: Vec<usize> = (0..k + m).filter(|i| !dead.contains(i)).take(m).collect();
    let (v, faults) = c.open(false).await;
    for &o in &others {
        kill(&faults[o]);
    }
    check_all(&v, &model, "resynced parts serving").await;
}

#[tokio::test]
async fn ec_2_1_one_backend_down_reads_writes_and_resyncs() {
    degraded(2, 1, &[1], 0x21d).await;
}

#[tokio::test]
async fn ec_4_2_one_backend_down_reads_writes_and_resyncs() {
    degraded(4, 2, &[3], 0x42d1).await;
}

#[tokio::test]
async fn ec_4_2_two_backends_down_reads_writes_and_resyncs() {
    degraded(4, 2, &[0, 4], 0x42d2).await;
}

#[tokio::test]
async fn ec_4_2_three_backends_down_fail_with_eio_never_wrong_data() {
    let size = 4 * CHUNK;
    let c = Cluster::new(4, 2, size, CHUNK);
    let mut model = vec![0u8; size as usize];
    let mut rng = Rng(0x4233);
    let (v, faults) = c.open(false).await;
    model = rng.bytes(size as usize);
    v.write(0, model.clone(), false).await.unwrap();
    random_writes(&v, &mut model, &mut rng, 30, CHUNK).await;
    v.flush().await.unwrap();
    for d in [1, 2, 5] {
        kill(&faults[d]);
    }
    let dead = [1, 2, 5];
    let per_chunk = CHUNK / BLOCK;
    for b in 0..size / BLOCK {
        let off = b * BLOCK;
        let (chunk, part) = (b / per_chunk, ((b % per_chunk) % 4) as usize);
        let lost = dead.contains(&c.slot(chunk, part));
        match v.read(off, BLOCK as u32).await {
            Ok(got) => {
                assert!(
                    !lost,
                    "block {b}: its part and two more are lost, yet it read"
                );
                assert!(
                    got == model[off as usize..(off + BLOCK) as usize],
                    "block {b}: wrong data"
                );
            }
            Err(e) => {
                assert!(lost, "block {b}: its own part is alive, yet {e:?}");
                assert!(matches!(e, qbd_master::device::DeviceError::Io(_)), "{e:?}");
            }
        }
    }
    assert!(v.write(0, vec![1; BLOCK as usize], false).await.is_err());
}
