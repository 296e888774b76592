//! Record groups: an all-zero meta record in an initialised group is
//! damage, a block of a group never initialised is never written, part
//! files stay sparse, the group bitmap is checked, a crash between the
//! steps of a group's initialisation leaves nothing that reads as damage,
//! and the old format is refused.

mod common;

use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;

use common::{BS, Fixture, TestResult, generation, part, pattern, read_err, write};
use qbd_core::backend::fault::{CrashMode, FaultBackend};
use qbd_core::backend::{Backend, BackendError, BlockState};
use qbd_core::format::checksum128;
use qbd_core::format::groups::{BITMAP_OFFSET, GROUP_RECORDS};
use qbd_core::format::header::OLD_VERSION;
use qbd_core::format::layout::PartLayout;
use qbd_core::format::record::{MetaRecord, RECORD_SIZE, RecordPos};
use qbd_core::verify::{BlockMeta, FileCheck};

/// Chunks of 1 MiB: 256 blocks per part, four record groups.
const CHUNK: u64 = 1 << 20;

/// A fresh volume with [`CHUNK`]-byte chunks.
async fn fixture() -> TestResult<Fixture> {
    Fixture::with_chunk(CHUNK).await
}

fn layout() -> PartLayout {
    PartLayout::new(BS as u32, (CHUNK / BS as u64) as u32)
}

/// Overwrites `len` bytes at `offset` of `path` with zeros.
fn zero_at(path: &std::path::Path, offset: u64, len: usize) -> TestResult {
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all_at(&vec![0u8; len], offset)?;
    Ok(())
}

#[tokio::test]
async fn zeroed_record_in_an_initialised_group_is_corrupt() -> TestResult {
    let f = fixture().await?;
    f.backend.allocate(part(0)).await?;
    write(&*f.backend, part(0), 0, pattern(1, 3), generation(1)).await?;
    f.backend.sync(None).await?;
    let f = f.reopen().await?;
    zero_at(
        &f.part_path(part(0)),
        layout().record_offset(1),
        RECORD_SIZE,
    )?;
    let f = f.reopen().await?;
    let r = f.backend.read(part(0), 0, 4).await?;
    assert_eq!(r.blocks[0], BlockState::Data(generation(1)));
    assert!(
        matches!(&r.blocks[1], BlockState::Corrupt(why) if why.contains("zeroed")),
        "{:?}",
        r.blocks[1]
    );
    assert_eq!(r.blocks[2], BlockState::Data(generation(1)));
    assert_eq!(
        r.blocks[3],
        BlockState::Unwritten,
        "a never-written block of an initialised group"
    );
    Ok(())
}

#[tokio::test]
async fn untouched_group_reads_unwritten() -> TestResult {
    let f = fixture().await?;
    f.backend.allocate(part(0)).await?;
    write(&*f.backend, part(0), 0, pattern(1, 1), generation(1)).await?;
    f.backend.sync(None).await?;
    let g1 = GROUP_RECORDS;
    let r = f.backend.read(part(0), g1 - 1, 3).await?;
    assert_eq!(r.blocks, vec![BlockState::Unwritten; 3]);
    assert!(r.data.iter().all(|&x| x == 0));
    // The group's record region is a hole: nothing was written there.
    let file = std::fs::File::open(f.part_path(part(0)))?;
    let mut rec = [0xffu8; RECORD_SIZE];
    file.read_exact_at(&mut rec, layout().record_offset(g1))?;
    assert_eq!(rec, [0u8; RECORD_SIZE]);
    Ok(())
}

#[tokio::test]
async fn a_part_with_one_written_block_stays_sparse() -> TestResult {
    let f = fixture().await?;
    f.backend.allocate(part(0)).await?;
    write(&*f.backend, part(0), 17, pattern(1, 1), generation(1)).await?;
    f.backend.sync(None).await?;
    let md = std::fs::metadata(f.part_path(part(0)))?;
    let on_disk = md.blocks() * 512;
    // First page, one group of records (12 KiB), one data block (20 KiB
    // of a 1.05 MiB file); the filesystem may round up a little.
    assert!(
        on_disk <= 32 << 10,
        "{on_disk} bytes on disk for one block of a {} byte file",
        md.len()
    );
    Ok(())
}

