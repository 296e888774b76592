//! A fault-injecting [`Backend`] wrapper for tests.
//!
//! - **Hold**: an operation matching a rule waits at a [`Gate`] until the
//!   test opens it (deterministic "delay", no sleeps).
//! - **Fail**: an operation matching a rule fails with
//!   [`BackendError::Injected`].
//! - **Record**: every completed operation is appended to an event log, so a
//!   test can check e.g. that a sync came after a write.
//! - **Crash**: [`FaultBackend::crash`] undoes every write not yet covered by
//!   a sync — data, records, or both, chosen separately so torn blocks
//!   happen — and fails every later operation, like a machine that lost
//!   power.
//!
//! Verify's listing and scan count as reads (`OpKind::Read`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};

use super::{
    Backend, BackendError, BackendResult, BlockWrite, BoxFut, PartId, PartRead, RawBlock,
    WriteOutcome,
};
use crate::format::alloc::{AllocMap, DecodedAlloc};
use crate::format::record::RECORD_SIZE;
use crate::generation::Generation;
use crate::meta::volume::VolumeMeta;
use crate::placement::BackendId;
use crate::verify::{PartScan, VolumeListing};

/// Which operation a rule or event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// `read`.
    Read,
    /// `write`.
    Write,
    /// `sync`.
    Sync,
    /// `allocate`.
    Allocate,
    /// `save_meta` (the epoch compare-and-set on nodes): holding it opens
    /// the window in which a master taking over has read the volume's
    /// state but the previous master still serves.
    SaveMeta,
}

/// A gate that holds operations until opened.
#[derive(Debug, Clone)]
pub struct Gate {
    open: Arc<watch::Sender<bool>>,
    arrived: Arc<(AtomicUsize, Notify)>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            open: Arc::new(watch::channel(false).0),
            arrived: Arc::new((AtomicUsize::new(0), Notify::new())),
        }
    }
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets every held and future operation through.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// Waits until at least `n` operations have reached the gate.
    pub async fn wait_arrivals(&self, n: usize) {
        loop {
            let notified = self.arrived.1.notified();
            if self.arrived.0.load(Ordering::SeqCst) >= n {
                return;
            }
            notified.await;
        }
    }

    async fn pass(&self) {
        let mut rx = self.open.subscribe();
        self.arrived.0.fetch_add(1, Ordering::SeqCst);
        self.arrived.1.notify_waiters();
        // The sender lives in `self`, so this only ends when the gate opens.
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// What a matching rule does.
#[derive(Debug, Clone)]
pub enum Action {
    /// Wait at the gate.
    Hold(Gate),
    /// Fail with an injected error.
    Fail,
}

/// A fault rule: operations of `op` (on `chunk`, if given) get `action`,
/// `times` times (forever if `None`).
#[derive(Debug, Clone)]
pub struct Rule {
    /// Operation kind.
    pub op: OpKind,
    /// Restrict to one chunk.
    pub chunk: Option<u64>,
    /// Restrict to operations covering this block of the part.
    pub block: Option<u32>,
    /// What to do.
    pub action: Action,
    /// How many times; `None` = always.
    pub times: Option<u32>,
}

/// A completed operation, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A read completed.
    Read {
        /// Part.
        part: PartId,
        /// First block.
        first: u32,
        /// Block count.
        count: u32,
    },
    /// A write completed.
    Write {
        /// Part.
        part: PartId,
        /// First block.
        first: u32,
        /// Block count.
        count: u32,
        /// Generation.
        generation: Generation,
    },
    /// A sync completed.
    Sync {
        /// Parts, or all.
        parts: Option<Vec<PartId>>,
    },
    /// An allocation completed.
    Allocate {
        /// Part.
        part: PartId,
    },
}

/// What a crash loses of the unsynced writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Data and records.
    All,
    /// Only data (records survive: checksums then fail).
    DataOnly,
    /// Only records (data survives: the old record describes new data).
    MetaOnly,
}

#[derive(Debug)]
struct Undo {
    /// The write this belongs to; `completed` once it returned.
    write: u64,
    completed: bool,
    part: PartId,
    block: u32,
    before: RawBlock,
}

/// The wrapper.
#[derive(Debug)]
pub struct FaultBackend {
    inner: Arc<dyn Backend>,
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<Event>>,
    undo: Mutex<Vec<Undo>>,
    track_undo: AtomicBool,
    crashed: AtomicBool,
    next_write: std::sync::atomic::AtomicU64,
}

