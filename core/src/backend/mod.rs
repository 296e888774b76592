//! Backends: where part files live.
//!
//! [`Backend`] is one backend root as the master sees it: a control surface
//! (identity, volume list, `.meta`, opening a volume) and a data surface
//! (read, write, allocate, sync part blocks) for the one volume it has open.
//! Implementations: [`dir::DirBackend`] (a local or NFS directory);
//! `qbd-node` over a transport comes later. [`fault::FaultBackend`] wraps any
//! backend to delay, fail or "crash" operations in tests.
//!
//! Contract:
//! - `write` applies a block only if its generation is newer than the stored
//!   one (so retries and late duplicates never roll a block back); skipped
//!   blocks are counted in [`WriteOutcome`].
//! - A backend that refuses a request because another master has taken the
//!   volume answers [`BackendError::Fenced`]: the master must stop serving.
//! - A completed `write` is in the backend's volatile state; `sync(None)`
//!   makes every write completed before the call durable; `sync(Some(parts))`
//!   at least those parts.
//! - `read` never returns unverified data: a block that fails its checks is
//!   reported [`BlockState::Corrupt`]; a missing part file of an allocated
//!   chunk is [`BackendError::PartMissing`], never zeros.
//! - `allocate` makes a chunk's part exist durably (and its allocation bit
//!   set) before the first write to it.

pub mod dir;
pub mod fault;

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;

use crate::CoreError;
use crate::format::alloc::{AllocMap, DecodedAlloc};
use crate::format::record::RECORD_SIZE;
use crate::generation::Generation;
use crate::meta::volume::VolumeMeta;
use crate::placement::BackendId;
use crate::verify::{PartScan, VolumeListing};

/// A boxed, sendable future (keeps [`Backend`] object-safe).
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One part of one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartId {
    /// Chunk index.
    pub chunk: u64,
    /// Part index (0 = `a`).
    pub part: u8,
}

/// What a backend found for one block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockState {
    /// Never written: reads as zeros.
    Unwritten,
    /// Data that passed its checksum.
    Data(Generation),
    /// Reads as zeros (trimmed or zeroed) at this generation.
    Zero(Generation),
    /// Fails its checks (record checksum, data checksum); the data is not usable.
    Corrupt(String),
}

/// Blocks read from one part.
#[derive(Debug)]
pub struct PartRead {
    /// `count × block_size` bytes; zeros for unwritten, zero and corrupt blocks.
    pub data: Vec<u8>,
    /// One state per block.
    pub blocks: Vec<BlockState>,
}

/// The payload of a block write.
#[derive(Debug)]
pub enum WriteData {
    /// Whole blocks of data (`count × block_size` bytes).
    Bytes(Vec<u8>),
    /// Zeros; `punch` frees the space (TRIM, WRITE_ZEROES without NO_HOLE).
    Zero {
        /// Punch a hole rather than write zeros.
        punch: bool,
    },
}

/// A write of consecutive blocks of one part.
#[derive(Debug)]
pub struct BlockWrite {
    /// Which part.
    pub part: PartId,
    /// First block in the part.
    pub first: u32,
    /// Number of blocks.
    pub count: u32,
    /// The payload.
    pub data: WriteData,
    /// Generation of the write.
    pub generation: Generation,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteOutcome {
    /// Blocks written.
    pub applied: u32,
    /// Blocks skipped because the stored generation was not older.
    pub skipped: u32,
}

/// A block's raw bytes (data and record), for crash simulation and repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBlock {
    /// The data bytes as stored.
    pub data: Vec<u8>,
    /// The record bytes as stored.
    pub record: [u8; RECORD_SIZE],
}

/// Backend errors.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The part file of an allocated chunk is absent.
    #[error("part {part:?} is missing on {backend}")]
    PartMissing {
        /// Which part.
        part: PartId,
        /// Which backend.
        backend: String,
    },
    /// The part file exists but is truncated, foreign or has a bad header.
    #[error("part {part:?} on {backend} is unusable: {why}")]
    PartCorrupt {
        /// Which part.
        part: PartId,
        /// Which backend.
        backend: String,
        /// What is wrong.
        why: String,
    },
    /// No volume is open on this backend (call `open_volume` first).
    #[error("no volume open on {0}")]
    NotOpen(String),
    /// Another master has taken the volume (a newer session epoch, or the
    /// same epoch by another master): this master must stop serving it.
    #[error("fenced by {backend}: {why}")]
    Fenced {
        /// Which backend refused.
        backend: String,
        /// What it said.
        why: String,
    },
    /// Injected by the fault wrapper.
    #[error("injected fault: {0}")]
    Injected(String),
    /// Anything else from the core (I/O, meta files).
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl BackendError {
    /// True when the backend is out of space.
    pub fn is_no_space(&self) -> bool {
        matches!(self, BackendError::Core(e) if e.is_no_space())
    }

    /// True when another master holds the volume.
    pub fn is_fenced(&self) -> bool {
        matches!(self, BackendError::Fenced { .. })
    }
}

