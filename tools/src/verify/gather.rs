//! Gathering what verify compares: the volume's `.meta` and every
//! backend's listing (and, deep, its part scans). Nothing here writes.

use std::collections::HashSet;
use std::sync::Arc;

use qbd_core::backend::Backend;
use qbd_core::meta::volume::VolumeMeta;
use qbd_core::verify::fast::{self, BackendListing};
use qbd_core::verify::report::{BackendStatus, RunFacts};
use qbd_core::verify::{Problem, Report};

use super::{VerifyArgs, VerifyError};
use crate::backends::{Connected, connect_all, tool_name};

/// A reachable backend and the volume's number there, if it holds it.
struct Holder {
    backend: Arc<dyn Backend>,
    number: Option<u16>,
}

/// Runs the whole verify and returns its report.
pub async fn verify(args: &VerifyArgs) -> Result<Report, VerifyError> {
    let start = std::time::Instant::now();
    let mut report = run(args).await?;
    report.elapsed_s = start.elapsed().as_secs_f64();
    Ok(report)
}

async fn run(args: &VerifyArgs) -> Result<Report, VerifyError> {
    let name = &args.backends.volume;
    let conn = connect_all(&args.backends, &tool_name("verify")).await?;
    if conn.backends.is_empty() {
        return Err(VerifyError::NoneReachable(describe_failures(&conn)));
    }
    let mut unreachable = connection_problems(&conn);
    let mut statuses = connection_statuses(&conn);
    let holders = find_volume(&conn, &mut unreachable, &mut statuses, name).await;
    let meta = load_meta(&holders, name).await?;
    let listings = list_all(&holders, &mut unreachable, &mut statuses).await;
    let view = fast::check(&meta, &listings).map_err(|e| VerifyError::BadMeta {
        backend: "the chosen".into(),
        why: e.to_string(),
    })?;
    add_placement_only(&mut statuses, &view);
    let deep = if args.deep {
        let reachable: Vec<Arc<dyn Backend>> = holders
            .iter()
            .filter(|h| h.number.is_some() && view.is_reachable(h.backend.id()))
            .map(|h| Arc::clone(&h.backend))
            .collect();
        let scans = super::deep::scan_all(&reachable, &meta, &view, args.jobs).await;
        Some(qbd_core::verify::deep::check(&view, &scans))
    } else {
        None
    };
    let facts = RunFacts {
        volume: meta.name.clone(),
        uuid: meta.uuid.to_string(),
        redundancy: meta.redundancy.clone(),
        backends: statuses,
        unreachable,
    };
    Ok(Report::assemble(facts, &view, deep))
}

fn describe_failures(conn: &Connected) -> String {
    if conn.unreachable.is_empty() {
        return "none given".into();
    }
    conn.unreachable
        .iter()
        .map(|u| format!("{} ({})", u.what, u.why))
        .collect::<Vec<_>>()
        .join("; ")
}

fn connection_problems(conn: &Connected) -> Vec<Problem> {
    conn.unreachable
        .iter()
        .map(|u| Problem::BackendUnreachable {
            backend: None,
            address: Some(u.what.clone()),
            why: u.why.clone(),
        })
        .collect()
}

fn connection_statuses(conn: &Connected) -> Vec<BackendStatus> {
    let up = conn.backends.iter().map(|b| BackendStatus {
        id: Some(b.id()),
        address: Some(b.describe()),
        reachable: true,
        why: None,
        in_placement: false,
        parts_expected: 0,
        parts_good: 0,
    });
    let down = conn.unreachable.iter().map(|u| BackendStatus {
        id: None,
        address: Some(u.what.clone()),
        reachable: false,
        why: Some(u.why.clone()),
        in_placement: false,
        parts_expected: 0,
        parts_good: 0,
    });
    up.chain(down).collect()
}

/// Asks every backend for the volume's number; one that fails to answer
/// becomes unreachable.
async fn find_volume(
    conn: &Connected,
    unreachable: &mut Vec<Problem>,
    statuses: &mut [BackendStatus],
    name: &str,
) -> Vec<Holder> {
    let asks = conn.backends.iter().map(|b| {
        let b = Arc::clone(b);
        let name = name.to_owned();
        async move { b.volume_number(&name).await }
    });
    let answers = futures_util::future::join_all(asks).await;
    let mut out = Vec::new();
    for (b, a) in conn.backends.iter().zip(answers) {
        match a {
            Ok(number) => out.push(Holder {
                backend: Arc::clone(b),
                number,
            }),
            Err(e) => mark_down(b.as_ref(), &e.to_string(), unreachable, statuses),
        }
    }
    out
}

