//! The master's write-intent log: `<state>/<volume-uuid>.intent`.
//!
//! Before the first write to a clean chunk, its bit is set and synced here
//! (an md-style write-intent bitmap). After a master crash, the chunks set
//! in the log are the only ones whose replicas can disagree: they are
//! reconciled before the volume is served. Bits are cleared lazily after a
//! FLUSH: a chunk is clean again once no write to it is in flight and its
//! last write completed before the FLUSH started. Clearing is not synced (a
//! lost clear only costs an extra reconcile).
//!
//! The file's header tag is the epoch of the master that wrote it. A log
//! whose tag is not the volume's previous epoch (another host's master ran
//! since, or the state directory is new) is not trusted: every written chunk
//! is reconciled instead.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use qbd_core::format::alloc::{AllocMap, BitmapKind, PAGE};
use qbd_core::meta::atomic::{read_optional, write_atomic};
use uuid::Uuid;

use super::VolumeError;

/// The open log.
#[derive(Debug)]
pub struct IntentLog {
    path: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    file: File,
    map: AllocMap,
    uses: HashMap<u64, ChunkUse>,
    seq: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct ChunkUse {
    inflight: u32,
    last_done: u64,
}

/// What the previous log says must be reconciled.
#[derive(Debug, PartialEq, Eq)]
pub enum Dirty {
    /// These chunks (the log was trusted).
    Chunks(Vec<u64>),
    /// Unknown: reconcile every written chunk (and why).
    All(String),
}

fn io(op: &str, path: &Path, e: impl std::fmt::Display) -> VolumeError {
    VolumeError::Setup(format!("{op} {}: {e}", path.display()))
}

impl IntentLog {
    /// Reads the previous log and starts the log of `epoch`, carrying over
    /// the chunks still to reconcile (so a crash during recovery loses nothing).
    pub fn open(
        state: &Path,
        volume: Uuid,
        chunks: u64,
        prev_epoch: u64,
        epoch: u64,
    ) -> Result<(Self, Dirty), VolumeError> {
        std::fs::create_dir_all(state).map_err(|e| io("create state directory", state, e))?;
        let path = state.join(format!("{volume}.intent"));
        let dirty = match read_optional(&path)? {
            None => Dirty::All(format!("no write-intent log at {}", path.display())),
            Some(bytes) => match AllocMap::decode_kind(&bytes, BitmapKind::Intent, volume) {
                Err(e) => Dirty::All(format!(
                    "write-intent log {} unreadable: {e}",
                    path.display()
                )),
                Ok(d) if d.map.tag() != prev_epoch => Dirty::All(format!(
                    "write-intent log {} is from epoch {}, the volume's last epoch was {prev_epoch}",
                    path.display(),
                    d.map.tag()
                )),
                Ok(d) => Dirty::Chunks(d.map.iter().collect()),
            },
        };
        let mut map = AllocMap::with_kind(BitmapKind::Intent, volume, chunks, epoch);
        if let Dirty::Chunks(c) = &dirty {
            c.iter().for_each(|&c| {
                map.set(c);
            });
        } else {
            // Until recovery is done, a crash must again reconcile everything.
            (0..chunks).for_each(|c| {
                map.set(c);
            });
        }
        write_atomic(&path, &map.encode())?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io("open", &path, e))?;
        let inner = Inner {
            file,
            map,
            uses: HashMap::new(),
            seq: 0,
        };
        Ok((
            IntentLog {
                path,
                inner: Mutex::new(inner),
            },
            dirty,
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks every chunk clean after recovery (one atomic rewrite).
    pub fn recovered(&self) -> Result<(), VolumeError> {
        let mut g = self.lock();
        let (volume, chunks, epoch) = (g.map.volume(), g.map.chunks(), g.map.tag());
        g.map = AllocMap::with_kind(BitmapKind::Intent, volume, chunks, epoch);
        write_atomic(&self.path, &g.map.encode())?;
        g.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|e| io("open", &self.path, e))?;
        Ok(())
    }

    /// Call before writing to `chunk`: its bit is durable when this returns.
    pub fn begin(&self, chunk: u64) -> Result<(), VolumeError> {
        let mut g = self.lock();
        g.uses.entry(chunk).or_default().inflight += 1;
        let Some(page) = g.map.set(chunk) else {
            return Ok(());
        };
        let bytes = g.map.encode_page(page);
        let res = g
            .file
            .write_all_at(&bytes, page * PAGE as u64)
            .and_then(|()| g.file.sync_data());
        if let Err(e) = res {
            g.map.clear(chunk);
            if let Some(u) = g.uses.get_mut(&chunk) {
                u.inflight -= 1;
            }
            return Err(io("write", &self.path, e));
        }
        Ok(())
    }

    /// Call when a write to `chunk` (begun with [`begin`](Self::begin)) ended.
    pub fn end(&self, chunk: u64) {
        let mut g = self.lock();
        g.seq += 1;
        let seq = g.seq;
        if let Some(u) = g.uses.get_mut(&chunk) {
            u.inflight = u.inflight.saturating_sub(1);
            u.last_done = seq;
        }
    }

    /// Call when a FLUSH starts; pass the mark to [`flushed`](Self::flushed).
    pub fn flush_started(&self) -> u64 {
        let mut g = self.lock();
        g.seq += 1;
        g.seq
    }

    /// Clears chunks whose writes all completed before the flush `mark`.
    pub fn flushed(&self, mark: u64) {
        let mut g = self.lock();
        let clean: Vec<u64> = g
            .uses
            .iter()
            .filter(|(_, u)| u.inflight == 0 && u.last_done < mark)
            .map(|(c, _)| *c)
            .collect();
        let mut pages: Vec<u64> = clean.iter().filter_map(|&c| g.map.clear(c)).collect();
        for c in &clean {
            g.uses.remove(c);
        }
        pages.sort_unstable();
        pages.dedup();
        for p in pages {
            let bytes = g.map.encode_page(p);
            if let Err(e) = g.file.write_all_at(&bytes, p * PAGE as u64) {
                eprintln!(
                    "qbd-master: cannot clear write-intent bits in {}: {e}",
                    self.path.display()
                );
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOL: Uuid = Uuid::from_u128(5);

    #[test]
    fn a_crash_leaves_written_chunks_dirty_and_a_flush_cleans_them() {
        let d = tempfile::tempdir().expect("tempdir");
        let (log, dirty) = IntentLog::open(d.path(), VOL, 100, 0, 1).expect("open");
        assert!(matches!(dirty, Dirty::All(_)), "no log yet: reconcile all");
        log.recovered().expect("recovered");
        log.begin(7).expect("begin");
        log.end(7);
        log.begin(9).expect("begin");
        // "Crash": reopen for epoch 2 without flushing.
        drop(log);
        let (log, dirty) = IntentLog::open(d.path(), VOL, 100, 1, 2).expect("open");
        assert_eq!(dirty, Dirty::Chunks(vec![7, 9]));
        log.recovered().expect("recovered");
        log.begin(7).expect("begin");
        log.end(7);
        log.begin(8).expect("begin");
        let mark = log.flush_started();
        log.flushed(mark);
        drop(log);
        let (_log, dirty) = IntentLog::open(d.path(), VOL, 100, 2, 3).expect("open");
        assert_eq!(
            dirty,
            Dirty::Chunks(vec![8]),
            "7 was flushed; 8 was still in flight"
        );
    }

    #[test]
    fn a_log_from_another_epoch_is_not_trusted() {
        let d = tempfile::tempdir().expect("tempdir");
        let (log, _) = IntentLog::open(d.path(), VOL, 10, 0, 1).expect("open");
        log.recovered().expect("recovered");
        drop(log);
        let (_, dirty) = IntentLog::open(d.path(), VOL, 10, 4, 5).expect("open");
        assert!(matches!(dirty, Dirty::All(why) if why.contains("epoch 1")));
    }

    #[test]
    fn a_crash_during_recovery_keeps_everything_dirty() {
        let d = tempfile::tempdir().expect("tempdir");
        let (log, _) = IntentLog::open(d.path(), VOL, 10, 0, 1).expect("open");
        drop(log); // crashed before `recovered`
        let (_, dirty) = IntentLog::open(d.path(), VOL, 10, 1, 2).expect("open");
        assert_eq!(dirty, Dirty::Chunks((0..10).collect()));
    }
}
