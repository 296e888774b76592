//! A backend that is a directory (local disk or an NFS mount).
//!
//! Layout under the root (see `docs/format.md`): `.backend`, `.volumesmeta`,
//! `<nr>/.meta`, `<nr>/.alloc`, `<nr>/.lock`, `<nr>/<part>/<chunk>`.
//! While a master has a volume open, it holds an exclusive `flock` on
//! `<nr>/.lock`; a second master fails to open the volume.
//!
//! I/O runs inline on the calling thread (pread/pwrite; page-cache fast on
//! local disks and tmpfs). Part files are opened on demand and kept in a
//! bounded cache ([`handles`]): the least recently used are closed, after
//! an `fdatasync` if they hold writes not yet synced. The data path lives in [`part_io`]; what
//! `qbd verify` reads (names and sizes, and the deep scan of a part) in
//! [`listing`] and [`scan`], read-only and without opening the volume.

#[cfg(test)]
mod handle_tests;
mod handles;
pub mod listing;
mod part_io;
pub mod scan;
mod stale;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock, RwLock};

use super::{
    Backend, BackendError, BackendResult, BlockWrite, BoxFut, PartId, PartRead, RawBlock,
    WriteOutcome,
};
use crate::CoreError;
use crate::format::alloc::{AllocMap, DecodedAlloc};
use crate::format::header::{HEADER_LEN, OLD_FORMAT_ADVICE, OLD_VERSION, PartHeader};
use crate::format::layout::PartLayout;
use crate::format::record::RECORD_SIZE;
use crate::meta::atomic::{parse_toml, read_optional, write_atomic};
use crate::meta::backend_id;
use crate::meta::volume::VolumeMeta;
use crate::meta::volumes::VolumesFile;
use crate::placement::BackendId;
use crate::redundancy::part_name;
use crate::verify::{PartScan, VolumeListing};

/// A directory backend.
#[derive(Debug)]
pub struct DirBackend {
    root: PathBuf,
    id: BackendId,
    vol: OnceLock<OpenVolume>,
    /// A fixed bound on open part files, instead of a share of the
    /// process-wide budget ([`handles`]).
    handle_limit: Option<usize>,
}

/// The open volume's state.
#[derive(Debug)]
struct OpenVolume {
    dir: PathBuf,
    meta: VolumeMeta,
    layout: PartLayout,
    _lock: File,
    /// Open part files, a bounded number ([`handles`]).
    files: handles::HandleCache<PartId, part_io::PartFile>,
    alloc: Mutex<AllocState>,
    /// Parts written since their last `fdatasync`, each with the sequence
    /// number of its latest marking: an evicted handle's sync clears the
    /// mark only if no write marked the part again meanwhile.
    dirty: Mutex<HashMap<PartId, u64>>,
    /// Source of the sequence numbers in `dirty`.
    dirty_seq: AtomicU64,
    /// A failed `fdatasync` of an evicted handle, reported by the next
    /// sync (after a failed fdatasync the kernel may mark the pages clean,
    /// so a later one on another descriptor could succeed and hide it).
    evict_error: Mutex<Option<BackendError>>,
    /// Held by a sync from taking the dirty parts until their `fdatasync`s
    /// have returned: a sync that finds a part already taken by another
    /// one still in flight must not return before that one does (a FLUSH
    /// answered before the data it covers is durable).
    syncing: Mutex<()>,
    /// Striped per-part locks: a write (check generations, write data, write
    /// records) is atomic against other writes and reads of its part.
    stripes: Vec<RwLock<()>>,
    /// Degraded maps held here, by the backend they describe.
    stale: Mutex<HashMap<BackendId, AllocState>>,
}

#[derive(Debug)]
struct AllocState {
    file: File,
    map: AllocMap,
}

const ALLOC_FILE: &str = ".alloc";
const LOCK_FILE: &str = ".lock";
const STRIPES: usize = 64;

impl OpenVolume {
    /// The lock stripe of `part`.
    fn stripe(&self, part: PartId) -> &RwLock<()> {
        let h = part
            .chunk
            .wrapping_mul(31)
            .wrapping_add(u64::from(part.part));
        &self.stripes[(h % STRIPES as u64) as usize]
    }

