//! The verdict of a verify run: per-problem records, chunk counts and the
//! overall state. Serialised as the `--json` output of `qbd verify`
//! (schema in `docs/verify.md`); field names are part of that schema.

use serde::Serialize;

use crate::placement::BackendId;

/// The overall state, as `zpool status` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    /// Every in-use chunk at full redundancy, every backend reachable,
    /// nothing stray.
    Healthy,
    /// Problems, but every chunk is still readable (or may be, once an
    /// unreachable backend is back).
    Degraded,
    /// At least one chunk (or block) has fewer good parts than it needs.
    Faulted,
}

/// How one in-use chunk stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkState {
    /// Every part good.
    Healthy,
    /// Some parts not good, but at least the needed number are.
    Degraded,
    /// Too few good parts, but enough if the unreachable ones are good.
    Unavailable,
    /// Too few good parts even counting the unreachable ones.
    Lost,
}

/// Chunk counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ChunkCounts {
    /// Chunks of the volume.
    pub total: u64,
    /// Chunks ever allocated or with a part file.
    pub in_use: u64,
    /// In-use chunks at full redundancy.
    pub healthy: u64,
    /// Readable with fewer parts than full redundancy.
    pub degraded: u64,
    /// Not readable now, maybe once unreachable backends return.
    pub unavailable: u64,
    /// Unrecoverable.
    pub lost: u64,
}

impl ChunkCounts {
    /// Counts one in-use chunk.
    pub fn add(&mut self, s: ChunkState) {
        self.in_use += 1;
        match s {
            ChunkState::Healthy => self.healthy += 1,
            ChunkState::Degraded => self.degraded += 1,
            ChunkState::Unavailable => self.unavailable += 1,
            ChunkState::Lost => self.lost += 1,
        }
    }
}

/// One backend of the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendStatus {
    /// Its identity, when known (reachable, or named by the placement).
    pub id: Option<BackendId>,
    /// How it was reached (`dir:/srv/a`, `node:host:port`), when given.
    pub address: Option<String>,
    /// Whether it answered.
    pub reachable: bool,
    /// Why not, when it did not.
    pub why: Option<String>,
    /// Whether the placement table names it.
    pub in_placement: bool,
    /// Part files the placement puts on it for in-use chunks.
    pub parts_expected: u64,
    /// Of those, found good.
    pub parts_good: u64,
}

/// A part named by a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PartProblem {
    /// Chunk index.
    pub chunk: u64,
    /// Part index (0 = `a`).
    pub part: u8,
    /// The backend the placement puts it on.
    pub backend: BackendId,
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// A backend given on the command line, or named by the placement,
    /// did not answer; its parts could not be checked.
    BackendUnreachable {
        /// Its identity, when the placement names it.
        backend: Option<BackendId>,
        /// How it was given, when it was.
        address: Option<String>,
        /// Why.
        why: String,
    },
    /// A reachable backend of the placement does not hold the volume.
    VolumeAbsent {
        /// The backend.
        backend: BackendId,
    },
    /// The allocation map is absent on a backend holding the volume.
    AllocMissing {
        /// The backend.
        backend: BackendId,
    },
    /// The allocation map does not decode, or has corrupt pages.
    AllocCorrupt {
        /// The backend.
        backend: BackendId,
        /// What is wrong.
        why: String,
    },
    /// A degraded map does not decode (counts as every chunk stale).
    StaleMapUnreadable {
        /// The backend holding it.
        holder: BackendId,
        /// The backend it describes.
        of: BackendId,
        /// What is wrong.
        why: String,
    },
    /// An allocated chunk's part file is absent.
    PartMissing(PartProblem),
    /// A part file of the wrong size.
    PartWrongSize {
        /// Which part.
        #[serde(flatten)]
        at: PartProblem,
        /// Its size.
        size: u64,
        /// The size the layout gives.
        expected: u64,
    },
    /// A part the degraded map of another backend marks stale.
    PartStale {
        /// Which part.
        #[serde(flatten)]
        at: PartProblem,
        /// The backends whose degraded map marks it.
        marked_by: Vec<BackendId>,
    },
    /// (deep) A part whose header is not the expected one.
    PartBadHeader {
        /// Which part.
        #[serde(flatten)]
        at: PartProblem,
        /// What is wrong.
        why: String,
    },
    /// (deep) A part that could not be read.
    PartUnreadable {
        /// Which part.
        #[serde(flatten)]
        at: PartProblem,
        /// What failed.
        why: String,
    },
    /// (deep) Blocks whose record or data fails its checksum.
    CorruptBlocks {
        /// Which part.
        #[serde(flatten)]
        at: PartProblem,
        /// How many.
        count: u32,
        /// The first (part block index).
        first: u32,
    },
    /// (deep, replication) Blocks at a lower generation than another copy.
    StaleBlocks {
        /// Which part.
        #[serde(flatten)]
        at: PartProblem,
        /// How many.
        count: u32,
        /// The first.
        first: u32,
    },
    /// (deep, EC) Rows where this part disagrees with the row's version.
    TornRows {
        /// Which part.
        #[serde(flatten)]
        at: PartProblem,
        /// How many.
        count: u32,
        /// The first (row = part block index).
        first: u32,
    },
    /// A chunk with fewer good parts than it needs.
    ChunkLost {
        /// The chunk.
        chunk: u64,
        /// Good parts.
        good: u32,
        /// Parts it needs.
        needed: u32,
    },
    /// (deep) Blocks (replication) or rows (EC) of a chunk with no good
    /// version left.
    BlocksLost {
        /// The chunk.
        chunk: u64,
        /// How many blocks (replication) or rows (EC).
        count: u32,
        /// The first (part block index).
        first: u32,
    },
    /// A file the format does not name, or a part file where the
    /// placement does not put it.
    Stray {
        /// The backend.
        backend: BackendId,
        /// Path relative to the volume directory.
        path: String,
        /// Its size.
        size: u64,
    },
}

