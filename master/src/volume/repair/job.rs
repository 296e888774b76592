//! A repair run: the written chunks from the front (chunk 0 upward, or
//! from the checkpoint), started in order, up to `jobs` at once (each under
//! its own exclusive range lock: directory I/O runs on the task that does
//! it, so chunks on different worker threads are checked in parallel),
//! paced to the rate limit, with progress reported after every chunk and
//! the checkpoint saved about once a second.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use super::super::{Scheme, Volume, VolumeError};
use super::checkpoint::Checkpoint;
use super::pace::Pace;
use super::report::{ChunkOutcome, Problem, RepairReport};

/// How to run a repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairOptions {
    /// Report what would be rebuilt; write nothing (no checkpoint either).
    #[serde(default)]
    pub dry_run: bool,
    /// At most this many bytes/s read from and written to backends.
    #[serde(default)]
    pub max_rate: Option<u64>,
    /// Start from chunk 0 even if a checkpoint says otherwise.
    #[serde(default)]
    pub restart: bool,
    /// Chunks repaired at once (1..=8).
    #[serde(default = "one")]
    pub jobs: usize,
}

fn one() -> usize {
    1
}

/// The most chunks repaired at once.
pub const MAX_JOBS: usize = 8;

/// Where a run is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The last chunk done.
    pub chunk: u64,
    /// Chunks done in this run.
    pub done: u64,
    /// Chunks this run visits.
    pub total: u64,
    /// Bytes read and written so far.
    pub bytes: u64,
    /// Seconds since the run started.
    pub seconds: f64,
}

impl Default for RepairOptions {
    fn default() -> Self {
        RepairOptions {
            dry_run: false,
            max_rate: None,
            restart: false,
            jobs: 1,
        }
    }
}

