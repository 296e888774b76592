//! What a repair found and did: per chunk ([`ChunkOutcome`]) and for the
//! whole run ([`RepairReport`], also the admin protocol's final answer).

use serde::{Deserialize, Serialize};

/// What was wrong with one part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// The part file of a written chunk is absent.
    Missing,
    /// The part file is truncated, foreign or has a bad header.
    BadFile {
        /// What is wrong.
        why: String,
    },
    /// The degraded map says the part missed writes.
    Stale,
    /// Blocks failing their checks, or older than the other parts'.
    BadBlocks {
        /// How many.
        count: u64,
    },
    /// The designated backend cannot be reached (left as it is).
    Unreachable {
        /// Why.
        why: String,
    },
    /// Repairing the part failed (left as it is).
    Failed {
        /// Why.
        why: String,
    },
}

impl Problem {
    /// Whole-part problems: the part is rebuilt from scratch.
    pub fn is_whole(&self) -> bool {
        matches!(
            self,
            Problem::Missing | Problem::BadFile { .. } | Problem::Stale
        )
    }
}

/// One problem found on one part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Chunk.
    pub chunk: u64,
    /// Part (0 = `a`).
    pub part: u8,
    /// The backend the placement table designates for it.
    pub backend: String,
    /// What was wrong.
    pub problem: Problem,
    /// Repaired (or, in a dry run, would be).
    pub repaired: bool,
}

/// One chunk's result.
#[derive(Debug, Default, Clone)]
pub struct ChunkOutcome {
    /// Problems found.
    pub findings: Vec<Finding>,
    /// Whole parts rebuilt.
    pub parts_rebuilt: u64,
    /// Blocks rewritten in parts that were otherwise good.
    pub blocks_repaired: u64,
    /// Blocks with no good copy anywhere (and no way to rebuild them).
    pub lost_blocks: u64,
    /// Degraded-map entries cleared.
    pub stale_cleared: u64,
    /// Bytes read from backends.
    pub bytes_read: u64,
    /// Bytes written to backends.
    pub bytes_written: u64,
}

impl ChunkOutcome {
    pub(super) fn found(&mut self, chunk: u64, part: usize, backend: String, problem: Problem) {
        self.findings.push(Finding {
            chunk,
            part: part as u8,
            backend,
            problem,
            repaired: false,
        });
    }

    /// Marks the last finding of `part` repaired.
    pub(super) fn repaired(&mut self, part: usize) {
        if let Some(f) = self
            .findings
            .iter_mut()
            .rev()
            .find(|f| usize::from(f.part) == part)
        {
            f.repaired = true;
        }
    }
}

/// Findings listed in a report at most (the counters count them all).
pub const MAX_LISTED: usize = 200;

/// A whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RepairReport {
    /// Volume name.
    pub volume: String,
    /// Nothing was written.
    pub dry_run: bool,
    /// The chunk this run started from (a checkpoint's, or 0).
    pub first_chunk: u64,
    /// Written chunks from `first_chunk` on, visited in order.
    pub chunks_total: u64,
    /// Chunks visited.
    pub chunks_done: u64,
    /// Visited chunks with every part good.
    pub chunks_healthy: u64,
    /// Parts found missing.
    pub missing: u64,
    /// Parts found truncated or with a bad header.
    pub bad_files: u64,
    /// Parts found stale.
    pub stale: u64,
    /// Blocks found corrupt or outdated in otherwise good parts.
    pub bad_blocks: u64,
    /// Whole parts rebuilt (would be, in a dry run).
    pub parts_rebuilt: u64,
    /// Blocks rewritten (would be).
    pub blocks_repaired: u64,
    /// Parts left as they are (unreachable backend, failed repair),
    /// including those left by an interrupted earlier run (checkpoint).
    pub parts_left: u64,
    /// Blocks without any good copy (data lost), including earlier runs'.
    pub lost_blocks: u64,
    /// Bytes read from backends.
    pub bytes_read: u64,
    /// Bytes written to backends.
    pub bytes_written: u64,
    /// Wall time of the run.
    pub seconds: f64,
    /// Backends of the placement table that could not be reached.
    pub unreachable: Vec<String>,
    /// The first [`MAX_LISTED`] findings.
    pub findings: Vec<Finding>,
}

impl RepairReport {
    /// Everything found was (or would be) repaired and nothing is lost.
    pub fn all_repaired(&self) -> bool {
        self.parts_left == 0 && self.lost_blocks == 0 && self.unreachable.is_empty()
    }

    /// Adds one chunk's outcome.
    pub fn add(&mut self, o: ChunkOutcome) {
        self.chunks_done += 1;
        if o.findings.is_empty() && o.lost_blocks == 0 {
            self.chunks_healthy += 1;
        }
        for f in &o.findings {
            match &f.problem {
                Problem::Missing => self.missing += 1,
                Problem::BadFile { .. } => self.bad_files += 1,
                Problem::Stale => self.stale += 1,
                Problem::BadBlocks { count } => self.bad_blocks += count,
                Problem::Unreachable { .. } | Problem::Failed { .. } => {}
            }
            if !f.repaired {
                self.parts_left += 1;
            }
        }
        self.parts_rebuilt += o.parts_rebuilt;
        self.blocks_repaired += o.blocks_repaired;
        self.lost_blocks += o.lost_blocks;
        self.bytes_read += o.bytes_read;
        self.bytes_written += o.bytes_written;
        let room = MAX_LISTED.saturating_sub(self.findings.len());
        self.findings.extend(o.findings.into_iter().take(room));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unrepaired_findings_count_as_left() {
        let mut o = ChunkOutcome::default();
        o.found(3, 0, "dir:a".into(), Problem::Missing);
        o.repaired(0);
        o.found(
            3,
            1,
            "dir:b".into(),
            Problem::Unreachable { why: "down".into() },
        );
        let mut r = RepairReport::default();
        r.add(o);
        assert_eq!((r.missing, r.parts_left, r.chunks_healthy), (1, 1, 0));
        assert!(!r.all_repaired());
    }

    #[test]
    fn report_round_trips_through_json() {
        let mut r = RepairReport {
            volume: "v".into(),
            ..Default::default()
        };
        let mut o = ChunkOutcome::default();
        o.found(
            0,
            2,
            "dir:c".into(),
            Problem::BadFile {
                why: "size 3".into(),
            },
        );
        r.add(o);
        let text = serde_json::to_string(&r).expect("serialise");
        let back: RepairReport = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, r);
    }
}
