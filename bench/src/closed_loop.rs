//! The `l2-loop` target: a case run as a [`ClosedLoop`] on the L2 link's
//! polling thread. The loop issues `qd` requests, and one more each time
//! one completes, until the window ends; requests are sealed and sent in
//! the pass that issues them and their outcomes come back to the loop on
//! the same thread, so no request pays a thread hop or a tokio wake-up
//! (as the floor probe measured AF_PACKET). Timestamps are taken on the
//! polling thread: at issue, and when the loop sees the outcome.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use qbd_core::proto::msg::{Request, Response};
use qbd_core::transport::TransportError;
use qbd_transport_l2::{ClosedLoop, L2Transport};
use tokio::sync::oneshot;

use crate::case::Tally;
use crate::cli::Op;
use crate::volume::Volume;

/// How long past the window's end the loop may take to drain before the
/// bench gives up on it (the engine fails a request at its deadline, 5 s).
const DRAIN: Duration = Duration::from_secs(10);

/// Runs one case as a closed loop on `t`'s polling thread.
pub async fn run(
    t: &L2Transport,
    volume: &Arc<Volume>,
    op: Op,
    qd: u32,
    (start, measure, end): (Instant, Instant, Instant),
) -> Result<Tally, String> {
    let (tx, rx) = oneshot::channel();
    let seed = u64::from(start.elapsed().subsec_nanos()) | 1;
    t.run_closed_loop(Box::new(BenchLoop {
        volume: Arc::clone(volume),
        op,
        qd,
        rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        window: (measure, end),
        started: false,
        next_id: 1,
        sent: HashMap::new(),
        tally: Tally::default(),
        error: None,
        report: Some(tx),
    }));
    let wait = end.saturating_duration_since(Instant::now()) + DRAIN;
    match tokio::time::timeout(wait, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err("the L2 link dropped the closed loop".into()),
        Err(_) => Err(format!("the closed loop did not finish within {wait:?}")),
    }
}

/// The loop's state, owned by the polling thread while it runs.
#[derive(Debug)]
struct BenchLoop {
    volume: Arc<Volume>,
    op: Op,
    qd: u32,
    rng: u64,
    /// The timed window: `measure..end`.
    window: (Instant, Instant),
    started: bool,
    next_id: u64,
    /// When each request in flight was issued, by id.
    sent: HashMap<u64, Instant>,
    tally: Tally,
    error: Option<String>,
    /// Taken when the loop reports (then it is done).
    report: Option<oneshot::Sender<Result<Tally, String>>>,
}

impl BenchLoop {
    fn issue(&mut self, now: Instant, out: &mut Vec<(u64, Request)>) {
        let id = self.next_id;
        self.next_id += 1;
        self.sent.insert(id, now);
        out.push((id, self.volume.request(self.op, &mut self.rng)));
    }

    fn take(&mut self, id: u64, outcome: Result<Response, TransportError>, done: Instant) {
        let Some(sent) = self.sent.remove(&id) else {
            return;
        };
        let recorded = outcome
            .map_err(|e| format!("{}: {e}", self.op.name()))
            .and_then(|answer| {
                self.tally
                    .record(self.op, answer, (sent, done), self.window)
            });
        if let Err(e) = recorded {
            self.error.get_or_insert(e);
        }
    }
}

impl ClosedLoop for BenchLoop {
    fn step(
        &mut self,
        _pass: Instant,
        completed: &mut Vec<(u64, Result<Response, TransportError>)>,
    ) -> Vec<(u64, Request)> {
        let now = Instant::now();
        let mut issued = Vec::new();
        if !self.started {
            self.started = true;
            for _ in 0..self.qd {
                self.issue(now, &mut issued);
            }
        }
        for (id, outcome) in completed.drain(..) {
            self.take(id, outcome, now);
            if now < self.window.1 && self.error.is_none() {
                self.issue(now, &mut issued);
            }
        }
        if self.sent.is_empty()
            && issued.is_empty()
            && let Some(tx) = self.report.take()
        {
            let tally = std::mem::take(&mut self.tally);
            let _ = tx.send(self.error.take().map_or(Ok(tally), Err));
        }
        issued
    }

    fn done(&self) -> bool {
        self.report.is_none()
    }
}
