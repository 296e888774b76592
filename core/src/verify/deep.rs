//! The deep check: per-block meta of every good part, compared across the
//! parts of each chunk. Pure: the scans come from the backends.
//!
//! - A part whose header or size fails is not good (like a missing one).
//! - A block whose record or data fails its checksum is corrupt on its part.
//! - Replication: every copy of a block should be at the newest generation
//!   any copy has (a corrupt-data copy's record still names one); a valid
//!   copy below it is stale. A block with no valid copy at the newest
//!   generation is lost.
//! - EC: each row (part block `r` of every part) goes through
//!   [`check_row`]; parts inconsistent with the row's version are torn
//!   there (except that data blocks behind a cover every disagreeing
//!   parity part agrees on are named instead of those parity parts: they
//!   missed the write), and a row whose data cannot all be read or
//!   decoded is lost.
//!
//! Parts that are not good (fast check) or unreachable take part as
//! unavailable; their problems were reported by the fast check.

use std::collections::HashMap;

use super::fast::{FastView, PartStatus};
use super::report::{ChunkCounts, ChunkState, PartProblem, Problem};
use super::{BlockMeta, FileCheck, PartScan, RecordSummary};
use crate::backend::PartId;
use crate::ec::{PartMeta, PartSet, RowVerdict, check_row};
use crate::format::record::MetaRecord;
use crate::generation::Generation;
use crate::redundancy::{MAX_EC_DATA, Redundancy};

/// What the deep check adds to the fast one.
#[derive(Debug, Clone, Default)]
pub struct DeepResult {
    /// Part and block problems, by chunk then part.
    pub problems: Vec<Problem>,
    /// Chunk counts (replacing the fast ones).
    pub counts: ChunkCounts,
    /// Blocks whose meta was checked.
    pub blocks_checked: u64,
}

/// Per-part tallies of one chunk.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    count: u32,
    first: Option<u32>,
}

impl Tally {
    fn add(&mut self, i: u32) {
        self.count += 1;
        self.first.get_or_insert(i);
    }
}

/// Block findings of one chunk, per part.
#[derive(Debug, Default)]
struct ChunkFindings {
    corrupt: Vec<Tally>,
    stale: Vec<Tally>,
    torn: Vec<Tally>,
    lost: Tally,
}

/// Compares the scans of every in-use chunk.
pub fn check(fast: &FastView, scans: &HashMap<PartId, PartScan>) -> DeepResult {
    let mut out = DeepResult {
        counts: ChunkCounts {
            total: fast.shape.chunks,
            ..ChunkCounts::default()
        },
        ..DeepResult::default()
    };
    for c in (0..fast.shape.chunks).filter(|&c| fast.in_use(c)) {
        check_chunk(fast, scans, c, &mut out);
    }
    out
}

fn check_chunk(fast: &FastView, scans: &HashMap<PartId, PartScan>, c: u64, out: &mut DeepResult) {
    let shape = &fast.shape;
    let mut usable: Vec<Option<&[BlockMeta]>> = vec![None; shape.parts];
    let mut bad = Vec::new();
    for (p, slot) in usable.iter_mut().enumerate() {
        if fast.status(c, p) != PartStatus::Good {
            continue;
        }
        let at = PartProblem {
            chunk: c,
            part: p as u8,
            backend: shape.backend(c, p),
        };
        let id = PartId {
            chunk: c,
            part: p as u8,
        };
        match file_verdict(at, scans.get(&id), shape.layout.blocks) {
            Ok(blocks) => *slot = Some(blocks),
            Err(problem) => {
                bad.push(p);
                out.problems.push(problem);
            }
        }
    }
    let f = match shape.redundancy {
        Redundancy::Replicate(_) => replicas(&usable, shape.layout.blocks),
        Redundancy::Ec { k, m } => {
            ec_rows(&usable, usize::from(k), usize::from(m), shape.layout.blocks)
        }
    };
    out.blocks_checked += usable.iter().flatten().map(|b| b.len() as u64).sum::<u64>();
    let mut damaged = false;
    for p in 0..shape.parts {
        let at = PartProblem {
            chunk: c,
            part: p as u8,
            backend: shape.backend(c, p),
        };
        let probs = &mut out.problems;
        push_tally(probs, f.corrupt[p], |count, first| Problem::CorruptBlocks {
            at,
            count,
            first,
        });
        push_tally(probs, f.stale[p], |count, first| Problem::StaleBlocks {
            at,
            count,
            first,
        });
        push_tally(probs, f.torn[p], |count, first| Problem::TornRows {
            at,
            count,
            first,
        });
        damaged |= f.corrupt[p].count + f.stale[p].count + f.torn[p].count > 0;
    }
    let state = chunk_state(fast, c, &bad, damaged, f.lost);
    out.counts.add(state);
    match (state, f.lost.first) {
        (ChunkState::Lost, Some(first)) if fast.chunk_state(c, &bad) != ChunkState::Lost => {
            out.problems.push(Problem::BlocksLost {
                chunk: c,
                count: f.lost.count,
                first,
            });
        }
        (ChunkState::Lost, _) => out.problems.push(fast.lost_problem(c, &bad)),
        _ => {}
    }
}

