//! Master crashes between the part writes of an EC row update, together
//! with backend crashes that lose unsynced data, records or both: after a
//! restart over the same `--state`, the journal's replay makes every block
//! read as its value at the last completed FLUSH or a later written value,
//! and every row one codeword — also when the crash lost a data block of
//! the torn row, which the write-intent reconcile alone could only answer
//! with EIO.
#![allow(clippy::unwrap_used)]

mod ec_support;

use std::sync::Arc;

use ec_support::{BLOCK, Cluster, Rng, hold_writes, journal_file, kill, wait_writes, writes_done};
use qbd_core::backend::Backend;
use qbd_core::backend::fault::{CrashMode, FaultBackend, Gate};
use qbd_master::device::BlockDevice;
use qbd_master::volume::Volume;

const CHUNK: u64 = 64 << 10;
const MODES: [CrashMode; 3] = [CrashMode::All, CrashMode::DataOnly, CrashMode::MetaOnly];

fn blk(data: &[u8], b: u64) -> Vec<u8> {
    data[(b * BLOCK) as usize..((b + 1) * BLOCK) as usize].to_vec()
}

/// Per block, the values a read may return: the value at the last
/// completed FLUSH and every value written since.
struct Model(Vec<Vec<Vec<u8>>>);

impl Model {
    fn new(data: &[u8]) -> Model {
        let n = data.len() as u64 / BLOCK;
        Model((0..n).map(|b| vec![blk(data, b)]).collect())
    }

    fn write(&mut self, off: u64, data: &[u8]) {
        for i in 0..data.len() as u64 / BLOCK {
            self.0[(off / BLOCK + i) as usize].push(blk(data, i));
        }
    }

    /// After a FLUSH (or a recovery): what is read now is the only value.
    fn settle(&mut self, b: usize, v: Vec<u8>) {
        self.0[b] = vec![v];
    }

    /// Every block is one of its allowed values; they become the baseline.
    async fn check(&mut self, v: &Volume, what: &str) {
        for b in 0..self.0.len() {
            let got = v.read(b as u64 * BLOCK, BLOCK as u32).await;
            let got = got.unwrap_or_else(|e| panic!("{what}: block {b}: {e}"));
            assert!(
                self.0[b].contains(&got),
                "{what}: block {b} holds a value never written since the last FLUSH"
            );
            self.settle(b, got);
        }
    }
}

async fn assert_consistent(v: &Volume, chunks: u64, what: &str) {
    for c in 0..chunks {
        let bad = v.ec_inconsistent_rows(c).await.unwrap();
        assert!(
            bad.is_empty(),
            "{what}: chunk {c} rows {bad:?} inconsistent"
        );
    }
}

/// A row update held at every backend's gate, some parts let through.
struct Held {
    task: tokio::task::JoinHandle<()>,
    gates: Vec<Gate>,
}

/// Starts writing `data` at `off` (one chunk) with every write to `chunk`
/// held; waits until each backend in `touched` has a write at its gate.
async fn start_held_write(
    v: &Arc<Volume>,
    faults: &[Arc<FaultBackend>],
    chunk: u64,
    off: u64,
    data: Vec<u8>,
    touched: &[usize],
) -> Held {
    let gates: Vec<Gate> = faults.iter().map(|f| hold_writes(f, chunk)).collect();
    let vv = Arc::clone(v);
    let task = tokio::spawn(async move {
        let _ = vv.write(off, data, false).await;
    });
    for &i in touched {
        gates[i].wait_arrivals(1).await;
    }
    Held { task, gates }
}

/// Lets the held writes of backends `through` complete, syncs `synced`,
/// then crashes every backend (`mode`) and the master.
async fn crash(
    v: Arc<Volume>,
    faults: &[Arc<FaultBackend>],
    held: Held,
    through: &[usize],
    synced: &[usize],
    mode: CrashMode,
) {
    for &i in through {
        let before = writes_done(&faults[i]);
        held.gates[i].open();
        wait_writes(&faults[i], before + 1).await;
    }
    for &i in synced {
        faults[i].sync(None).await.unwrap();
    }
    for f in faults {
        f.crash(mode).await.unwrap();
    }
    held.task.abort();
    let _ = held.task.await;
    drop(v); // the master dies without a FLUSH
}

