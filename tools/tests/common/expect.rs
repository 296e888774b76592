//! The problems a verify report lists, as comparable strings, and the
//! ones a [`Damage`] should produce — so a test can assert "exactly those,
//! no more, no fewer".

use std::collections::BTreeSet;

use serde_json::Value;

use super::fixture::Fixture;
use super::scenario::Damage;

/// One problem of a `--json` report as `kind chunk part` (or `kind who`).
pub fn problems(report: &Value) -> BTreeSet<String> {
    let list = report["problems"].as_array().cloned().unwrap_or_default();
    list.iter().map(key).collect()
}

fn key(p: &Value) -> String {
    let kind = p["kind"].as_str().unwrap_or("?");
    match kind {
        "backend_unreachable" => match (p["address"].as_str(), p["backend"].as_str()) {
            (Some(a), _) => format!("{kind} {a}"),
            (None, Some(id)) => format!("{kind} id:{id}"),
            _ => kind.to_owned(),
        },
        "stray" => format!("{kind} {}", p["path"].as_str().unwrap_or("?")),
        _ if p.get("part").is_some() => format!("{kind} {} {}", p["chunk"], p["part"]),
        _ if p.get("chunk").is_some() => format!("{kind} {}", p["chunk"]),
        _ => kind.to_owned(),
    }
}

/// What the fast check must report for `d`.
pub fn fast(f: &Fixture, d: &Damage) -> BTreeSet<String> {
    let mut s = BTreeSet::new();
    s.insert(format!("backend_unreachable {}", f.address(d.unreachable)));
    s.insert(format!("backend_unreachable id:{}", d.unreachable_id));
    for (c, p) in &d.deleted {
        s.insert(format!("part_missing {c} {p}"));
    }
    for (c, p) in &d.truncated {
        s.insert(format!("part_wrong_size {c} {p}"));
    }
    s
}

/// What the deep check must report for `d`.
pub fn deep(f: &Fixture, d: &Damage) -> BTreeSet<String> {
    let mut s = fast(f, d);
    for (c, p, _) in &d.flipped {
        s.insert(format!("corrupt_blocks {c} {p}"));
    }
    for (c, p) in &d.bad_header {
        s.insert(format!("part_bad_header {c} {p}"));
    }
    s
}