#[tokio::test]
async fn zero_writes_and_raw_writes_initialise_their_group() -> TestResult {
    let f = fixture().await?;
    let b = &*f.backend;
    b.allocate(part(0)).await?;
    let zero = qbd_core::backend::BlockWrite {
        part: part(0),
        first: 70,
        count: 1,
        data: qbd_core::backend::WriteData::Zero { punch: true },
        generation: generation(2),
    };
    b.write(zero).await?;
    let pos = RecordPos {
        chunk: 0,
        part: 0,
        block: 140,
    };
    let rec = MetaRecord::for_data(&pattern(3, 1), generation(3)).encode(pos);
    b.write_raw(part(0), 140, Some(pattern(3, 1)), Some(rec))
        .await?;
    b.sync(None).await?;
    let f = f.reopen().await?;
    // Zero the neighbours' records: their groups were initialised, so the
    // zeros are damage.
    let path = f.part_path(part(0));
    zero_at(&path, layout().record_offset(71), RECORD_SIZE)?;
    zero_at(&path, layout().record_offset(141), RECORD_SIZE)?;
    let f = f.reopen().await?;
    let r = f.backend.read(part(0), 70, 2).await?;
    assert_eq!(r.blocks[0], BlockState::Zero(generation(2)));
    assert!(matches!(r.blocks[1], BlockState::Corrupt(_)));
    let r = f.backend.read(part(0), 140, 2).await?;
    assert_eq!(r.blocks[0], BlockState::Data(generation(3)));
    assert!(matches!(r.blocks[1], BlockState::Corrupt(_)));
    Ok(())
}

#[tokio::test]
async fn raw_records_spell_never_written_as_zeros() -> TestResult {
    let f = fixture().await?;
    let b = &*f.backend;
    b.allocate(part(0)).await?;
    write(b, part(0), 0, pattern(1, 1), generation(1)).await?;
    // Block 1 shares block 0's (initialised) group, block 64 does not.
    assert_eq!(b.read_raw(part(0), 1).await?.record, [0; RECORD_SIZE]);
    assert_eq!(b.read_raw(part(0), 64).await?.record, [0; RECORD_SIZE]);
    // Writing the zero record back (a crash undo) makes it unwritten, not
    // damaged.
    b.write_raw(part(0), 0, None, Some([0; RECORD_SIZE]))
        .await?;
    assert_eq!(
        b.read(part(0), 0, 1).await?.blocks,
        vec![BlockState::Unwritten]
    );
    Ok(())
}

#[tokio::test]
async fn crash_before_the_group_bit_leaves_the_group_unwritten() -> TestResult {
    // The state a crash leaves between "records initialised and synced"
    // and "bit durable", or with the block's record durable but not the
    // bit: the group's records hold bytes, its bit is clear. It reads as
    // never written (the write was never flushed), and the next write
    // initialises the group again and applies.
    let f = fixture().await?;
    f.backend.allocate(part(0)).await?;
    write(&*f.backend, part(0), 5, pattern(1, 1), generation(1)).await?;
    f.backend.sync(None).await?;
    let path = f.part_path(part(0));
    let at = BITMAP_OFFSET as usize;
    let with_bit = std::fs::read(&path)?[at..at + 512].to_vec();
    // The bitmap sector as created (no bit set) has its own checksum.
    let mut fresh = [0u8; 512];
    let sum = checksum128(&[
        &0u64.to_le_bytes(),
        &[0],
        &0u32.to_le_bytes(),
        &fresh[..496],
    ]);
    fresh[496..].copy_from_slice(&sum);
    assert_ne!(with_bit, fresh.to_vec(), "the bit was set");
    let file = std::fs::OpenOptions::new().write(true).open(&path)?;
    file.write_all_at(&fresh, BITMAP_OFFSET)?;
    let f = f.reopen().await?;
    let r = f.backend.read(part(0), 4, 2).await?;
    assert_eq!(r.blocks, vec![BlockState::Unwritten; 2]);
    write(&*f.backend, part(0), 5, pattern(2, 1), generation(2)).await?;
    let r = f.backend.read(part(0), 4, 2).await?;
    assert_eq!(
        r.blocks,
        vec![BlockState::Unwritten, BlockState::Data(generation(2))]
    );
    Ok(())
}