/// A chunk's state: whole parts that are not good decide as in the fast
/// check; damaged blocks make it degraded, lost ones lost (or unavailable
/// while a part is unreachable).
fn chunk_state(fast: &FastView, c: u64, bad: &[usize], damaged: bool, lost: Tally) -> ChunkState {
    let by_parts = fast.chunk_state(c, bad);
    if by_parts == ChunkState::Lost || by_parts == ChunkState::Unavailable {
        return by_parts;
    }
    if lost.count > 0 {
        let unknown = (0..fast.shape.parts).any(|p| fast.status(c, p) == PartStatus::Unreachable);
        return if unknown {
            ChunkState::Unavailable
        } else {
            ChunkState::Lost
        };
    }
    if damaged {
        return ChunkState::Degraded;
    }
    by_parts
}

fn push_tally(out: &mut Vec<Problem>, t: Tally, make: impl FnOnce(u32, u32) -> Problem) {
    if let Some(first) = t.first {
        out.push(make(t.count, first));
    }
}

/// The scan's blocks when the file itself is fine, else its problem.
fn file_verdict(
    at: PartProblem,
    scan: Option<&PartScan>,
    blocks: u32,
) -> Result<&[BlockMeta], Problem> {
    let Some(scan) = scan else {
        return Err(Problem::PartUnreadable {
            at,
            why: "not scanned (its backend failed during the scan)".into(),
        });
    };
    match &scan.file {
        FileCheck::Ok if scan.blocks.len() == blocks as usize => Ok(&scan.blocks),
        FileCheck::Ok => Err(Problem::PartUnreadable {
            at,
            why: format!(
                "scan returned {} blocks, expected {blocks}",
                scan.blocks.len()
            ),
        }),
        FileCheck::BadHeader(why) => Err(Problem::PartBadHeader {
            at,
            why: why.clone(),
        }),
        FileCheck::Missing => Err(Problem::PartUnreadable {
            at,
            why: "vanished during the scan".into(),
        }),
        FileCheck::WrongSize(s) => Err(Problem::PartUnreadable {
            at,
            why: format!("size changed during the scan to {s}"),
        }),
        FileCheck::Io(why) => Err(Problem::PartUnreadable {
            at,
            why: why.clone(),
        }),
    }
}

fn new_findings(parts: usize) -> ChunkFindings {
    ChunkFindings {
        corrupt: vec![Tally::default(); parts],
        stale: vec![Tally::default(); parts],
        torn: vec![Tally::default(); parts],
        lost: Tally::default(),
    }
}

/// Replication: corrupt and stale copies, and blocks with no good newest copy.
fn replicas(parts: &[Option<&[BlockMeta]>], blocks: u32) -> ChunkFindings {
    let mut f = new_findings(parts.len());
    for i in 0..blocks {
        let metas = parts.iter().map(|b| b.map(|b| &b[i as usize]));
        let newest = metas
            .clone()
            .flatten()
            .filter_map(|m| match m {
                BlockMeta::Unwritten => Some(0),
                BlockMeta::Valid(r) | BlockMeta::BadData(r) => Some(r.generation),
                BlockMeta::BadRecord => None,
            })
            .max();
        let mut good = 0;
        for (p, m) in metas.enumerate() {
            match m {
                None => {}
                Some(BlockMeta::BadRecord | BlockMeta::BadData(_)) => f.corrupt[p].add(i),
                Some(m) if Some(generation(m)) == newest => good += 1,
                Some(_) => f.stale[p].add(i),
            }
        }
        if good == 0 && parts.iter().any(Option::is_some) {
            f.lost.add(i);
        }
    }
    f
}

