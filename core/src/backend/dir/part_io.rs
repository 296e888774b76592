//! The directory backend's data path: part files, blocks, records, sync.
//!
//! A block write is: read the records of the range, keep only blocks whose
//! stored generation is older (or whose record is invalid), write their data,
//! then their records. It holds its part's stripe lock exclusively (reads
//! hold it shared), so the generation check cannot race another write and a
//! read never sees new data under an old record. The part is marked dirty
//! *after* the writes, so a concurrent `sync` either covers them or leaves
//! them dirty for the next. Allocations run one at a time under the
//! allocation map's lock.
//!
//! Records are initialised a group at a time ([`crate::format::groups`]):
//! every path that writes a record (normal and repair writes, zero writes,
//! raw writes) first initialises the groups it touches — all their records
//! written as "unwritten", `fdatasync`, then the group's bit set in the
//! first page. So the bit is never durable before the records it vouches
//! for, and the next sync of the part covers the bit together with the
//! block's own record. A block of a group whose bit is clear reads as never
//! written; in a set group a record failing its checksum (all zeros
//! included) is corrupt.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use rustix::fs::{FallocateFlags, fallocate};

use super::{AllocState, DirBackend, OpenVolume};
use crate::CoreError;
use crate::backend::{
    Backend, BackendError, BackendResult, BlockState, BlockWrite, PartId, PartRead, RawBlock,
    WriteData, WriteOutcome,
};
use crate::format::alloc::PAGE;
use crate::format::checksum128;
use crate::format::groups::{BITMAP_OFFSET, GroupMap};
use crate::format::header::{HEADER_LEN, PartHeader};
use crate::format::record::{MetaRecord, RECORD_SIZE, RecordPos};
use crate::generation::Generation;
use crate::proto::msg::VouchedState;

/// An open part file and its record-group bitmap (read when the file is
/// opened; changed only under the part's exclusive lock, and only after
/// the sectors that carry the change are written). Since every bit is in
/// the file (page cache) before it is in memory, a handle dropped and
/// opened again (a re-open, a later LRU) finds the same bitmap.
#[derive(Debug)]
pub(super) struct PartFile {
    pub(super) file: File,
    groups: Mutex<GroupMap>,
}

impl PartFile {
    /// The bitmap; a poisoned lock is as good as a clean one, since the
    /// map is replaced whole, never left half-changed.
    fn groups(&self) -> std::sync::MutexGuard<'_, GroupMap> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// For each block of `first .. first + count`: is its group initialised
    /// (its record meaningful)?
    fn live(&self, first: u32, count: u32) -> Vec<bool> {
        let g = self.groups();
        (first..first + count).map(|b| g.block_init(b)).collect()
    }
}

/// Whether a part file exists for reading.
enum Handle {
    Open(Arc<PartFile>),
    /// Absent and never allocated: reads as zeros.
    NeverWritten,
}

impl DirBackend {
    fn corrupt(&self, part: PartId, why: impl Into<String>) -> BackendError {
        BackendError::PartCorrupt {
            part,
            backend: self.describe(),
            why: why.into(),
        }
    }

