//! The master journal of an EC volume: `<state>/<volume-uuid>.journal`.
//! It closes the write hole of erasure coding.
//!
//! - **Append**: before the backend writes of a row update, a redo record
//!   (its new data and parity blocks, their generation, the parity covers)
//!   is appended and fsynced ([`Journal::append`]). Appends are group
//!   committed: records of concurrent row updates queue behind the one
//!   fsync in progress and share the next one (one `write` + one
//!   `fdatasync` per batch, off the runtime's worker threads).
//! - **Retire**: a record is retired once the backends have synced its
//!   blocks: when a FLUSH that started after the row update ended has
//!   synced every healthy backend ([`Journal::flush_started`] /
//!   [`Journal::flushed`]), or right away for FUA writes (their parts were
//!   synced before the reply). Retirement is in memory only.
//! - **Bounded**: when every written record is retired the file is cut back
//!   to its header; when live records remain in a large file, the records
//!   a replay still needs are copied to a new file (compaction). The
//!   volume FLUSHes by itself once the file exceeds [`FLUSH_AT`].
//! - **Replay**: at open, the records of the previous epoch's master are
//!   returned for replay, in sequence order, before the volume is served;
//!   the header is first re-tagged with the new epoch (a crash during
//!   replay replays again).
//!   Reading stops at the first record that is short, fails its checksum,
//!   names another volume or does not increase the sequence: a torn tail
//!   (crash during an append) was never acknowledged, so it is ignored.
//!
//! **Invariant** (what makes replay in sequence order sound): the file
//! holds every live record, and for every row it holds a record of, it
//! holds that row's newest record. Appends keep it (the new record is the
//! newest of its rows); compaction keeps it by its rule ([`keep`]: a
//! retired record newer than a kept record of the same rows is kept too —
//! a FUA record retires at once while an older record of its row may still
//! be live); the cut to the header happens only when every record is
//! retired, i.e. synced. A cut that has not reached the disk yet leaves
//! the old file, which held the invariant too; once a record is appended
//! after the cut, the sequence check of the scan stops before any old
//! record that survived past the new ones.
//!
//! The file's header carries the epoch of the master owning it; records of
//! a journal whose tag is not the volume's previous epoch (another master
//! has run since) are not replayed — the write-intent log reconciles every
//! written chunk in that case.

mod keep;
mod record;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use keep::Rows;
pub use record::{Header, PartPut, Record, RowUpdate, Torn};

use super::VolumeError;
use record::HEADER_LEN;

/// The volume FLUSHes by itself when its journal grows past this.
pub const FLUSH_AT: u64 = 64 << 20;
/// Files past this with few live records are compacted.
const COMPACT_AT: u64 = 16 << 20;
/// A compaction is worth it when what it keeps is less than this share.
const COMPACT_RATIO: u64 = 4;

/// The open journal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    volume: Uuid,
    epoch: u64,
    shape: Shape,
    /// Held by the task writing and syncing a batch.
    io: tokio::sync::Mutex<()>,
    state: Mutex<State>,
    /// Every record with a sequence ≤ this is durable.
    durable: AtomicU64,
    fsyncs: AtomicU64,
}

/// K, M and the block size: what a record's layout depends on.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Data parts.
    pub k: u8,
    /// Parity parts.
    pub m: u8,
    /// Block size.
    pub block_size: u32,
}

#[derive(Debug)]
struct State {
    file: Arc<File>,
    next_seq: u64,
    /// Encoded records not yet written, in sequence order.
    pending: Vec<u8>,
    pending_recs: Vec<(u64, u64)>,
    /// File length (records written).
    end: u64,
    /// Records not retired.
    live: BTreeMap<u64, Live>,
    /// Retired records still in the file (a compaction may keep them).
    retired: BTreeMap<u64, Retired>,
    /// The file length past which a compaction is tried.
    compact_at: u64,
    clock: u64,
    broken: Option<String>,
}

#[derive(Debug)]
struct Live {
    /// Offset once written.
    off: Option<u64>,
    len: u64,
    rows: Rows,
    /// Clock value when the row update ended.
    done_at: Option<u64>,
}

/// A retired record in the file: its blocks are synced on the backends.
#[derive(Debug)]
struct Retired {
    off: u64,
    len: u64,
    rows: Rows,
}

/// A record in the file, as compaction sees it.
#[derive(Debug)]
struct InFile {
    seq: u64,
    off: u64,
    len: u64,
    rows: Rows,
    live: bool,
}

/// A durable record of a row update in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Ticket(u64);

/// What the previous master left to redo.
#[derive(Debug, Default)]
pub struct Outstanding {
    /// Records to replay, in sequence (journal) order: the order the
    /// updates of each row were applied (module docs, invariant).
    pub records: Vec<Record>,
    /// Why something was ignored (torn tail, untrusted file), for the log.
    pub notes: Vec<String>,
}

