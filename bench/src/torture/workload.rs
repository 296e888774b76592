//! The seeded workload: worker threads, each with its own NBD connection,
//! send tagged writes of 4 KiB to 1 MiB (some with FUA), reads checked
//! against the model, FLUSH, TRIM and WRITE_ZEROES. Half the requests go
//! to a hot eighth of the volume, so connections overlap.
//!
//! A worker stops when told, or when its connection breaks (the master
//! died) or it gets an error while errors are expected (a takeover).
//! An error when none is expected is a finding.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::client::{Client, Cmd, Failure};
use super::model::Model;
use super::pattern::{BLOCK, Seen, ZERO, decode, fill};
use super::rng::Rng;

/// How long one request may take before the worker calls it a hang (a
/// finding: the longest pause a fault causes is a few seconds, a node's
/// request deadline 5 s).
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest request, in blocks (1 MiB).
const MAX_BLOCKS: u64 = 256;

/// What the workers and the checker share.
#[derive(Debug)]
pub struct Shared {
    /// The model.
    pub model: Mutex<Model>,
    next_value: AtomicU64,
    stop: AtomicBool,
    /// Errors are expected now (a second master is taking over).
    pub errors_expected: AtomicBool,
    /// Findings, in order.
    pub findings: Mutex<Vec<String>>,
    /// Requests by kind: write, read, flush, fua, trim, zeroes, errors.
    pub ops: [AtomicU64; 7],
}

impl Shared {
    /// A new model of `blocks` blocks.
    pub fn new(blocks: u64) -> Arc<Shared> {
        Arc::new(Shared {
            model: Mutex::new(Model::new(blocks)),
            next_value: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            errors_expected: AtomicBool::new(false),
            findings: Mutex::new(Vec::new()),
            ops: Default::default(),
        })
    }

    /// Records a finding.
    pub fn finding(&self, what: String) {
        eprintln!("qbd-bench torture: FINDING: {what}");
        if let Ok(mut f) = self.findings.lock() {
            f.push(what);
        }
    }

    /// Whether anything was found.
    pub fn found(&self) -> bool {
        self.findings.lock().map(|f| !f.is_empty()).unwrap_or(true)
    }