    /// Opens (or finds cached) the file of `part`, checking header and size.
    /// The caller holds the part's stripe lock (shared or exclusive): a
    /// handle is opened, and its bitmap read, only while no write of the
    /// part can change the bitmap.
    fn handle(&self, v: &OpenVolume, part: PartId) -> BackendResult<Handle> {
        if let Some(f) = v.files.get(part) {
            return Ok(Handle::Open(f));
        }
        let path = self.part_path(v.meta.number, part);
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // Under the map's lock an allocation is all or nothing (file
                // renamed into place, then the bit set): one that finished
                // since the open above shows as the bit, and the file is
                // there now.
                let a = v.alloc.lock();
                let allocated = a.as_ref().map(|a| a.map.get(part.chunk)).unwrap_or(true);
                if !allocated {
                    return Ok(Handle::NeverWritten);
                }
                match OpenOptions::new().read(true).write(true).open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        return Err(BackendError::PartMissing {
                            part,
                            backend: self.describe(),
                        });
                    }
                    Err(e) => return Err(CoreError::io("open", &path, e).into()),
                }
            }
            Err(e) => return Err(CoreError::io("open", &path, e).into()),
        };
        let groups = self.check_file(v, part, &file)?;
        let pf = Arc::new(PartFile {
            file,
            groups: Mutex::new(groups),
        });
        // Why the cached one wins: two readers may open the file at once;
        // every user must share one bitmap.
        let (pf, evicted) = v.files.insert(part, pf);
        self.settle_evicted(v, evicted);
        Ok(Handle::Open(pf))
    }

    /// Closes evicted handles (by dropping the cache's reference; a user
    /// in flight keeps its own). A dirty part is synced first, so what
    /// its writes owe the next FLUSH is paid now: its mark is cleared only
    /// if no write marked it again since (see `dirty_seq`), and while the
    /// `fdatasync` runs the part is still marked, so a concurrent FLUSH
    /// syncs it itself rather than return early. The `fdatasync` runs under
    /// the volume's sync lock, so a FLUSH that found the part uncached
    /// waits for it and sees its outcome. A failure is kept, and reported
    /// by every later sync until the volume is opened again: after a failed
    /// `fdatasync` the kernel may have dropped the pages, and a retry
    /// through another descriptor could succeed on nothing.
    fn settle_evicted(&self, v: &OpenVolume, evicted: Vec<(PartId, Arc<PartFile>)>) {
        if evicted.is_empty() {
            return;
        }
        let _one_at_a_time = v.syncing.lock().unwrap_or_else(|e| e.into_inner());
        for (part, pf) in evicted {
            let Some(seq) = v.dirty.lock().ok().and_then(|d| d.get(&part).copied()) else {
                continue;
            };
            match pf.file.sync_data() {
                Ok(()) => {
                    if let Ok(mut d) = v.dirty.lock()
                        && d.get(&part) == Some(&seq)
                    {
                        d.remove(&part);
                    }
                }
                Err(e) => {
                    let path = self.part_path(v.meta.number, part);
                    let err = CoreError::io("fsync (closing an idle part file)", path, e);
                    if let Ok(mut slot) = v.evict_error.lock() {
                        slot.get_or_insert(err.into());
                    }
                }
            }
        }
    }

    /// Marks `part` as written since its last `fdatasync` (after the
    /// writes, so a concurrent sync either covers them or leaves the mark).
    fn mark_dirty(v: &OpenVolume, part: PartId) {
        let seq = v.dirty_seq.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut d) = v.dirty.lock() {
            d.insert(part, seq);
        }
    }

    /// Checks header and size; returns the record-group bitmap.
    fn check_file(&self, v: &OpenVolume, part: PartId, file: &File) -> BackendResult<GroupMap> {
        let mut hdr = [0u8; HEADER_LEN];
        file.read_exact_at(&mut hdr, 0)
            .map_err(|e| self.corrupt(part, format!("header unreadable: {e}")))?;
        let found = PartHeader::decode(&hdr).map_err(|e| self.corrupt(part, e.to_string()))?;
        let expected = self.expected_header(v, part)?;
        v.layout
            .check_header(&found, &expected)
            .map_err(|e| self.corrupt(part, e.to_string()))?;
        let len = file
            .metadata()
            .map_err(|e| self.corrupt(part, e.to_string()))?
            .len();
        if len != v.layout.file_size {
            return Err(self.corrupt(part, format!("size {len}, expected {}", v.layout.file_size)));
        }
        let empty = v.layout.empty_groups(part.chunk, part.part);
        let mut bytes = vec![0u8; empty.byte_len()];
        file.read_exact_at(&mut bytes, BITMAP_OFFSET)
            .map_err(|e| self.corrupt(part, format!("group bitmap unreadable: {e}")))?;
        GroupMap::decode(&bytes, part.chunk, part.part, v.layout.blocks)
            .map_err(|e| self.corrupt(part, e.to_string()))
    }

    /// Initialises every record group that blocks `first .. first + count`
    /// touch and that is not yet: their records written as "unwritten",
    /// `fdatasync`, then their bits set (see the module docs). The caller
    /// holds the part's exclusive lock and marks the part dirty.
    fn init_groups(
        &self,
        v: &OpenVolume,
        pf: &PartFile,
        part: PartId,
        first: u32,
        count: u32,
    ) -> BackendResult<()> {
        let mut groups = pf.groups();
        let todo: Vec<u32> = v
            .layout
            .groups_of_range(first, count)
            .filter(|&g| !groups.is_init(g))
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        let path = || self.part_path(v.meta.number, part);
        for &g in &todo {
            let (gfirst, n) = v.layout.group_blocks(g);
            pf.file
                .write_all_at(
                    &empty_records(part, gfirst, n),
                    v.layout.record_offset(gfirst),
                )
                .map_err(|e| CoreError::io("initialise meta records", path(), e))?;
        }
        // Why here: the bit must never be durable before the records it
        // vouches for, or a crash would leave zeros that read as damage.
        pf.file
            .sync_data()
            .map_err(|e| CoreError::io("fsync", path(), e))?;
        let mut next = groups.clone();
        let mut sectors: Vec<u32> = todo.iter().filter_map(|&g| next.set(g)).collect();
        sectors.dedup();
        for s in sectors {
            pf.file
                .write_all_at(&next.encode_sector(s), GroupMap::sector_offset(s))
                .map_err(|e| CoreError::io("write group bitmap", path(), e))?;
        }
        *groups = next;
        Ok(())
    }

    fn check_range(&self, v: &OpenVolume, first: u32, count: u32) -> BackendResult<()> {
        if count == 0 || u64::from(first) + u64::from(count) > u64::from(v.layout.blocks) {
            return Err(CoreError::InvalidSetting(format!(
                "block range {first}+{count} outside the part"
            ))
            .into());
        }
        Ok(())
    }

    fn read_records(
        &self,
        file: &File,
        v: &OpenVolume,
        part: PartId,
        first: u32,
        count: u32,
    ) -> BackendResult<Vec<u8>> {
        let mut recs = vec![0u8; count as usize * RECORD_SIZE];
        file.read_exact_at(&mut recs, v.layout.record_offset(first))
            .map_err(|e| self.corrupt(part, format!("meta region unreadable: {e}")))?;
        Ok(recs)
    }

    pub(super) fn read_blocks(
        &self,
        part: PartId,
        first: u32,
        count: u32,
    ) -> BackendResult<PartRead> {
        let (blocks, data) = self.read_each(part, first, count, judge_block)?;
        Ok(PartRead { data, blocks })
    }

    /// Reads blocks as [`read_blocks`](Self::read_blocks) does, but leaves
    /// the data unchecked: each block comes with what its meta record
    /// claims, checksum included, for the reader to check (a node answering
    /// `Read`: the master hashes the data once, which checks the disk and
    /// the wire together). Records are still checked, and data whose record
    /// claims none is zeroed.
    pub fn read_vouched(
        &self,
        part: PartId,
        first: u32,
        count: u32,
    ) -> BackendResult<(Vec<VouchedState>, Vec<u8>)> {
        self.read_each(part, first, count, claim_block)
    }

    /// Reads the records and data of `count` blocks from `first` under the
    /// part's shared lock and states each block with `state` (its record,
    /// or `None` in a group never initialised, position and data); a part
    /// never written reads as unwritten zeros.
    fn read_each<S>(
        &self,
        part: PartId,
        first: u32,
        count: u32,
        state: StateFn<S>,
    ) -> BackendResult<(Vec<S>, Vec<u8>)> {
        let v = self.vol()?;
        self.check_range(v, first, count)?;
        let _shared = v.read_part(part);
        let bs = v.layout.block_size as usize;
        let mut data = vec![0u8; count as usize * bs];
        let pf = match self.handle(v, part)? {
            Handle::Open(f) => f,
            Handle::NeverWritten => {
                let blocks = Blocks {
                    part,
                    first,
                    recs: &[],
                    live: &vec![false; count as usize],
                };
                return Ok((blocks.states(bs, &mut data, state), data));
            }
        };
        let live = pf.live(first, count);
        let recs = self.read_records(&pf.file, v, part, first, count)?;
        pf.file
            .read_exact_at(&mut data, v.layout.data_offset_of(first))
            .map_err(|e| self.corrupt(part, format!("data region unreadable: {e}")))?;
        let blocks = Blocks {
            part,
            first,
            recs: &recs,
            live: &live,
        };
        Ok((blocks.states(bs, &mut data, state), data))
    }

    /// A normal write (`force = false`: only blocks with an older stored
    /// generation apply) or the heal operation (`force = true`: every
    /// block applies, whatever is stored).
    pub(super) fn write_blocks(&self, w: BlockWrite, force: bool) -> BackendResult<WriteOutcome> {
        self.write_summed(w, force, None)
    }

    /// [`write_blocks`](Self::write_blocks) of data whose per-block
    /// checksums are known and were checked against it (a node decoding a
    /// `VouchedWrite`), so the records take them instead of hashing the
    /// data again. `force` is the heal operation.
    pub fn write_vouched(
        &self,
        w: BlockWrite,
        sums: &[[u8; 16]],
        force: bool,
    ) -> BackendResult<WriteOutcome> {
        if sums.len() != w.count as usize {
            return Err(CoreError::InvalidSetting(format!(
                "{} checksums for {} blocks",
                sums.len(),
                w.count
            ))
            .into());
        }
        self.write_summed(w, force, Some(sums))
    }

    fn write_summed(
        &self,
        w: BlockWrite,
        force: bool,
        sums: Option<&[[u8; 16]]>,
    ) -> BackendResult<WriteOutcome> {
        let v = self.vol()?;
        self.check_range(v, w.first, w.count)?;
        let _exclusive = v.write_part(w.part);
        let bs = v.layout.block_size as usize;
        if let WriteData::Bytes(d) = &w.data
            && d.len() != w.count as usize * bs
        {
            return Err(
                CoreError::InvalidSetting("write payload is not whole blocks".into()).into(),
            );
        }
        let pf = match self.handle(v, w.part)? {
            Handle::Open(f) => f,
            Handle::NeverWritten => {
                return Err(BackendError::PartMissing {
                    part: w.part,
                    backend: self.describe(),
                });
            }
        };
        // Why before reading the old records: every record of the range is
        // then meaningful, and a group never initialised reads back as
        // "unwritten" records, which every write is newer than.
        self.init_groups(v, &pf, w.part, w.first, w.count)?;
        let file = &pf.file;
        let old = self.read_records(file, v, w.part, w.first, w.count)?;
        let mut out = WriteOutcome::default();
        let mut recs = old.clone();
        let mut mask = vec![false; w.count as usize];
        for i in 0..w.count as usize {
            let pos = RecordPos {
                chunk: w.part.chunk,
                part: w.part.part,
                block: w.first + i as u32,
            };
            let rec_bytes = &old[i * RECORD_SIZE..(i + 1) * RECORD_SIZE];
            let newer =
                MetaRecord::decode(rec_bytes, pos).map_or(true, |r| r.generation < w.generation);
            if !newer && !force {
                out.skipped += 1;
                continue;
            }
            out.applied += 1;
            mask[i] = true;
            let rec = match (&w.data, sums) {
                (WriteData::Bytes(_), Some(sums)) => MetaRecord::for_sum(sums[i], w.generation),
                (WriteData::Bytes(d), None) => {
                    MetaRecord::for_data(&d[i * bs..(i + 1) * bs], w.generation)
                }
                (WriteData::Zero { .. }, _) => MetaRecord::for_zero(w.generation),
            };
            rec.encode_into(pos, &mut recs[i * RECORD_SIZE..(i + 1) * RECORD_SIZE]);
        }
        if out.applied == 0 {
            return Ok(out);
        }
        self.write_data(v, file, &w, |i| mask[i])?;
        file.write_all_at(&recs, v.layout.record_offset(w.first))
            .map_err(|e| CoreError::io("write meta", self.part_path(v.meta.number, w.part), e))?;
        Self::mark_dirty(v, w.part);
        Ok(out)
    }

    /// Writes the data of every applied block, in contiguous runs.
    fn write_data(
        &self,
        v: &OpenVolume,
        file: &File,
        w: &BlockWrite,
        applied: impl Fn(usize) -> bool,
    ) -> BackendResult<()> {
        let bs = v.layout.block_size as usize;
        let path = || self.part_path(v.meta.number, w.part);
        let mut i = 0usize;
        while i < w.count as usize {
            if !applied(i) {
                i += 1;
                continue;
            }
            let start = i;
            while i < w.count as usize && applied(i) {
                i += 1;
            }
            let off = v.layout.data_offset_of(w.first + start as u32);
            let len = (i - start) * bs;
            let res = match &w.data {
                WriteData::Bytes(d) => file.write_all_at(&d[start * bs..i * bs], off),
                WriteData::Zero { punch: true } => fallocate(
                    file,
                    FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                    off,
                    len as u64,
                )
                .map_err(std::io::Error::from),
                WriteData::Zero { punch: false } => file.write_all_at(&vec![0u8; len], off),
            };
            res.map_err(|e| CoreError::io("write data", path(), e))?;
        }
        Ok(())
    }

    pub(super) fn allocate_part(&self, part: PartId) -> BackendResult<()> {
        let v = self.vol()?;
        // Allocations run one at a time under the map's lock: two racing
        // creators of one part would share the temp name, or the second
        // rename would replace a file the first had already written to.
        let mut a = v
            .alloc
            .lock()
            .map_err(|_| CoreError::InvalidSetting("allocation map lock poisoned".into()))?;
        let path = self.part_path(v.meta.number, part);
        let exists = path.exists();
        if !exists && a.map.get(part.chunk) {
            return Err(BackendError::PartMissing {
                part,
                backend: self.describe(),
            });
        }
        if !exists {
            self.create_part_file(v, part)?;
        }
        self.set_alloc_bit(v, &mut a, part.chunk)
    }

    /// Replaces a part file with a fresh, empty one (resync of a whole
    /// chunk) and sets its chunk's allocation bit.
    pub(super) fn recreate_part(&self, part: PartId) -> BackendResult<()> {
        let v = self.vol()?;
        let mut a = v
            .alloc
            .lock()
            .map_err(|_| CoreError::InvalidSetting("allocation map lock poisoned".into()))?;
        let _exclusive = v.write_part(part);
        self.create_part_file(v, part)?;
        v.files.remove(part);
        if let Ok(mut d) = v.dirty.lock() {
            d.remove(&part);
        }
        self.set_alloc_bit(v, &mut a, part.chunk)
    }

    /// Creates a part file whole (header, fixed sparse size) under a temp
    /// name and renames it into place, so it exists complete or not at all.
    fn create_part_file(&self, v: &OpenVolume, part: PartId) -> BackendResult<()> {
        let path = self.part_path(v.meta.number, part);
        let dir = path.parent().map(|p| p.to_path_buf()).unwrap_or_default();
        let tmp = dir.join(format!(".{}.new", part.chunk));
        let hdr = self.expected_header(v, part)?.encode();
        // Every bitmap sector is written now (all groups clear), so a
        // zeroed sector later is damage, never "nothing initialised".
        let groups = v.layout.empty_groups(part.chunk, part.part).encode();
        let create = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(&hdr)?;
            f.write_all_at(&groups, BITMAP_OFFSET)?;
            f.set_len(v.layout.file_size)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&dir)?.sync_all()
        };
        create().map_err(|e| CoreError::io("create part", &path, e).into())
    }

    fn set_alloc_bit(&self, v: &OpenVolume, a: &mut AllocState, chunk: u64) -> BackendResult<()> {
        let Some(page) = a.map.set(chunk) else {
            return Ok(());
        };
        let bytes = a.map.encode_page(page);
        let path = v.dir.join(super::ALLOC_FILE);
        let res = a
            .file
            .write_all_at(&bytes, page * PAGE as u64)
            .and_then(|()| a.file.sync_data());
        res.map_err(|e| {
            // Not durable: forget the bit so the next allocate retries.
            a.map.unset_unpersisted(chunk);
            CoreError::io("write", path, e).into()
        })
    }

    pub(super) fn sync_parts(&self, parts: Option<Vec<PartId>>) -> BackendResult<()> {
        let v = self.vol()?;
        // A poisoned lock is as good as a clean one: it guards no data.
        let _one_at_a_time = v.syncing.lock().unwrap_or_else(|e| e.into_inner());
        let todo: Vec<PartId> = {
            let Ok(mut dirty) = v.dirty.lock() else {
                return Err(CoreError::InvalidSetting("dirty set poisoned".into()).into());
            };
            match parts {
                None => dirty.drain().map(|(p, _)| p).collect(),
                Some(p) => p
                    .into_iter()
                    .filter(|x| dirty.remove(x).is_some())
                    .collect(),
            }
        };
        for (i, part) in todo.iter().enumerate() {
            if let Err(e) = self.sync_one(v, *part) {
                for p in &todo[i..] {
                    Self::mark_dirty(v, *p);
                }
                return Err(e);
            }
        }
        // Sticky: see `settle_evicted`.
        match v
            .evict_error
            .lock()
            .ok()
            .and_then(|e| e.as_ref().map(ToString::to_string))
        {
            Some(why) => Err(CoreError::io(
                "fsync (an earlier one failed: writes may be lost)",
                v.dir.clone(),
                std::io::Error::other(why),
            )
            .into()),
            None => Ok(()),
        }
    }

    /// `fdatasync` of one part: through its cached handle, or else a
    /// descriptor opened for the purpose and closed at once (not cached:
    /// it carries no bitmap, and no stripe lock is held here). The kernel
    /// syncs the file's dirty pages whichever descriptor wrote them; a
    /// file deleted meanwhile has nothing to sync.
    fn sync_one(&self, v: &OpenVolume, part: PartId) -> BackendResult<()> {
        let path = self.part_path(v.meta.number, part);
        let res = match v.files.peek(part) {
            Some(pf) => pf.file.sync_data(),
            None => match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(f) => f.sync_data(),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            },
        };
        res.map_err(|e| CoreError::io("fsync", path, e).into())
    }

    /// The stored bytes of one block, unchecked. At this interface an
    /// all-zero record spells "never written" (as before record groups):
    /// a block of a group never initialised, or whose stored record is the
    /// explicit unwritten one, reads with a zero record; any other record
    /// (a zeroed one in an initialised group included) as stored.
    pub(super) fn raw_read(&self, part: PartId, block: u32) -> BackendResult<RawBlock> {
        let v = self.vol()?;
        self.check_range(v, block, 1)?;
        let _shared = v.read_part(part);
        let Handle::Open(pf) = self.handle(v, part)? else {
            return Ok(RawBlock {
                data: vec![0; v.layout.block_size as usize],
                record: [0; RECORD_SIZE],
            });
        };
        let mut record = [0u8; RECORD_SIZE];
        pf.file
            .read_exact_at(&mut record, v.layout.record_offset(block))
            .map_err(|e| self.corrupt(part, e.to_string()))?;
        let mut data = vec![0u8; v.layout.block_size as usize];
        pf.file
            .read_exact_at(&mut data, v.layout.data_offset_of(block))
            .map_err(|e| self.corrupt(part, e.to_string()))?;
        let pos = pos_of(part, block);
        let unwritten = MetaRecord::decode(&record, pos).is_ok_and(|r| r.is_empty());
        if !pf.live(block, 1)[0] || unwritten {
            record = [0; RECORD_SIZE];
        }
        Ok(RawBlock { data, record })
    }

    /// Overwrites one block's data and/or record, unchecked, after
    /// initialising its group. An all-zero `record` is stored as the
    /// explicit unwritten record (see [`raw_read`](Self::raw_read)).
    pub(super) fn raw_write(
        &self,
        part: PartId,
        block: u32,
        data: Option<Vec<u8>>,
        record: Option<[u8; RECORD_SIZE]>,
    ) -> BackendResult<()> {
        let v = self.vol()?;
        self.check_range(v, block, 1)?;
        let _exclusive = v.write_part(part);
        let Handle::Open(pf) = self.handle(v, part)? else {
            return Err(BackendError::PartMissing {
                part,
                backend: self.describe(),
            });
        };
        self.init_groups(v, &pf, part, block, 1)?;
        let path = || self.part_path(v.meta.number, part);
        if let Some(d) = data {
            pf.file
                .write_all_at(&d, v.layout.data_offset_of(block))
                .map_err(|e| CoreError::io("write", path(), e))?;
        }
        if let Some(mut r) = record {
            if r == [0; RECORD_SIZE] {
                r = MetaRecord::EMPTY.encode(pos_of(part, block));
            }
            pf.file
                .write_all_at(&r, v.layout.record_offset(block))
                .map_err(|e| CoreError::io("write", path(), e))?;
        }
        Self::mark_dirty(v, part);
        Ok(())
    }
}

