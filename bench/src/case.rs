//! One timed case: an op at a queue depth against one target.
//!
//! QD n runs n tokio tasks on the target's one connection, each looping
//! "build request, `Instant` at submit, `call().await`, `Instant` at
//! completion", so n requests are in flight at all times (no batching:
//! each request is its own `submit`, through the `Transport` trait, the
//! same code for every transport). The `l2-loop` target runs the same
//! loop as a closed loop on the L2 link's polling thread instead
//! ([`crate::closed_loop`]). The run starts with a warm-up whose
//! samples are dropped (the queue is already full when measuring starts);
//! then latency is recorded for every request submitted inside the window
//! and IOPS counts completions inside it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use qbd_core::proto::msg::{Response, WireBlockState};
use qbd_core::transport::Transport;

use qbd_transport_l2::L2Transport;

use crate::cli::{Op, TargetKind, Timing};
use crate::closed_loop;
use crate::report::{PERCENTILES, RoundResult};
use crate::stats::percentile;
use crate::threads::{self, Group, Usage};
use crate::volume::{BLOCK, Volume, unexpected};

/// A transport to the node, and the volume prepared there.
#[derive(Debug)]
pub struct Target {
    /// Which transport.
    pub kind: TargetKind,
    /// The connection (one, as a master has per node).
    pub t: Arc<dyn Transport>,
    /// The same connection as an L2 transport, for `l2-loop`.
    pub l2: Option<Arc<L2Transport>>,
    /// The bench volume (shared by every target of the node).
    pub volume: Arc<Volume>,
}

/// Tasks that keep tokio workers polling their sockets while a TCP case
/// runs (`--wait spin`): a task that only yields makes its worker poll the
/// I/O driver (epoll with no timeout) between every two polls, instead of
/// parking. L2 cases get none: their sockets belong to the L2 polling
/// threads, which spin by themselves.
#[derive(Debug, Clone, Default)]
pub struct Spinners {
    /// Spin the client's runtime (the one running the case).
    pub client: bool,
    /// Spin the in-process node's runtime.
    pub node: Option<tokio::runtime::Handle>,
}

impl Spinners {
    /// Starts the spinners a case of `kind` needs; they stop at `end`.
    fn start(&self, kind: TargetKind, end: Instant) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        if kind != TargetKind::Tcp {
            return tasks;
        }
        if self.client {
            tasks.push(tokio::spawn(spin_until(end)));
        }
        if let Some(node) = &self.node {
            tasks.push(node.spawn(spin_until(end)));
        }
        tasks
    }
}

async fn spin_until(end: Instant) {
    while Instant::now() < end {
        tokio::task::yield_now().await;
    }
}

/// One case run once.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The timed window's figures.
    pub result: RoundResult,
    /// Requests completed, warm-up included.
    pub requests: u64,
    /// CPU time by thread group over the whole run, warm-up included.
    pub usage: BTreeMap<Group, Usage>,
}

/// What one task (or one closed loop) of a case saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Latency (ns) of every request submitted in the timed window.
    pub lat_ns: Vec<u64>,
    /// Completions inside the timed window.
    pub completed: u64,
    /// Every completion, warm-up included.
    pub total: u64,
    /// Writes the node skipped (stored generation not older): should stay 0.
    pub skipped: u64,
}

impl Tally {
    /// Records one answer to a request sent at `sent` and answered at
    /// `done` (the window is `measure..end`).
    pub fn record(
        &mut self,
        op: Op,
        answer: Response,
        (sent, done): (Instant, Instant),
        (measure, end): (Instant, Instant),
    ) -> Result<(), String> {
        self.skipped += check(op, answer)?;
        self.total += 1;
        if sent >= measure {
            self.lat_ns
                .push(u64::try_from((done - sent).as_nanos()).unwrap_or(u64::MAX));
        }
        if done >= measure && done < end {
            self.completed += 1;
        }
        Ok(())
    }