    /// Shared access to `part` (reads). The guarded value is `()`, so a
    /// poisoned lock is as good as a clean one.
    fn read_part(&self, part: PartId) -> std::sync::RwLockReadGuard<'_, ()> {
        self.stripe(part).read().unwrap_or_else(|e| e.into_inner())
    }

    /// Exclusive access to `part` (writes).
    fn write_part(&self, part: PartId) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.stripe(part).write().unwrap_or_else(|e| e.into_inner())
    }
}

/// `root` exists and is a directory.
fn require_dir(root: &std::path::Path) -> Result<(), CoreError> {
    let md = fs::metadata(root).map_err(|e| CoreError::io("open backend directory", root, e))?;
    if !md.is_dir() {
        return Err(CoreError::InvalidSetting(format!(
            "{} is not a directory",
            root.display()
        )));
    }
    Ok(())
}

impl DirBackend {
    /// Opens (and on first use initialises) the backend at `root`. The
    /// directory must exist.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, CoreError> {
        let root = root.into();
        require_dir(&root)?;
        let id = backend_id::load_or_create(&root)?;
        Ok(DirBackend {
            root,
            id,
            vol: OnceLock::new(),
            handle_limit: None,
        })
    }

    /// Opens an initialised backend at `root` without writing anything
    /// (for tools that only look): a root without a `.backend` file is an
    /// error, never initialised.
    pub fn open_existing(root: impl Into<PathBuf>) -> Result<Self, CoreError> {
        let root = root.into();
        require_dir(&root)?;
        let path = root.join(backend_id::FILE);
        let bytes = read_optional(&path)?.ok_or_else(|| {
            CoreError::InvalidSetting(format!(
                "{} is not a QBD backend (no {})",
                root.display(),
                backend_id::FILE
            ))
        })?;
        let f: backend_id::BackendFile = parse_toml("backend identity", &path, &bytes)?;
        Ok(DirBackend {
            root,
            id: f.id,
            vol: OnceLock::new(),
            handle_limit: None,
        })
    }

    /// Keeps at most `n` part files open (at least one) rather than a
    /// share of the process-wide budget; takes effect when a volume is
    /// opened.
    pub fn with_handle_limit(mut self, n: usize) -> Self {
        self.handle_limit = Some(n);
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a part file.
    pub fn part_path(&self, number: u16, part: PartId) -> PathBuf {
        VolumeMeta::dir(&self.root, number)
            .join(part_name(usize::from(part.part)).to_string())
            .join(part.chunk.to_string())
    }

    fn vol(&self) -> BackendResult<&OpenVolume> {
        self.vol
            .get()
            .ok_or_else(|| BackendError::NotOpen(self.describe()))
    }

    fn do_create_volume(&self, meta: &VolumeMeta) -> BackendResult<()> {
        let mut list = VolumesFile::load(&self.root)?;
        if let Some(n) = list.volumes.get(&meta.name) {
            return Err(CoreError::Conflict(format!(
                "{} already holds volume {:?} as number {n}",
                self.describe(),
                meta.name
            ))
            .into());
        }
        let dir = VolumeMeta::dir(&self.root, meta.number);
        if dir.exists() {
            return Err(CoreError::Conflict(format!("{} already exists", dir.display())).into());
        }
        fs::create_dir_all(&dir).map_err(|e| CoreError::io("create", &dir, e))?;
        let geo = meta.geometry()?;
        let empty = AllocMap::new(meta.uuid, geo.chunk_count());
        write_atomic(&dir.join(ALLOC_FILE), &empty.encode_header())?;
        meta.save(&self.root)?;
        list.format_version = 1;
        list.volumes.insert(meta.name.clone(), meta.number);
        list.save(&self.root)?;
        Ok(())
    }

    fn do_open_volume(&self, meta: VolumeMeta) -> BackendResult<DecodedAlloc> {
        if let Some(open) = self.vol.get() {
            // Re-opening the volume this backend already has open (a master
            // readmitting it, a new master or `qbd repair` taking over on a
            // node) reports the current map.
            if open.meta.uuid != meta.uuid {
                return Err(CoreError::Conflict(format!(
                    "{} already has another volume open",
                    self.describe()
                ))
                .into());
            }
            // The files may have changed behind this process (deleted,
            // truncated, replaced: what repair looks for). Completed writes
            // are synced, then every cached handle is dropped, so each part
            // file is found and checked again by its path.
            self.sync_parts(None)?;
            open.files.clear();
            let map = open
                .alloc
                .lock()
                .map_err(|_| CoreError::InvalidSetting("allocation map lock poisoned".into()))?
                .map
                .clone();
            return Ok(DecodedAlloc {
                map,
                corrupt_pages: Vec::new(),
            });
        }
        let dir = VolumeMeta::dir(&self.root, meta.number);
        let lock = lock_volume(&dir)?;
        let geo = meta.geometry()?;
        let alloc_path = dir.join(ALLOC_FILE);
        let bytes = read_optional(&alloc_path)?.ok_or_else(|| CoreError::Corrupt {
            what: "allocation map",
            path: alloc_path.clone(),
            why: "missing (without it a deleted part would read as zeros)".into(),
        })?;
        let decoded = AllocMap::decode(&bytes, meta.uuid).map_err(|e| CoreError::Corrupt {
            what: "allocation map",
            path: alloc_path.clone(),
            why: e.to_string(),
        })?;
        refuse_old_format(&dir, &meta, &decoded.map)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&alloc_path)
            .map_err(|e| CoreError::io("open", &alloc_path, e))?;
        for p in 0..geo.redundancy.parts() {
            let pd = dir.join(part_name(p).to_string());
            fs::create_dir_all(&pd).map_err(|e| CoreError::io("create", &pd, e))?;
        }
        let open = OpenVolume {
            layout: PartLayout::new(geo.block_size, geo.blocks_per_part()),
            dir,
            meta,
            _lock: lock,
            files: match self.handle_limit {
                Some(n) => handles::HandleCache::with_cap(n),
                None => handles::HandleCache::shared(),
            },
            alloc: Mutex::new(AllocState {
                file,
                map: decoded.map.clone(),
            }),
            dirty: Mutex::new(HashMap::new()),
            dirty_seq: AtomicU64::new(0),
            evict_error: Mutex::new(None),
            syncing: Mutex::new(()),
            stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
            stale: Mutex::new(HashMap::new()),
        };
        self.load_stale_files(&open)?;
        self.vol.set(open).map_err(|_| {
            CoreError::Conflict(format!("{} already has a volume open", self.describe()))
        })?;
        Ok(decoded)
    }

    fn expected_header(&self, v: &OpenVolume, part: PartId) -> BackendResult<PartHeader> {
        let r = v.meta.redundancy()?;
        Ok(v.layout.header(
            v.meta.uuid,
            part.chunk,
            part.part,
            r.parts() as u8,
            r.data_parts() as u8,
        ))
    }
}

