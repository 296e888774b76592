//! Serving without a backend that did not answer, and taking it back
//! (`volume/admit.rs`), on directory backends standing in for nodes: the
//! volume opens degraded only with enough backends, writes while one is
//! missing are recorded for it, and once it is admitted the maintenance
//! pass readmits and resyncs it, after which it serves alone.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use qbd_core::backend::Backend;
use qbd_core::backend::dir::DirBackend;
use qbd_core::meta::volume::RequestedShape;
use qbd_master::device::BlockDevice;
use qbd_master::volume::{OpenMode, OpenRequest, Volume, open_volume, open_volume_with};

const SIZE: u64 = 1 << 20;
const CHUNK: u64 = 64 << 10;

fn request(state: &Path) -> OpenRequest {
    OpenRequest {
        name: "v".into(),
        shape: RequestedShape {
            size: Some(SIZE),
            block_size: None,
            chunk_size: Some(CHUNK),
            redundancy: Some("replicate:3".parse().unwrap()),
        },
        read_only: false,
        state_dir: state.to_owned(),
    }
}

fn dirs(paths: &[&Path]) -> Vec<Arc<dyn Backend>> {
    paths
        .iter()
        .map(|p| Arc::new(DirBackend::open(p).unwrap()) as Arc<dyn Backend>)
        .collect()
}

async fn degraded(paths: &[&Path], state: &Path, unreached: usize) -> Result<Volume, String> {
    let mode = OpenMode::ServeDegraded { unreached };
    open_volume_with(dirs(paths), &request(state), mode)
        .await
        .map_err(|e| e.to_string())
}

fn block(seed: u8) -> Vec<u8> {
    (0..4096)
        .map(|i| (i as u8).wrapping_mul(7) ^ seed)
        .collect()
}

#[tokio::test]
async fn a_missing_backend_is_served_without_then_admitted_and_resynced() {
    let t: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b, c, state) = (t[0].path(), t[1].path(), t[2].path(), t[3].path());
    // A volume cannot be created while a given backend did not answer.
    let e = degraded(&[a, b], state, 1).await.err().unwrap();
    assert!(e.contains("did not answer"), "{e}");
    {
        let v = open_volume(dirs(&[a, b, c]), &request(state))
            .await
            .unwrap();
        for chunk in 0..SIZE / CHUNK {
            v.write(chunk * CHUNK, block(1), false).await.unwrap();
        }
        v.flush().await.unwrap();
    }
    // One of three missing: more than half present, every chunk has copies.
    let e = degraded(&[a], state, 2).await.err().unwrap();
    assert!(e.contains("more than half"), "{e}");
    let v = degraded(&[a, b], state, 1).await.unwrap();
    assert_eq!(v.absent_backends().len(), 1);
    for chunk in 0..SIZE / CHUNK {
        assert_eq!(v.read(chunk * CHUNK, 4096).await.unwrap(), block(1));
        v.write(chunk * CHUNK, block(2), false).await.unwrap();
    }
    v.flush().await.unwrap();
    // The missing backend answers: admitted, then readmitted and resynced.
    let back = Arc::new(DirBackend::open(c).unwrap()) as Arc<dyn Backend>;
    let wrong = Arc::new(DirBackend::open(a).unwrap()) as Arc<dyn Backend>;
    assert!(v.admit(wrong).is_err(), "a present backend's slot is taken");
    v.admit(back).unwrap();
    assert!(v.absent_backends().is_empty());
    let mut schedule = Vec::new();
    let healed = v.maintain(&mut schedule, std::time::Instant::now()).await;
    assert_eq!(
        healed,
        SIZE / CHUNK,
        "every chunk written while it was missing"
    );
    v.flush().await.unwrap();
    drop(v);
    // The readmitted backend alone holds every block's last value: the
    // others' part files are deleted, so every read is served from it.
    for d in [a, b] {
        for entry in std::fs::read_dir(d.join("1")).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                std::fs::remove_dir_all(path).unwrap();
            }
        }
    }
    let v = open_volume(dirs(&[a, b, c]), &request(state))
        .await
        .unwrap();
    for chunk in 0..SIZE / CHUNK {
        assert_eq!(v.read(chunk * CHUNK, 4096).await.unwrap(), block(2));
    }
}
