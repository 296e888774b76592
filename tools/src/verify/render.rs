//! The text report, shaped like `zpool status`: state, what was checked,
//! chunk counts, a backend table, one line per problem, what to do next.

use std::collections::HashMap;
use std::fmt::Write;

use qbd_core::placement::BackendId;
use qbd_core::redundancy::part_name;
use qbd_core::verify::report::BackendStatus;
use qbd_core::verify::{Problem, Report, State};

use super::progress::human;

/// Problem lines shown before "... and N more".
pub const MAX_LINES: usize = 100;

/// The whole text report.
pub fn text(r: &Report) -> String {
    let names = short_names(&r.backends);
    let mut s = String::new();
    let _ = writeln!(s, "  volume: {} ({})", r.volume, r.uuid);
    let _ = writeln!(s, "   state: {}", state_name(r.state));
    let what = if r.deep {
        let rate = r.bytes_checked as f64 / r.elapsed_s.max(1e-6);
        format!(
            "deep ({} block records and checksums, {} in {:.2} s, {}/s)",
            r.blocks_checked,
            human(r.bytes_checked as f64),
            r.elapsed_s,
            human(rate)
        )
    } else {
        format!("fast (part file names and sizes, {:.2} s)", r.elapsed_s)
    };
    let _ = writeln!(s, "   check: {what}");
    let c = &r.chunks;
    let _ = writeln!(
        s,
        "  chunks: {} of {} in use ({}): {} healthy, {} degraded, {} unavailable, {} lost",
        c.in_use, c.total, r.redundancy, c.healthy, c.degraded, c.unavailable, c.lost
    );
    let _ = writeln!(s);
    backend_table(&mut s, &r.backends);
    let _ = writeln!(s);
    problem_lines(&mut s, &r.problems, &names);
    let _ = writeln!(s);
    let _ = writeln!(s, "  action: {}", action(r));
    s
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Healthy => "HEALTHY",
        State::Degraded => "DEGRADED",
        State::Faulted => "FAULTED",
    }
}

/// How each backend is named in problem lines: its address if known.
fn short_names(list: &[BackendStatus]) -> HashMap<BackendId, String> {
    list.iter()
        .filter_map(|b| {
            let id = b.id?;
            Some((
                id,
                b.address.clone().unwrap_or_else(|| format!("backend {id}")),
            ))
        })
        .collect()
}

fn backend_table(s: &mut String, list: &[BackendStatus]) {
    let _ = writeln!(
        s,
        "  {:<40} {:<12} {:>9} {:>9}",
        "BACKEND", "STATE", "EXPECTED", "GOOD"
    );
    for b in list {
        let name = match (&b.address, b.id) {
            (Some(a), _) => a.clone(),
            (None, Some(id)) => id.to_string(),
            (None, None) => "?".into(),
        };
        let state = match (b.reachable, b.in_placement) {
            (false, _) => "UNREACHABLE",
            (true, true) => "ONLINE",
            (true, false) => "NOT-PLACED",
        };
        let _ = write!(
            s,
            "  {name:<40} {state:<12} {:>9} {:>9}",
            b.parts_expected, b.parts_good
        );
        if let Some(why) = &b.why {
            let _ = write!(s, "  {why}");
        }
        let _ = writeln!(s);
    }
}

fn problem_lines(s: &mut String, problems: &[Problem], names: &HashMap<BackendId, String>) {
    if problems.is_empty() {
        let _ = writeln!(s, "  problems: none");
        return;
    }
    let _ = writeln!(s, "  problems: {}", problems.len());
    for p in problems.iter().take(MAX_LINES) {
        let _ = writeln!(s, "    {}", line(p, names));
    }
    if problems.len() > MAX_LINES {
        let _ = writeln!(
            s,
            "    ... and {} more (--json lists every one)",
            problems.len() - MAX_LINES
        );
    }
}

fn name(names: &HashMap<BackendId, String>, id: BackendId) -> String {
    names.get(&id).cloned().unwrap_or_else(|| id.to_string())
}

