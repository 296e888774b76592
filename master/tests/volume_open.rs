//! Opening volumes: creation, reopen, flag conflicts, backend order and
//! foreign directories, the exclusive lock, and missing parts.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use qbd_core::backend::Backend;
use qbd_core::backend::dir::DirBackend;
use qbd_core::meta::volume::RequestedShape;
use qbd_master::device::BlockDevice;
use qbd_master::volume::{OpenRequest, Volume, VolumeError, open_volume};

fn request(name: &str, size: Option<u64>, redundancy: Option<&str>) -> OpenRequest {
    OpenRequest {
        name: name.into(),
        shape: RequestedShape {
            size,
            block_size: None,
            chunk_size: Some(64 << 10),
            redundancy: redundancy.map(|r| r.parse().unwrap()),
        },
        read_only: false,
        state_dir: std::env::temp_dir().join("qbd-test-state"),
    }
}

fn dirs(paths: &[&Path]) -> Vec<Arc<dyn Backend>> {
    paths
        .iter()
        .map(|p| Arc::new(DirBackend::open(p).unwrap()) as Arc<dyn Backend>)
        .collect()
}

async fn open(paths: &[&Path], req: &OpenRequest) -> Result<Volume, VolumeError> {
    open_volume(dirs(paths), req).await
}

/// The 1 MiB replicate:1 volume "v" most tests use, created or reopened on `paths`.
async fn open_v(paths: &[&Path]) -> Volume {
    open(paths, &request("v", Some(1 << 20), Some("replicate:1")))
        .await
        .unwrap()
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn replicate_2_over_four_dirs_serves_the_same_data_in_any_flag_order() {
    let t: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let p: Vec<&Path> = t.iter().map(|d| d.path()).collect();
    let data = pattern(3, 1 << 20);
    {
        let v = open(&p, &request("r2", Some(4 << 20), Some("replicate:2")))
            .await
            .unwrap();
        v.write(12345, data.clone(), false).await.unwrap();
        v.flush().await.unwrap();
    }
    let reordered = [p[2], p[0], p[3], p[1]];
    let v = open(&reordered, &request("r2", None, None)).await.unwrap();
    assert_eq!(v.read(12345, data.len() as u32).await.unwrap(), data);
    assert_eq!(v.meta().epoch, 2, "each open takes a new epoch");
}

#[tokio::test]
async fn reopening_with_contradicting_flags_is_refused_with_the_setting_named() {
    let t = tempfile::tempdir().unwrap();
    drop(open_v(&[t.path()]).await);
    let e = open(&[t.path()], &request("v", Some(2 << 20), None))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--size 2M (volume has 1M)"), "{e}");
    let e = open(&[t.path()], &request("v", None, Some("replicate:2")))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--redundancy"), "{e}");
}

#[tokio::test]
async fn creating_needs_size_and_redundancy() {
    let t = tempfile::tempdir().unwrap();
    let e = open(&[t.path()], &request("v", None, Some("replicate:1")))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--size"), "{e}");
    let e = open(&[t.path()], &request("v", Some(1 << 20), None))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--redundancy"), "{e}");
}

#[tokio::test]
async fn a_directory_of_another_volume_or_cluster_is_refused() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    drop(
        open(
            &[a.path(), b.path()],
            &request("v", Some(1 << 20), Some("replicate:2")),
        )
        .await
        .unwrap(),
    );
    // c is unrelated: not in the placement table.
    let e = open(&[a.path(), b.path(), c.path()], &request("v", None, None))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("does not hold volume"), "{e}");
    // c holds its own volume "v": another cluster.
    drop(open_v(&[c.path()]).await);
    let e = open(&[a.path(), c.path()], &request("v", None, None))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("different volume") || e.contains("placement table"),
        "{e}"
    );
    // Leaving out a backend of the table is refused too.
    let e = open(&[a.path()], &request("v", None, None))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("was not given"), "{e}");
}

#[tokio::test]
async fn a_second_master_cannot_open_a_volume_in_use() {
    let t = tempfile::tempdir().unwrap();
    let first = open_v(&[t.path()]).await;
    let e = open(&[t.path()], &request("v", None, None))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("locked by another master"), "{e}");
    drop(first);
    assert!(open(&[t.path()], &request("v", None, None)).await.is_ok());
}