/// Refuses a volume whose part files are in the old format (version 1, an
/// all-zero record meaning "never written"): reading it with this release
/// would call every never-written block of a written group damaged. One
/// part file tells, since a volume's files share one format; the first
/// allocated chunk's first existing part is checked.
fn refuse_old_format(dir: &Path, meta: &VolumeMeta, alloc: &AllocMap) -> BackendResult<()> {
    let Some(chunk) = alloc.iter().next() else {
        return Ok(());
    };
    let parts = meta.redundancy()?.parts();
    for p in 0..parts {
        let path = dir.join(part_name(p).to_string()).join(chunk.to_string());
        let Ok(f) = File::open(&path) else {
            continue;
        };
        let mut head = [0u8; HEADER_LEN];
        if std::os::unix::fs::FileExt::read_exact_at(&f, &mut head, 0).is_err() {
            continue;
        }
        if PartHeader::version_of(&head) == Some(OLD_VERSION) {
            return Err(CoreError::Conflict(format!(
                "volume {:?}: {}: {OLD_FORMAT_ADVICE}",
                meta.name,
                path.display()
            ))
            .into());
        }
        return Ok(());
    }
    Ok(())
}

fn lock_volume(dir: &Path) -> BackendResult<File> {
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| CoreError::io("open", &path, e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(fs::TryLockError::WouldBlock) => Err(CoreError::Locked(dir.to_path_buf()).into()),
        Err(fs::TryLockError::Error(e)) => Err(CoreError::io("lock", &path, e).into()),
    }
}