fn generation(m: &BlockMeta) -> u64 {
    match m {
        BlockMeta::Valid(r) | BlockMeta::BadData(r) => r.generation,
        _ => 0,
    }
}

/// EC: corrupt blocks, torn rows, rows that cannot be read.
fn ec_rows(parts: &[Option<&[BlockMeta]>], k: usize, m: usize, rows: u32) -> ChunkFindings {
    let mut f = new_findings(parts.len());
    let all_data = PartSet::first(k);
    for r in 0..rows {
        let metas: Vec<PartMeta> = parts
            .iter()
            .enumerate()
            .map(|(p, b)| {
                let meta = b.map(|b| &b[r as usize]);
                if matches!(meta, Some(BlockMeta::BadRecord | BlockMeta::BadData(_))) {
                    f.corrupt[p].add(r);
                }
                part_meta(meta, p, k)
            })
            .collect();
        let Ok(v) = check_row(k, m, &metas) else {
            f.lost.add(r);
            continue;
        };
        let torn = data_behind_parity(k, &metas, &v).unwrap_or(v.inconsistent);
        for p in torn.iter() {
            f.torn[p].add(r);
        }
        if v.readable_data() != all_data && parts.iter().any(Option::is_some) {
            f.lost.add(r);
        }
    }
    f
}

/// Who is behind in a torn row whose data is all available. The rule
/// takes the data's generations as the row's version, so it names the
/// parity parts; but when every disagreeing parity part records the same
/// cover, and that cover is ahead of some data blocks and behind none,
/// the parity was computed from writes those data blocks missed
/// ([`crate::ec::Tear::DataOlder`]): they are the stale ones. `None`: the
/// rule's answer stands.
fn data_behind_parity(k: usize, metas: &[PartMeta], v: &RowVerdict) -> Option<PartSet> {
    if v.inconsistent.is_empty() || v.inconsistent.iter().any(|p| p < k) {
        return None;
    }
    let mut covers = v.inconsistent.iter().map(|p| match metas[p] {
        PartMeta::Parity(c) => Some(c),
        _ => None,
    });
    let cover = covers.next()??;
    if covers.any(|c| c != Some(cover)) {
        return None;
    }
    let mut behind = PartSet::default();
    for (i, newer) in cover.gens().iter().enumerate() {
        let PartMeta::Data(g) = metas[i] else {
            return None;
        };
        if g > *newer {
            return None;
        }
        if g < *newer {
            behind.insert(i);
        }
    }
    (!behind.is_empty()).then_some(behind)
}

/// The torn-row rule's view of one part's block.
fn part_meta(meta: Option<&BlockMeta>, part: usize, k: usize) -> PartMeta {
    let rec = match meta {
        None | Some(BlockMeta::BadRecord | BlockMeta::BadData(_)) => return PartMeta::Unavailable,
        Some(BlockMeta::Unwritten) => MetaRecord::EMPTY,
        Some(BlockMeta::Valid(s)) => record_of(s),
    };
    if part < k {
        PartMeta::data(&rec)
    } else {
        PartMeta::parity(&rec, k)
    }
}

/// A record with the summary's fields (the data checksum does not matter
/// to the torn-row rule).
fn record_of(s: &RecordSummary) -> MetaRecord {
    let mut covered = [0u64; MAX_EC_DATA];
    let n = s.covered.len().min(MAX_EC_DATA);
    covered[..n].copy_from_slice(&s.covered[..n]);
    MetaRecord {
        data_sum: [0; 16],
        generation: Generation(s.generation),
        flags: s.flags,
        covered_len: n as u8,
        covered,
    }
}