/// One problem as a line.
pub fn line(p: &Problem, names: &HashMap<BackendId, String>) -> String {
    let n = |id: BackendId| name(names, id);
    if let Some(at) = p.part() {
        let head = format!(
            "chunk {} part {} on {}:",
            at.chunk,
            part_name(usize::from(at.part)),
            n(at.backend)
        );
        return format!("{head} {}", part_detail(p));
    }
    match p {
        Problem::BackendUnreachable {
            backend,
            address,
            why,
        } => {
            let who = match (address, backend) {
                (Some(a), _) => a.clone(),
                (None, Some(id)) => format!("placement entry {id}"),
                (None, None) => "?".into(),
            };
            format!("{who}: unreachable: {why}")
        }
        Problem::VolumeAbsent { backend } => {
            format!(
                "{}: in the placement but does not hold the volume",
                n(*backend)
            )
        }
        Problem::AllocMissing { backend } => format!("{}: allocation map missing", n(*backend)),
        Problem::AllocCorrupt { backend, why } => {
            format!("{}: allocation map corrupt: {why}", n(*backend))
        }
        Problem::StaleMapUnreadable { holder, of, why } => format!(
            "{}: degraded map of {} unreadable ({why}): every chunk counts as stale",
            n(*holder),
            n(*of)
        ),
        Problem::ChunkLost {
            chunk,
            good,
            needed,
        } => format!("chunk {chunk}: LOST: {good} good part(s), {needed} needed"),
        Problem::BlocksLost {
            chunk,
            count,
            first,
        } => format!(
            "chunk {chunk}: LOST: {count} block(s)/row(s) with no good version, first {first}"
        ),
        Problem::Stray {
            backend,
            path,
            size,
        } => format!("{}: stray {path} ({size} bytes)", n(*backend)),
        _ => format!("{p:?}"),
    }
}

fn part_detail(p: &Problem) -> String {
    match p {
        Problem::PartMissing(_) => "missing".into(),
        Problem::PartWrongSize { size, expected, .. } => {
            format!("wrong size {size} (expected {expected})")
        }
        Problem::PartStale { marked_by, .. } => {
            format!("stale (degraded map of {} backend(s))", marked_by.len())
        }
        Problem::PartBadHeader { why, .. } => format!("bad header: {why}"),
        Problem::PartUnreadable { why, .. } => format!("unreadable: {why}"),
        Problem::CorruptBlocks { count, first, .. } => {
            format!("{count} corrupt block(s), first {first}")
        }
        Problem::StaleBlocks { count, first, .. } => {
            format!("{count} stale block(s) (older generation), first {first}")
        }
        Problem::TornRows { count, first, .. } => {
            format!("{count} torn row(s), first {first}")
        }
        _ => String::new(),
    }
}

/// What to do next.
fn action(r: &Report) -> String {
    let unreachable = r
        .problems
        .iter()
        .any(|p| matches!(p, Problem::BackendUnreachable { .. }));
    let mut steps = Vec::new();
    if r.state == State::Healthy {
        return if r.deep {
            "none: every part is present, whole and current".into()
        } else {
            "none (run with --deep to also check every block's checksums)".into()
        };
    }
    if unreachable {
        steps.push("bring the unreachable backends back (or replace them with `qbd repair --replace OLD=NEW`) and verify again".to_owned());
    }
    let repairable = r.problems.iter().any(|p| {
        !matches!(
            p,
            Problem::BackendUnreachable { .. } | Problem::Stray { .. }
        ) && !p.is_loss()
    });
    if repairable {
        steps.push(format!(
            "run `qbd repair --volume {}` with the same backends to rebuild the missing, corrupt and stale parts",
            r.volume
        ));
    }
    if r.problems
        .iter()
        .any(|p| matches!(p, Problem::Stray { .. }))
    {
        steps.push("look at the stray files and remove them if they are not yours".into());
    }
    if r.state == State::Faulted {
        steps.push("some data is lost: restore the lost chunks from a backup".into());
    }
    steps.join("; ")
}