/// How a read states one block: from its record (`None`: its group was
/// never initialised), its position and its data.
type StateFn<S> = fn(Option<&[u8]>, RecordPos, &mut [u8]) -> S;

/// The records of a run of blocks as read.
struct Blocks<'a> {
    part: PartId,
    first: u32,
    /// The records (empty when the part file does not exist).
    recs: &'a [u8],
    /// Per block: is its group initialised?
    live: &'a [bool],
}

impl Blocks<'_> {
    /// `state` of each block of `data` (blocks of `bs` bytes).
    fn states<S>(&self, bs: usize, data: &mut [u8], state: StateFn<S>) -> Vec<S> {
        data.chunks_exact_mut(bs)
            .enumerate()
            .map(|(i, block)| {
                let rec = self
                    .live
                    .get(i)
                    .copied()
                    .unwrap_or(false)
                    .then(|| self.recs.get(i * RECORD_SIZE..(i + 1) * RECORD_SIZE))
                    .flatten();
                state(rec, pos_of(self.part, self.first + i as u32), block)
            })
            .collect()
    }
}

fn pos_of(part: PartId, block: u32) -> RecordPos {
    RecordPos {
        chunk: part.chunk,
        part: part.part,
        block,
    }
}

/// The records of blocks `first .. first + n` of a freshly initialised
/// group: each the explicit unwritten record of its position.
fn empty_records(part: PartId, first: u32, n: u32) -> Vec<u8> {
    let mut out = vec![0u8; n as usize * RECORD_SIZE];
    for (i, rec) in out.chunks_exact_mut(RECORD_SIZE).enumerate() {
        MetaRecord::EMPTY.encode_into(pos_of(part, first + i as u32), rec);
    }
    out
}

