//! `qbd repair` that cannot run: an unknown volume, a malformed `.meta`,
//! no backend reachable, a malformed `--replace`, `--replace` with
//! `--dry-run`. Each exits 2 with a message naming the cause and saying
//! nothing was changed, and leaves every file as it was.

mod common;
#[path = "common/repair_support.rs"]
mod repair_support;

use common::damage::{tree_hash, volume_dir};
use common::fixture::{Fixture, Kind};
use common::{Outcome, qbd};
use repair_support::repair;

fn assert_refused(out: &Outcome, needle: &str) {
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert!(
        out.stderr.contains(needle),
        "stderr names {needle:?}: {out:#?}"
    );
    assert!(out.stderr.contains("nothing was changed"), "{out:#?}");
    assert_eq!(out.stdout, "", "no report: {out:#?}");
}

fn refused(kind: Kind) {
    let mut f = Fixture::new(kind, "known", "replicate:3", 3);
    f.write(3);
    let before = tree_hash(&f.roots());

    let mut args = vec!["repair".to_owned()];
    args.extend(f.backend_args());
    args[2] = "unknown".into();
    assert_refused(&qbd(&args), "unknown volume \"unknown\"");
    assert_refused(&repair(&f, &["--replace", "nonsense"]), "OLD=NEW");
    assert_refused(
        &repair(&f, &["--dry-run", "--replace", "a=b"]),
        "cannot be a dry run",
    );
    assert_eq!(tree_hash(&f.roots()), before);

    let meta = volume_dir(f.root(1)).join(".meta");
    std::fs::write(&meta, "format_version = 1\nname = [not toml")
        .unwrap_or_else(|e| panic!("write {}: {e}", meta.display()));
    let before = tree_hash(&f.roots());
    assert_refused(&repair(&f, &[]), ".meta");
    assert_eq!(tree_hash(&f.roots()), before);

    for i in 0..3 {
        f.make_unreachable(i);
    }
    assert_refused(&repair(&f, &[]), "no backend reachable");
}

#[test]
fn refused_over_dirs() {
    refused(Kind::Dirs);
}

#[test]
fn refused_over_nodes() {
    refused(Kind::Nodes);
}
