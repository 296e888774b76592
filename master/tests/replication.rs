//! Replication over directories: read repair, degraded writes and resync,
//! and crash consistency with the crash wrapper.
#![allow(clippy::unwrap_used)]

mod replication_support;

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use qbd_core::backend::Backend;
use qbd_core::backend::fault::{Action, CrashMode, FaultBackend, Gate, OpKind, Rule};
use qbd_core::format::alloc::{AllocMap, BitmapKind};
use qbd_master::device::BlockDevice;
use replication_support::{BLOCK, CHUNK, Cluster, Rng, block_value, value_id};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

/// Flips one bit of a file at `at`.
fn flip(path: &std::path::Path, at: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x04], at).unwrap();
}

fn data_offset(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).unwrap().len() - CHUNK
}

#[tokio::test]
async fn bit_flips_in_one_replica_read_correctly_and_are_repaired_on_disk() {
    let c = Cluster::new(3, 3, 1 << 20);
    let data = pattern(4 * CHUNK as usize, 7);
    {
        let (v, _) = c.open(false).await;
        v.write(0, data.clone(), false).await.unwrap();
        v.flush().await.unwrap();
    }
    // Chunk 0's part a is on backend 0 (placement (c + p) mod 3), and reads
    // of chunk 0 try part a first: flip a data bit of block 2 and a bit of
    // block 5's meta record there.
    let a = c.part_file(0, 'a', 0);
    let flipped_at = data_offset(&a) + 2 * BLOCK + 100;
    flip(&a, flipped_at);
    flip(&a, 4096 + 5 * 192 + 20);
    {
        let (v, _) = c.open(false).await;
        assert_eq!(v.read(0, data.len() as u32).await.unwrap(), data);
    }
    let mut byte = [0u8; 1];
    std::fs::File::open(&a)
        .unwrap()
        .read_exact_at(&mut byte, flipped_at)
        .unwrap();
    assert_eq!(
        byte[0],
        data[2 * BLOCK as usize + 100],
        "the flipped byte is rewritten"
    );
    for only in 0..3 {
        let v = c.open_reading_only_from(only).await;
        assert_eq!(
            v.read(0, CHUNK as u32).await.unwrap(),
            data[..CHUNK as usize],
            "replica {only}"
        );
    }
}

fn stale_chunks(c: &Cluster, holder: usize, of: &FaultBackend, uuid: uuid::Uuid) -> Vec<u64> {
    let path = c.dir(holder).join("1").join(format!(".stale.{}", of.id()));
    let Ok(bytes) = std::fs::read(&path) else {
        return Vec::new();
    };
    AllocMap::decode_kind(&bytes, BitmapKind::Stale, uuid)
        .unwrap()
        .map
        .iter()
        .collect()
}

#[tokio::test]
async fn a_backend_failing_writes_is_degraded_then_resynced_and_serves_alone_identically() {
    let c = Cluster::new(3, 3, 1 << 20);
    let mut model = pattern(1 << 20, 1);
    let (v, faults) = c.open(false).await;
    let uuid = v.meta().uuid;
    v.write(0, model.clone(), false).await.unwrap();
    v.flush().await.unwrap();
    faults[2].add_rule(Rule {
        op: OpKind::Write,
        chunk: None,
        block: None,
        action: Action::Fail,
        times: None,
    });
    for (off, seed) in [(5000u64, 2u8), (3 * CHUNK + 10, 3), (9 * CHUNK, 4)] {
        let d = pattern(70_000, seed);
        v.write(off, d.clone(), false).await.unwrap();
        model[off as usize..off as usize + d.len()].copy_from_slice(&d);
    }
    v.flush().await.unwrap();
    assert_eq!(
        v.read(0, 1 << 20).await.unwrap(),
        model,
        "I/O continues on the others"
    );
    let expected: Vec<u64> = vec![0, 1, 3, 4, 9, 10];
    for holder in [0, 1] {
        assert_eq!(
            stale_chunks(&c, holder, &faults[2], uuid),
            expected,
            "degraded map on backend {holder}"
        );
    }
    drop((v, faults));
    // Backend 2 works again; the restart resyncs its stale parts.
    let (v, faults) = c.open(false).await;
    for holder in [0, 1] {
        assert!(
            stale_chunks(&c, holder, &faults[2], uuid).is_empty(),
            "cleared after resync"
        );
    }
    drop((v, faults));
    let v = c.open_reading_only_from(2).await;
    assert_eq!(
        v.read(0, 1 << 20).await.unwrap(),
        model,
        "the resynced replica alone serves identical data"
    );
}

