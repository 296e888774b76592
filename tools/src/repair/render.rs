//! The summary, `zpool status`-like: state, what was found and done, what
//! is left and what to do next, then the first findings.

use std::fmt::Write;

use qbd_master::volume::repair::{Finding, Problem, RepairReport};

/// Findings listed in the text summary at most.
const LISTED: usize = 20;

/// The summary text of a run.
pub fn summary(r: &RepairReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "  volume: {}", r.volume);
    let _ = writeln!(s, "   state: {}", state(r));
    let mbs = if r.seconds > 0.0 {
        (r.bytes_read + r.bytes_written) as f64 / r.seconds / 1e6
    } else {
        0.0
    };
    let _ = writeln!(
        s,
        "    scan: {} of {} chunk(s) from chunk {} in {:.1}s, {} MiB read, {} MiB written ({mbs:.1} MB/s)",
        r.chunks_done,
        r.chunks_total,
        r.first_chunk,
        r.seconds,
        r.bytes_read >> 20,
        r.bytes_written >> 20,
    );
    let _ = writeln!(
        s,
        "   found: {} missing part(s), {} bad file(s), {} stale part(s), {} bad block(s)",
        r.missing, r.bad_files, r.stale, r.bad_blocks
    );
    let verb = if r.dry_run { "would fix" } else { "fixed" };
    let _ = writeln!(
        s,
        "{verb:>8}: {} part(s) rebuilt, {} block(s) rewritten",
        r.parts_rebuilt, r.blocks_repaired
    );
    let _ = writeln!(
        s,
        "    left: {} part(s), {} lost block(s)",
        r.parts_left, r.lost_blocks
    );
    for u in &r.unreachable {
        let _ = writeln!(s, "unreachable: {u}");
    }
    let _ = writeln!(s, "  action: {}", action(r));
    if !r.findings.is_empty() {
        let _ = writeln!(s, "findings:");
        for f in r.findings.iter().take(LISTED) {
            let _ = writeln!(s, "  {}", finding(f, r.dry_run));
        }
        let more = (r.findings.len().saturating_sub(LISTED)) as u64;
        if more > 0 {
            let _ = writeln!(s, "  ... {more} more (--json lists up to 200)");
        }
    }
    s
}

fn state(r: &RepairReport) -> &'static str {
    let found = r.missing + r.bad_files + r.stale + r.bad_blocks;
    match (r.dry_run, r.all_repaired(), found) {
        (_, true, 0) => "HEALTHY (nothing to repair)",
        (true, true, _) => "DRY RUN (everything found can be repaired)",
        (true, false, _) => "DRY RUN (some problems cannot be repaired now)",
        (false, true, _) => "REPAIRED",
        (false, false, _) => "DEGRADED (problems left)",
    }
}

fn action(r: &RepairReport) -> &'static str {
    if r.lost_blocks > 0 {
        "some blocks have no good copy left: restore them from a backup (they read as EIO)"
    } else if !r.unreachable.is_empty() || r.parts_left > 0 {
        "bring the unreachable backend back and run qbd repair again, or replace it: qbd repair --replace OLD=NEW"
    } else if r.dry_run && r.parts_rebuilt + r.blocks_repaired > 0 {
        "run qbd repair without --dry-run"
    } else {
        "none"
    }
}

fn finding(f: &Finding, dry: bool) -> String {
    let what = match &f.problem {
        Problem::Missing => "missing".to_owned(),
        Problem::BadFile { why } => format!("bad file ({why})"),
        Problem::Stale => "stale".to_owned(),
        Problem::BadBlocks { count } => format!("{count} bad block(s)"),
        Problem::Unreachable { why } => format!("unreachable ({why})"),
        Problem::Failed { why } => format!("repair failed ({why})"),
    };
    let outcome = match (f.repaired, dry) {
        (true, false) => "repaired",
        (true, true) => "would repair",
        (false, _) => "LEFT",
    };
    let part = qbd_core::redundancy::part_name(usize::from(f.part));
    format!(
        "chunk {} part {part} on {}: {what} -> {outcome}",
        f.chunk, f.backend
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_state_left_parts_and_next_step() {
        let r = RepairReport {
            volume: "vm1".into(),
            missing: 1,
            parts_left: 2,
            unreachable: vec!["node:10.0.0.7:7000 (connection refused)".into()],
            ..Default::default()
        };
        let s = summary(&r);
        assert!(s.contains("state: DEGRADED"), "{s}");
        assert!(s.contains("left: 2 part(s)"), "{s}");
        assert!(s.contains("--replace"), "{s}");
    }
}
