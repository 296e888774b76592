//! A volume: byte offsets to chunks, blocks and parts on backends.
//!
//! - [`open`]: find or create the volume on the given backends, check the
//!   placement table, take the backends' locks, bump the epoch.
//! - [`io`]: the data path (read, write with read-modify-write, trim,
//!   zeroes, flush) with replication as a loop over parts.
//! - [`range_lock`]: ordering of overlapping requests.
//! - [`Scheme`]: replication or erasure coding, chosen once at open.
//! - [`ec`]: erasure-coded volumes (rows, parity, reconstruction).
//! - [`journal`]: the master's redo journal of EC row updates (the write
//!   hole), replayed at open before the volume is served.
//! - [`heal`]: the one heal operation (replace a part's blocks with
//!   known-good content), which every trigger runs: read repair, resync,
//!   crash reconcile ([`recover`]), journal replay and `qbd repair`.
//! - [`repair`]: `qbd repair`'s work (find missing, corrupt and stale
//!   parts chunk by chunk and heal them), run offline or inside a master.
//! - [`fence`]: once any backend says another master holds the volume,
//!   this master stops serving it.
//! - [`slot`]: placement slots whose backend `qbd repair --replace` can
//!   swap while the volume serves.
//! - [`admit`]: serving without backends that did not answer at open, and
//!   taking them back when they do.
//!
//! Invariants: a chunk's allocation bit is set on every backend holding one
//! of its parts before its first write; a write is acknowledged only after
//! every part holds it; `flush` syncs every backend, covering all writes
//! acknowledged before it started.

pub mod admit;
pub mod device;
pub mod ec;
pub mod error;
pub mod fence;
pub mod heal;
pub mod health;
pub mod intent;
pub mod io;
pub mod journal;
pub mod maintain;
pub mod open;
pub mod range_lock;
mod read;
pub mod recover;
pub mod repair;
pub mod slot;
mod write;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use qbd_core::backend::Backend;
use qbd_core::generation::GenerationCounter;
use qbd_core::geometry::Geometry;
use qbd_core::meta::volume::VolumeMeta;
use qbd_core::placement::PlacementTable;

pub use error::VolumeError;
pub use open::{OpenMode, OpenRequest, open_volume, open_volume_with};

/// An open volume.
#[derive(Debug)]
pub struct Volume {
    /// Down once another master holds the volume (every backend's slot
    /// stands behind it: [`slot::Slot`]).
    fence: Arc<fence::Fence>,
    /// The meta as taken at open; its placement table and epoch change
    /// when `qbd repair --replace` switches a slot while serving.
    meta: std::sync::RwLock<VolumeMeta>,
    geo: Geometry,
    placement: PlacementTable,
    /// Backends by placement slot (each swappable: [`slot::Slots`]).
    backends: slot::Slots,
    generations: GenerationCounter,
    allocated: AllocBits,
    alloc_lock: tokio::sync::Mutex<()>,
    locks: range_lock::RangeLock,
    read_only: bool,
    health: health::Health,
    intent: intent::IntentLog,
    /// Replication or erasure coding, chosen once at open.
    scheme: Scheme,
    /// Turns of replicated reads: each read starts at the next copy, so
    /// reads spread over every healthy replica.
    read_turn: std::sync::atomic::AtomicUsize,
}

/// How a volume keeps redundancy, chosen once at open. Each scheme has its
/// own write, read and heal plans (`docs/heal.md`); code outside the
/// scheme's own modules matches on it once, at the request's entry.
#[derive(Debug)]
pub enum Scheme {
    /// `replicate:N`: N copies of every block; per block, the highest valid
    /// generation wins.
    Replicated,
    /// `ec:K+M`: K data and M parity parts per row, with the master's redo
    /// journal closing the write hole.
    Erasure(Box<Erasure>),
}

/// The state of an erasure-coded volume.
#[derive(Debug)]
pub struct Erasure {
    /// The code, the row geometry and the reconstruction cache.
    ec: ec::Ec,
    /// Redo records of row updates.
    journal: journal::Journal,
}

impl Scheme {
    /// The scheme of a geometry, with the EC journal opened for it.
    fn new(ec: Option<ec::Ec>, journal: Option<journal::Journal>) -> Result<Self, VolumeError> {
        match (ec, journal) {
            (None, _) => Ok(Scheme::Replicated),
            (Some(ec), Some(journal)) => Ok(Scheme::Erasure(Box::new(Erasure { ec, journal }))),
            (Some(_), None) => Err(VolumeError::Setup(
                "an erasure-coded volume needs its journal".into(),
            )),
        }
    }

    /// The EC state, for erasure-coded volumes.
    fn erasure(&self) -> Option<&Erasure> {
        match self {
            Scheme::Replicated => None,
            Scheme::Erasure(e) => Some(e),
        }
    }
}

impl Volume {
    /// The volume's meta: as taken at open (with the new epoch), or as a
    /// replace while serving switched it (new table, next epoch).
    pub fn meta(&self) -> VolumeMeta {
        self.meta
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Records the meta a replace while serving switched to.
    fn set_meta(&self, meta: VolumeMeta) {
        *self
            .meta
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = meta;
    }

    /// The geometry.
    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    /// The backends by placement slot, as they are now.
    pub fn backends(&self) -> &[Arc<dyn Backend>] {
        &self.backends
    }

    /// The backend holding part `part` of `chunk`.
    fn backend(&self, chunk: u64, part: usize) -> &Arc<dyn Backend> {
        &self.backends[self.placement.slot(chunk, part)]
    }
}

/// The master's in-memory union of the backends' allocation maps.
#[derive(Debug)]
struct AllocBits(Vec<AtomicU64>);

impl AllocBits {
    fn new(chunks: u64, set: impl Iterator<Item = u64>) -> Self {
        let bits = AllocBits(
            (0..chunks.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
        );
        for c in set {
            bits.set(c);
        }
        bits
    }

    fn get(&self, c: u64) -> bool {
        self.0
            .get((c / 64) as usize)
            .is_some_and(|w| w.load(Ordering::Acquire) & (1 << (c % 64)) != 0)
    }

    fn set(&self, c: u64) {
        if let Some(w) = self.0.get((c / 64) as usize) {
            w.fetch_or(1 << (c % 64), Ordering::Release);
        }
    }

    fn clear(&self, c: u64) {
        if let Some(w) = self.0.get((c / 64) as usize) {
            w.fetch_and(!(1 << (c % 64)), Ordering::Release);
        }
    }

    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().enumerate().flat_map(|(i, w)| {
            let w = w.load(Ordering::Acquire);
            (0..64)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| i as u64 * 64 + b)
        })
    }
}