impl FaultBackend {
    /// Wraps `inner`. With `crashable`, writes record undo data (slower).
    pub fn new(inner: Arc<dyn Backend>, crashable: bool) -> Self {
        FaultBackend {
            inner,
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            undo: Mutex::new(Vec::new()),
            track_undo: AtomicBool::new(crashable),
            crashed: AtomicBool::new(false),
            next_write: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Adds a rule.
    pub fn add_rule(&self, rule: Rule) {
        if let Ok(mut r) = self.rules.lock() {
            r.push(rule);
        }
    }

    /// Removes every rule.
    pub fn clear_rules(&self) {
        if let Ok(mut r) = self.rules.lock() {
            r.clear();
        }
    }

    /// The events so far.
    pub fn events(&self) -> Vec<Event> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Undoes unsynced writes per `mode` and fails everything afterwards.
    pub async fn crash(&self, mode: CrashMode) -> BackendResult<()> {
        self.crashed.store(true, Ordering::SeqCst);
        let undo: Vec<Undo> = self
            .undo
            .lock()
            .map(|mut u| u.drain(..).collect())
            .unwrap_or_default();
        for u in undo.into_iter().rev() {
            let data = (mode != CrashMode::MetaOnly).then(|| u.before.data.clone());
            let record = (mode != CrashMode::DataOnly).then_some(u.before.record);
            self.inner.write_raw(u.part, u.block, data, record).await?;
        }
        self.inner.sync(None).await
    }

    fn record(&self, e: Event) {
        if let Ok(mut l) = self.log.lock() {
            l.push(e);
        }
    }

    /// Finds the action for an operation, consuming one use of the rule.
    fn action(&self, op: OpKind, chunk: Option<u64>, blocks: Option<(u32, u32)>) -> Option<Action> {
        let mut rules = self.rules.lock().ok()?;
        let idx = rules.iter().position(|r| {
            r.op == op
                && r.times != Some(0)
                && (r.chunk.is_none() || r.chunk == chunk)
                && match (r.block, blocks) {
                    (Some(b), Some((first, count))) => b >= first && b < first + count,
                    (Some(_), None) => false,
                    (None, _) => true,
                }
        })?;
        let rule = &mut rules[idx];
        if let Some(t) = rule.times.as_mut() {
            *t -= 1;
        }
        Some(rule.action.clone())
    }

    async fn inject(
        &self,
        op: OpKind,
        chunk: Option<u64>,
        blocks: Option<(u32, u32)>,
    ) -> BackendResult<()> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(BackendError::Injected("backend crashed".into()));
        }
        match self.action(op, chunk, blocks) {
            None => Ok(()),
            Some(Action::Fail) => Err(BackendError::Injected(format!("{op:?} failed by rule"))),
            Some(Action::Hold(g)) => {
                g.pass().await;
                Ok(())
            }
        }
    }

    async fn save_undo(&self, w: &BlockWrite) -> BackendResult<u64> {
        let id = self.next_write.fetch_add(1, Ordering::SeqCst);
        if !self.track_undo.load(Ordering::SeqCst) {
            return Ok(id);
        }
        for b in w.first..w.first + w.count {
            let before = self.inner.read_raw(w.part, b).await?;
            if let Ok(mut u) = self.undo.lock() {
                u.push(Undo {
                    write: id,
                    completed: false,
                    part: w.part,
                    block: b,
                    before,
                });
            }
        }
        Ok(id)
    }

    fn complete_undo(&self, id: u64) {
        if let Ok(mut u) = self.undo.lock() {
            u.iter_mut()
                .filter(|x| x.write == id)
                .for_each(|x| x.completed = true);
        }
    }

    /// Writes completed before a sync starts are the ones it covers.
    fn covered_writes(&self, parts: &Option<Vec<PartId>>) -> Vec<u64> {
        let Ok(u) = self.undo.lock() else {
            return Vec::new();
        };
        u.iter()
            .filter(|x| x.completed && parts.as_ref().is_none_or(|p| p.contains(&x.part)))
            .map(|x| x.write)
            .collect()
    }

    fn forget_undo(&self, writes: &[u64]) {
        if let Ok(mut u) = self.undo.lock() {
            u.retain(|x| !writes.contains(&x.write));
        }
    }
}

impl FaultBackend {
    /// A write or repair through the faults, undo log and event log.
    fn faulty_write(&self, w: BlockWrite, repair: bool) -> BoxFut<'_, BackendResult<WriteOutcome>> {
        Box::pin(async move {
            self.inject(OpKind::Write, Some(w.part.chunk), Some((w.first, w.count)))
                .await?;
            let id = self.save_undo(&w).await?;
            let e = Event::Write {
                part: w.part,
                first: w.first,
                count: w.count,
                generation: w.generation,
            };
            let r = if repair {
                self.inner.heal(w).await?
            } else {
                self.inner.write(w).await?
            };
            self.complete_undo(id);
            self.record(e);
            Ok(r)
        })
    }
}

impl Backend for FaultBackend {
    fn id(&self) -> BackendId {
        self.inner.id()
    }

    fn describe(&self) -> String {
        format!("fault({})", self.inner.describe())
    }

