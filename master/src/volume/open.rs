//! Opening a volume: find or create it on the backends, bind the backends to
//! the placement table by identity, lock, and take a new epoch.

use std::collections::HashMap;
use std::sync::Arc;

use qbd_core::backend::Backend;
use qbd_core::generation::{GenerationCounter, MAX_EPOCH};
use qbd_core::geometry::Geometry;
use qbd_core::meta::volume::{RequestedShape, VolumeMeta};
use qbd_core::meta::volumes::{VolumesFile, check_name};
use qbd_core::placement::{BackendId, PlacementTable};
use qbd_core::redundancy::Redundancy;
use uuid::Uuid;

use super::admit;
use super::ec::Ec;
use super::fence::Fence;
use super::health::Health;
use super::intent::{Dirty, IntentLog};
use super::journal::{Journal, Outstanding, Shape};
use super::range_lock::RangeLock;
use super::repair::absent::Absent;
use super::{AllocBits, Scheme, Volume, VolumeError};

/// Default block size.
pub const DEFAULT_BLOCK_SIZE: u32 = 4096;
/// Default chunk size.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;

/// What the operator asked for.
#[derive(Debug, Clone)]
pub struct OpenRequest {
    /// Volume name.
    pub name: String,
    /// Shape flags (None = not given).
    pub shape: RequestedShape,
    /// Serve read-only.
    pub read_only: bool,
    /// The master's local state directory (write-intent logs).
    pub state_dir: std::path::PathBuf,
}

/// How [`open_volume_with`] opens a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// A master: create if absent, every backend of the table needed,
    /// take an epoch, recover (replay, reconcile, resync).
    Serve,
    /// A master whose nodes may not all have answered (`unreached` of those
    /// it was given did not): like `Serve`, but backends of the table that
    /// were not reached stand in as unreachable (failed) slots if the others
    /// are enough to serve every chunk (`admit.rs`); they are readmitted when
    /// they answer. Creating a volume still needs every backend.
    ServeDegraded {
        /// How many of the given backends did not answer.
        unreached: usize,
    },
    /// `qbd repair` offline: the volume must exist; backends of the table
    /// that were not given stand in as unreachable (failed) slots; take an
    /// epoch, replay and reconcile, but leave the resync to `qbd repair`.
    Repair,
    /// `qbd repair --dry-run`: like `Repair` but writes nothing anywhere:
    /// no epoch, no recovery (the backends' locks are still taken).
    Inspect,
}

impl OpenMode {
    /// Do absent backends of the table stand in as failed slots?
    fn tolerant(self) -> bool {
        self != OpenMode::Serve
    }

    /// Does the volume serve (and so resync before its ready line)?
    fn serves(self) -> bool {
        matches!(self, OpenMode::Serve | OpenMode::ServeDegraded { .. })
    }

    /// Why this mode cannot create the volume, if it cannot.
    fn cannot_create(self) -> Option<String> {
        match self {
            OpenMode::Serve | OpenMode::ServeDegraded { unreached: 0 } => None,
            OpenMode::ServeDegraded { unreached } => Some(format!(
                "{unreached} of the given backends did not answer; a volume is created only \
                 with all of them"
            )),
            OpenMode::Repair | OpenMode::Inspect => Some("no given backend holds it".into()),
        }
    }
}

/// Opens (creating if no backend has it) volume `req.name` on `backends`.
pub async fn open_volume(
    backends: Vec<Arc<dyn Backend>>,
    req: &OpenRequest,
) -> Result<Volume, VolumeError> {
    open_volume_with(backends, req, OpenMode::Serve).await
}