    /// The model, locked (a poisoned lock is still the model).
    pub fn model(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn value(&self) -> u64 {
        self.next_value.fetch_add(1, Ordering::Relaxed)
    }

    fn count(&self, kind: usize) {
        self.ops[kind].fetch_add(1, Ordering::Relaxed);
    }
}

/// The running workers.
#[derive(Debug)]
pub struct Workers {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` workers on `socket`, streams `seed`/`base..base+n`.
    pub fn start(shared: &Arc<Shared>, socket: PathBuf, n: usize, seed: u64, base: u64) -> Workers {
        shared.stop.store(false, Ordering::SeqCst);
        let threads = (0..n)
            .map(|i| {
                let shared = Arc::clone(shared);
                let socket = socket.clone();
                let rng = Rng::stream(seed, base + i as u64);
                std::thread::spawn(move || worker(&shared, &socket, rng))
            })
            .collect();
        Workers {
            shared: Arc::clone(shared),
            threads,
        }
    }

    /// Tells every worker to stop after its request and waits for them.
    pub fn stop(self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn worker(shared: &Shared, socket: &std::path::Path, mut rng: Rng) {
    let mut client = match Client::connect(socket, super::cluster::VOLUME, IO_TIMEOUT) {
        Ok(c) => c,
        Err(e) => {
            if !shared.errors_expected.load(Ordering::SeqCst) {
                shared.finding(format!("cannot connect to the master: {e}"));
            }
            return;
        }
    };
    let blocks = shared.model().len();
    while !shared.stop.load(Ordering::SeqCst) {
        let (first, count) = pick_range(&mut rng, blocks);
        let result = match rng.weighted(&[45, 25, 8, 7, 5, 5]) {
            0 => write(shared, &mut client, first, count, false),
            1 => read(shared, &mut client, first, count),
            2 => flush(shared, &mut client),
            3 => write(shared, &mut client, first, count, true),
            4 => zero(shared, &mut client, Cmd::Trim, first, count, rng.chance(20)),
            _ => zero(
                shared,
                &mut client,
                Cmd::WriteZeroes,
                first,
                count,
                rng.chance(20),
            ),
        };
        match result {
            Ok(()) => {}
            Err(Failure::Io(e)) if is_timeout(&e) => {
                shared.finding(format!("a request hung for {} s", IO_TIMEOUT.as_secs()));
                return;
            }
            Err(Failure::Io(_)) => return,
            Err(Failure::Nbd(e)) => {
                shared.count(6);
                if !shared.errors_expected.load(Ordering::SeqCst) {
                    shared.finding(format!(
                        "NBD error {e} while the redundancy allows every request"
                    ));
                }
                return;
            }
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// A range of blocks: half in the hot first eighth, lengths mostly small.
fn pick_range(rng: &mut Rng, blocks: u64) -> (u64, u64) {
    let span = if rng.chance(50) {
        (blocks / 8).max(1)
    } else {
        blocks
    };
    let count = match rng.below(10) {
        0..=5 => rng.range(1, 4),
        6..=8 => rng.range(5, 64),
        _ => rng.range(65, MAX_BLOCKS),
    }
    .min(blocks);
    let first = rng.below(span.saturating_sub(count) + 1);
    (first, count)
}

fn write(shared: &Shared, c: &mut Client, first: u64, n: u64, fua: bool) -> Result<(), Failure> {
    shared.count(if fua { 3 } else { 0 });
    let value = shared.value();
    let mut data = vec![0u8; (n as usize) * BLOCK];
    for (i, b) in data.chunks_mut(BLOCK).enumerate() {
        fill(b, first + i as u64, value);
    }
    let blocks = first..first + n;
    let t = shared.model().issue(blocks.clone(), value);
    let r = c.write(first * BLOCK as u64, &data, fua);
    shared.model().complete(blocks, t, r.is_ok(), fua);
    r
}

/// One FUA write of `block` (the takeover probe), modelled like any write.
pub fn write_probe(shared: &Shared, c: &mut Client, block: u64) -> Result<(), Failure> {
    write(shared, c, block, 1, true)
}

fn zero(
    shared: &Shared,
    c: &mut Client,
    cmd: Cmd,
    first: u64,
    n: u64,
    fua: bool,
) -> Result<(), Failure> {
    shared.count(if cmd == Cmd::Trim { 4 } else { 5 });
    let blocks = first..first + n;
    let t = shared.model().issue(blocks.clone(), ZERO);
    let r = c.zero(cmd, first * BLOCK as u64, (n as usize * BLOCK) as u32, fua);
    shared.model().complete(blocks, t, r.is_ok(), fua);
    r
}

fn flush(shared: &Shared, c: &mut Client) -> Result<(), Failure> {
    shared.count(2);
    let t = shared.model().begin_flush();
    c.flush()?;
    shared.model().flushed(t);
    Ok(())
}

/// Reads `n` blocks at `first` and checks each against the model.
pub fn read(shared: &Shared, c: &mut Client, first: u64, n: u64) -> Result<(), Failure> {
    shared.count(1);
    let t = shared.model().begin_read();
    let r = c.read(first * BLOCK as u64, (n as usize * BLOCK) as u32);
    let mut model = shared.model();
    let data = match r {
        Ok(d) => d,
        Err(e) => {
            model.end_read(t);
            return Err(e);
        }
    };
    let mut bad = Vec::new();
    for (i, buf) in data.chunks(BLOCK).enumerate() {
        let block = first + i as u64;
        let seen = match decode(buf, block) {
            Seen::Value(v) => Some(v),
            Seen::Garbage => None,
        };
        if let Err(v) = model.check(block, t, seen) {
            bad.push(v.to_string());
        }
    }
    model.end_read(t);
    drop(model);
    if let Some(first_bad) = bad.first() {
        shared.finding(format!("{} wrong block(s); first: {first_bad}", bad.len()));
    }
    Ok(())
}
