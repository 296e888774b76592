use std::collections::BTreeMap;
use std::sync::Arc;

use qbd_core::backend::WriteData;
use qbd_core::ec::Cover;
use qbd_core::generation::Generation;

use super::*;

const VOL: Uuid = Uuid::from_u128(0x77);
const SHAPE: Shape = Shape {
    k: 2,
    m: 1,
    block_size: 16,
};

fn update(row: u32, fill: u8) -> RowUpdate {
    RowUpdate {
        chunk: 1,
        first_row: row,
        generation: Generation(u64::from(row) + 10),
        covers: vec![Cover::new(&[Generation(1), Generation(2)]).expect("cover")],
        parts: vec![
            PartPut {
                part: 0,
                first: row,
                count: 1,
                data: WriteData::Bytes(vec![fill; 16]),
            },
            PartPut {
                part: 2,
                first: row,
                count: 1,
                data: WriteData::Bytes(vec![!fill; 16]),
            },
        ],
    }
}

fn open(dir: &Path, prev: u64, epoch: u64) -> (Journal, Outstanding) {
    Journal::open(dir, VOL, prev, epoch, SHAPE).expect("open")
}

fn rows(o: &Outstanding) -> Vec<u32> {
    o.records.iter().map(|r| r.update.first_row).collect()
}

#[tokio::test]
async fn unretired_records_come_back_in_order_and_a_flush_retires_them() {
    let d = tempfile::tempdir().expect("tempdir");
    let (j, out) = open(d.path(), 0, 1);
    assert!(out.records.is_empty());
    let t1 = j.append(&update(1, 1)).await.expect("append");
    j.done(t1);
    let mark = j.flush_started();
    let t2 = j.append(&update(2, 2)).await.expect("append");
    j.flushed(mark).await;
    assert!(!j.is_empty(), "record 2 is still live");
    drop(j); // crash: record 2's row update never ended
    let (j, out) = open(d.path(), 1, 2);
    assert_eq!(rows(&out), vec![1, 2], "the cut of record 1 was not needed");
    let _ = t2;
    j.replayed().await.expect("replayed");
    let t3 = j.append(&update(3, 3)).await.expect("append");
    j.done(t3);
    let mark = j.flush_started();
    j.flushed(mark).await;
    assert!(j.is_empty(), "everything retired: cut back to the header");
    drop(j);
    let (_, out) = open(d.path(), 2, 3);
    assert!(out.records.is_empty());
}

#[tokio::test]
async fn a_torn_tail_is_ignored_and_a_flipped_byte_ends_the_log() {
    let d = tempfile::tempdir().expect("tempdir");
    let (j, _) = open(d.path(), 0, 1);
    for r in 0..3 {
        let _ = j.append(&update(r, r as u8)).await.expect("append");
    }
    drop(j);
    let path = d.path().join(format!("{VOL}.journal"));
    let full = std::fs::read(&path).expect("read");
    let rec = (full.len() - HEADER_LEN) / 3;
    std::fs::write(&path, &full[..full.len() - 5]).expect("cut");
    let (j, out) = open(d.path(), 1, 2);
    assert_eq!(rows(&out), vec![0, 1]);
    assert!(
        out.notes.iter().any(|n| n.contains("torn")),
        "{:?}",
        out.notes
    );
    drop(j);
    // The reopen cut the tail and re-tagged the file; flip a byte of record 1.
    let mut b = std::fs::read(&path).expect("read");
    assert_eq!(b.len(), HEADER_LEN + 2 * rec);
    b[HEADER_LEN + rec + 30] ^= 1;
    std::fs::write(&path, &b).expect("write");
    let (_, out) = open(d.path(), 2, 3);
    assert_eq!(rows(&out), vec![0]);
}