/// Opens volume `req.name` on `backends` as `mode` says.
pub async fn open_volume_with(
    backends: Vec<Arc<dyn Backend>>,
    req: &OpenRequest,
    mode: OpenMode,
) -> Result<Volume, VolumeError> {
    check_name(&req.name)?;
    check_distinct(&backends)?;
    let numbers = volume_numbers(&backends, &req.name).await?;
    let meta = match (numbers, mode.cannot_create()) {
        (None, Some(why)) => {
            return Err(VolumeError::Setup(format!(
                "unknown volume {:?}: {why}",
                req.name
            )));
        }
        (None, None) => create(&backends, req).await?,
        (Some(nr), _) => load(&backends, nr, req).await?,
    };
    let (slots, absent) = bind_slots(&backends, &meta, mode.tolerant())?;
    let degraded = matches!(mode, OpenMode::ServeDegraded { .. }) && !absent.is_empty();
    if degraded {
        let geo = meta.geometry()?;
        let table = meta.placement()?;
        admit::check_present(
            &meta.name,
            &table,
            geo.redundancy,
            geo.chunk_count(),
            &absent,
        )?;
    }
    let mut alloc = None;
    for (_, b) in slots
        .iter()
        .enumerate()
        .filter(|(s, _)| !absent.contains(s))
    {
        let decoded = b.open_volume(meta.clone()).await?;
        for p in &decoded.corrupt_pages {
            eprintln!(
                "qbd-master: warning: allocation map page {p} on {} is corrupt; its chunks count as written",
                b.describe()
            );
        }
        alloc
            .get_or_insert_with(|| decoded.map.clone())
            .union(&decoded.map);
    }
    // Re-read under the locks: another master may have taken an epoch
    // between our first read and our lock.
    let present: Vec<Arc<dyn Backend>> = (0..slots.len())
        .filter(|s| !absent.contains(s))
        .map(|s| Arc::clone(&slots[s]))
        .collect();
    let meta = reload_locked(&present, meta).await?;
    if mode.serves() {
        refuse_blind_ec_start(&meta, &req.state_dir, &present, &absent).await?;
    }
    let meta = match mode {
        OpenMode::Inspect => meta,
        _ => take_epoch(&present, meta).await?,
    };
    // The maps read above may be old: until the epoch was ours, the
    // previous master still served and could allocate chunks (and write
    // them). Read them again now that no older session can change them
    // (a node refuses its `Allocate` once our `SaveMeta` returned), and
    // keep the union: a chunk missing from the map reads as zeros and is
    // skipped by TRIM, reconcile and resync.
    if mode != OpenMode::Inspect {
        for b in &present {
            let decoded = b.open_volume(meta.clone()).await?;
            if let Some(a) = alloc.as_mut() {
                a.union(&decoded.map);
            }
        }
    }
    let geo = meta.geometry()?;
    let map = alloc.ok_or_else(|| VolumeError::Setup("no backends".into()))?;
    let health = load_health(&slots, &absent, &meta, geo.chunk_count()).await?;
    absent.iter().for_each(|&s| health.set_absent(s));
    if degraded {
        admit::check_stale(&meta.name, &meta.placement()?, geo.redundancy, &health)?;
        announce_degraded(&meta, &absent);
    }
    // Inspecting writes nothing, not even the master's state: its logs go
    // to a scratch directory removed once they are open.
    let scratch = (mode == OpenMode::Inspect).then(|| {
        std::env::temp_dir().join(format!("qbd-inspect-{}-{}", std::process::id(), meta.uuid))
    });
    let state_dir = scratch.as_ref().unwrap_or(&req.state_dir);
    let (intent, dirty) = IntentLog::open(
        state_dir,
        meta.uuid,
        geo.chunk_count(),
        meta.epoch.saturating_sub(1),
        meta.epoch,
    )?;
    let (journal, outstanding) = open_journal(state_dir, &meta, &geo)?;
    if let Some(dir) = &scratch {
        let _ = std::fs::remove_dir_all(dir);
    }
    let fence = Arc::new(Fence::default());
    let volume = Volume {
        fence: Arc::clone(&fence),
        placement: meta.placement()?,
        generations: GenerationCounter::new(meta.epoch),
        allocated: AllocBits::new(geo.chunk_count(), map.iter()),
        alloc_lock: tokio::sync::Mutex::new(()),
        locks: RangeLock::default(),
        read_only: req.read_only || meta.read_only,
        backends: super::slot::Slots::new(slots, &fence),
        geo,
        meta: meta.into(),
        health,
        intent,
        scheme: Scheme::new(Ec::for_geometry(&geo)?, journal)?,
        read_turn: Default::default(),
    };
    if mode != OpenMode::Inspect {
        recover(&volume, dirty, outstanding, mode.serves()).await?;
    }
    Ok(volume)
}

