//! The directory backend through the `Backend` trait: data round trips, the
//! generation rule, zeros, and what it reports when files on disk are
//! missing, truncated, foreign or corrupt.

mod common;

use std::fs;

use common::{
    BLOCKS, BS, Fixture, TestResult, create_volume, flip_byte, generation, layout, part, pattern,
    read_err, write,
};
use qbd_core::CoreError;
use qbd_core::backend::dir::DirBackend;
use qbd_core::backend::{Backend, BackendError, BlockState, BlockWrite, WriteData, WriteOutcome};
use qbd_core::format::alloc::PAGE;
use qbd_core::format::record::RECORD_SIZE;
use qbd_core::proto::msg::{MISMATCH, Response, VouchedState, WireBlockState};

fn applied(n: u32) -> WriteOutcome {
    WriteOutcome {
        applied: n,
        skipped: 0,
    }
}

#[tokio::test]
async fn written_blocks_read_back_exactly_with_their_generation() -> TestResult {
    let f = Fixture::new().await?;
    let b = &*f.backend;
    b.allocate(part(2)).await?;
    let data = pattern(1, 3);
    assert_eq!(
        write(b, part(2), 5, data.clone(), generation(7)).await?,
        applied(3)
    );
    let r = b.read(part(2), 4, 5).await?;
    assert_eq!(&r.data[BS..4 * BS], &data[..]);
    assert!(
        r.data[..BS]
            .iter()
            .chain(&r.data[4 * BS..])
            .all(|&x| x == 0)
    );
    let g = BlockState::Data(generation(7));
    let expected = [
        BlockState::Unwritten,
        g.clone(),
        g.clone(),
        g,
        BlockState::Unwritten,
    ];
    assert_eq!(r.blocks, expected);
    Ok(())
}

#[tokio::test]
async fn never_written_chunk_reads_zeros_without_creating_files() -> TestResult {
    let f = Fixture::new().await?;
    let r = f.backend.read(part(9), 0, BLOCKS).await?;
    assert!(r.data.iter().all(|&x| x == 0));
    assert_eq!(r.blocks, vec![BlockState::Unwritten; BLOCKS as usize]);
    let part_dir = f
        .part_path(part(9))
        .parent()
        .map(|p| p.to_path_buf())
        .ok_or("no parent")?;
    assert_eq!(fs::read_dir(part_dir)?.count(), 0, "a read created a file");
    Ok(())
}

#[tokio::test]
async fn write_before_allocate_is_part_missing() -> TestResult {
    let f = Fixture::new().await?;
    let e = write(&*f.backend, part(1), 0, pattern(1, 1), generation(1)).await;
    let e = e.err().ok_or("write to an unallocated chunk succeeded")?;
    let e = e.downcast::<BackendError>()?;
    assert!(matches!(*e, BackendError::PartMissing { .. }), "{e}");
    assert!(!f.part_path(part(1)).exists());
    Ok(())
}

#[tokio::test]
async fn older_or_equal_generation_is_skipped() -> TestResult {
    let f = Fixture::new().await?;
    let b = &*f.backend;
    b.allocate(part(0)).await?;
    let first = pattern(1, 2);
    write(b, part(0), 0, first.clone(), generation(10)).await?;
    for g in [generation(10), generation(9), generation(0)] {
        let out = write(b, part(0), 0, pattern(2, 2), g).await?;
        assert_eq!(
            out,
            WriteOutcome {
                applied: 0,
                skipped: 2
            },
            "{g:?}"
        );
    }
    let r = b.read(part(0), 0, 2).await?;
    assert_eq!(r.data, first);
    assert_eq!(r.blocks, vec![BlockState::Data(generation(10)); 2]);
    Ok(())
}

#[tokio::test]
async fn newer_generation_applies() -> TestResult {
    let f = Fixture::new().await?;
    let b = &*f.backend;
    b.allocate(part(0)).await?;
    write(b, part(0), 0, pattern(1, 2), generation(10)).await?;
    let second = pattern(2, 2);
    // A later epoch with a small counter is still newer.
    let later = qbd_core::generation::Generation::new(2, 1);
    assert_eq!(
        write(b, part(0), 0, second.clone(), later).await?,
        applied(2)
    );
    let r = b.read(part(0), 0, 2).await?;
    assert_eq!(r.data, second);
    assert_eq!(r.blocks, vec![BlockState::Data(later); 2]);
    Ok(())
}

