//! An interrupted repair leaves a checkpoint and the next run continues
//! from it (`restart` starts over); the data is intact either way.
#![allow(clippy::unwrap_used)]

mod repair_support;

use qbd_master::volume::OpenMode;
use qbd_master::volume::repair::checkpoint::Checkpoint;
use qbd_master::volume::repair::{RepairOptions, run_repair};
use repair_support::{CHUNK, Cluster, assert_reads_back};

#[tokio::test]
async fn interrupted_repair_resumes_from_its_checkpoint() {
    let chunks = 12;
    let c = Cluster::new("replicate:3", 3, chunks);
    let want = c.fill(0x4e5).await;
    for ch in 0..chunks {
        c.flip_data(ch, (ch % 3) as usize, 1);
    }
    let v = std::sync::Arc::new(c.open(OpenMode::Repair, &[]).await);
    // Three parts read per chunk: a quarter of a second each at this rate,
    // so by the 8th chunk at least one checkpoint (once a second) is saved.
    let slow = RepairOptions {
        max_rate: Some(3 * CHUNK * 4),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    let mut on_progress = |p: &qbd_master::volume::repair::Progress| {
        if p.done == 8
            && let Some(tx) = tx.take()
        {
            let _ = tx.send(());
        }
    };
    tokio::select! {
        r = run_repair(&v, c.state.path(), &slow, &mut on_progress) => panic!("finished early: {r:?}"),
        _ = rx => {}
    }
    let cp = Checkpoint::load(c.state.path(), v.meta().uuid)
        .unwrap()
        .expect("a checkpoint after an interrupted run");
    assert!(cp.next_chunk > 0 && cp.next_chunk <= 8, "{cp:?}");
    let r = run_repair(&v, c.state.path(), &RepairOptions::default(), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(r.first_chunk, cp.next_chunk, "resumed from the checkpoint");
    assert_eq!(r.chunks_total, chunks - cp.next_chunk);
    assert!(r.all_repaired(), "{r:?}");
    assert!(
        Checkpoint::load(c.state.path(), v.meta().uuid)
            .unwrap()
            .is_none(),
        "a completed run removes its checkpoint"
    );
    let again = RepairOptions {
        restart: true,
        dry_run: true,
        ..Default::default()
    };
    let all = run_repair(&v, c.state.path(), &again, &mut |_| {})
        .await
        .unwrap();
    assert_eq!((all.first_chunk, all.chunks_total), (0, chunks));
    assert_eq!(all.chunks_healthy, chunks, "{all:?}");
    assert_reads_back(&v, &want).await;
}
