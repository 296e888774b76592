//! Degraded vs healthy 4 KiB read latency of an ec:4+2 volume over
//! directories (in-process, no NBD): the first degraded read of a chunk
//! reconstructs the lost part for the whole chunk in one decode and caches
//! it, the following ones are memory reads. Prints the medians; run with
//! `--nocapture` (and `--release` for numbers worth quoting).
#![allow(clippy::unwrap_used)]

mod ec_support;

use std::time::{Duration, Instant};

use ec_support::{BLOCK, Cluster, Rng, kill};
use qbd_master::device::BlockDevice;

const CHUNK: u64 = 4 << 20;
const SIZE: u64 = 4 * CHUNK;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test]
async fn degraded_4k_reads_cost_about_what_healthy_ones_do_after_one_decode_per_chunk() {
    let c = Cluster::new(4, 2, SIZE, CHUNK);
    let mut rng = Rng(0x1a7);
    let model = rng.bytes(SIZE as usize);
    let (v, faults) = c.open(false).await;
    v.write(0, model.clone(), false).await.unwrap();
    v.flush().await.unwrap();
    let per_chunk = CHUNK / BLOCK;
    // Blocks of data part b (index 1) in every chunk: the dead backend's
    // part for chunk c is on slot (c + 1) mod 6; kill slot 1, so chunk 0's
    // part b is lost (and chunk c's part (1 - c) mod 6, when a data part).
    let lost: Vec<u64> = (0..per_chunk / 4).map(|r| r * 4 + 1).collect();
    let reads = 1000;
    let mut healthy = Vec::new();
    for _ in 0..reads {
        let b = lost[rng.below(lost.len() as u64) as usize];
        let t = Instant::now();
        let got = v.read(b * BLOCK, BLOCK as u32).await.unwrap();
        healthy.push(t.elapsed());
        assert!(got == model[(b * BLOCK) as usize..((b + 1) * BLOCK) as usize]);
    }
    kill(&faults[1]);
    let t = Instant::now();
    let first = v.read(lost[0] * BLOCK, BLOCK as u32).await.unwrap();
    let first_cost = t.elapsed();
    assert!(first == model[(lost[0] * BLOCK) as usize..((lost[0] + 1) * BLOCK) as usize]);
    assert_eq!(
        v.ec_cached_parts(),
        1,
        "one decode cached part b of chunk 0"
    );
    let mut degraded = Vec::new();
    for _ in 0..reads {
        let b = lost[rng.below(lost.len() as u64) as usize];
        let t = Instant::now();
        let got = v.read(b * BLOCK, BLOCK as u32).await.unwrap();
        degraded.push(t.elapsed());
        assert!(got == model[(b * BLOCK) as usize..((b + 1) * BLOCK) as usize]);
    }
    assert_eq!(v.ec_cached_parts(), 1);
    let (h, d) = (median(healthy), median(degraded));
    println!(
        "ec:4+2 4 KiB reads, {reads} each: healthy median {h:?}; degraded: first read (whole-chunk decode of 1 MiB part) {first_cost:?}, then median {d:?} ({:.2}x healthy)",
        d.as_secs_f64() / h.as_secs_f64()
    );
    // A write to the chunk drops its cached parts; the next read rebuilds.
    v.write(0, vec![7; BLOCK as usize], false).await.unwrap();
    assert_eq!(v.ec_cached_parts(), 0);
    assert_eq!(
        v.read(BLOCK, BLOCK as u32).await.unwrap(),
        &model[BLOCK as usize..2 * BLOCK as usize]
    );
    assert_eq!(v.ec_cached_parts(), 1);
}