#[tokio::test]
async fn zeroed_or_flipped_group_bitmap_is_a_corrupt_part() -> TestResult {
    for damage in [0u8, 1] {
        let f = fixture().await?;
        f.backend.allocate(part(0)).await?;
        write(&*f.backend, part(0), 0, pattern(1, 1), generation(1)).await?;
        f.backend.sync(None).await?;
        let path = f.part_path(part(0));
        if damage == 0 {
            zero_at(&path, BITMAP_OFFSET, 512)?;
        } else {
            common::flip_byte(&path, BITMAP_OFFSET + 100, 0x04)?;
        }
        let f = f.reopen().await?;
        let e = read_err(&f.backend, part(0), 0, 1, "a damaged bitmap read").await?;
        assert!(
            matches!(&e, BackendError::PartCorrupt { why, .. } if why.contains("bitmap")),
            "{e}"
        );
        let scans = f.backend.scan_parts(f.meta.clone(), vec![part(0)]).await?;
        assert!(
            matches!(&scans[0].file, FileCheck::BadHeader(why) if why.contains("bitmap")),
            "{:?}",
            scans[0].file
        );
    }
    Ok(())
}

#[tokio::test]
async fn deep_scan_reports_zeroed_records_and_untouched_groups() -> TestResult {
    let f = fixture().await?;
    f.backend.allocate(part(0)).await?;
    write(&*f.backend, part(0), 0, pattern(1, 2), generation(1)).await?;
    f.backend.sync(None).await?;
    zero_at(
        &f.part_path(part(0)),
        layout().record_offset(1),
        RECORD_SIZE,
    )?;
    let scans = f.backend.scan_parts(f.meta.clone(), vec![part(0)]).await?;
    let blocks = &scans[0].blocks;
    assert_eq!(scans[0].file, FileCheck::Ok);
    assert!(matches!(blocks[0], BlockMeta::Valid(_)));
    assert_eq!(blocks[1], BlockMeta::BadRecord, "zeroed record");
    assert_eq!(
        blocks[2],
        BlockMeta::Unwritten,
        "initialised, never written"
    );
    assert_eq!(blocks[64], BlockMeta::Unwritten, "untouched group");
    Ok(())
}

#[tokio::test]
async fn a_volume_in_the_old_format_is_refused() -> TestResult {
    let f = fixture().await?;
    f.backend.allocate(part(0)).await?;
    write(&*f.backend, part(0), 0, pattern(1, 1), generation(1)).await?;
    f.backend.sync(None).await?;
    let path = f.part_path(part(0));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)?;
    let mut head = [0u8; 128];
    file.read_exact_at(&mut head, 0)?;
    head[8..10].copy_from_slice(&OLD_VERSION.to_le_bytes());
    let sum = checksum128(&[&head[..112]]);
    head[112..].copy_from_slice(&sum);
    file.write_all_at(&head, 0)?;
    let Fixture { dir, backend, meta } = f;
    drop(backend);
    let backend = qbd_core::backend::dir::DirBackend::open(dir.path())?;
    let e = backend
        .open_volume(meta)
        .await
        .err()
        .ok_or("an old-format volume opened")?
        .to_string();
    assert!(e.contains("old part-file format 1"), "{e}");
    Ok(())
}

#[tokio::test]
async fn crash_of_an_unsynced_first_write_reads_unwritten() -> TestResult {
    // Through the fault wrapper: the write's group was initialised (synced
    // by the backend itself), the write was not synced and is undone by
    // the crash. Every block of the group reads never written, none corrupt.
    let f = fixture().await?;
    let inner: Arc<dyn Backend> = f.backend.clone();
    let fault = Arc::new(FaultBackend::new(inner, true));
    fault.allocate(part(0)).await?;
    write(&*fault, part(0), 3, pattern(1, 2), generation(1)).await?;
    fault.crash(CrashMode::All).await?;
    drop(fault);
    let f = f.reopen().await?;
    let r = f.backend.read(part(0), 0, GROUP_RECORDS).await?;
    assert_eq!(
        r.blocks,
        vec![BlockState::Unwritten; GROUP_RECORDS as usize]
    );
    Ok(())
}