fn mark_down(
    b: &dyn Backend,
    why: &str,
    unreachable: &mut Vec<Problem>,
    statuses: &mut [BackendStatus],
) {
    unreachable.push(Problem::BackendUnreachable {
        backend: Some(b.id()),
        address: Some(b.describe()),
        why: why.to_owned(),
    });
    for s in statuses.iter_mut().filter(|s| s.id == Some(b.id())) {
        s.reachable = false;
        s.why = Some(why.to_owned());
    }
}

/// Every holder's `.meta`: all must load and name the same volume; the
/// highest epoch's is the one checked against.
async fn load_meta(holders: &[Holder], name: &str) -> Result<VolumeMeta, VerifyError> {
    let with: Vec<&Holder> = holders.iter().filter(|h| h.number.is_some()).collect();
    if with.is_empty() {
        return Err(VerifyError::UnknownVolume {
            name: name.to_owned(),
            reachable: holders.len(),
        });
    }
    let mut metas = Vec::new();
    for h in with {
        let number = h.number.unwrap_or_default();
        let bad = |why: String| VerifyError::BadMeta {
            backend: h.backend.describe(),
            why,
        };
        let meta = h
            .backend
            .load_meta(number)
            .await
            .map_err(|e| bad(e.to_string()))?
            .ok_or_else(|| bad(format!("volume number {number} has no .meta")))?;
        meta.geometry().map_err(|e| bad(e.to_string()))?;
        meta.placement().map_err(|e| bad(e.to_string()))?;
        if meta.name != name {
            return Err(bad(format!("it names volume {:?}", meta.name)));
        }
        metas.push(meta);
    }
    pick_meta(metas, name)
}

fn pick_meta(metas: Vec<VolumeMeta>, name: &str) -> Result<VolumeMeta, VerifyError> {
    let mut best: Option<VolumeMeta> = None;
    for m in metas {
        match &best {
            Some(b) if b.uuid != m.uuid => {
                return Err(VerifyError::Inconsistent {
                    name: name.to_owned(),
                    why: format!("volume UUIDs {} and {}", b.uuid, m.uuid),
                });
            }
            Some(b) if b.epoch >= m.epoch => {}
            _ => best = Some(m),
        }
    }
    best.ok_or_else(|| VerifyError::UnknownVolume {
        name: name.to_owned(),
        reachable: 0,
    })
}

/// Lists every holder at once (one task each); a backend whose listing
/// fails becomes unreachable.
async fn list_all(
    holders: &[Holder],
    unreachable: &mut Vec<Problem>,
    statuses: &mut [BackendStatus],
) -> Vec<BackendListing> {
    let tasks: Vec<_> = holders
        .iter()
        .map(|h| {
            let b = Arc::clone(&h.backend);
            let number = h.number;
            tokio::spawn(async move {
                match number {
                    Some(n) => b.list_volume(n).await.map(Some),
                    None => Ok(None),
                }
            })
        })
        .collect();
    let mut out = Vec::new();
    for (h, t) in holders.iter().zip(tasks) {
        let r = t
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match r {
            Ok(listing) => out.push(BackendListing {
                id: h.backend.id(),
                listing,
            }),
            Err(why) => mark_down(
                h.backend.as_ref(),
                &format!("listing failed: {why}"),
                unreachable,
                statuses,
            ),
        }
    }
    out
}

/// Placement entries no reachable backend answered for.
fn add_placement_only(statuses: &mut Vec<BackendStatus>, view: &fast::FastView) {
    let known: HashSet<_> = statuses.iter().filter_map(|s| s.id).collect();
    for id in view.shape.placement.entries() {
        if !known.contains(id) {
            statuses.push(BackendStatus {
                id: Some(*id),
                address: None,
                reachable: false,
                why: Some("no backend given answered with this identity".into()),
                in_placement: true,
                parts_expected: 0,
                parts_good: 0,
            });
        }
    }
}