#[tokio::test]
async fn mixed_range_applies_only_blocks_with_older_generations() -> TestResult {
    let f = Fixture::new().await?;
    let b = &*f.backend;
    b.allocate(part(0)).await?;
    // Blocks 0..4 at generation 5, then block 1 and 3 moved on to 20.
    let base = pattern(1, 4);
    write(b, part(0), 0, base.clone(), generation(5)).await?;
    let ahead = pattern(2, 1);
    write(b, part(0), 1, ahead.clone(), generation(20)).await?;
    write(b, part(0), 3, ahead.clone(), generation(20)).await?;
    // A late write of generation 10 over blocks 0..5 (block 4 never written).
    let late = pattern(3, 5);
    let out = write(b, part(0), 0, late.clone(), generation(10)).await?;
    assert_eq!(
        out,
        WriteOutcome {
            applied: 3,
            skipped: 2
        }
    );
    let r = b.read(part(0), 0, 5).await?;
    let blk = |d: &[u8], i: usize| d[i * BS..(i + 1) * BS].to_vec();
    for (i, want, g) in [
        (0, blk(&late, 0), 10),
        (1, ahead.clone(), 20),
        (2, blk(&late, 2), 10),
        (3, ahead, 20),
        (4, blk(&late, 4), 10),
    ] {
        assert_eq!(blk(&r.data, i), want, "block {i}");
        assert_eq!(r.blocks[i], BlockState::Data(generation(g)), "block {i}");
    }
    Ok(())
}

#[tokio::test]
async fn zero_writes_read_back_zeros_punched_or_not() -> TestResult {
    let f = Fixture::new().await?;
    let b = &*f.backend;
    b.allocate(part(0)).await?;
    write(b, part(0), 0, pattern(1, 4), generation(1)).await?;
    let used = || -> std::io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(fs::metadata(f.part_path(part(0)))?.blocks() * 512)
    };
    let before = used()?;
    for (first, punch) in [(0, true), (2, false)] {
        let w = BlockWrite {
            part: part(0),
            first,
            count: 2,
            data: WriteData::Zero { punch },
            generation: generation(2),
        };
        assert_eq!(b.write(w).await?, applied(2));
    }
    let r = b.read(part(0), 0, 4).await?;
    assert!(r.data.iter().all(|&x| x == 0));
    assert_eq!(r.blocks, vec![BlockState::Zero(generation(2)); 4]);
    // On disk: punched blocks became a hole, the others hold written zeros.
    assert!(used()? < before, "punching freed no space");
    for blk in 0..4 {
        assert!(b.read_raw(part(0), blk).await?.data.iter().all(|&x| x == 0));
    }
    Ok(())
}

#[tokio::test]
async fn deleted_part_of_an_allocated_chunk_is_missing_never_zeros() -> TestResult {
    let f = Fixture::new().await?;
    f.backend.allocate(part(3)).await?;
    write(&*f.backend, part(3), 0, pattern(1, 1), generation(1)).await?;
    fs::remove_file(f.part_path(part(3)))?;
    let f = f.reopen().await?;
    let e = read_err(
        &f.backend,
        part(3),
        0,
        1,
        "read of a deleted part succeeded",
    )
    .await?;
    assert!(matches!(e, BackendError::PartMissing { .. }), "{e}");
    Ok(())
}

#[tokio::test]
async fn allocated_but_deleted_part_stays_missing_even_if_never_written() -> TestResult {
    // The allocation bit is what counts, not whether data was written.
    let f = Fixture::new().await?;
    f.backend.allocate(part(4)).await?;
    fs::remove_file(f.part_path(part(4)))?;
    let f = f.reopen().await?;
    let e = read_err(
        &f.backend,
        part(4),
        0,
        1,
        "read of a deleted part succeeded",
    )
    .await?;
    assert!(matches!(e, BackendError::PartMissing { .. }), "{e}");
    Ok(())
}

#[tokio::test]
async fn allocate_refuses_to_recreate_a_deleted_part() -> TestResult {
    let f = Fixture::new().await?;
    f.backend.allocate(part(3)).await?;
    fs::remove_file(f.part_path(part(3)))?;
    let f = f.reopen().await?;
    let e = f
        .backend
        .allocate(part(3))
        .await
        .err()
        .ok_or("allocate recreated a missing part")?;
    assert!(matches!(e, BackendError::PartMissing { .. }), "{e}");
    assert!(!f.part_path(part(3)).exists());
    Ok(())
}