/// An erasure-coded volume last served by a master on another host (or
/// whose journal is gone) may hold rows that master left half-written; its
/// journal, which would redo them, is not here, and such a row is restored
/// from the parts alone only when every part is there and current. So a
/// start without some backend, or with parts not resynced yet, is refused
/// before the epoch is taken (the serving master, if any, is not
/// disturbed); with every part current, or on the host that served last,
/// it starts. (The degraded map is read before the epoch is ours: a part
/// the old master marks stale after this read is not seen here.)
async fn refuse_blind_ec_start(
    meta: &VolumeMeta,
    state: &std::path::Path,
    present: &[Arc<dyn Backend>],
    absent: &[usize],
) -> Result<(), VolumeError> {
    if !matches!(meta.geometry()?.redundancy, Redundancy::Ec { .. }) {
        return Ok(());
    }
    if super::journal::owner_epoch(state, meta.uuid) == Some(meta.epoch) {
        return Ok(());
    }
    let mut stale = 0;
    for b in present {
        for (_, map) in b.load_stale().await? {
            stale += map.iter().count();
        }
    }
    if absent.is_empty() && stale == 0 {
        return Ok(());
    }
    Err(VolumeError::Setup(format!(
        "volume {:?} is erasure coded and its last master (epoch {}) did not run with this \
         state directory ({}), so the journal that closes its write hole is elsewhere: rows that \
         master left half-written can be restored only from every part, current; {} backend(s) \
         did not answer and {stale} part(s) are marked stale. Start it once every backend of \
         the placement table answers and is resynced, or on the host (state directory) that \
         served it last",
        meta.name,
        meta.epoch,
        state.display(),
        absent.len()
    )))
}

/// Says once, at open, which backends the volume serves without.
fn announce_degraded(meta: &VolumeMeta, absent: &[usize]) {
    for &s in absent {
        eprintln!(
            "qbd-master: volume {:?} serves DEGRADED without backend {} (slot {s} of {}): it did \
             not answer; its parts count as failed and the writes it misses are recorded in the \
             degraded map until it answers, is readmitted and resynced",
            meta.name,
            meta.placement[s],
            meta.placement.len()
        );
    }
}

/// The EC journal (none for replicated volumes) and what it holds to redo.
fn open_journal(
    state: &std::path::Path,
    meta: &VolumeMeta,
    geo: &Geometry,
) -> Result<(Option<Journal>, Outstanding), VolumeError> {
    let Redundancy::Ec { k, m } = geo.redundancy else {
        return Ok((None, Outstanding::default()));
    };
    let shape = Shape {
        k,
        m,
        block_size: geo.block_size,
    };
    let (j, out) = Journal::open(
        state,
        meta.uuid,
        meta.epoch.saturating_sub(1),
        meta.epoch,
        shape,
    )?;
    Ok((Some(j), out))
}

/// Replays the EC journal, reconciles what a crash may have left
/// inconsistent, then (if `resync`) resyncs stale parts.
async fn recover(
    volume: &Volume,
    dirty: Dirty,
    journal: Outstanding,
    resync: bool,
) -> Result<(), VolumeError> {
    volume.replay_journal(journal).await?;
    let chunks = match dirty {
        Dirty::Chunks(c) => c,
        Dirty::All(why) => {
            let all: Vec<u64> = volume.allocated.iter().collect();
            if !all.is_empty() {
                eprintln!(
                    "qbd-master: {why}: reconciling all {} written chunk(s)",
                    all.len()
                );
            }
            all
        }
    };
    for &c in chunks.iter().filter(|&&c| volume.allocated.get(c)) {
        volume.complete_allocation(c).await?;
    }
    volume.reconcile(&chunks).await?;
    // A backend absent now may disagree with what reconcile chose: its
    // parts of those chunks are stale until resynced.
    let absent: Vec<usize> = (0..volume.backends.len())
        .filter(|&s| volume.health.is_failed(s))
        .collect();
    if !absent.is_empty() && !chunks.is_empty() {
        volume.degrade(&absent, &chunks).await?;
    }
    volume.intent.recovered()?;
    if resync {
        volume.resync().await?;
    }
    Ok(())
}

/// The degraded maps of all backends, merged per slot.
async fn load_health(
    slots: &[Arc<dyn Backend>],
    absent: &[usize],
    meta: &VolumeMeta,
    chunks: u64,
) -> Result<Health, VolumeError> {
    let health = Health::new(slots.len(), chunks);
    for (_, b) in slots
        .iter()
        .enumerate()
        .filter(|(s, _)| !absent.contains(s))
    {
        for (of, map) in b.load_stale().await? {
            let Some(slot) = meta.placement.iter().position(|id| *id == of) else {
                continue;
            };
            map.iter().for_each(|c| health.set_stale(slot, c));
        }
    }
    Ok(health)
}