    fn volume_number(&self, name: &str) -> BoxFut<'_, BackendResult<Option<u16>>> {
        self.inner.volume_number(name)
    }

    fn volume_numbers(&self) -> BoxFut<'_, BackendResult<Vec<u16>>> {
        self.inner.volume_numbers()
    }

    fn create_volume(&self, meta: VolumeMeta) -> BoxFut<'_, BackendResult<()>> {
        self.inner.create_volume(meta)
    }

    fn load_meta(&self, number: u16) -> BoxFut<'_, BackendResult<Option<VolumeMeta>>> {
        self.inner.load_meta(number)
    }

    fn save_meta(&self, meta: VolumeMeta) -> BoxFut<'_, BackendResult<()>> {
        Box::pin(async move {
            // Rules only: a crash does not change how `.meta` is saved.
            match self.action(OpKind::SaveMeta, None, None) {
                None => {}
                Some(Action::Fail) => {
                    return Err(BackendError::Injected("SaveMeta failed by rule".into()));
                }
                Some(Action::Hold(g)) => g.pass().await,
            }
            self.inner.save_meta(meta).await
        })
    }

    fn open_volume(&self, meta: VolumeMeta) -> BoxFut<'_, BackendResult<DecodedAlloc>> {
        self.inner.open_volume(meta)
    }

    fn read(&self, part: PartId, first: u32, count: u32) -> BoxFut<'_, BackendResult<PartRead>> {
        Box::pin(async move {
            self.inject(OpKind::Read, Some(part.chunk), Some((first, count)))
                .await?;
            let r = self.inner.read(part, first, count).await?;
            self.record(Event::Read { part, first, count });
            Ok(r)
        })
    }

    fn write(&self, w: BlockWrite) -> BoxFut<'_, BackendResult<WriteOutcome>> {
        self.faulty_write(w, false)
    }

    fn heal(&self, w: BlockWrite) -> BoxFut<'_, BackendResult<WriteOutcome>> {
        self.faulty_write(w, true)
    }

    fn recreate(&self, part: PartId) -> BoxFut<'_, BackendResult<()>> {
        Box::pin(async move {
            self.inject(OpKind::Allocate, Some(part.chunk), None)
                .await?;
            self.inner.recreate(part).await?;
            self.record(Event::Allocate { part });
            Ok(())
        })
    }

    fn load_stale(&self) -> BoxFut<'_, BackendResult<Vec<(BackendId, AllocMap)>>> {
        self.inner.load_stale()
    }

    fn mark_stale(&self, of: BackendId, chunks: Vec<u64>) -> BoxFut<'_, BackendResult<()>> {
        Box::pin(async move {
            self.inject(OpKind::Write, None, None).await?;
            self.inner.mark_stale(of, chunks).await
        })
    }

    fn clear_stale(&self, of: BackendId, chunks: Vec<u64>) -> BoxFut<'_, BackendResult<()>> {
        Box::pin(async move {
            self.inject(OpKind::Write, None, None).await?;
            self.inner.clear_stale(of, chunks).await
        })
    }

    fn allocate(&self, part: PartId) -> BoxFut<'_, BackendResult<()>> {
        Box::pin(async move {
            self.inject(OpKind::Allocate, Some(part.chunk), None)
                .await?;
            self.inner.allocate(part).await?;
            self.record(Event::Allocate { part });
            Ok(())
        })
    }

    fn sync(&self, parts: Option<Vec<PartId>>) -> BoxFut<'_, BackendResult<()>> {
        Box::pin(async move {
            self.inject(OpKind::Sync, None, None).await?;
            let covered = self.covered_writes(&parts);
            self.inner.sync(parts.clone()).await?;
            self.forget_undo(&covered);
            self.record(Event::Sync { parts });
            Ok(())
        })
    }

    fn read_raw(&self, part: PartId, block: u32) -> BoxFut<'_, BackendResult<RawBlock>> {
        self.inner.read_raw(part, block)
    }

    fn write_raw(
        &self,
        part: PartId,
        block: u32,
        data: Option<Vec<u8>>,
        record: Option<[u8; RECORD_SIZE]>,
    ) -> BoxFut<'_, BackendResult<()>> {
        self.inner.write_raw(part, block, data, record)
    }

    fn list_volume(&self, number: u16) -> BoxFut<'_, BackendResult<VolumeListing>> {
        Box::pin(async move {
            self.inject(OpKind::Read, None, None).await?;
            self.inner.list_volume(number).await
        })
    }

    fn scan_parts(
        &self,
        meta: VolumeMeta,
        parts: Vec<PartId>,
    ) -> BoxFut<'_, BackendResult<Vec<PartScan>>> {
        Box::pin(async move {
            self.inject(OpKind::Read, parts.first().map(|p| p.chunk), None)
                .await?;
            self.inner.scan_parts(meta, parts).await
        })
    }
}