/// Result alias of backend operations.
pub type BackendResult<T> = Result<T, BackendError>;

/// One backend root, and the volume it has open.
pub trait Backend: Send + Sync + Debug {
    /// The backend's identity.
    fn id(&self) -> BackendId;
    /// A human description (`dir:/srv/qbd0`).
    fn describe(&self) -> String;

    /// The number of volume `name`, if this backend holds it.
    fn volume_number(&self, name: &str) -> BoxFut<'_, BackendResult<Option<u16>>>;
    /// Every volume number in use on this backend.
    fn volume_numbers(&self) -> BoxFut<'_, BackendResult<Vec<u16>>>;
    /// Records a new volume: `.volumesmeta` entry, volume directory, `.meta`, empty allocation map.
    fn create_volume(&self, meta: VolumeMeta) -> BoxFut<'_, BackendResult<()>>;
    /// Loads a volume's `.meta`.
    fn load_meta(&self, number: u16) -> BoxFut<'_, BackendResult<Option<VolumeMeta>>>;
    /// Rewrites a volume's `.meta` atomically.
    fn save_meta(&self, meta: VolumeMeta) -> BoxFut<'_, BackendResult<()>>;
    /// Opens the volume for data operations and takes its exclusive lock.
    /// Returns the backend's allocation map.
    fn open_volume(&self, meta: VolumeMeta) -> BoxFut<'_, BackendResult<DecodedAlloc>>;

    /// Reads `count` blocks of a part from `first`.
    fn read(&self, part: PartId, first: u32, count: u32) -> BoxFut<'_, BackendResult<PartRead>>;
    /// Writes blocks (applied only where the generation is newer).
    fn write(&self, w: BlockWrite) -> BoxFut<'_, BackendResult<WriteOutcome>>;
    /// Creates a part file and sets its chunk's allocation bit, durably.
    fn allocate(&self, part: PartId) -> BoxFut<'_, BackendResult<()>>;
    /// Makes completed writes durable (all parts, or at least `parts`).
    fn sync(&self, parts: Option<Vec<PartId>>) -> BoxFut<'_, BackendResult<()>>;

    /// The heal operation (`docs/heal.md`): writes blocks at the
    /// generation given (the source block's), whatever their stored
    /// generation, creating nothing: the part must exist (see
    /// [`Backend::recreate`]). The master's chunk lock orders it against
    /// writes; a node fences it by the master's session epoch, never by the
    /// generation's epoch (old by design for a heal).
    fn heal(&self, w: BlockWrite) -> BoxFut<'_, BackendResult<WriteOutcome>>;
    /// Replaces a part with a fresh, empty part file (before a whole-chunk
    /// resync) and sets its chunk's allocation bit, durably.
    fn recreate(&self, part: PartId) -> BoxFut<'_, BackendResult<()>>;
    /// The degraded maps this backend holds: for other backends, the chunks
    /// whose part there missed writes.
    fn load_stale(&self) -> BoxFut<'_, BackendResult<Vec<(BackendId, AllocMap)>>>;
    /// Records durably that `of`'s parts of `chunks` are stale.
    fn mark_stale(&self, of: BackendId, chunks: Vec<u64>) -> BoxFut<'_, BackendResult<()>>;
    /// Records durably that `of`'s parts of `chunks` are current again.
    fn clear_stale(&self, of: BackendId, chunks: Vec<u64>) -> BoxFut<'_, BackendResult<()>>;

    /// Raw bytes of one block (no checks).
    fn read_raw(&self, part: PartId, block: u32) -> BoxFut<'_, BackendResult<RawBlock>>;
    /// Overwrites one block's data and/or record raw (no generation rule).
    fn write_raw(
        &self,
        part: PartId,
        block: u32,
        data: Option<Vec<u8>>,
        record: Option<[u8; RECORD_SIZE]>,
    ) -> BoxFut<'_, BackendResult<()>>;

    /// Verify, fast: the volume's files by name and size, its `.alloc` and
    /// degraded maps (no part file is opened, nothing is written, the
    /// volume need not be open). `number` is the volume's number here.
    fn list_volume(&self, number: u16) -> BoxFut<'_, BackendResult<VolumeListing>> {
        let _ = number;
        Box::pin(async move { Err(unsupported(self, "list_volume")) })
    }

    /// Verify, deep: checks the header, every record and every data
    /// checksum of `parts` of the volume `meta` describes, returning the
    /// findings and per-block generations, never the data. Read-only; the
    /// volume need not be open.
    fn scan_parts(
        &self,
        meta: VolumeMeta,
        parts: Vec<PartId>,
    ) -> BoxFut<'_, BackendResult<Vec<PartScan>>> {
        let _ = (meta, parts);
        Box::pin(async move { Err(unsupported(self, "scan_parts")) })
    }
}

/// The error of an operation a backend does not implement.
fn unsupported<B: Backend + ?Sized>(b: &B, op: &str) -> BackendError {
    CoreError::InvalidSetting(format!("{} does not support {op}", b.describe())).into()
}