fn check_distinct(backends: &[Arc<dyn Backend>]) -> Result<(), VolumeError> {
    let mut seen = HashMap::new();
    for b in backends {
        if let Some(other) = seen.insert(b.id(), b.describe()) {
            return Err(VolumeError::Setup(format!(
                "{} and {} are the same backend (identity {})",
                other,
                b.describe(),
                b.id()
            )));
        }
    }
    Ok(())
}

/// The volume's number if the backends hold it; errors if only some do or they disagree.
async fn volume_numbers(
    backends: &[Arc<dyn Backend>],
    name: &str,
) -> Result<Option<u16>, VolumeError> {
    let mut found: Vec<(String, Option<u16>)> = Vec::new();
    for b in backends {
        found.push((b.describe(), b.volume_number(name).await?));
    }
    let holders: Vec<_> = found
        .iter()
        .filter_map(|(d, n)| n.map(|n| (d, n)))
        .collect();
    if holders.is_empty() {
        return Ok(None);
    }
    if let Some((d, _)) = found.iter().find(|(_, n)| n.is_none()) {
        return Err(VolumeError::Setup(format!(
            "{d} does not hold volume {name:?} but the other backends do: it is a new or foreign directory; \
             give the volume's own backends (replacing a backend is `qbd repair --replace`)"
        )));
    }
    let nr = holders[0].1;
    if let Some((d, n)) = holders.iter().find(|(_, n)| *n != nr) {
        return Err(VolumeError::Setup(format!(
            "{d} holds volume {name:?} as number {n}, others as {nr}: these backends belong to different clusters"
        )));
    }
    Ok(Some(nr))
}

async fn create(
    backends: &[Arc<dyn Backend>],
    req: &OpenRequest,
) -> Result<VolumeMeta, VolumeError> {
    let s = &req.shape;
    let size = s.size.ok_or_else(|| {
        VolumeError::Setup(format!(
            "volume {:?} does not exist yet: --size is needed to create it",
            req.name
        ))
    })?;
    let redundancy = s.redundancy.ok_or_else(|| {
        VolumeError::Setup(format!(
            "volume {:?} does not exist yet: --redundancy is needed to create it",
            req.name
        ))
    })?;
    let geo = Geometry::new(
        size,
        s.block_size.unwrap_or(DEFAULT_BLOCK_SIZE),
        s.chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE),
        redundancy,
    )?;
    let ids: Vec<BackendId> = backends.iter().map(|b| b.id()).collect();
    PlacementTable::new(ids.clone(), redundancy.parts())?;
    let mut files = Vec::new();
    for b in backends {
        let used = b.volume_numbers().await?;
        files.push(VolumesFile {
            format_version: 1,
            volumes: used.into_iter().map(|n| (n.to_string(), n)).collect(),
        });
    }
    let meta = VolumeMeta {
        format_version: 1,
        name: req.name.clone(),
        uuid: Uuid::new_v4(),
        number: VolumesFile::allocate(&files)?,
        size: geo.size,
        block_size: geo.block_size,
        chunk_size: geo.chunk_size,
        redundancy: redundancy.to_string(),
        read_only: false,
        append_only: false,
        epoch: 0,
        master: String::new(),
        placement: ids,
    };
    for b in backends {
        b.create_volume(meta.clone()).await?;
    }
    eprintln!(
        "qbd-master: created volume {:?} (number {}, {} bytes, {}, block {}, chunk {}) on {} backend(s)",
        meta.name,
        meta.number,
        meta.size,
        meta.redundancy,
        meta.block_size,
        meta.chunk_size,
        backends.len()
    );
    Ok(meta)
}