/// ec:2+1, one chunk (part p on backend p). Every crash point of a row
/// update — no part, the data part, the parity part, both — with their
/// writes synced or lost, in each crash mode, for a partial-row write and
/// a write spanning partial and full rows: after the restart every block
/// reads as the new value (the journal redoes the update, acknowledged or
/// not, once its record was durable), rows are consistent, and
/// reconstruction with any one backend down agrees.
#[tokio::test]
async fn every_crash_point_of_a_row_update_recovers_from_the_journal() {
    let writes: [(u64, u64, &[usize]); 2] = [(0, 1, &[0, 2]), (1, 6, &[0, 1, 2])];
    let mut rounds = 0;
    for (first, count, touched) in writes {
        for through in [&[][..], &[0], &[2], &[0, 2], &[0, 1, 2]] {
            if through.iter().any(|i| !touched.contains(i)) {
                continue;
            }
            for sync in [false, true] {
                for mode in MODES {
                    let what =
                        format!("blocks {first}+{count} through {through:?} sync {sync} {mode:?}");
                    one_crash_point(first, count, touched, through, sync, mode, &what).await;
                    rounds += 1;
                }
            }
        }
    }
    assert_eq!(rounds, (4 + 5) * 2 * 3);
}

async fn one_crash_point(
    first: u64,
    count: u64,
    touched: &[usize],
    through: &[usize],
    sync: bool,
    mode: CrashMode,
    what: &str,
) {
    let c = Cluster::new(2, 1, CHUNK, CHUNK);
    let mut rng = Rng(0xC0 + first * 7 + count);
    let a = rng.bytes(CHUNK as usize);
    let new = rng.bytes((count * BLOCK) as usize);
    let mut model = Model::new(&a);
    {
        let (v, faults) = c.open(true).await;
        v.write(0, a.clone(), false).await.unwrap();
        v.flush().await.unwrap();
        let v = Arc::new(v);
        let held = start_held_write(&v, &faults, 0, first * BLOCK, new.clone(), touched).await;
        model.write(first * BLOCK, &new);
        let synced: Vec<usize> = if sync { through.to_vec() } else { Vec::new() };
        crash(v, &faults, held, through, &synced, mode).await;
    }
    {
        let (v, _) = c.open(false).await;
        assert_consistent(&v, 1, what).await;
        for i in 0..count {
            let got = v.read((first + i) * BLOCK, BLOCK as u32).await.unwrap();
            assert_eq!(got, blk(&new, i), "{what}: block {} replayed", first + i);
        }
        model.check(&v, what).await;
    }
    for down in 0..3 {
        let (v, faults) = c.open(false).await;
        kill(&faults[down]);
        model
            .check(&v, &format!("{what}, backend {down} down"))
            .await;
    }
}

/// The case the write-intent reconcile cannot handle: the crash tears row
/// 0 (the parity holds the new write, the data block lost it — or the
/// other way round) and the other data part's backend is down at restart.
/// Without the journal, block 1 has no consistent decode set (EIO); with
/// it, the row is redone and block 1 reconstructs.
#[tokio::test]
async fn a_torn_row_that_also_lost_a_data_block_is_restored_from_the_journal() {
    // (backends whose write completes, backends synced before the crash)
    let cases: [(&[usize], &[usize]); 3] = [
        (&[0, 2], &[2]), // data block 0 written but lost, parity kept
        (&[0, 2], &[0]), // parity lost, data block 0 kept
        (&[2], &[2]),    // data write never reached backend 0
    ];
    for (through, synced) in cases {
        for mode in MODES {
            for journal in [true, false] {
                let what =
                    format!("through {through:?} synced {synced:?} {mode:?} journal {journal}");
                let c = Cluster::new(2, 1, CHUNK, CHUNK);
                let mut rng = Rng(0x70 + through.len() as u64);
                let a = rng.bytes(CHUNK as usize);
                let b0 = rng.bytes(BLOCK as usize);
                {
                    let (v, faults) = c.open(true).await;
                    v.write(0, a.clone(), false).await.unwrap();
                    v.flush().await.unwrap();
                    let v = Arc::new(v);
                    let held = start_held_write(&v, &faults, 0, 0, b0.clone(), &[0, 2]).await;
                    crash(v, &faults, held, through, synced, mode).await;
                }
                if !journal {
                    std::fs::remove_file(journal_file(c.state.path())).unwrap();
                }
                let (v, _) = c.open_with(false, |f| kill(&f[1])).await;
                let got1 = v.read(BLOCK, BLOCK as u32).await;
                if journal {
                    assert_eq!(got1.unwrap(), blk(&a, 1), "{what}: block 1 decodes");
                    assert_eq!(v.read(0, BLOCK as u32).await.unwrap(), b0, "{what}");
                } else {
                    // Every crash point leaves row 0 torn with its other
                    // data part down: reconcile cannot decode it.
                    assert!(got1.is_err(), "{what}: no journal, torn row: EIO");
                }
                for r in 1..8u64 {
                    let got = v.read((2 * r + 1) * BLOCK, BLOCK as u32).await.unwrap();
                    assert_eq!(got, blk(&a, 2 * r + 1), "{what}: intact row {r}");
                }
            }
        }
    }
}

