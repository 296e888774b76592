//! The deep scan's schedule: every reachable backend scans its good parts
//! in batches, several batches in flight (directory backends: `--jobs`
//! blocking threads reading their files; nodes: two requests in flight,
//! each scanned in parallel on the node). Progress counts part bytes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use qbd_core::backend::{Backend, PartId};
use qbd_core::meta::volume::VolumeMeta;
use qbd_core::verify::PartScan;
use qbd_core::verify::fast::FastView;

use super::progress::Progress;

/// Parts per batch for a directory backend (one blocking thread each).
const DIR_BATCH: usize = 2;
/// Parts per batch for a node (the node scans them in parallel).
const NODE_BATCH: usize = 64;
/// Batches in flight per node.
const NODE_IN_FLIGHT: usize = 2;

/// Scans every good part on `backends`; parts whose backend failed are
/// absent from the map (the deep check reports them unreadable).
pub async fn scan_all(
    backends: &[Arc<dyn Backend>],
    meta: &VolumeMeta,
    view: &FastView,
    jobs: Option<usize>,
) -> HashMap<PartId, PartScan> {
    let part_bytes = u64::from(view.shape.layout.blocks) * u64::from(view.shape.layout.block_size);
    let plans: Vec<(Arc<dyn Backend>, Vec<PartId>)> = backends
        .iter()
        .map(|b| (Arc::clone(b), view.good_parts_on(b.id())))
        .collect();
    let total: u64 = plans.iter().map(|(_, p)| p.len() as u64).sum();
    let progress = Arc::new(Progress::new(total * part_bytes, part_bytes));
    let reporter = progress.spawn_reporter();
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut tasks = Vec::new();
    for (b, parts) in plans {
        let is_dir = b.describe().starts_with("dir:");
        let (batch, workers) = if is_dir {
            (DIR_BATCH, jobs.unwrap_or(cpus).max(1))
        } else {
            (NODE_BATCH, NODE_IN_FLIGHT)
        };
        let batches: Arc<Vec<Vec<PartId>>> =
            Arc::new(parts.chunks(batch).map(<[_]>::to_vec).collect());
        let next = Arc::new(AtomicUsize::new(0));
        for _ in 0..workers {
            tasks.push(spawn_worker(
                Arc::clone(&b),
                meta.clone(),
                Arc::clone(&batches),
                Arc::clone(&next),
                Arc::clone(&progress),
            ));
        }
    }
    let mut out = HashMap::new();
    for t in tasks {
        if let Ok(scans) = t.await {
            out.extend(scans.into_iter().map(|s| (s.part, s)));
        }
    }
    progress.finish();
    reporter.abort();
    let _ = reporter.await;
    out
}

/// One worker: takes batches until none is left; stops at the first
/// failure of its backend (the remaining parts stay unscanned).
fn spawn_worker(
    b: Arc<dyn Backend>,
    meta: VolumeMeta,
    batches: Arc<Vec<Vec<PartId>>>,
    next: Arc<AtomicUsize>,
    progress: Arc<Progress>,
) -> tokio::task::JoinHandle<Vec<PartScan>> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(batch) = batches.get(i) else { break };
            match handle.block_on(b.scan_parts(meta.clone(), batch.clone())) {
                Ok(scans) => {
                    progress.add_parts(scans.len() as u64);
                    out.extend(scans);
                }
                Err(e) => {
                    progress.note(&format!("{}: scan failed: {e}", b.describe()));
                    // Let the other workers of this backend stop too.
                    next.store(batches.len(), Ordering::Relaxed);
                    break;
                }
            }
        }
        out
    })
}