async fn load(
    backends: &[Arc<dyn Backend>],
    nr: u16,
    req: &OpenRequest,
) -> Result<VolumeMeta, VolumeError> {
    let mut found = Vec::new();
    for b in backends {
        let m = b.load_meta(nr).await?.ok_or_else(|| {
            VolumeError::Setup(format!(
                "{} lists volume {:?} but its {nr}/.meta is missing",
                b.describe(),
                req.name
            ))
        })?;
        found.push((b, m));
    }
    // The volume is the one whose placement table holds the most of the
    // given backends (each holding that volume): the others are foreign,
    // whatever order the directories were given in.
    let score = |uuid: Uuid, table: &[BackendId]| {
        found
            .iter()
            .filter(|(b, m)| m.uuid == uuid && table.contains(&b.id()))
            .count()
    };
    let reference = found
        .iter()
        .max_by_key(|(_, m)| (score(m.uuid, &m.placement), m.epoch))
        .map(|(_, m)| m.uuid)
        .ok_or_else(|| VolumeError::Setup("no backends given".into()))?;
    if let Some((b, m)) = found.iter().find(|(_, m)| m.uuid != reference) {
        return Err(VolumeError::Setup(format!(
            "{} holds a different volume {:?} (uuid {}, the other backends hold {}): a foreign directory",
            b.describe(),
            req.name,
            m.uuid,
            reference
        )));
    }
    let meta = found
        .into_iter()
        .map(|(_, m)| m)
        .max_by_key(|m| m.epoch)
        .ok_or_else(|| VolumeError::Setup("no backends given".into()))?;
    meta.check_requested(&req.shape)?;
    Ok(meta)
}

/// Backends by slot, and the slots that stand in for absent ones.
type Slots = (Vec<Arc<dyn Backend>>, Vec<usize>);

/// Orders the given backends by the placement table; refuses extra ones,
/// and missing ones unless `tolerate_absent` (then they stand in as
/// [`Absent`] backends, whose slots are returned second).
fn bind_slots(
    backends: &[Arc<dyn Backend>],
    meta: &VolumeMeta,
    tolerate_absent: bool,
) -> Result<Slots, VolumeError> {
    let by_id: HashMap<BackendId, &Arc<dyn Backend>> =
        backends.iter().map(|b| (b.id(), b)).collect();
    for b in backends {
        if !meta.placement.contains(&b.id()) {
            return Err(VolumeError::Setup(format!(
                "{} (identity {}) is not in volume {:?}'s placement table",
                b.describe(),
                b.id(),
                meta.name
            )));
        }
    }
    let mut absent = Vec::new();
    let slots = meta
        .placement
        .iter()
        .enumerate()
        .map(|(slot, id)| match by_id.get(id) {
            Some(b) => Ok(Arc::clone(b)),
            None if tolerate_absent => {
                absent.push(slot);
                Ok(Arc::new(Absent::new(*id)) as Arc<dyn Backend>)
            }
            None => Err(VolumeError::Setup(format!(
                "backend {id} of volume {:?} was not given (all {} backends of its placement table are needed)",
                meta.name,
                meta.placement.len()
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((slots, absent))
}

/// The freshest `.meta` of the volume, read while holding the backends' locks.
async fn reload_locked(
    backends: &[Arc<dyn Backend>],
    meta: VolumeMeta,
) -> Result<VolumeMeta, VolumeError> {
    let mut best = meta;
    for b in backends {
        let Some(m) = b.load_meta(best.number).await? else {
            return Err(VolumeError::Setup(format!(
                "{}: {}/.meta vanished",
                b.describe(),
                best.number
            )));
        };
        if m.uuid != best.uuid {
            return Err(VolumeError::Setup(format!(
                "{}: volume changed identity while opening",
                b.describe()
            )));
        }
        if m.epoch > best.epoch {
            best = m;
        }
    }
    Ok(best)
}

/// Bumps the epoch and records it on every backend.
async fn take_epoch(
    backends: &[Arc<dyn Backend>],
    mut meta: VolumeMeta,
) -> Result<VolumeMeta, VolumeError> {
    if meta.epoch >= MAX_EPOCH {
        return Err(VolumeError::Setup("epoch space exhausted".into()));
    }
    meta.epoch += 1;
    meta.master = master_identity();
    for b in backends {
        b.save_meta(meta.clone()).await.map_err(|e| match e {
            e if e.is_fenced() => VolumeError::Setup(format!(
                "cannot take epoch {} of volume {:?}: {e}. Another master is starting or serving \
                 this volume; stop it first (one master per volume)",
                meta.epoch, meta.name
            )),
            e => e.into(),
        })?;
    }
    Ok(meta)
}

/// This master's identity, as the epoch compare-and-set compares it:
/// `host:pid:nonce` (the nonce tells two masters apart even where host
/// names and pids repeat, as in containers).
fn master_identity() -> String {
    let nonce = Uuid::new_v4().simple().to_string();
    format!("{}:{}:{}", hostname(), std::process::id(), &nonce[..8])
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Parses `--redundancy`.
pub fn parse_redundancy(s: &str) -> Result<Redundancy, VolumeError> {
    Ok(s.parse()?)
}