fn io_err(op: &str, path: &Path, e: impl std::fmt::Display) -> VolumeError {
    VolumeError::Journal(format!("{op} {}: {e}", path.display()))
}

/// The epoch of the master that owns the journal of `volume` in `state`
/// (the last master on this host), if there is a valid one. A master whose
/// predecessor (the volume's epoch before its own) is not that epoch cannot
/// replay the row writes its predecessor left in flight.
pub fn owner_epoch(state: &Path, volume: Uuid) -> Option<u64> {
    let path = state.join(format!("{volume}.journal"));
    let mut head = vec![0u8; HEADER_LEN];
    let file = std::fs::File::open(path).ok()?;
    file.read_exact_at(&mut head, 0).ok()?;
    let h = Header::decode(&head)?;
    (h.volume == volume).then_some(h.epoch)
}

impl Journal {
    /// Opens the journal of `volume` for the master of `epoch`, returning
    /// the records the master of `prev_epoch` left outstanding.
    pub fn open(
        state: &Path,
        volume: Uuid,
        prev_epoch: u64,
        epoch: u64,
        shape: Shape,
    ) -> Result<(Journal, Outstanding), VolumeError> {
        std::fs::create_dir_all(state).map_err(|e| io_err("create", state, e))?;
        let path = state.join(format!("{volume}.journal"));
        let bytes = match std::fs::read(&path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("read", &path, e)),
        };
        let (out, keep) = match &bytes {
            None => (Outstanding::default(), 0),
            Some(b) => scan(b, volume, prev_epoch, &path),
        };
        let file = if keep == 0 {
            create_fresh(&path, volume, epoch)?
        } else {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| io_err("open", &path, e))?;
            let header = Header { volume, epoch }.encode();
            f.set_len(keep as u64)
                .and_then(|()| f.write_all_at(&header, 0))
                .and_then(|()| f.sync_data())
                .map_err(|e| io_err("re-tag", &path, e))?;
            f
        };
        let next_seq = out.records.last().map_or(1, |r| r.seq + 1);
        let journal = Journal {
            path,
            volume,
            epoch,
            shape,
            io: tokio::sync::Mutex::new(()),
            state: Mutex::new(State {
                file: Arc::new(file),
                next_seq,
                pending: Vec::new(),
                pending_recs: Vec::new(),
                end: keep.max(HEADER_LEN) as u64,
                live: BTreeMap::new(),
                retired: BTreeMap::new(),
                compact_at: COMPACT_AT,
                clock: 0,
                broken: None,
            }),
            durable: AtomicU64::new(next_seq - 1),
            fsyncs: AtomicU64::new(0),
        };
        Ok((journal, out))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a redo record of `update`; it is durable when this returns.
    pub async fn append(&self, update: &RowUpdate) -> Result<Ticket, VolumeError> {
        let seq = {
            let mut s = self.lock();
            if let Some(why) = &s.broken {
                return Err(VolumeError::Journal(why.clone()));
            }
            let seq = s.next_seq;
            s.next_seq += 1;
            let bytes = record::encode(
                seq,
                self.volume,
                self.epoch,
                update,
                [self.shape.k, self.shape.m],
                self.shape.block_size,
            );
            let len = bytes.len() as u64;
            s.pending.extend_from_slice(&bytes);
            s.pending_recs.push((seq, len));
            s.live.insert(
                seq,
                Live {
                    off: None,
                    len,
                    rows: Rows::of(update),
                    done_at: None,
                },
            );
            seq
        };
        let _io = self.io.lock().await;
        if self.durable.load(Ordering::Acquire) >= seq {
            return Ok(Ticket(seq)); // an earlier batch's fsync covered it
        }
        let (buf, recs, off, file) = {
            let mut s = self.lock();
            if let Some(why) = &s.broken {
                return Err(VolumeError::Journal(why.clone()));
            }
            let buf = std::mem::take(&mut s.pending);
            let recs = std::mem::take(&mut s.pending_recs);
            let off = s.end;
            s.end += buf.len() as u64;
            (buf, recs, off, Arc::clone(&s.file))
        };
        let r = tokio::task::spawn_blocking(move || {
            file.write_all_at(&buf, off)?;
            file.sync_data()
        })
        .await;
        let r = match r {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let mut s = self.lock();
        if let Err(e) = r {
            let why = format!("journal {} failed: {e}", self.path.display());
            s.broken = Some(why.clone());
            return Err(VolumeError::Journal(why));
        }
        let mut at = off;
        for (q, len) in &recs {
            if let Some(l) = s.live.get_mut(q) {
                l.off = Some(at);
            }
            at += len;
        }
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        if let Some((last, _)) = recs.last() {
            self.durable.fetch_max(*last, Ordering::Release);
        }
        Ok(Ticket(seq))
    }

    /// The row update of `t` ended (its backend writes returned).
    pub fn done(&self, t: Ticket) {
        let mut s = self.lock();
        s.clock += 1;
        let now = s.clock;
        if let Some(l) = s.live.get_mut(&t.0) {
            l.done_at = Some(now);
        }
    }

    /// The blocks of `t` are synced on their backends (FUA): retire it.
    pub async fn synced(&self, t: Ticket) {
        self.lock().retire(t.0);
        self.shrink().await;
    }

    /// Call when a FLUSH starts; pass the mark to [`flushed`](Self::flushed).
    pub fn flush_started(&self) -> u64 {
        let mut s = self.lock();
        s.clock += 1;
        s.clock
    }

    /// The FLUSH of `mark` synced the backends: retire the records of row
    /// updates that ended before it started.
    pub async fn flushed(&self, mark: u64) {
        {
            let mut s = self.lock();
            let ended: Vec<u64> = s
                .live
                .iter()
                .filter(|(_, l)| l.done_at.is_some_and(|d| d < mark))
                .map(|(seq, _)| *seq)
                .collect();
            for seq in ended {
                s.retire(seq);
            }
        }
        self.shrink().await;
    }

    /// After the replay at open: every record is retired (the caller has
    /// synced the backends). The cut is synced, so what was replayed is
    /// never replayed over later writes.
    pub async fn replayed(&self) -> Result<(), VolumeError> {
        let _io = self.io.lock().await;
        let mut s = self.lock();
        s.live.clear();
        s.retired.clear();
        s.file
            .set_len(HEADER_LEN as u64)
            .and_then(|()| s.file.sync_data())
            .map_err(|e| io_err("truncate", &self.path, e))?;
        s.end = HEADER_LEN as u64;
        Ok(())
    }

    /// Whether the file is large enough that the volume should FLUSH.
    pub fn wants_flush(&self) -> bool {
        self.lock().end > FLUSH_AT
    }

    /// File length (header and written records).
    pub fn len(&self) -> u64 {
        self.lock().end
    }

    /// Whether no record is written.
    pub fn is_empty(&self) -> bool {
        self.len() <= HEADER_LEN as u64
    }

    /// Batches written and synced so far.
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    /// Cuts the file back to its header when no written record is live, or
    /// compacts a large file holding few live records. The cut is not
    /// synced: the next batch's `fdatasync` makes the new length durable,
    /// and until then the old file, which holds the journal's invariant,
    /// replays soundly (module docs).
    async fn shrink(&self) {
        let _io = self.io.lock().await;
        let mut s = self.lock();
        if s.end <= HEADER_LEN as u64 {
            return;
        }
        let live_bytes = s.live_bytes();
        if live_bytes == 0 {
            s.cut(&self.path);
        } else if s.end > s.compact_at && live_bytes * COMPACT_RATIO < s.end {
            if let Err(e) = self.compact(&mut s) {
                eprintln!(
                    "qbd-master: cannot compact journal {}: {e}",
                    self.path.display()
                );
            }
            // Why: records kept for their rows may leave little to gain;
            // retry only once the file has doubled, not on every retire.
            s.compact_at = COMPACT_AT.max(s.end.saturating_mul(2));
        }
    }

    /// Copies the records a replay still needs ([`keep::kept`]) to a new
    /// file, in sequence order, and renames it over the old one (synced
    /// before the rename, so a crash leaves one or the other). Skipped
    /// when the kept records are not much smaller than the file.
    fn compact(&self, s: &mut State) -> Result<(), VolumeError> {
        let records = s.in_file();
        let keep = keep::kept(records.iter().map(|r| (r.rows, r.live)));
        let kept: Vec<&InFile> = records
            .iter()
            .zip(keep)
            .filter_map(|(r, k)| k.then_some(r))
            .collect();
        let kept_bytes: u64 = kept.iter().map(|r| r.len).sum();
        if kept_bytes * COMPACT_RATIO >= s.end {
            return Ok(());
        }
        let tmp = self.path.with_extension("journal.tmp");
        let new = create_fresh(&tmp, self.volume, self.epoch)?;
        let mut at = HEADER_LEN as u64;
        let mut moved = BTreeMap::new();
        for r in kept {
            let mut buf = vec![0u8; r.len as usize];
            s.file
                .read_exact_at(&mut buf, r.off)
                .and_then(|()| new.write_all_at(&buf, at))
                .map_err(|e| io_err("compact", &tmp, e))?;
            moved.insert(r.seq, at);
            at += r.len;
        }
        new.sync_data().map_err(|e| io_err("sync", &tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| io_err("rename", &tmp, e))?;
        sync_dir(&self.path)?;
        s.moved(&moved);
        s.file = Arc::new(new);
        s.end = at;
        Ok(())
    }
}

impl State {
    /// Retires record `seq`; a written one stays known until a cut drops it.
    fn retire(&mut self, seq: u64) {
        let Some(l) = self.live.remove(&seq) else {
            return;
        };
        // Why: a record not written yet cannot be retired (its update
        // starts after the append returns), but if it were, it has no
        // place in the file to account for.
        if let Some(off) = l.off {
            let (len, rows) = (l.len, l.rows);
            self.retired.insert(seq, Retired { off, len, rows });
        }
    }

    /// Bytes of the written records that are live.
    fn live_bytes(&self) -> u64 {
        self.live
            .values()
            .filter(|l| l.off.is_some())
            .map(|l| l.len)
            .sum()
    }

    /// Cuts the file back to its header: every written record is retired.
    fn cut(&mut self, path: &Path) {
        match self.file.set_len(HEADER_LEN as u64) {
            Ok(()) => {
                self.end = HEADER_LEN as u64;
                self.retired.clear();
                self.compact_at = COMPACT_AT;
            }
            Err(e) => eprintln!(
                "qbd-master: cannot truncate journal {}: {e}",
                path.display()
            ),
        }
    }

    /// The written records, live and retired, in sequence order.
    fn in_file(&self) -> Vec<InFile> {
        let live = self.live.iter().filter_map(|(&seq, l)| {
            let off = l.off?;
            let (len, rows) = (l.len, l.rows);
            Some(InFile {
                seq,
                off,
                len,
                rows,
                live: true,
            })
        });
        let retired = self.retired.iter().map(|(&seq, r)| InFile {
            seq,
            off: r.off,
            len: r.len,
            rows: r.rows,
            live: false,
        });
        let mut all: Vec<InFile> = live.chain(retired).collect();
        all.sort_unstable_by_key(|r| r.seq);
        all
    }

    /// After a compaction: the new offsets of the kept records; the
    /// retired records not kept are gone from the file.
    fn moved(&mut self, to: &BTreeMap<u64, u64>) {
        for (seq, l) in self.live.iter_mut() {
            if let Some(&off) = to.get(seq) {
                l.off = Some(off);
            }
        }
        self.retired.retain(|seq, _| to.contains_key(seq));
        for (seq, r) in self.retired.iter_mut() {
            if let Some(&off) = to.get(seq) {
                r.off = off;
            }
        }
    }
}

/// The valid records of a journal file and how many bytes to keep (0:
/// start a new file).
fn scan(b: &[u8], volume: Uuid, prev_epoch: u64, path: &Path) -> (Outstanding, usize) {
    let mut out = Outstanding::default();
    let Some(h) = Header::decode(b) else {
        out.notes.push(format!(
            "journal {} has no valid header: ignored",
            path.display()
        ));
        return (out, 0);
    };
    if h.volume != volume {
        out.notes.push(format!(
            "journal {} belongs to volume {}: ignored",
            path.display(),
            h.volume
        ));
        return (out, 0);
    }
    let mut at = HEADER_LEN;
    let mut last = 0u64;
    let mut why = None;
    while at < b.len() {
        let rest = &b[at..];
        let rec = Record::peek_len(rest).and_then(|len| {
            let bytes = rest.get(..len).ok_or(Torn::Short)?;
            Ok((Record::decode(bytes)?, len))
        });
        match rec {
            Ok((r, _)) if r.volume != volume || r.seq <= last => {
                why = Some(Torn::Garbage("stale record"));
                break;
            }
            Ok((r, len)) => {
                last = r.seq;
                out.records.push(r);
                at += len;
            }
            Err(e) => {
                why = Some(e);
                break;
            }
        }
    }
    if let Some(e) = why {
        out.notes.push(format!(
            "journal {}: {} byte(s) after record {last} ignored ({e}): a torn append, never acknowledged",
            path.display(),
            b.len() - at
        ));
    }
    if h.epoch != prev_epoch {
        if !out.records.is_empty() {
            out.notes.push(format!(
                "journal {} is from epoch {}, the volume's last epoch was {prev_epoch}: its {} record(s) are not replayed",
                path.display(),
                h.epoch,
                out.records.len()
            ));
        }
        out.records.clear();
        return (out, 0);
    }
    (out, at)
}

fn create_fresh(path: &Path, volume: Uuid, epoch: u64) -> Result<File, VolumeError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| io_err("create", path, e))?;
    f.write_all_at(&Header { volume, epoch }.encode(), 0)
        .and_then(|()| f.sync_data())
        .map_err(|e| io_err("write", path, e))?;
    sync_dir(path)?;
    Ok(f)
}

fn sync_dir(path: &Path) -> Result<(), VolumeError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("sync", dir, e))
}

#[cfg(test)]
mod tests;