const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Repairs `volume` (see [`super`]); `state` holds the checkpoint.
///
/// Up to `opts.jobs` chunks are repaired at once (each under its own
/// lock), started in ascending order; the checkpoint names the lowest
/// chunk not yet finished.
pub async fn run_repair(
    volume: &Arc<Volume>,
    state: &Path,
    opts: &RepairOptions,
    on_progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<RepairReport, VolumeError> {
    let started = Instant::now();
    let uuid = volume.meta().uuid;
    let resume = match opts.restart {
        true => None,
        false => Checkpoint::load(state, uuid)?,
    };
    let mut report = RepairReport {
        volume: volume.meta().name,
        dry_run: opts.dry_run,
        ..Default::default()
    };
    if let Some(c) = resume {
        report.first_chunk = c.next_chunk;
        report.parts_left = c.parts_left;
        report.lost_blocks = c.lost_blocks;
    }
    volume.revalidate_files().await;
    let chunks = volume.repair_chunks(report.first_chunk);
    report.chunks_total = chunks.len() as u64;
    let mut todo = chunks.into_iter().peekable();
    let mut running: JoinSet<(u64, ChunkOutcome)> = JoinSet::new();
    let mut in_flight: BTreeSet<u64> = BTreeSet::new();
    let mut pace = Pace::new(opts.max_rate, started);
    let mut saved = started;
    let jobs = opts.jobs.clamp(1, MAX_JOBS);
    loop {
        while running.len() < jobs && pace.delay(Instant::now()).is_zero() {
            let Some(c) = todo.next() else { break };
            let (v, dry) = (Arc::clone(volume), opts.dry_run);
            in_flight.insert(c);
            running.spawn(async move { (c, v.repair_chunk(c, dry).await) });
        }
        if running.is_empty() {
            if todo.peek().is_none() {
                break;
            }
            tokio::time::sleep(pace.delay(Instant::now())).await;
            continue;
        }
        let Some(joined) = running.join_next().await else {
            continue;
        };
        let (c, outcome) = joined.map_err(|e| VolumeError::NoCopy(format!("repair task: {e}")))?;
        in_flight.remove(&c);
        pace.account(outcome.bytes_read + outcome.bytes_written);
        report.add(outcome);
        on_progress(&Progress {
            chunk: c,
            done: report.chunks_done,
            total: report.chunks_total,
            bytes: report.bytes_read + report.bytes_written,
            seconds: started.elapsed().as_secs_f64(),
        });
        if !opts.dry_run && saved.elapsed() >= CHECKPOINT_EVERY {
            let next = in_flight
                .first()
                .copied()
                .or_else(|| todo.peek().copied())
                .unwrap_or(c + 1);
            checkpoint(&report, uuid, next).save(state)?;
            saved = Instant::now();
        }
    }
    if !opts.dry_run {
        Checkpoint::remove(state, uuid)?;
    }
    report.findings.sort_by_key(|f| (f.chunk, f.part));
    report.unreachable = volume.unreachable();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn checkpoint(r: &RepairReport, volume: uuid::Uuid, next_chunk: u64) -> Checkpoint {
    Checkpoint {
        volume,
        next_chunk,
        parts_left: r.parts_left,
        lost_blocks: r.lost_blocks,
    }
}

impl Volume {
    /// Re-opens the volume on every usable backend: a backend that kept
    /// part files open (a node, or this master's own directories) drops
    /// its handles, so files deleted, truncated or rewritten behind it are
    /// seen as they are on disk now.
    async fn revalidate_files(&self) {
        for slot in (0..self.backends.len()).filter(|&s| !self.health.is_failed(s)) {
            if let Err(e) = self.backends[slot].open_volume(self.meta()).await {
                self.fail(slot, &format!("re-open for repair: {e}"));
            }
        }
    }

    /// Chunks a repair visits from `from` on, in order: the written ones,
    /// and any with a degraded-map entry.
    fn repair_chunks(&self, from: u64) -> Vec<u64> {
        let mut chunks: Vec<u64> = self.allocated.iter().filter(|c| *c >= from).collect();
        for slot in 0..self.backends.len() {
            chunks.extend(
                self.health
                    .stale_chunks(slot)
                    .into_iter()
                    .filter(|c| *c >= from),
            );
        }
        chunks.sort_unstable();
        chunks.dedup();
        chunks
    }

    /// One chunk; an error is the chunk's finding, not the run's end.
    async fn repair_chunk(&self, chunk: u64, dry: bool) -> ChunkOutcome {
        let r = match (self.allocated.get(chunk), &self.scheme) {
            (false, _) => Ok(ChunkOutcome::default()),
            (true, Scheme::Erasure(_)) => self.repair_ec_chunk(chunk, dry).await,
            (true, Scheme::Replicated) => self.repair_replica_chunk(chunk, dry).await,
        };
        let mut out = r.unwrap_or_else(|e| {
            let mut out = ChunkOutcome::default();
            out.found(
                chunk,
                0,
                "(chunk)".into(),
                Problem::Failed { why: e.to_string() },
            );
            out
        });
        if !dry {
            self.clear_foreign_stale(chunk, &mut out).await;
        }
        out
    }

    /// Degraded-map entries of slots that hold no part of `chunk` (or of
    /// a never-written chunk) mean nothing: cleared.
    async fn clear_foreign_stale(&self, chunk: u64, out: &mut ChunkOutcome) {
        let parts = self.geo.redundancy.parts();
        for slot in 0..self.backends.len() {
            let holds = (0..parts).any(|p| self.placement.slot(chunk, p) == slot);
            if (holds && self.allocated.get(chunk)) || !self.health.is_stale(slot, chunk) {
                continue;
            }
            if self.clear_stale_everywhere(slot, chunk).await.is_ok() {
                out.stale_cleared += 1;
            }
        }
    }

    /// The backends of the table that are failed (unreachable) now.
    fn unreachable(&self) -> Vec<String> {
        (0..self.backends.len())
            .filter(|&s| self.health.is_failed(s))
            .map(|s| self.backends[s].describe())
            .collect()
    }
}