/// What each block may read as after a crash: its value at the last
/// completed FLUSH, or any value written after it.
struct Model {
    flushed: Vec<u32>,
    since: Vec<Vec<u32>>,
}

impl Model {
    fn new(blocks: usize) -> Self {
        Model {
            flushed: vec![0; blocks],
            since: vec![Vec::new(); blocks],
        }
    }

    fn wrote(&mut self, block: usize, id: u32) {
        self.since[block].push(id);
    }

    fn flushed(&mut self) {
        for (f, s) in self.flushed.iter_mut().zip(&mut self.since) {
            if let Some(&last) = s.last() {
                *f = last;
            }
            s.clear();
        }
    }

    fn allows(&self, block: usize, id: u32) -> bool {
        self.flushed[block] == id || self.since[block].contains(&id)
    }

    /// Checks a whole-volume read after recovery and makes it the new
    /// baseline (recovery syncs what it settles).
    fn check_and_settle(&mut self, all: &[u8], seed: u64) {
        for b in 0..self.flushed.len() {
            let got = value_id(&all[b * BLOCK as usize..(b + 1) * BLOCK as usize]);
            assert!(
                got.is_some_and(|g| self.allows(b, g)),
                "seed {seed}: block {b} reads {got:?}, allowed {} or {:?}",
                self.flushed[b],
                self.since[b]
            );
            self.flushed[b] = got.unwrap_or(0);
            self.since[b].clear();
        }
    }
}

async fn crash_round(seed: u64, backends: usize, replicas: u8) {
    let size = 8 * CHUNK;
    let blocks = (size / BLOCK) as usize;
    let c = Cluster::new(backends, replicas, size);
    let mut rng = Rng(seed);
    let mut model = Model::new(blocks);
    let mut id = 0u32;
    for _epoch in 0..3 {
        let (v, faults) = c.open(true).await;
        model.check_and_settle(&v.read(0, size as u32).await.unwrap(), seed);
        let v = Arc::new(v);
        for _ in 0..rng.below(40) + 10 {
            if rng.below(6) == 0 {
                v.flush().await.unwrap();
                model.flushed();
                continue;
            }
            let first = rng.below(blocks as u64 - 3) as usize;
            let n = rng.below(3) as usize + 1;
            let mut buf = Vec::new();
            for b in first..first + n {
                id += 1;
                model.wrote(b, id);
                buf.extend(block_value(id));
            }
            v.write(first as u64 * BLOCK, buf, false).await.unwrap();
        }
        // One more write, held on one backend while the others complete it.
        let first = rng.below(blocks as u64 - 3) as usize;
        let held = rng.below(backends as u64) as usize;
        let gate = Gate::new();
        faults[held].add_rule(Rule {
            op: OpKind::Write,
            chunk: None,
            block: None,
            action: Action::Hold(gate.clone()),
            times: Some(1),
        });
        id += 1;
        model.wrote(first, id);
        let (v2, data) = (v.clone(), block_value(id));
        let inflight =
            tokio::spawn(async move { v2.write(first as u64 * BLOCK, data, false).await });
        let replica_holds_it = (0..replicas as usize)
            .any(|p| (first as u64 / (CHUNK / BLOCK) + p as u64) % backends as u64 == held as u64);
        if replica_holds_it {
            gate.wait_arrivals(1).await;
        }
        for f in &faults {
            let mode =
                [CrashMode::All, CrashMode::DataOnly, CrashMode::MetaOnly][rng.below(3) as usize];
            f.crash(mode).await.unwrap();
        }
        gate.open();
        // The held write ends (with an error: its backend crashed).
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), inflight).await;
        drop(v);
        drop(faults);
    }
    let (v, _) = c.open(false).await;
    let all = v.read(0, size as u32).await.unwrap();
    model.check_and_settle(&all, seed);
    drop(v);
    for only in 0..backends {
        let v = c.open_reading_only_from(only).await;
        for chunk in 0..8u64 {
            let holds = (0..replicas as u64).any(|p| (chunk + p) % backends as u64 == only as u64);
            if !holds {
                continue;
            }
            let got = v.read(chunk * CHUNK, CHUNK as u32).await.unwrap();
            let want = &all[(chunk * CHUNK) as usize..((chunk + 1) * CHUNK) as usize];
            assert!(
                got == want,
                "seed {seed}: replica {only} disagrees on chunk {chunk}"
            );
        }
    }
}