/// What one block's record claims; the data is zeroed unless it claims data.
fn claim_block(rec: Option<&[u8]>, pos: RecordPos, data: &mut [u8]) -> VouchedState {
    let Some(rec) = rec else {
        data.fill(0);
        return VouchedState::Unwritten;
    };
    let state = match MetaRecord::decode(rec, pos) {
        Err(e) => VouchedState::Corrupt(e.to_string()),
        Ok(r) if r.is_empty() => VouchedState::Unwritten,
        Ok(r) if r.is_zero() => VouchedState::Zero(r.generation.0),
        Ok(r) => {
            return VouchedState::Data {
                generation: r.generation.0,
                sum: r.data_sum,
            };
        }
    };
    data.fill(0);
    state
}

/// What a block is, its data checked against its record's checksum
/// (`claim_block`, then the check).
fn judge_block(rec: Option<&[u8]>, pos: RecordPos, data: &mut [u8]) -> BlockState {
    match claim_block(rec, pos, data) {
        VouchedState::Data { generation, sum } if checksum128(&[data]) == sum => {
            BlockState::Data(Generation(generation))
        }
        VouchedState::Data { .. } => {
            data.fill(0);
            BlockState::Corrupt("data checksum mismatch".into())
        }
        VouchedState::Unwritten => BlockState::Unwritten,
        VouchedState::Zero(g) => BlockState::Zero(Generation(g)),
        VouchedState::Corrupt(why) => BlockState::Corrupt(why),
    }
}