    fn absorb(&mut self, other: Tally) {
        self.lat_ns.extend(other.lat_ns);
        self.completed += other.completed;
        self.total += other.total;
        self.skipped += other.skipped;
    }
}

/// Runs `op` at `qd` on `target` for one warm-up and one timed window.
pub async fn run_case(
    target: &Arc<Target>,
    op: Op,
    qd: u32,
    timing: Timing,
    spinners: &Spinners,
) -> Result<Outcome, String> {
    let before = threads::snapshot();
    let start = Instant::now();
    let measure = start + timing.warmup;
    let end = measure + timing.duration;
    let spinning = spinners.start(target.kind, end);
    let tally = match (&target.l2, target.kind) {
        (Some(l2), TargetKind::L2Loop) => {
            closed_loop::run(l2, &target.volume, op, qd, (start, measure, end)).await
        }
        _ => tasks(target, op, qd, (start, measure, end)).await,
    };
    for s in spinning {
        s.abort();
        let _ = s.await;
    }
    let usage = threads::delta(&before, &threads::snapshot());
    let mut tally = tally.map_err(|e| format!("{}: {e}", target.kind.name()))?;
    if tally.skipped > 0 {
        eprintln!(
            "qbd-bench: warning: the node skipped {} {} writes over {} (stale generation)",
            tally.skipped,
            op.name(),
            target.kind.name()
        );
    }
    tally.lat_ns.sort_unstable();
    let us = |ns: Option<u64>| ns.map_or(f64::NAN, |n| n as f64 / 1000.0);
    let result = RoundResult {
        median_us: us(percentile(&tally.lat_ns, 50.0)),
        p99_us: us(percentile(&tally.lat_ns, 99.0)),
        iops: tally.completed as f64 / timing.duration.as_secs_f64(),
        samples: tally.lat_ns.len() as u64,
        lat_us: PERCENTILES.map(|p| us(percentile(&tally.lat_ns, p))),
    };
    Ok(Outcome {
        result,
        requests: tally.total,
        usage,
    })
}

/// `qd` tokio tasks, each looping `call().await`.
async fn tasks(
    target: &Arc<Target>,
    op: Op,
    qd: u32,
    (start, measure, end): (Instant, Instant, Instant),
) -> Result<Tally, String> {
    let tasks: Vec<_> = (0..qd)
        .map(|i| {
            let seed = u64::from(i) + 1 + u64::from(start.elapsed().subsec_nanos());
            tokio::spawn(worker(Arc::clone(target), op, seed, measure, end))
        })
        .collect();
    let mut tally = Tally::default();
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(out)) => tally.absorb(out),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(format!("a {} task failed: {e}", op.name()));
            }
        }
    }
    first_error.map_or(Ok(tally), Err)
}

async fn worker(
    target: Arc<Target>,
    op: Op,
    seed: u64,
    measure: Instant,
    end: Instant,
) -> Result<Tally, String> {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Tally {
        lat_ns: Vec::with_capacity(1 << 14),
        ..Tally::default()
    };
    loop {
        let req = target.volume.request(op, &mut rng);
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let answer = target.t.call(req).await;
        let done = Instant::now();
        let answer = answer.map_err(|e| format!("{}: {e}", op.name()))?;
        out.record(op, answer, (sent, done), (measure, end))?;
    }
    Ok(out)
}

/// Checks an answer; returns the number of skipped writes.
fn check(op: Op, r: Response) -> Result<u64, String> {
    match (op, r) {
        (Op::Ping, Response::Pong) => Ok(0),
        (Op::Read, Response::Blocks { states, data })
            if data.len() == BLOCK as usize
                && matches!(states.as_slice(), [WireBlockState::Data(_)]) =>
        {
            Ok(0)
        }
        (Op::Write, Response::Written { applied, skipped }) if applied + skipped == 1 => {
            Ok(u64::from(skipped))
        }
        (op, r) => Err(unexpected(op.name(), &r)),
    }
}