/// A crash during a journal append: the torn last record is ignored (that
/// update was never acknowledged), the records before it are replayed.
#[tokio::test]
async fn a_torn_journal_tail_is_ignored() {
    for cut in [1usize, 100, 4096] {
        let c = Cluster::new(2, 1, CHUNK, CHUNK);
        let mut rng = Rng(0x7A11 + cut as u64);
        let a = rng.bytes(CHUNK as usize);
        let w1 = rng.bytes(BLOCK as usize);
        let w2 = rng.bytes(BLOCK as usize);
        {
            let (v, faults) = c.open(true).await;
            v.write(0, a.clone(), false).await.unwrap();
            v.flush().await.unwrap();
            let v = Arc::new(v);
            // Block 0 (row 0) and block 8 (row 4): both journaled, neither
            // reaches a backend.
            let held = start_held_write(&v, &faults, 0, 0, w1.clone(), &[0, 2]).await;
            let vv = Arc::clone(&v);
            let w2c = w2.clone();
            let second = tokio::spawn(async move {
                let _ = vv.write(8 * BLOCK, w2c, false).await;
            });
            held.gates[0].wait_arrivals(2).await;
            held.gates[2].wait_arrivals(2).await;
            crash(v, &faults, held, &[], &[], CrashMode::All).await;
            second.abort();
            let _ = second.await;
        }
        let path = journal_file(c.state.path());
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - cut as u64).unwrap();
        drop(f);
        let (v, _) = c.open(false).await;
        assert_eq!(
            v.read(0, BLOCK as u32).await.unwrap(),
            w1,
            "cut {cut}: record 1 replayed"
        );
        assert_eq!(
            v.read(8 * BLOCK, BLOCK as u32).await.unwrap(),
            blk(&a, 8),
            "cut {cut}: the torn record is ignored"
        );
        assert_consistent(&v, 1, "torn tail").await;
        drop(v);
        let (v, faults) = c.open(false).await;
        kill(&faults[0]);
        assert_eq!(
            v.read(0, BLOCK as u32).await.unwrap(),
            w1,
            "cut {cut}: decoded"
        );
    }
}

/// ec:4+2 over two chunks: rounds of random block writes and FLUSHes, then
/// a write held mid-row with a random subset of its parts let through and
/// synced, a crash of every backend in a random mode and of the master.
#[tokio::test]
async fn random_crash_rounds_ec_4_2() {
    let (k, m, chunks) = (4usize, 2usize, 2u64);
    let size = chunks * CHUNK;
    let c = Cluster::new(k, m, size, CHUNK);
    let mut rng = Rng(0xEC42);
    let base = rng.bytes(size as usize);
    let mut model = Model::new(&base);
    {
        let (v, _) = c.open(true).await;
        v.write(0, base, false).await.unwrap();
        v.flush().await.unwrap();
    }
    let bpc = CHUNK / BLOCK;
    for round in 0..8 {
        let (v, faults) = c.open(true).await;
        for _ in 0..6 {
            let b = rng.below(size / BLOCK);
            let n = 1 + rng.below((size / BLOCK - b).min(6));
            let d = rng.bytes((n * BLOCK) as usize);
            v.write(b * BLOCK, d.clone(), false).await.unwrap();
            model.write(b * BLOCK, &d);
            if rng.below(3) == 0 {
                v.flush().await.unwrap();
                model.check(&v, "after flush").await;
            }
        }
        let chunk = rng.below(chunks);
        let first = rng.below(bpc);
        let count = 1 + rng.below((bpc - first).min(5));
        let mut touched: Vec<usize> = (first..first + count)
            .map(|b| (b % k as u64) as usize)
            .chain(k..k + m)
            .map(|p| ((chunk + p as u64) % (k + m) as u64) as usize)
            .collect();
        touched.sort_unstable();
        touched.dedup();
        let through: Vec<usize> = touched
            .iter()
            .copied()
            .filter(|_| rng.below(2) == 0)
            .collect();
        let synced: Vec<usize> = through
            .iter()
            .copied()
            .filter(|_| rng.below(2) == 0)
            .collect();
        let mode = MODES[rng.below(3) as usize];
        let off = (chunk * bpc + first) * BLOCK;
        let d = rng.bytes((count * BLOCK) as usize);
        let v = Arc::new(v);
        let held = start_held_write(&v, &faults, chunk, off, d.clone(), &touched).await;
        model.write(off, &d);
        crash(v, &faults, held, &through, &synced, mode).await;
        drop(faults); // the backends' locks go with the crashed master
        let what = format!(
            "round {round}: {count} block(s) at {off} through {through:?} synced {synced:?} {mode:?}"
        );
        let (v, faults) = c.open(false).await;
        assert_consistent(&v, chunks, &what).await;
        model.check(&v, &what).await;
        drop(v);
        drop(faults);
        let (v, faults) = c.open(false).await;
        kill(&faults[round % (k + m)]);
        kill(&faults[(round + 3) % (k + m)]);
        model.check(&v, &format!("{what}, two backends down")).await;
    }
}