#[tokio::test]
async fn a_deleted_part_file_is_an_error_never_zeros() {
    let t = tempfile::tempdir().unwrap();
    {
        let v = open_v(&[t.path()]).await;
        v.write(0, vec![9; 4096], false).await.unwrap();
        v.flush().await.unwrap();
    }
    std::fs::remove_file(t.path().join("1/a/0")).unwrap();
    let v = open(&[t.path()], &request("v", None, None)).await.unwrap();
    let e = v.read(0, 4096).await.err().unwrap();
    assert_eq!(e.nbd_errno(), 5, "EIO, not zeros: {e}");
    // Never-written chunks still read as zeros.
    assert_eq!(v.read(128 << 10, 4096).await.unwrap(), vec![0; 4096]);
    // And writing to the missing chunk is refused rather than recreating it empty.
    assert!(v.write(4096, vec![1; 4096], false).await.is_err());
}

#[tokio::test]
async fn a_flipped_bit_in_the_only_copy_is_eio_and_the_neighbours_still_read() {
    use std::os::unix::fs::FileExt;
    let t = tempfile::tempdir().unwrap();
    let data = pattern(1, 16384);
    {
        let v = open_v(&[t.path()]).await;
        v.write(0, data.clone(), false).await.unwrap();
        v.flush().await.unwrap();
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(t.path().join("1/a/0"))
        .unwrap();
    let len = f.metadata().unwrap().len();
    let data_start = len - (64 << 10); // data region is the last chunk_size bytes
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, data_start + 4096 + 10).unwrap();
    f.write_all_at(&[b[0] ^ 0x10], data_start + 4096 + 10)
        .unwrap();
    let v = open(&[t.path()], &request("v", None, None)).await.unwrap();
    assert_eq!(v.read(4096, 4096).await.err().unwrap().nbd_errno(), 5);
    assert_eq!(v.read(0, 4096).await.unwrap(), data[..4096]);
    assert_eq!(v.read(8192, 8192).await.unwrap(), data[8192..]);
}

#[tokio::test]
async fn unaligned_writes_trims_and_zeroes_keep_neighbouring_bytes() {
    let t = tempfile::tempdir().unwrap();
    let v = open_v(&[t.path()]).await;
    let base = pattern(5, 256 << 10);
    v.write(0, base.clone(), false).await.unwrap();
    let mut model = base.clone();
    let mut apply = |off: usize, bytes: &[u8]| model[off..off + bytes.len()].copy_from_slice(bytes);
    // A 512-byte write, one spanning a block boundary, one spanning a chunk boundary.
    for (off, len, seed) in [
        (512 * 7, 512, 0x5a),
        (4000, 300, 1),
        ((64 << 10) - 1000, 5000, 2),
    ] {
        let d = pattern(seed, len);
        v.write(off as u64, d.clone(), false).await.unwrap();
        apply(off, &d);
    }
    v.trim(10_000, 70_000, false).await.unwrap();
    apply(10_000, &vec![0; 70_000]);
    v.write_zeroes(100_001, 9_000, true, true).await.unwrap();
    apply(100_001, &vec![0; 9_000]);
    assert_eq!(v.read(0, 256 << 10).await.unwrap(), model);
}

#[tokio::test]
async fn out_of_range_requests_are_invalid_and_read_only_refuses_writes() {
    let t = tempfile::tempdir().unwrap();
    drop(open_v(&[t.path()]).await);
    let mut ro = request("v", None, None);
    ro.read_only = true;
    let v = open(&[t.path()], &ro).await.unwrap();
    assert_eq!(
        v.read((1 << 20) - 10, 11).await.err().unwrap().nbd_errno(),
        22
    );
    assert_eq!(v.read(u64::MAX - 1, 4).await.err().unwrap().nbd_errno(), 22);
    assert_eq!(
        v.write(0, vec![1; 10], false)
            .await
            .err()
            .unwrap()
            .nbd_errno(),
        1
    );
    assert_eq!(v.trim(0, 4096, false).await.err().unwrap().nbd_errno(), 1);
}
