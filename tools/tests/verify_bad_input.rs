//! `qbd verify` that cannot run: an unknown volume, a malformed `.meta`,
//! no backend reachable (an empty directory that is not a backend, a path
//! that does not exist, every node stopped), no backend given. Each exits
//! 2 with a message naming the cause, and leaves every file as it was
//! (a directory that is not a backend is not made one).

mod common;

use common::damage::{tree_hash, volume_dir};
use common::fixture::{Fixture, Kind};
use common::{Outcome, qbd};

fn assert_refused(out: &Outcome, needle: &str) {
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert!(
        out.stderr.contains(needle),
        "stderr names {needle:?}: {out:#?}"
    );
    assert!(out.stderr.contains("nothing was changed"), "{out:#?}");
    assert_eq!(out.stdout, "", "no report: {out:#?}");
}

fn with_volume(f: &Fixture, name: &str) -> Vec<String> {
    let mut a = vec!["verify".to_owned()];
    a.extend(f.backend_args());
    a[2] = name.to_owned();
    a
}

fn unknown_volume_and_bad_meta(kind: Kind) {
    let f = Fixture::new(kind, "known", "replicate:3", 3);
    f.write(3);
    let before = tree_hash(&f.roots());
    let out = qbd(&with_volume(&f, "unknown"));
    assert_refused(&out, "unknown volume \"unknown\"");
    assert_eq!(tree_hash(&f.roots()), before);

    let meta = volume_dir(f.root(1)).join(".meta");
    std::fs::write(&meta, "format_version = 1\nname = [not toml")
        .unwrap_or_else(|e| panic!("write {}: {e}", meta.display()));
    let before = tree_hash(&f.roots());
    let out = f.verify(&["--deep"]);
    assert_refused(&out, ".meta");
    assert_eq!(tree_hash(&f.roots()), before);
}

#[test]
fn unknown_volume_and_malformed_meta_over_dirs() {
    unknown_volume_and_bad_meta(Kind::Dirs);
}

#[test]
fn unknown_volume_and_malformed_meta_over_nodes() {
    unknown_volume_and_bad_meta(Kind::Nodes);
}

#[test]
fn no_backend_reachable_over_dirs() {
    let empty = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let gone = empty.path().join("gone");
    let args: Vec<String> = [
        "verify",
        "--volume",
        "v",
        "--dir",
        &empty.path().display().to_string(),
        "--dir",
        &gone.display().to_string(),
    ]
    .map(str::to_owned)
    .into();
    let out = qbd(&args);
    assert_refused(&out, "no backend reachable");
    assert!(out.stderr.contains("not a QBD backend"), "{out:#?}");
    let left: Vec<_> = std::fs::read_dir(empty.path())
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "verify created {left:?}");
}

#[test]
fn no_backend_reachable_over_nodes() {
    let mut f = Fixture::new(Kind::Nodes, "v", "replicate:3", 3);
    f.write(5);
    for i in 0..3 {
        f.make_unreachable(i);
    }
    let before = tree_hash(&f.roots());
    let out = f.verify(&[]);
    assert_refused(&out, "no backend reachable");
    assert!(out.stderr.contains(&f.address(0)), "{out:#?}");
    assert_eq!(tree_hash(&f.roots()), before);
}

#[test]
fn no_backend_given() {
    let out = qbd(&["verify", "--volume", "v"].map(str::to_owned));
    assert_refused(&out, "no backends");
}
