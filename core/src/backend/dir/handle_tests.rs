//! The directory backend with a small bound on open part files: handles
//! are evicted and reopened, dirty parts are synced before their handle is
//! closed, and concurrent reads and writes over more parts than the bound
//! keep every block.

use std::sync::Arc;

use uuid::Uuid;

use super::DirBackend;
use crate::backend::{BlockState, BlockWrite, PartId, WriteData};
use crate::generation::Generation;
use crate::meta::volume::VolumeMeta;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const BS: usize = 4096;
const CHUNK: u64 = 64 << 10;

/// A backend in `dir` keeping at most `limit` part files open, with a
/// 4 MiB volume of 64 KiB chunks (64 chunks) open.
fn open(dir: &std::path::Path, limit: usize) -> Result<DirBackend, Box<dyn std::error::Error>> {
    let b = DirBackend::open(dir)?.with_handle_limit(limit);
    let meta = VolumeMeta {
        format_version: 1,
        name: "bounded".into(),
        uuid: Uuid::new_v4(),
        number: 1,
        size: 4 << 20,
        block_size: BS as u32,
        chunk_size: CHUNK,
        redundancy: "replicate:1".into(),
        read_only: false,
        append_only: false,
        epoch: 1,
        master: "test:0".into(),
        placement: vec![b.id],
    };
    b.do_create_volume(&meta)?;
    b.do_open_volume(meta)?;
    Ok(b)
}

fn part(chunk: u64) -> PartId {
    PartId { chunk, part: 0 }
}

/// One block of `chunk`, at `block`, filled with a byte naming both.
fn write(b: &DirBackend, chunk: u64, block: u32, gen_: u64) -> TestResult {
    b.allocate_part(part(chunk))?;
    let out = b.write_blocks(
        BlockWrite {
            part: part(chunk),
            first: block,
            count: 1,
            data: WriteData::Bytes(vec![fill(chunk, block, gen_); BS]),
            generation: Generation(gen_),
        },
        false,
    )?;
    assert_eq!(out.applied, 1, "chunk {chunk} block {block}");
    Ok(())
}

fn fill(chunk: u64, block: u32, gen_: u64) -> u8 {
    (chunk * 7 + u64::from(block) * 3 + gen_) as u8 | 1
}

fn check(b: &DirBackend, chunk: u64, block: u32, gen_: u64) -> TestResult {
    let r = b.read_blocks(part(chunk), block, 1)?;
    assert_eq!(r.blocks, vec![BlockState::Data(Generation(gen_))]);
    assert!(r.data.iter().all(|&x| x == fill(chunk, block, gen_)));
    Ok(())
}

fn dirty(b: &DirBackend) -> Vec<u64> {
    let v = b
        .vol
        .get()
        .map(|v| v.dirty.lock().map(|d| d.keys().map(|p| p.chunk).collect()));
    let mut c: Vec<u64> = v.and_then(Result::ok).unwrap_or_default();
    c.sort_unstable();
    c
}

#[test]
fn evicted_dirty_parts_are_synced_and_only_cached_ones_stay_dirty() -> TestResult {
    let dir = tempfile::tempdir()?;
    let b = open(dir.path(), 2)?;
    for c in 0..6 {
        write(&b, c, 1, 5)?;
    }
    let v = b.vol()?;
    assert_eq!(v.files.len(), 2);
    // Chunks 0..4 were evicted, each synced on the way out; the two
    // cached parts still owe their fdatasync to the next sync.
    assert_eq!(dirty(&b), vec![4, 5]);
    for c in 0..6 {
        check(&b, c, 1, 5)?; // reopened on demand
    }
    assert!(v.files.len() <= 2);
    b.sync_parts(None)?;
    assert!(dirty(&b).is_empty());
    Ok(())
}

#[test]
fn a_part_written_again_after_its_eviction_stays_dirty() -> TestResult {
    let dir = tempfile::tempdir()?;
    let b = open(dir.path(), 1)?;
    write(&b, 0, 0, 1)?;
    write(&b, 1, 0, 1)?; // evicts chunk 0 (synced, clean)
    write(&b, 0, 2, 2)?; // reopens chunk 0, evicts chunk 1
    assert_eq!(dirty(&b), vec![0]);
    check(&b, 0, 0, 1)?;
    check(&b, 0, 2, 2)?;
    check(&b, 1, 0, 1)?;
    Ok(())
}

#[test]
fn a_handle_in_use_outlives_its_eviction() -> TestResult {
    let dir = tempfile::tempdir()?;
    let b = open(dir.path(), 1)?;
    write(&b, 0, 0, 1)?;
    let v = b.vol()?;
    let held = v.files.peek(part(0)).ok_or("chunk 0 not cached")?;
    write(&b, 1, 0, 1)?; // evicts chunk 0 from the cache
    assert!(v.files.peek(part(0)).is_none());
    let mut buf = vec![0u8; BS];
    std::os::unix::fs::FileExt::read_exact_at(&held.file, &mut buf, v.layout.data_offset_of(0))?;
    assert!(buf.iter().all(|&x| x == fill(0, 0, 1)));
    Ok(())
}

#[test]
fn concurrent_io_over_more_parts_than_the_bound_keeps_every_block() -> TestResult {
    let dir = tempfile::tempdir()?;
    let b = Arc::new(open(dir.path(), 3)?);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let b = Arc::clone(&b);
            std::thread::spawn(move || -> Result<(), String> {
                for round in 1..=3u64 {
                    for c in 0..32u64 {
                        let block = (t * 4 + round) as u32;
                        write(&b, c, block, round).map_err(|e| e.to_string())?;
                        // Reads of other parts, meanwhile, churn the cache.
                        b.read_blocks(part((c + 5) % 32), 0, 2)
                            .map_err(|e| e.to_string())?;
                        if c % 8 == 0 {
                            b.sync_parts(None).map_err(|e| e.to_string())?;
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "thread panicked")??;
    }
    for t in 0..4u64 {
        for c in 0..32 {
            check(&b, c, (t * 4 + 3) as u32, 3)?;
        }
    }
    b.sync_parts(None)?;
    assert!(dirty(&b).is_empty());
    assert!(b.vol()?.files.len() <= 3);
    Ok(())
}