#[tokio::test]
async fn after_a_master_crash_every_block_is_its_flushed_or_a_later_value_on_every_replica() {
    for seed in 1..=12u64 {
        crash_round(seed * 0x9e37_79b9, 3, 3).await;
    }
}

#[tokio::test]
async fn crash_consistency_holds_for_a_single_copy_too() {
    for seed in 1..=8u64 {
        crash_round(seed * 0x51_7cc1, 1, 1).await;
    }
}

#[tokio::test]
async fn crash_consistency_with_two_copies_over_three_backends() {
    for seed in 1..=8u64 {
        crash_round(seed * 0x2545_f491, 3, 2).await;
    }
}

#[tokio::test]
async fn a_failed_backend_that_answers_again_is_readmitted_and_resynced_while_serving() {
    let c = Cluster::new(3, 3, 1 << 20);
    let mut model = pattern(1 << 20, 9);
    let (v, faults) = c.open(false).await;
    let uuid = v.meta().uuid;
    v.write(0, model.clone(), false).await.unwrap();
    faults[1].add_rule(Rule {
        op: OpKind::Write,
        chunk: None,
        block: None,
        action: Action::Fail,
        times: Some(1),
    });
    let d = pattern(3 * CHUNK as usize, 10);
    v.write(2 * CHUNK, d.clone(), false).await.unwrap();
    model[2 * CHUNK as usize..5 * CHUNK as usize].copy_from_slice(&d);
    v.flush().await.unwrap();
    // Chunks 2..4 missed a write; all 16 were written but never synced on
    // backend 1 before it failed, so the FLUSH records all of them.
    assert_eq!(
        stale_chunks(&c, 0, &faults[1], uuid),
        (0..16).collect::<Vec<u64>>()
    );
    let mut schedule = Vec::new();
    let resynced = v.maintain(&mut schedule, std::time::Instant::now()).await;
    assert_eq!(resynced, 16);
    assert!(stale_chunks(&c, 0, &faults[1], uuid).is_empty());
    // Backend 1 takes writes again.
    let e = pattern(4096, 11);
    v.write(7 * CHUNK, e.clone(), false).await.unwrap();
    model[7 * CHUNK as usize..7 * CHUNK as usize + 4096].copy_from_slice(&e);
    v.flush().await.unwrap();
    drop((v, faults));
    let v = c.open_reading_only_from(1).await;
    assert_eq!(
        v.read(0, 1 << 20).await.unwrap(),
        model,
        "the readmitted replica alone serves identical data"
    );
}

/// Found by `qbd-bench torture --config r3-l2`: a node killed during its resync cost one request
/// deadline (5 s) per stale chunk, each under the chunk's lock, for minutes. Two chunks failing
/// in a row now fail the backend and end its resync; once readmitted, it is resynced whole.
#[tokio::test]
async fn a_resync_that_keeps_failing_gives_the_backend_up_instead_of_trying_every_chunk() {
    let c = Cluster::new(3, 3, 1 << 20);
    let mut model = pattern(1 << 20, 31);
    let (v, faults) = c.open(false).await;
    let uuid = v.meta().uuid;
    v.write(0, model.clone(), false).await.unwrap();
    faults[1].add_rule(Rule {
        op: OpKind::Write,
        chunk: None,
        block: None,
        action: Action::Fail,
        times: Some(1),
    });
    let d = pattern(CHUNK as usize, 32);
    v.write(CHUNK, d.clone(), false).await.unwrap();
    model[CHUNK as usize..2 * CHUNK as usize].copy_from_slice(&d);
    v.flush().await.unwrap();
    assert_eq!(stale_chunks(&c, 0, &faults[1], uuid).len(), 16);
    // The resync's first two rebuilds fail (a part is recreated first).
    faults[1].add_rule(Rule {
        op: OpKind::Allocate,
        chunk: None,
        block: None,
        action: Action::Fail,
        times: Some(2),
    });
    let now = std::time::Instant::now();
    let resynced = v.maintain(&mut Vec::new(), now).await;
    assert_eq!(
        resynced, 0,
        "the resync stopped after two failures in a row"
    );
    assert_eq!(stale_chunks(&c, 0, &faults[1], uuid).len(), 16);
    let later = now + std::time::Duration::from_secs(600);
    let resynced = v.maintain(&mut Vec::new(), later).await;
    assert_eq!(resynced, 16, "readmitted and resynced whole");
    drop((v, faults));
    let v = c.open_reading_only_from(1).await;
    assert_eq!(v.read(0, 1 << 20).await.unwrap(), model);
}

