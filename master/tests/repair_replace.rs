//! `--replace OLD=NEW` at the volume level: the table moves OLD's slot to a
//! fresh directory, whose parts are stale until the repair fills them; a
//! crash half-way through the table rewrite (one backend still with the old
//! table) opens with the new table.
#![allow(clippy::unwrap_used)]

mod repair_support;

use std::sync::Arc;

use qbd_core::backend::Backend;
use qbd_core::backend::dir::DirBackend;
use qbd_master::volume::repair::replace::Replaced;
use qbd_master::volume::repair::{RepairOptions, run_repair};
use qbd_master::volume::{OpenMode, open_volume_with};
use repair_support::{Cluster, assert_reads_back};

#[tokio::test]
async fn replaced_backend_is_filled_and_a_half_rewritten_table_opens_new() {
    // Dirs 0..3 hold the volume; dir 3 is the fresh replacement for dir 2.
    let c = Cluster::new("replicate:3", 4, 5);
    let old_dir = 2;
    let new_dir = 3;
    let cluster_of = |i: &[usize]| -> Vec<Arc<dyn Backend>> {
        i.iter()
            .map(|&d| Arc::new(DirBackend::open(c.dir(d)).unwrap()) as Arc<dyn Backend>)
            .collect()
    };
    // Fill through the first three only.
    let want = {
        let v = open_volume_with(cluster_of(&[0, 1, 2]), &c.request(), OpenMode::Serve)
            .await
            .unwrap();
        let data = repair_support::random_bytes(0x7e11, c.size as usize);
        for (i, ch) in data.chunks(repair_support::CHUNK as usize).enumerate() {
            qbd_master::device::BlockDevice::write(
                &v,
                i as u64 * repair_support::CHUNK,
                ch.to_vec(),
                false,
            )
            .await
            .unwrap();
        }
        qbd_master::device::BlockDevice::flush(&v).await.unwrap();
        data
    };
    let old_meta = std::fs::read(c.dir(1).join("1/.meta")).unwrap();
    let old_id = DirBackend::open(c.dir(old_dir)).unwrap().id();
    {
        let v = open_volume_with(cluster_of(&[0, 1]), &c.request(), OpenMode::Repair)
            .await
            .unwrap();
        let new: Arc<dyn Backend> = Arc::new(DirBackend::open(c.dir(new_dir)).unwrap());
        assert_eq!(
            v.replace_backend(old_id, &new).await.unwrap(),
            Replaced::Switched
        );
    }
    // A crash during the table rewrite: backend 1 still has the old table.
    std::fs::write(c.dir(1).join("1/.meta"), &old_meta).unwrap();
    let set = [0, 1, new_dir];
    let v = Arc::new(
        open_volume_with(cluster_of(&set), &c.request(), OpenMode::Repair)
            .await
            .unwrap(),
    );
    assert!(
        v.meta()
            .placement
            .contains(&DirBackend::open(c.dir(new_dir)).unwrap().id())
    );
    let r = run_repair(&v, c.state.path(), &RepairOptions::default(), &mut |_| {})
        .await
        .unwrap();
    assert!(r.all_repaired(), "{r:?}");
    assert_eq!(r.stale, 5, "every chunk's part on the new backend: {r:?}");
    assert_eq!(r.parts_rebuilt, 5, "{r:?}");
    drop(v);
    let v = open_volume_with(cluster_of(&set), &c.request(), OpenMode::Serve)
        .await
        .unwrap();
    assert_reads_back(&v, &want).await;
}
