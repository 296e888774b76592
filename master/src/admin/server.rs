//! The admin listener: one task per connection, one request per connection.
//!
//! Repairs and replaces hold `busy`: one at a time, so a replace never
//! switches a slot under a running repair's feet.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Mutex, watch};

use super::proto::{Reply, Request};
use super::reach::{self, Reach};
use crate::volume::Volume;
use crate::volume::repair::replace::Replaced;
use crate::volume::repair::{Progress, RepairOptions, run_repair};

/// Progress lines are sent at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// Longest request line accepted.
const MAX_LINE: usize = 64 << 10;

/// What the admin endpoint serves.
#[derive(Debug)]
pub struct Admin {
    volume: Arc<Volume>,
    /// The master's state directory (the repair checkpoint).
    state: PathBuf,
    /// How NEW of a replace is reached.
    reach: Reach,
    /// Held while a repair or a replace runs: one at a time.
    busy: Mutex<()>,
}

impl Admin {
    /// The endpoint of `volume`.
    pub fn new(volume: Arc<Volume>, state: PathBuf, reach: Reach) -> Arc<Self> {
        Arc::new(Admin {
            volume,
            state,
            reach,
            busy: Mutex::new(()),
        })
    }

    /// Accepts connections until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: UnixListener) {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let me = Arc::clone(&self);
                    tokio::spawn(async move { me.connection(stream).await });
                }
                Err(e) => {
                    eprintln!("qbd-master: admin socket: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn connection(&self, stream: UnixStream) {
        let (rd, mut wr) = stream.into_split();
        let mut line = String::new();
        let mut rd = BufReader::new(rd).take(MAX_LINE as u64);
        let reply = match rd.read_line(&mut line).await {
            Ok(0) => return,
            Ok(_) => match serde_json::from_str::<Request>(line.trim_end()) {
                Ok(Request::Hello) => self.hello(),
                Ok(Request::Repair { options }) => return self.repair(options, &mut wr).await,
                Ok(Request::Replace { old, new }) => self.replace(&old, &new).await,
                Err(e) => Reply::Error {
                    message: format!("bad request: {e}"),
                },
            },
            Err(e) => Reply::Error {
                message: format!("bad request: {e}"),
            },
        };
        let _ = wr.write_all(reply.line().as_bytes()).await;
    }

    /// Switches OLD's slot to NEW (`Volume::replace_serving`).
    async fn replace(&self, old: &str, new: &str) -> Reply {
        let Ok(_one) = self.busy.try_lock() else {
            return error("a repair or a replace is already running on this master".into());
        };
        let slots: Vec<_> = self
            .volume
            .backends()
            .iter()
            .map(|b| (b.id(), b.describe()))
            .collect();
        let Some(old_id) = reach::old_id(old, &slots) else {
            return error(format!(
                "--replace: OLD {old} is none of this master's backends ({}): give its UUID \
                 (from the placement table in .meta)",
                slots
                    .iter()
                    .map(|(_, d)| d.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let backend = match self.reach.backend(new).await {
            Ok(b) => b,
            Err(why) => return error(format!("--replace: NEW {new}: {why}")),
        };
        eprintln!("qbd-master: admin: replace {old} by {new}");
        match self.volume.replace_serving(old_id, backend).await {
            Ok((slot, done)) => Reply::Replaced {
                slot,
                backend: self.volume.backends()[slot].describe(),
                epoch: self.volume.meta().epoch,
                already: done == Replaced::AlreadySwitched,
            },
            Err(e) => {
                eprintln!("qbd-master: admin: replace failed: {e}");
                error(format!("--replace: {e}"))
            }
        }
    }

    fn hello(&self) -> Reply {
        let m = self.volume.meta();
        Reply::Hello {
            volume: m.name.clone(),
            uuid: m.uuid,
            epoch: m.epoch,
        }
    }

    /// Runs a repair, streaming progress; stops if the client goes away.
    async fn repair(&self, opts: RepairOptions, wr: &mut tokio::net::unix::OwnedWriteHalf) {
        let Ok(_one) = self.busy.try_lock() else {
            let busy = error("a repair or a replace is already running on this master".into());
            let _ = wr.write_all(busy.line().as_bytes()).await;
            return;
        };
        eprintln!("qbd-master: admin: repair started ({opts:?})");
        let (tx, mut rx) = watch::channel::<Option<Progress>>(None);
        let mut report_progress = move |p: &Progress| {
            let _ = tx.send(Some(p.clone()));
        };
        let job = run_repair(&self.volume, &self.state, &opts, &mut report_progress);
        tokio::pin!(job);
        let mut last = Instant::now()
            .checked_sub(PROGRESS_EVERY)
            .unwrap_or_else(Instant::now);
        let result = loop {
            tokio::select! {
                r = &mut job => break r,
                changed = rx.changed() => {
                    if changed.is_err() || last.elapsed() < PROGRESS_EVERY {
                        continue;
                    }
                    let Some(p) = rx.borrow_and_update().clone() else { continue };
                    last = Instant::now();
                    if wr.write_all(Reply::Progress(p).line().as_bytes()).await.is_err() {
                        eprintln!("qbd-master: admin: client went away; repair stopped");
                        return;
                    }
                }
            }
        };
        let reply = match result {
            Ok(report) => {
                eprintln!(
                    "qbd-master: admin: repair done: {} chunk(s), {} part(s) rebuilt, {} block(s) repaired, {} left",
                    report.chunks_done,
                    report.parts_rebuilt,
                    report.blocks_repaired,
                    report.parts_left
                );
                Reply::Done { report }
            }
            Err(e) => Reply::Error {
                message: e.to_string(),
            },
        };
        let _ = wr.write_all(reply.line().as_bytes()).await;
    }
}

fn error(message: String) -> Reply {
    Reply::Error { message }
}