#[tokio::test]
async fn a_deleted_part_is_rebuilt_without_failing_its_backend() {
    let c = Cluster::new(3, 3, 1 << 20);
    let mut model = pattern(4 * CHUNK as usize, 21);
    {
        let (v, _) = c.open(false).await;
        v.write(0, model.clone(), false).await.unwrap();
        v.flush().await.unwrap();
    }
    std::fs::remove_file(c.part_file(1, 'b', 0)).unwrap();
    let (v, faults) = c.open(false).await;
    let uuid = v.meta().uuid;
    let d = pattern(8192, 22);
    v.write(4096, d.clone(), false).await.unwrap();
    model[4096..4096 + 8192].copy_from_slice(&d);
    let e = pattern(4096, 23);
    v.write(CHUNK, e.clone(), false).await.unwrap();
    model[CHUNK as usize..CHUNK as usize + 4096].copy_from_slice(&e);
    v.flush().await.unwrap();
    assert_eq!(
        stale_chunks(&c, 0, &faults[1], uuid),
        vec![0],
        "only the chunk whose part is gone"
    );
    let resynced = v.maintain(&mut Vec::new(), std::time::Instant::now()).await;
    assert_eq!(resynced, 1);
    drop((v, faults));
    let v = c.open_reading_only_from(1).await;
    assert_eq!(v.read(0, 4 * CHUNK as u32).await.unwrap(), model);
}

/// Reads of a `replicate:2` volume on two backends, counted per backend.
fn reads_per_backend(faults: &[Arc<FaultBackend>]) -> Vec<usize> {
    use qbd_core::backend::fault::Event;
    faults
        .iter()
        .map(|f| {
            let e = f.events();
            e.iter().filter(|e| matches!(e, Event::Read { .. })).count()
        })
        .collect()
}

#[tokio::test]
async fn reads_spread_over_both_replicas() {
    let c = Cluster::new(2, 2, 1 << 20);
    let data = pattern(4 * CHUNK as usize, 3);
    let (v, faults) = c.open(false).await;
    v.write(0, data.clone(), false).await.unwrap();
    v.flush().await.unwrap();
    let before = reads_per_backend(&faults);
    // Whole-volume reads, and many reads of one block of one chunk.
    for _ in 0..10 {
        assert_eq!(v.read(0, data.len() as u32).await.unwrap(), data);
    }
    for _ in 0..100 {
        let got = v.read(BLOCK, BLOCK as u32).await.unwrap();
        assert_eq!(got, data[BLOCK as usize..2 * BLOCK as usize]);
    }
    let after = reads_per_backend(&faults);
    let served: Vec<usize> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let total: usize = served.iter().sum();
    assert!(total >= 140, "{served:?}");
    for (i, n) in served.iter().enumerate() {
        assert!(
            *n * 3 >= total,
            "backend {i} served {n} of {total} reads: {served:?}"
        );
    }
}

#[tokio::test]
async fn with_one_replica_failed_every_read_goes_to_the_other() {
    let c = Cluster::new(2, 2, 1 << 20);
    let data = pattern(2 * CHUNK as usize, 5);
    let (v, faults) = c.open(false).await;
    v.write(0, data.clone(), false).await.unwrap();
    v.flush().await.unwrap();
    faults[1].add_rule(Rule {
        op: OpKind::Read,
        chunk: None,
        block: None,
        action: Action::Fail,
        times: None,
    });
    for _ in 0..20 {
        assert_eq!(v.read(0, data.len() as u32).await.unwrap(), data);
    }
}