impl Backend for DirBackend {
    fn id(&self) -> BackendId {
        self.id
    }

    fn describe(&self) -> String {
        format!("dir:{}", self.root.display())
    }

    fn volume_number(&self, name: &str) -> BoxFut<'_, BackendResult<Option<u16>>> {
        let r = VolumesFile::load(&self.root).map(|f| f.volumes.get(name).copied());
        Box::pin(async move { Ok(r?) })
    }

    fn volume_numbers(&self) -> BoxFut<'_, BackendResult<Vec<u16>>> {
        let r = VolumesFile::load(&self.root).map(|f| f.volumes.values().copied().collect());
        Box::pin(async move { Ok(r?) })
    }

    fn create_volume(&self, meta: VolumeMeta) -> BoxFut<'_, BackendResult<()>> {
        Box::pin(async move { self.do_create_volume(&meta) })
    }

    fn load_meta(&self, number: u16) -> BoxFut<'_, BackendResult<Option<VolumeMeta>>> {
        Box::pin(async move { Ok(VolumeMeta::load(&self.root, number)?) })
    }

    fn save_meta(&self, meta: VolumeMeta) -> BoxFut<'_, BackendResult<()>> {
        Box::pin(async move { Ok(meta.save(&self.root)?) })
    }

    fn open_volume(&self, meta: VolumeMeta) -> BoxFut<'_, BackendResult<DecodedAlloc>> {
        Box::pin(async move { self.do_open_volume(meta) })
    }

    fn read(&self, part: PartId, first: u32, count: u32) -> BoxFut<'_, BackendResult<PartRead>> {
        Box::pin(async move { self.read_blocks(part, first, count) })
    }

    fn write(&self, w: BlockWrite) -> BoxFut<'_, BackendResult<WriteOutcome>> {
        Box::pin(async move { self.write_blocks(w, false) })
    }

    fn heal(&self, w: BlockWrite) -> BoxFut<'_, BackendResult<WriteOutcome>> {
        Box::pin(async move { self.write_blocks(w, true) })
    }

    fn recreate(&self, part: PartId) -> BoxFut<'_, BackendResult<()>> {
        Box::pin(async move { self.recreate_part(part) })
    }

    fn load_stale(&self) -> BoxFut<'_, BackendResult<Vec<(BackendId, AllocMap)>>> {
        Box::pin(async move { self.stale_maps() })
    }

    fn mark_stale(&self, of: BackendId, chunks: Vec<u64>) -> BoxFut<'_, BackendResult<()>> {
        Box::pin(async move { self.update_stale(of, &chunks, true) })
    }

    fn clear_stale(&self, of: BackendId, chunks: Vec<u64>) -> BoxFut<'_, BackendResult<()>> {
        Box::pin(async move { self.update_stale(of, &chunks, false) })
    }

    fn allocate(&self, part: PartId) -> BoxFut<'_, BackendResult<()>> {
        Box::pin(async move { self.allocate_part(part) })
    }

    fn sync(&self, parts: Option<Vec<PartId>>) -> BoxFut<'_, BackendResult<()>> {
        Box::pin(async move { self.sync_parts(parts) })
    }

    fn read_raw(&self, part: PartId, block: u32) -> BoxFut<'_, BackendResult<RawBlock>> {
        Box::pin(async move { self.raw_read(part, block) })
    }

    fn write_raw(
        &self,
        part: PartId,
        block: u32,
        data: Option<Vec<u8>>,
        record: Option<[u8; RECORD_SIZE]>,
    ) -> BoxFut<'_, BackendResult<()>> {
        Box::pin(async move { self.raw_write(part, block, data, record) })
    }

    fn list_volume(&self, number: u16) -> BoxFut<'_, BackendResult<VolumeListing>> {
        Box::pin(async move { listing::list_volume(&self.root, number) })
    }

    fn scan_parts(
        &self,
        meta: VolumeMeta,
        parts: Vec<PartId>,
    ) -> BoxFut<'_, BackendResult<Vec<PartScan>>> {
        Box::pin(async move {
            let shape = scan::ScanShape::of(&meta)?;
            Ok(parts
                .into_iter()
                .map(|p| scan::scan_part(&self.part_path(meta.number, p), p, &shape))
                .collect())
        })
    }
}