impl Problem {
    /// True when the problem means data is gone (not just less redundant).
    pub fn is_loss(&self) -> bool {
        matches!(self, Problem::ChunkLost { .. } | Problem::BlocksLost { .. })
    }

    /// The part it names, if it names one.
    pub fn part(&self) -> Option<PartProblem> {
        match self {
            Problem::PartMissing(at)
            | Problem::PartWrongSize { at, .. }
            | Problem::PartStale { at, .. }
            | Problem::PartBadHeader { at, .. }
            | Problem::PartUnreadable { at, .. }
            | Problem::CorruptBlocks { at, .. }
            | Problem::StaleBlocks { at, .. }
            | Problem::TornRows { at, .. } => Some(*at),
            _ => None,
        }
    }
}

/// The whole verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Schema version of this structure (`docs/verify.md`).
    pub schema: u32,
    /// Volume name.
    pub volume: String,
    /// Volume UUID.
    pub uuid: String,
    /// `replicate:N` or `ec:K+M`.
    pub redundancy: String,
    /// Whether blocks were checked (`--deep`).
    pub deep: bool,
    /// Overall state.
    pub state: State,
    /// Chunk counts.
    pub chunks: ChunkCounts,
    /// (deep) Blocks whose record (and data) were checked.
    pub blocks_checked: u64,
    /// (deep) Bytes of part data the checked blocks cover.
    pub bytes_checked: u64,
    /// Wall time of the run, seconds (set by the caller; 0 if unknown).
    pub elapsed_s: f64,
    /// Every backend of the run.
    pub backends: Vec<BackendStatus>,
    /// Every problem, in a stable order (backend-level first, then by
    /// chunk and part).
    pub problems: Vec<Problem>,
}

/// The JSON schema version written in [`Report::schema`].
pub const SCHEMA: u32 = 1;

impl Report {
    /// The state the problems imply.
    pub fn state_of(problems: &[Problem], counts: &ChunkCounts) -> State {
        if counts.lost > 0 || problems.iter().any(Problem::is_loss) {
            State::Faulted
        } else if problems.is_empty() {
            State::Healthy
        } else {
            State::Degraded
        }
    }
}

/// What goes into a report besides the checks' findings.
#[derive(Debug, Clone)]
pub struct RunFacts {
    /// Volume name.
    pub volume: String,
    /// Volume UUID.
    pub uuid: String,
    /// The policy text.
    pub redundancy: String,
    /// Every backend of the run (counts are filled in from the checks).
    pub backends: Vec<BackendStatus>,
    /// Problems found before the checks (backends that did not answer).
    pub unreachable: Vec<Problem>,
}

impl Report {
    /// Puts the fast check's (and the deep check's) findings in order:
    /// backend-level problems, then by chunk and part, then strays.
    pub fn assemble(
        facts: RunFacts,
        fast: &super::fast::FastView,
        deep: Option<super::deep::DeepResult>,
    ) -> Report {
        let mut backends = facts.backends;
        fast.fill_backends(&mut backends);
        let mut problems = facts.unreachable;
        let named: Vec<BackendId> = problems
            .iter()
            .filter_map(|p| match p {
                Problem::BackendUnreachable {
                    backend: Some(id), ..
                } => Some(*id),
                _ => None,
            })
            .collect();
        // A backend already reported (its listing failed) is not reported
        // again as an unanswered placement entry.
        problems.extend(
            fast.global
                .iter()
                .filter(|p| match p {
                    Problem::BackendUnreachable {
                        backend: Some(id),
                        address: None,
                        ..
                    } => !named.contains(id),
                    _ => true,
                })
                .cloned(),
        );
        let mut per_chunk: Vec<Problem> = fast.parts.clone();
        let (counts, blocks_checked) = match &deep {
            Some(d) => {
                per_chunk.extend(d.problems.iter().cloned());
                (d.counts, d.blocks_checked)
            }
            None => {
                let (counts, lost) = fast.counts();
                per_chunk.extend(lost);
                (counts, 0)
            }
        };
        per_chunk.sort_by_key(chunk_key);
        problems.extend(per_chunk);
        problems.extend(fast.strays.iter().cloned());
        Report {
            schema: SCHEMA,
            volume: facts.volume,
            uuid: facts.uuid,
            redundancy: facts.redundancy,
            deep: deep.is_some(),
            state: Report::state_of(&problems, &counts),
            chunks: counts,
            blocks_checked,
            bytes_checked: blocks_checked * u64::from(fast.shape.layout.block_size),
            elapsed_s: 0.0,
            backends,
            problems,
        }
    }
}

/// Sort key of per-chunk problems: chunk, then part (chunk-wide last).
fn chunk_key(p: &Problem) -> (u64, u16) {
    match (p, p.part()) {
        (_, Some(at)) => (at.chunk, u16::from(at.part)),
        (Problem::ChunkLost { chunk, .. } | Problem::BlocksLost { chunk, .. }, None) => {
            (*chunk, u16::MAX)
        }
        _ => (u64::MAX, u16::MAX),
    }
}
