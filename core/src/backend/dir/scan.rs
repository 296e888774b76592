//! Verify's deep scan of one part file: the header, every record, and the
//! data of every block whose record names data — read-only.
//!
//! Reads the record-group bitmap with the header: a block of a group never
//! initialised is never written (its record bytes are not looked at); in an
//! initialised group a record failing its checksum, all zeros included, is
//! a bad record (repair rebuilds it). A damaged bitmap is a bad header.
//!
//! Reads the meta region in one `pread`, then the data of written blocks in
//! runs of consecutive blocks (at most [`RUN_BYTES`] per read), so a part
//! is read about once, sequentially; never-written and zero blocks' data is
//! not read. Returns the compact per-block meta ([`BlockMeta`]), never the
//! data.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::backend::PartId;
use crate::format::groups::{BITMAP_OFFSET, GroupMap};
use crate::format::header::{HEADER_LEN, PartHeader};
use crate::format::layout::{META_OFFSET, PartLayout};
use crate::format::record::{MetaRecord, RECORD_SIZE, RecordPos, flags};
use crate::verify::{BlockMeta, FileCheck, PartScan, RecordSummary};

/// The largest data read.
pub const RUN_BYTES: usize = 1 << 20;

/// What a scan needs to know of the volume.
#[derive(Debug, Clone, Copy)]
pub struct ScanShape {
    /// The part file layout.
    pub layout: PartLayout,
    /// The volume UUID.
    pub volume: uuid::Uuid,
    /// Parts per chunk.
    pub parts: u8,
    /// Data parts per chunk (1 for replication).
    pub data_parts: u8,
}

impl ScanShape {
    /// The shape of the volume `meta` describes.
    pub fn of(meta: &crate::meta::volume::VolumeMeta) -> crate::CoreResult<Self> {
        let geo = meta.geometry()?;
        let r = geo.redundancy;
        Ok(ScanShape {
            layout: PartLayout::new(geo.block_size, geo.blocks_per_part()),
            volume: meta.uuid,
            parts: r.parts() as u8,
            data_parts: r.data_parts() as u8,
        })
    }
}

/// Scans the part file at `path`.
pub fn scan_part(path: &Path, part: PartId, shape: &ScanShape) -> PartScan {
    let (file, blocks) = match scan_file(path, part, shape) {
        Ok(blocks) => (FileCheck::Ok, blocks),
        Err(check) => (check, Vec::new()),
    };
    PartScan { part, file, blocks }
}

fn scan_file(path: &Path, part: PartId, shape: &ScanShape) -> Result<Vec<BlockMeta>, FileCheck> {
    let io = |e: std::io::Error| FileCheck::Io(format!("{}: {e}", path.display()));
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(FileCheck::Missing),
        Err(e) => return Err(io(e)),
    };
    let size = f.metadata().map_err(io)?.len();
    if size != shape.layout.file_size {
        return Err(FileCheck::WrongSize(size));
    }
    let mut head = [0u8; HEADER_LEN];
    f.read_exact_at(&mut head, 0).map_err(io)?;
    check_header(&head, part, shape)?;
    let groups = read_groups(&f, part, &shape.layout).map_err(|e| match e {
        GroupsError::Io(e) => io(e),
        GroupsError::Bad(why) => FileCheck::BadHeader(why),
    })?;
    let n = shape.layout.blocks as usize;
    let mut records = vec![0u8; n * RECORD_SIZE];
    f.read_exact_at(&mut records, META_OFFSET).map_err(io)?;
    let decoded: Vec<Result<MetaRecord, ()>> = (0..n)
        .map(|i| {
            if !groups.block_init(i as u32) {
                return Ok(MetaRecord::EMPTY);
            }
            let pos = RecordPos {
                chunk: part.chunk,
                part: part.part,
                block: i as u32,
            };
            MetaRecord::decode(&records[i * RECORD_SIZE..(i + 1) * RECORD_SIZE], pos)
                .map_err(|_| ())
        })
        .collect();
    check_data(&f, &shape.layout, &decoded).map_err(io)
}

fn check_header(head: &[u8], part: PartId, shape: &ScanShape) -> Result<(), FileCheck> {
    let found = PartHeader::decode(head).map_err(|e| FileCheck::BadHeader(e.to_string()))?;
    let expected = shape.layout.header(
        shape.volume,
        part.chunk,
        part.part,
        shape.parts,
        shape.data_parts,
    );
    shape
        .layout
        .check_header(&found, &expected)
        .map_err(|e| FileCheck::BadHeader(e.to_string()))
}

enum GroupsError {
    Io(std::io::Error),
    Bad(String),
}

/// The part's record-group bitmap.
fn read_groups(f: &File, part: PartId, layout: &PartLayout) -> Result<GroupMap, GroupsError> {
    let mut bytes = vec![0u8; layout.empty_groups(part.chunk, part.part).byte_len()];
    f.read_exact_at(&mut bytes, BITMAP_OFFSET)
        .map_err(GroupsError::Io)?;
    GroupMap::decode(&bytes, part.chunk, part.part, layout.blocks)
        .map_err(|e| GroupsError::Bad(e.to_string()))
}

/// Whether block `i`'s data must be read: a valid record naming data.
fn needs_data(r: &Result<MetaRecord, ()>) -> bool {
    matches!(r, Ok(rec) if !rec.is_empty() && rec.flags & flags::ZERO == 0)
}

fn check_data(
    f: &File,
    layout: &PartLayout,
    recs: &[Result<MetaRecord, ()>],
) -> std::io::Result<Vec<BlockMeta>> {
    let bs = layout.block_size as usize;
    let per_run = (RUN_BYTES / bs).max(1);
    let mut out: Vec<BlockMeta> = recs.iter().map(summary_without_data).collect();
    let mut buf = vec![0u8; per_run * bs];
    let mut i = 0;
    while i < recs.len() {
        if !needs_data(&recs[i]) {
            i += 1;
            continue;
        }
        let mut end = i + 1;
        while end < recs.len() && end - i < per_run && needs_data(&recs[end]) {
            end += 1;
        }
        let run = &mut buf[..(end - i) * bs];
        f.read_exact_at(run, layout.data_offset_of(i as u32))?;
        for (j, data) in run.chunks_exact(bs).enumerate() {
            if let (Ok(rec), BlockMeta::Valid(s)) = (&recs[i + j], &out[i + j])
                && !rec.matches(data)
            {
                out[i + j] = BlockMeta::BadData(s.clone());
            }
        }
        i = end;
    }
    Ok(out)
}

/// The block's meta before its data is checked (valid until proven not).
fn summary_without_data(r: &Result<MetaRecord, ()>) -> BlockMeta {
    match r {
        Err(()) => BlockMeta::BadRecord,
        Ok(rec) if rec.is_empty() => BlockMeta::Unwritten,
        Ok(rec) => BlockMeta::Valid(RecordSummary {
            flags: rec.flags,
            generation: rec.generation.0,
            covered: rec.covered[..usize::from(rec.covered_len)].to_vec(),
        }),
    }
}
