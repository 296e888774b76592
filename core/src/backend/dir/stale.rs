//! Degraded maps held by a directory backend: `<nr>/.stale.<backend-uuid>`.
//!
//! One chunk bitmap per other backend that missed writes. Setting a bit is
//! durable (page write + fdatasync) before it returns, because the master
//! acknowledges the write the other backend missed only afterwards.
//! A map whose header is unreadable counts as "every chunk stale" (the safe
//! side: more resync, never a stale read).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use uuid::Uuid;

use super::{AllocState, DirBackend, OpenVolume};
use crate::CoreError;
use crate::backend::BackendResult;
use crate::format::alloc::{AllocMap, BitmapKind, PAGE};
use crate::meta::atomic::write_atomic;
use crate::placement::BackendId;

const PREFIX: &str = ".stale.";

impl DirBackend {
    fn stale_path(v: &OpenVolume, of: BackendId) -> PathBuf {
        v.dir.join(format!("{PREFIX}{of}"))
    }

    /// Loads every degraded map in the volume directory into the open volume.
    pub(super) fn load_stale_files(&self, v: &OpenVolume) -> BackendResult<()> {
        let chunks = v.meta.geometry()?.chunk_count();
        let entries = fs::read_dir(&v.dir).map_err(|e| CoreError::io("list", &v.dir, e))?;
        let mut maps = v.stale.lock().map_err(|_| poisoned())?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
                continue;
            };
            let Ok(uuid) = Uuid::parse_str(id) else {
                continue;
            };
            let of = BackendId(uuid);
            let path = entry.path();
            let map = match fs::read(&path).map_err(|e| e.to_string()).and_then(|b| {
                AllocMap::decode_kind(&b, BitmapKind::Stale, v.meta.uuid).map_err(|e| e.to_string())
            }) {
                Ok(d) => d.map,
                Err(why) => {
                    eprintln!(
                        "qbd: degraded map {} unreadable ({why}): every chunk counts as stale",
                        path.display()
                    );
                    let mut all = AllocMap::with_kind(BitmapKind::Stale, v.meta.uuid, chunks, 0);
                    (0..chunks).for_each(|c| {
                        all.set(c);
                    });
                    all
                }
            };
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| CoreError::io("open", &path, e))?;
            maps.insert(of, AllocState { file, map });
        }
        Ok(())
    }

    pub(super) fn stale_maps(&self) -> BackendResult<Vec<(BackendId, AllocMap)>> {
        let v = self.vol()?;
        let maps = v.stale.lock().map_err(|_| poisoned())?;
        Ok(maps.iter().map(|(id, s)| (*id, s.map.clone())).collect())
    }

    /// Sets (`stale = true`) or clears bits of `of`'s map, durably.
    pub(super) fn update_stale(
        &self,
        of: BackendId,
        chunks: &[u64],
        stale: bool,
    ) -> BackendResult<()> {
        let v = self.vol()?;
        let mut maps = v.stale.lock().map_err(|_| poisoned())?;
        let state = match maps.entry(of) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(_) if !stale => return Ok(()),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(create_map(v, of)?),
        };
        let mut pages: Vec<u64> = chunks
            .iter()
            .filter_map(|&c| {
                if stale {
                    state.map.set(c)
                } else {
                    state.map.clear(c)
                }
            })
            .collect();
        pages.sort_unstable();
        pages.dedup();
        let path = Self::stale_path(v, of);
        for p in &pages {
            let bytes = state.map.encode_page(*p);
            state
                .file
                .write_all_at(&bytes, p * PAGE as u64)
                .map_err(|e| CoreError::io("write", &path, e))?;
        }
        if !pages.is_empty() {
            state
                .file
                .sync_data()
                .map_err(|e| CoreError::io("fsync", &path, e))?;
        }
        Ok(())
    }
}

fn create_map(v: &OpenVolume, of: BackendId) -> BackendResult<AllocState> {
    let chunks = v.meta.geometry()?.chunk_count();
    let map = AllocMap::with_kind(BitmapKind::Stale, v.meta.uuid, chunks, 0);
    let path = DirBackend::stale_path(v, of);
    write_atomic(&path, &map.encode_header())?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| CoreError::io("open", &path, e))?;
    Ok(AllocState { file, map })
}

fn poisoned() -> CoreError {
    CoreError::InvalidSetting("degraded map lock poisoned".into())
}