#[tokio::test]
async fn allocation_persists_across_reopen() -> TestResult {
    let f = Fixture::new().await?;
    f.backend.allocate(part(3)).await?;
    f.backend.allocate(part(3)).await?; // idempotent
    let Fixture { dir, backend, meta } = f;
    drop(backend);
    let backend = DirBackend::open(dir.path())?;
    let decoded = backend.open_volume(meta).await?;
    assert!(decoded.corrupt_pages.is_empty());
    assert_eq!(decoded.map.iter().collect::<Vec<_>>(), vec![3]);
    Ok(())
}

/// Allocates chunk 0, writes a block, then mangles the part file with
/// `mangle` and reads it on a fresh open, expecting `PartCorrupt`.
async fn expect_corrupt_after(mangle: impl FnOnce(&Fixture) -> TestResult) -> TestResult {
    let f = Fixture::new().await?;
    f.backend.allocate(part(0)).await?;
    f.backend.allocate(part(1)).await?;
    write(&*f.backend, part(0), 0, pattern(1, 1), generation(1)).await?;
    write(&*f.backend, part(1), 0, pattern(1, 1), generation(1)).await?;
    mangle(&f)?;
    let f = f.reopen().await?;
    let e = read_err(
        &f.backend,
        part(0),
        0,
        1,
        "read of a mangled part succeeded",
    )
    .await?;
    assert!(matches!(e, BackendError::PartCorrupt { .. }), "{e}");
    let w = write(&*f.backend, part(0), 0, pattern(2, 1), generation(2)).await;
    let e = w
        .err()
        .ok_or("write to a mangled part succeeded")?
        .downcast::<BackendError>()?;
    assert!(matches!(*e, BackendError::PartCorrupt { .. }), "{e}");
    Ok(())
}