#[tokio::test]
async fn a_journal_of_another_epoch_is_not_replayed() {
    let d = tempfile::tempdir().expect("tempdir");
    let (j, _) = open(d.path(), 0, 1);
    let _ = j.append(&update(0, 9)).await.expect("append");
    drop(j);
    let (_, out) = open(d.path(), 4, 5);
    assert!(out.records.is_empty());
    assert!(out.notes.iter().any(|n| n.contains("epoch 1")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs() {
    let d = tempfile::tempdir().expect("tempdir");
    let (j, _) = open(d.path(), 0, 1);
    let j = Arc::new(j);
    let tasks: Vec<_> = (0..64)
        .map(|r| {
            let j = Arc::clone(&j);
            tokio::spawn(async move { j.append(&update(r, r as u8)).await.map(|t| j.done(t)) })
        })
        .collect();
    for t in tasks {
        t.await.expect("join").expect("append");
    }
    assert!(
        j.fsyncs() < 64,
        "64 concurrent appends took {} fsyncs",
        j.fsyncs()
    );
    drop(j);
    let (_, out) = open(d.path(), 1, 2);
    assert_eq!(out.records.len(), 64);
    assert!(out.records.windows(2).all(|w| w[0].seq < w[1].seq));
}

#[tokio::test]
async fn a_large_file_with_few_live_records_is_compacted() {
    let d = tempfile::tempdir().expect("tempdir");
    let shape = Shape {
        k: 2,
        m: 1,
        block_size: 1 << 20,
    };
    let (j, _) = Journal::open(d.path(), VOL, 0, 1, shape).expect("open");
    let big = |row: u32| RowUpdate {
        parts: vec![PartPut {
            part: 0,
            first: row,
            count: 1,
            data: WriteData::Bytes(vec![row as u8; 1 << 20]),
        }],
        ..update(row, 0)
    };
    let keep = j.append(&big(0)).await.expect("append");
    for r in 1..40 {
        let t = j.append(&big(r)).await.expect("append");
        j.done(t);
    }
    let before = j.len();
    let mark = j.flush_started();
    j.flushed(mark).await;
    assert!(j.len() < before / 4, "{} → {}", before, j.len());
    j.done(keep);
    drop(j);
    let (_, out) = Journal::open(d.path(), VOL, 1, 2, shape).expect("open");
    assert_eq!(rows(&out), vec![0]);
}

/// 1 MiB blocks, so that a few dozen records pass [`COMPACT_AT`].
const BIG: Shape = Shape {
    k: 2,
    m: 1,
    block_size: 1 << 20,
};

/// A row update of `rows` (one data part block per row) with `fill`.
fn big(first: u32, rows: u32, fill: u8) -> RowUpdate {
    let covers = (0..rows)
        .map(|_| Cover::new(&[Generation(1), Generation(2)]).expect("cover"))
        .collect();
    RowUpdate {
        chunk: 1,
        first_row: first,
        generation: Generation(u64::from(fill) + 10),
        covers,
        parts: vec![PartPut {
            part: 0,
            first,
            count: rows,
            data: WriteData::Bytes(vec![fill; (rows as usize) << 20]),
        }],
    }
}

/// Per row, the fill of the last outstanding record writing it: what a
/// replay in journal order leaves there.
fn replayed_fills(o: &Outstanding) -> BTreeMap<u32, u8> {
    assert!(o.records.windows(2).all(|w| w[0].seq < w[1].seq));
    let mut rows = BTreeMap::new();
    for r in &o.records {
        for p in &r.update.parts {
            if let WriteData::Bytes(b) = &p.data {
                for i in 0..p.count {
                    rows.insert(p.first + i, b[(i as usize) << 20]);
                }
            }
        }
    }
    rows
}

/// The first rows of the outstanding records below `row` (the records
/// appended after a compaction stay until the next one).
fn rows_below(o: &Outstanding, row: u32) -> Vec<u32> {
    rows(o).into_iter().filter(|&r| r < row).collect()
}

/// Appends `n` retired (FUA) records of rows 100.. until the file is past
/// the compaction threshold and was compacted.
async fn fua_elsewhere(j: &Journal, n: u32) {
    for r in 0..n {
        let t = j.append(&big(100 + r, 1, 0xee)).await.expect("append");
        j.done(t);
        j.synced(t).await;
    }
}

#[tokio::test]
async fn compaction_keeps_a_fua_record_newer_than_a_live_one_of_its_row() {
    let d = tempfile::tempdir().expect("tempdir");
    let (j, _) = Journal::open(d.path(), VOL, 0, 1, BIG).expect("open");
    let old = j.append(&big(5, 1, 0xa0)).await.expect("append");
    j.done(old); // written, never flushed: live
    let fua = j.append(&big(5, 1, 0xb0)).await.expect("append");
    j.done(fua);
    j.synced(fua).await; // FUA: retired at once
    fua_elsewhere(&j, 24).await;
    assert!(j.len() < 16 << 20, "compacted: {} bytes left", j.len());
    drop(j); // crash
    let (_, out) = Journal::open(d.path(), VOL, 1, 2, BIG).expect("open");
    assert_eq!(
        rows_below(&out, 100),
        vec![5, 5],
        "the old record and the newer FUA one"
    );
    assert_eq!(
        replayed_fills(&out).get(&5),
        Some(&0xb0),
        "replay ends at B"
    );
}

#[tokio::test]
async fn compaction_follows_kept_records_to_their_other_rows() {
    let d = tempfile::tempdir().expect("tempdir");
    let (j, _) = Journal::open(d.path(), VOL, 0, 1, BIG).expect("open");
    let live = j.append(&big(5, 1, 0xa0)).await.expect("append");
    j.done(live);
    for (first, rows, fill) in [(6, 1, 0xc0), (5, 2, 0xc1), (6, 1, 0xc2), (7, 1, 0xc3)] {
        let t = j.append(&big(first, rows, fill)).await.expect("append");
        j.done(t);
        j.synced(t).await;
    }
    fua_elsewhere(&j, 24).await;
    drop(j);
    let (_, out) = Journal::open(d.path(), VOL, 1, 2, BIG).expect("open");
    // Row 6's first FUA record is older than every kept record of row 6:
    // dropped; the 5+6 record is kept for row 5, so row 6's newer one is
    // kept too; row 7 was never touched by a kept record.
    assert_eq!(rows_below(&out, 100), vec![5, 5, 6]);
    let fills = replayed_fills(&out);
    assert_eq!((fills.get(&5), fills.get(&6)), (Some(&0xc1), Some(&0xc2)));
    assert_eq!(fills.get(&7), None);
}

#[tokio::test]
async fn a_second_compaction_keeps_what_the_first_kept() {
    let d = tempfile::tempdir().expect("tempdir");
    let (j, _) = Journal::open(d.path(), VOL, 0, 1, BIG).expect("open");
    let old = j.append(&big(5, 1, 0xa0)).await.expect("append");
    j.done(old);
    let fua = j.append(&big(5, 1, 0xb0)).await.expect("append");
    j.done(fua);
    j.synced(fua).await;
    fua_elsewhere(&j, 24).await;
    fua_elsewhere(&j, 24).await;
    assert!(j.len() < 16 << 20, "compacted twice: {} bytes", j.len());
    drop(j);
    let (_, out) = Journal::open(d.path(), VOL, 1, 2, BIG).expect("open");
    assert_eq!(replayed_fills(&out).get(&5), Some(&0xb0));
}

/// The cut to the header is not synced. If it never reached the disk but
/// a later append did, the old records after the new ones have lower
/// sequence numbers: the scan stops there, they are not replayed.
#[tokio::test]
async fn records_left_behind_by_a_lost_cut_are_not_replayed() {
    let d = tempfile::tempdir().expect("tempdir");
    let path = d.path().join(format!("{VOL}.journal"));
    let (j, _) = open(d.path(), 0, 1);
    let a = j.append(&update(1, 0xa1)).await.expect("append");
    let b = j.append(&update(2, 0xa2)).await.expect("append");
    let before_cut = std::fs::read(&path).expect("read");
    for t in [a, b] {
        j.done(t);
        j.synced(t).await;
    }
    assert!(j.is_empty(), "all retired: cut");
    let _c = j.append(&update(2, 0xc2)).await.expect("append");
    drop(j);
    let mut lost_cut = std::fs::read(&path).expect("read");
    lost_cut.extend_from_slice(&before_cut[lost_cut.len()..]);
    std::fs::write(&path, &lost_cut).expect("write");
    let (_, out) = open(d.path(), 1, 2);
    assert_eq!(rows(&out), vec![2]);
    assert_eq!(out.records[0].seq, 3);
    assert!(out.notes.iter().any(|n| n.contains("stale record")));
}
