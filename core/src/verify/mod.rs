//! Verifying a volume's layout: what the backends hold against what the
//! volume's `.meta`, placement, allocation and degraded maps expect.
//!
//! Two levels, both read-only and both pure here (the listing and the scan
//! are gathered by the backends, see [`crate::backend::Backend::list_volume`]
//! and [`crate::backend::Backend::scan_parts`]):
//! - [`fast`]: from file names and sizes only (no part file is opened):
//!   missing, wrong-size, stale-marked, unreachable and stray parts, and per
//!   chunk whether it is at full redundancy, degraded or lost.
//! - [`deep`]: from every part's header check and compact per-block meta
//!   ([`BlockMeta`]: validity and generations, never the data): corrupt
//!   blocks, stale replicas (a lower generation than another copy) and torn
//!   EC rows (the rule of [`crate::ec::check_row`]).
//!
//! Invariants: a chunk's part is *good* only when its file is where the
//! placement table says, of the right size, not marked stale by any
//! reachable backend and (deep) with a valid header. A chunk needs
//! [`needed_parts`] good parts to be readable: 1 for `replicate:N`, K for
//! `ec:K+M`. A chunk is *in use* when a reachable backend's allocation map
//! has its bit set or any of its parts exists.

pub mod deep;
pub mod fast;
pub mod report;

use crate::backend::PartId;
use crate::placement::BackendId;
use crate::redundancy::Redundancy;

pub use report::{ChunkState, PartProblem, Problem, Report, State};

/// What one backend holds of one volume, by name and size (no file opened).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeListing {
    /// The `.alloc` file bytes, `None` when absent.
    pub alloc: Option<Vec<u8>>,
    /// The degraded maps held here: (backend described, file bytes).
    pub stale: Vec<(BackendId, Vec<u8>)>,
    /// Part files `<p>/<chunk>` with their sizes.
    pub parts: Vec<PartFile>,
    /// Anything else in the volume directory that the format does not
    /// name (paths relative to the volume directory).
    pub strays: Vec<StrayFile>,
}

/// A part file found in a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartFile {
    /// Which part.
    pub part: PartId,
    /// Its size in bytes.
    pub size: u64,
}

/// A file the format does not name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrayFile {
    /// Path relative to the volume directory (`a/12.bak`, `z/`).
    pub path: String,
    /// Its size in bytes (0 for a directory).
    pub size: u64,
}

/// What a deep scan found in one part file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartScan {
    /// Which part.
    pub part: PartId,
    /// The file as a whole.
    pub file: FileCheck,
    /// One entry per block when `file` is [`FileCheck::Ok`], else empty.
    pub blocks: Vec<BlockMeta>,
}

/// A part file's own checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileCheck {
    /// Header and size as expected.
    Ok,
    /// No such file.
    Missing,
    /// The size differs from the layout's.
    WrongSize(u64),
    /// The header does not decode or differs from the expected one.
    BadHeader(String),
    /// Reading it failed.
    Io(String),
}

/// What one block's record and data say, without the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockMeta {
    /// Never written: its record group was never initialised, or its
    /// record is the explicit unwritten one.
    Unwritten,
    /// A valid record whose data matches its checksum (or a `ZERO` record).
    Valid(RecordSummary),
    /// The record fails its checksum or flags: nothing about it is trusted.
    BadRecord,
    /// A valid record whose data does not match it.
    BadData(RecordSummary),
}

/// The fields of a valid record that cross-part checks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSummary {
    /// The record's flags (`format::record::flags`).
    pub flags: u32,
    /// Its generation.
    pub generation: u64,
    /// Parity records: the generations of the data blocks covered.
    pub covered: Vec<u64>,
}

/// Good parts a chunk needs to be readable: 1 for `replicate:N`, K for
/// `ec:K+M`.
pub fn needed_parts(r: Redundancy) -> usize {
    r.data_parts()
}

#[cfg(test)]
mod tests;
