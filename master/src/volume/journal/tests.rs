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