#[tokio::test]
async fn truncated_part_is_corrupt() -> TestResult {
    expect_corrupt_after(|f| {
        let file = fs::OpenOptions::new()
            .write(true)
            .open(f.part_path(part(0)))?;
        file.set_len(layout().file_size / 2)?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn part_file_of_another_chunk_is_corrupt() -> TestResult {
    expect_corrupt_after(|f| {
        fs::copy(f.part_path(part(1)), f.part_path(part(0)))?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn part_file_of_another_volume_is_corrupt() -> TestResult {
    let f = Fixture::new().await?;
    // Volume two on the same root, opened by a second backend instance
    // (a different volume directory, so a different lock).
    let other = DirBackend::open(f.dir.path())?;
    let meta2 = create_volume(&other, "other").await?;
    other.open_volume(meta2.clone()).await?;
    other.allocate(part(0)).await?;
    write(&other, part(0), 0, pattern(1, 1), generation(1)).await?;
    let foreign = other.part_path(meta2.number, part(0));
    // Chunk 0 of volume one is allocated, then replaced by volume two's.
    f.backend.allocate(part(0)).await?;
    fs::copy(&foreign, f.part_path(part(0)))?;
    let f = f.reopen().await?;
    let e = read_err(
        &f.backend,
        part(0),
        0,
        1,
        "read of a foreign part succeeded",
    )
    .await?;
    assert!(
        matches!(&e, BackendError::PartCorrupt { why, .. } if why.contains("another volume")),
        "{e}"
    );
    Ok(())
}

#[tokio::test]
async fn garbage_header_is_corrupt() -> TestResult {
    expect_corrupt_after(|f| {
        use std::os::unix::fs::FileExt;
        let file = fs::OpenOptions::new()
            .write(true)
            .open(f.part_path(part(0)))?;
        file.write_all_at(b"not a QBD part file", 0)?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn flipped_header_bit_is_corrupt() -> TestResult {
    // Bit 0 of the block size field: still a plausible header, but the
    // checksum no longer matches.
    expect_corrupt_after(|f| flip_byte(&f.part_path(part(0)), 44, 1)).await
}

#[tokio::test]
async fn flipped_data_bit_marks_only_that_block_corrupt() -> TestResult {
    let f = Fixture::new().await?;
    let b = &*f.backend;
    b.allocate(part(0)).await?;
    let data = pattern(1, 3);
    write(b, part(0), 10, data.clone(), generation(1)).await?;
    flip_byte(
        &f.part_path(part(0)),
        layout().data_offset_of(11) + 100,
        0x10,
    )?;
    let r = b.read(part(0), 10, 3).await?;
    assert_eq!(r.blocks[0], BlockState::Data(generation(1)));
    assert!(
        matches!(r.blocks[1], BlockState::Corrupt(_)),
        "{:?}",
        r.blocks[1]
    );
    assert_eq!(r.blocks[2], BlockState::Data(generation(1)));
    assert_eq!(&r.data[..BS], &data[..BS]);
    assert!(
        r.data[BS..2 * BS].iter().all(|&x| x == 0),
        "corrupt data must not be returned"
    );
    assert_eq!(&r.data[2 * BS..], &data[2 * BS..]);
    Ok(())
}

/// A node answers reads without hashing (`read_vouched`): the records'
/// checksums travel with the data, and the receiver's decode finds the
/// flipped block, as `read` would have.
#[tokio::test]
async fn vouched_reads_leave_a_flipped_data_bit_for_the_receiver_to_find() -> TestResult {
    let f = Fixture::new().await?;
    let b = &*f.backend;
    b.allocate(part(0)).await?;
    let data = pattern(1, 3);
    write(b, part(0), 10, data.clone(), generation(1)).await?;
    b.write(BlockWrite {
        part: part(0),
        first: 13,
        count: 1,
        generation: generation(2),
        data: WriteData::Zero { punch: false },
    })
    .await?;
    flip_byte(
        &f.part_path(part(0)),
        layout().data_offset_of(11) + 100,
        0x10,
    )?;
    let (states, bytes) = b.read_vouched(part(0), 9, 5)?;
    let g1 = generation(1).0;
    assert_eq!(states[0], VouchedState::Unwritten);
    assert!(matches!(states[1], VouchedState::Data { generation, .. } if generation == g1));
    assert!(matches!(states[2], VouchedState::Data { generation, .. } if generation == g1));
    assert_eq!(states[4], VouchedState::Zero(generation(2).0));
    assert_ne!(
        &bytes[2 * BS..3 * BS],
        &data[BS..2 * BS],
        "the node did not check"
    );
    let mut payload = Vec::new();
    let resp = Response::VouchedBlocks {
        states,
        data: bytes,
    };
    resp.encode(&mut payload);
    let Response::Blocks { states, data: got } = Response::decode(resp.opcode(), &payload)? else {
        panic!("a vouched answer decodes as Blocks");
    };
    assert_eq!(
        states,
        vec![
            WireBlockState::Unwritten,
            WireBlockState::Data(g1),
            WireBlockState::Corrupt(MISMATCH.into()),
            WireBlockState::Data(g1),
            WireBlockState::Zero(generation(2).0),
        ]
    );
    assert_eq!(&got[BS..2 * BS], &data[..BS]);
    assert!(
        got[2 * BS..3 * BS].iter().all(|&x| x == 0),
        "corrupt data is never returned"
    );
    assert_eq!(&got[3 * BS..4 * BS], &data[2 * BS..]);
    Ok(())
}

#[tokio::test]
async fn flipped_record_bit_marks_the_block_corrupt() -> TestResult {
    let f = Fixture::new().await?;
    let b = &*f.backend;
    b.allocate(part(0)).await?;
    write(b, part(0), 0, pattern(1, 3), generation(1)).await?;
    // A bit of block 1's generation field.
    flip_byte(&f.part_path(part(0)), layout().record_offset(1) + 16, 0x01)?;
    let r = b.read(part(0), 0, 3).await?;
    assert_eq!(r.blocks[0], BlockState::Data(generation(1)));
    assert!(
        matches!(&r.blocks[1], BlockState::Corrupt(why) if why.contains("record")),
        "{:?}",
        r.blocks[1]
    );
    assert_eq!(r.blocks[2], BlockState::Data(generation(1)));
    assert!(r.data[BS..2 * BS].iter().all(|&x| x == 0));
    Ok(())
}

#[tokio::test]
async fn record_copied_to_another_block_is_corrupt() -> TestResult {
    // Records are keyed by position: a misdirected record write is caught.
    let f = Fixture::new().await?;
    let b = &*f.backend;
    b.allocate(part(0)).await?;
    let same = pattern(1, 1);
    write(b, part(0), 0, same.clone(), generation(1)).await?;
    write(b, part(0), 1, same, generation(1)).await?;
    let raw = b.read_raw(part(0), 0).await?;
    b.write_raw(part(0), 1, None, Some(raw.record)).await?;
    let r = b.read(part(0), 0, 2).await?;
    assert_eq!(r.blocks[0], BlockState::Data(generation(1)));
    assert!(
        matches!(r.blocks[1], BlockState::Corrupt(_)),
        "{:?}",
        r.blocks[1]
    );
    Ok(())
}

#[tokio::test]
async fn write_over_a_corrupt_record_applies_whatever_its_generation() -> TestResult {
    let f = Fixture::new().await?;
    let b = &*f.backend;
    b.allocate(part(0)).await?;
    write(b, part(0), 0, pattern(1, 1), generation(100)).await?;
    // Flip a bit of the record checksum: the stored generation (100) reads
    // fine byte-wise, but an invalid record is never trusted for it.
    flip_byte(
        &f.part_path(part(0)),
        layout().record_offset(0) + RECORD_SIZE as u64 - 1,
        0x80,
    )?;
    let repaired = pattern(2, 1);
    assert_eq!(
        write(b, part(0), 0, repaired.clone(), generation(3)).await?,
        applied(1)
    );
    let r = b.read(part(0), 0, 1).await?;
    assert_eq!(r.blocks, vec![BlockState::Data(generation(3))]);
    assert_eq!(r.data, repaired);
    Ok(())
}

#[tokio::test]
async fn missing_allocation_map_fails_open_clearly() -> TestResult {
    let f = Fixture::new().await?;
    let Fixture { dir, backend, meta } = f;
    drop(backend);
    fs::remove_file(dir.path().join(meta.number.to_string()).join(".alloc"))?;
    let backend = DirBackend::open(dir.path())?;
    let e = backend
        .open_volume(meta)
        .await
        .err()
        .ok_or("open without .alloc succeeded")?;
    match &e {
        BackendError::Core(CoreError::Corrupt { what, why, .. }) => {
            assert_eq!(*what, "allocation map");
            assert!(why.contains("missing"), "{e}");
        }
        other => return Err(format!("unexpected error: {other}").into()),
    }
    Ok(())
}

#[tokio::test]
async fn corrupt_allocation_page_reports_and_counts_chunks_as_allocated() -> TestResult {
    let f = Fixture::new().await?;
    f.backend.allocate(part(1)).await?;
    let alloc = f.dir.path().join(f.meta.number.to_string()).join(".alloc");
    flip_byte(&alloc, PAGE as u64 + 7, 0x04)?;
    let Fixture { dir, backend, meta } = f;
    drop(backend);
    let backend = DirBackend::open(dir.path())?;
    let decoded = backend.open_volume(meta).await?;
    assert_eq!(decoded.corrupt_pages, vec![1]);
    assert!(
        decoded.map.get(5),
        "chunks of a corrupt page count as allocated"
    );
    // So a never-written chunk whose bit is lost reports missing, not zeros.
    let e = backend
        .read(part(5), 0, 1)
        .await
        .err()
        .ok_or("read returned zeros")?;
    assert!(matches!(e, BackendError::PartMissing { .. }), "{e}");
    // The chunk that really exists still reads.
    assert_eq!(
        backend.read(part(1), 0, 1).await?.blocks,
        vec![BlockState::Unwritten]
    );
    Ok(())
}

#[tokio::test]
async fn second_open_of_a_volume_is_locked_until_the_first_is_dropped() -> TestResult {
    let f = Fixture::new().await?;
    let second = DirBackend::open(f.dir.path())?;
    let e = second
        .open_volume(f.meta.clone())
        .await
        .err()
        .ok_or("second open succeeded")?;
    assert!(matches!(e, BackendError::Core(CoreError::Locked(_))), "{e}");
    let Fixture { dir, backend, meta } = f;
    drop(backend);
    second.open_volume(meta).await?;
    drop(dir);
    Ok(())
}

#[tokio::test]
async fn out_of_range_and_ragged_writes_are_refused() -> TestResult {
    let f = Fixture::new().await?;
    let b = &*f.backend;
    b.allocate(part(0)).await?;
    assert!(b.read(part(0), BLOCKS - 1, 2).await.is_err());
    assert!(b.read(part(0), 0, 0).await.is_err());
    let ragged = BlockWrite {
        part: part(0),
        first: 0,
        count: 2,
        data: WriteData::Bytes(vec![1; BS]),
        generation: generation(1),
    };
    assert!(b.write(ragged).await.is_err());
    Ok(())
}

#[test]
fn concurrent_first_writes_to_one_chunk_both_survive() -> TestResult {
    // Two threads race to allocate the same fresh chunk, then each writes
    // its own block: neither allocation may replace the other's file.
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let f = rt.block_on(Fixture::new())?;
    for chunk in 0..64 {
        let start = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            let writers: Vec<_> = (0..2u32)
                .map(|blk| {
                    let (b, start) = (&*f.backend, &start);
                    s.spawn(move || -> Result<(), String> {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .build()
                            .map_err(|e| e.to_string())?;
                        start.wait();
                        rt.block_on(async {
                            b.allocate(part(chunk)).await.map_err(|e| e.to_string())?;
                            write(b, part(chunk), blk, pattern(blk as u8, 1), generation(1))
                                .await
                                .map(drop)
                                .map_err(|e| e.to_string())
                        })
                    })
                })
                .collect();
            writers
                .into_iter()
                .try_for_each(|w| w.join().map_err(|_| "writer panicked".to_string())?)
        })
        .map_err(|e| format!("chunk {chunk}: {e}"))?;
        let r = rt.block_on(f.backend.read(part(chunk), 0, 2))?;
        assert_eq!(
            r.blocks,
            vec![BlockState::Data(generation(1)); 2],
            "chunk {chunk}"
        );
    }
    Ok(())
}

#[test]
fn racing_writes_to_one_block_never_roll_it_back() -> TestResult {
    // Each round, a newer write and a late duplicate (older generation) of
    // the same blocks race; whichever lands first, the newer one must stay.
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let f = rt.block_on(Fixture::new())?;
    rt.block_on(f.backend.allocate(part(0)))?;
    let rounds = 500u64;
    let start = std::sync::Barrier::new(2);
    let rolled_back = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let writers: Vec<_> = [2u64, 1]
            .into_iter()
            .map(|offset| {
                let (b, start, rolled_back) = (&*f.backend, &start, &rolled_back);
                s.spawn(move || -> Result<(), String> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .map_err(|e| e.to_string())?;
                    for round in 1..=rounds {
                        start.wait();
                        let g = generation(round * 10 + offset);
                        rt.block_on(write(b, part(0), 0, pattern(offset as u8, 2), g))
                            .map_err(|e| e.to_string())?;
                        start.wait();
                        if offset == 2 {
                            let r = rt
                                .block_on(b.read(part(0), 0, 2))
                                .map_err(|e| e.to_string())?;
                            if r.blocks != vec![BlockState::Data(g); 2] {
                                rolled_back
                                    .lock()
                                    .map_err(|e| e.to_string())?
                                    .push((round, r.blocks));
                            }
                        }
                        start.wait();
                    }
                    Ok(())
                })
            })
            .collect();
        writers
            .into_iter()
            .try_for_each(|w| w.join().map_err(|_| "writer panicked".to_string())?)
    })?;
    let rolled_back = rolled_back.into_inner().map_err(|e| e.to_string())?;
    assert!(
        rolled_back.is_empty(),
        "{} rounds rolled back, first: {:?}",
        rolled_back.len(),
        rolled_back.first()
    );
    Ok(())
}

#[test]
fn reads_racing_a_write_never_see_a_torn_block() -> TestResult {
    // A read concurrent with a write of the same block sees the old or the
    // new block, never new data under the old record (which would be
    // reported Corrupt and trigger a needless repair).
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let f = rt.block_on(Fixture::new())?;
    rt.block_on(f.backend.allocate(part(0)))?;
    let rounds = 2000u64;
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let (b, done) = (&*f.backend, &done);
        let writer = s.spawn(move || -> Result<(), String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .map_err(|e| e.to_string())?;
            for round in 1..=rounds {
                rt.block_on(write(
                    b,
                    part(0),
                    0,
                    pattern(round as u8, 4),
                    generation(round),
                ))
                .map_err(|e| e.to_string())?;
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        });
        let reader = s.spawn(move || -> Result<u64, String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .map_err(|e| e.to_string())?;
            let mut torn = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let r = rt
                    .block_on(b.read(part(0), 0, 4))
                    .map_err(|e| e.to_string())?;
                torn += r
                    .blocks
                    .iter()
                    .filter(|s| matches!(s, BlockState::Corrupt(_)))
                    .count() as u64;
            }
            Ok(torn)
        });
        writer.join().map_err(|_| "writer panicked".to_string())??;
        let torn = reader.join().map_err(|_| "reader panicked".to_string())??;
        assert_eq!(torn, 0, "reads saw torn blocks");
        Ok::<_, String>(())
    })?;
    Ok(())
}
