//! Shared fixtures of the backend integration tests: a temp directory
//! backend holding one small volume (16 MiB, 4 KiB blocks, 256 KiB chunks,
//! `replicate:1`), opened and ready for data operations.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::error::Error;
use std::path::Path;
use std::sync::Arc;

use qbd_core::backend::dir::DirBackend;
use qbd_core::backend::{Backend, BackendError, BlockWrite, PartId, WriteData, WriteOutcome};
use qbd_core::format::layout::PartLayout;
use qbd_core::generation::Generation;
use qbd_core::meta::volume::VolumeMeta;
use qbd_core::meta::volumes::VolumesFile;
use uuid::Uuid;

/// Result of a test function.
pub type TestResult<T = ()> = Result<T, Box<dyn Error>>;

/// Block size of the test volume.
pub const BS: usize = 4096;
/// Chunk size of the test volume.
pub const CHUNK: u64 = 256 << 10;
/// Blocks per part (replication: all blocks of the chunk).
pub const BLOCKS: u32 = (CHUNK / BS as u64) as u32;

/// A temp root with an open volume.
#[derive(Debug)]
pub struct Fixture {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// The backend that has the volume open.
    pub backend: Arc<DirBackend>,
    /// The volume.
    pub meta: VolumeMeta,
}

impl Fixture {
    /// A fresh root with volume `demo` created and opened.
    pub async fn new() -> TestResult<Self> {
        Self::with_chunk(CHUNK).await
    }

    /// [`Fixture::new`] with chunks of `chunk` bytes.
    pub async fn with_chunk(chunk: u64) -> TestResult<Self> {
        let dir = tempfile::tempdir()?;
        let backend = DirBackend::open(dir.path())?;
        let meta = create_volume_with(&backend, "demo", chunk).await?;
        backend.open_volume(meta.clone()).await?;
        Ok(Fixture {
            dir,
            backend: Arc::new(backend),
            meta,
        })
    }

    /// Drops this backend (releasing its lock) and opens the volume again
    /// on a fresh one: the view of a new process, with no cached files.
    pub async fn reopen(self) -> TestResult<Self> {
        let Fixture { dir, backend, meta } = self;
        drop(backend);
        let backend = DirBackend::open(dir.path())?;
        backend.open_volume(meta.clone()).await?;
        Ok(Fixture {
            dir,
            backend: Arc::new(backend),
            meta,
        })
    }

    /// Path of a part file.
    pub fn part_path(&self, part: PartId) -> std::path::PathBuf {
        self.backend.part_path(self.meta.number, part)
    }
}

/// Creates volume `name` on `backend` (not opened).
pub async fn create_volume(backend: &DirBackend, name: &str) -> TestResult<VolumeMeta> {
    create_volume_with(backend, name, CHUNK).await
}

/// Creates volume `name` with chunks of `chunk` bytes on `backend` (not
/// opened).
pub async fn create_volume_with(
    backend: &DirBackend,
    name: &str,
    chunk: u64,
) -> TestResult<VolumeMeta> {
    let number = VolumesFile::allocate(&[VolumesFile::load(backend.root())?])?;
    let meta = VolumeMeta {
        format_version: 1,
        name: name.into(),
        uuid: Uuid::new_v4(),
        number,
        size: 16 << 20,
        block_size: BS as u32,
        chunk_size: chunk,
        redundancy: "replicate:1".into(),
        read_only: false,
        append_only: false,
        epoch: 1,
        master: "test:0".into(),
        placement: vec![backend.id()],
    };
    backend.create_volume(meta.clone()).await?;
    Ok(meta)
}

/// Part 0 (`a`) of `chunk`.
pub fn part(chunk: u64) -> PartId {
    PartId { chunk, part: 0 }
}

/// A generation of epoch 1.
pub fn generation(counter: u64) -> Generation {
    Generation::new(1, counter)
}

/// `blocks` blocks of recognisable, never-zero content derived from `seed`.
pub fn pattern(seed: u8, blocks: usize) -> Vec<u8> {
    (0..blocks * BS)
        .map(|i| (usize::from(seed) * 7 + i / BS * 13 + i % 251) as u8 | 1)
        .collect()
}

/// Writes `data` (whole blocks) at `first` of `part` with generation `g`.
pub async fn write(
    b: &dyn Backend,
    part: PartId,
    first: u32,
    data: Vec<u8>,
    g: Generation,
) -> TestResult<WriteOutcome> {
    let count = (data.len() / BS) as u32;
    let w = BlockWrite {
        part,
        first,
        count,
        data: WriteData::Bytes(data),
        generation: g,
    };
    Ok(b.write(w).await?)
}

/// The layout of every part file of the test volume.
/// Reads blocks that must fail; `why` says what succeeding would mean.
pub async fn read_err(
    backend: &DirBackend,
    part: PartId,
    first: u32,
    count: u32,
    why: &'static str,
) -> TestResult<BackendError> {
    Ok(backend.read(part, first, count).await.err().ok_or(why)?)
}

pub fn layout() -> PartLayout {
    PartLayout::new(BS as u32, BLOCKS)
}

/// XORs `mask` into the byte at `offset` of the file at `path`.
pub fn flip_byte(path: &Path, offset: u64, mask: u8) -> TestResult {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset)?;
    b[0] ^= mask;
    f.write_all_at(&b, offset)?;
    Ok(())
}
