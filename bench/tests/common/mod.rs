//! Checks shared by the smoke tests: the files of `--out DIR`, the tools a
//! run needs (skipped with a printed reason, or a failure under
//! `QBD_REQUIRE_TOOLS=1`), and the daemons `qbd-bench e2e` runs.

#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// `results.json` parsed: a list of row objects.
pub fn rows(dir: &Path) -> Vec<Value> {
    let path = dir.join("results.json");
    let text = std::fs::read_to_string(&path).expect("results.json exists");
    let rows: Vec<Value> = serde_json::from_str(&text).expect("results.json is a JSON list");
    assert!(!rows.is_empty(), "results.json has no rows");
    rows
}

/// `results.md` has a title, a Markdown table (header, separator, a
/// row), and every string of `wanted`.
pub fn check_markdown(dir: &Path, wanted: &[&str]) -> String {
    let text = std::fs::read_to_string(dir.join("results.md")).expect("results.md exists");
    assert!(text.starts_with("# qbd-bench"), "no title:\n{text}");
    let lines: Vec<&str> = text.lines().collect();
    let sep = lines
        .iter()
        .position(|l| l.starts_with("|---"))
        .unwrap_or_else(|| panic!("no table separator:\n{text}"));
    assert!(
        sep > 0 && lines[sep - 1].starts_with("| ") && lines[sep - 1].ends_with(" |"),
        "no table header above the separator:\n{text}"
    );
    let columns = lines[sep - 1].matches('|').count();
    let body = lines[sep + 1..].iter().take_while(|l| l.starts_with("| "));
    let mut n = 0;
    for row in body {
        assert_eq!(row.matches('|').count(), columns, "ragged row {row:?}");
        n += 1;
    }
    assert!(n > 0, "the table has no rows:\n{text}");
    for w in wanted {
        assert!(text.contains(w), "results.md lacks {w:?}:\n{text}");
    }
    text
}

/// `name` in `dir` parses as XML with an `<svg>` root holding drawn text.
pub fn check_svg(dir: &Path, name: &str) {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let doc =
        roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{name} is not XML: {e}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg", "{name}: root element");
    let texts = root
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .count();
    assert!(
        texts > 3,
        "{name}: {texts} text elements (no axes or labels?)"
    );
}

/// The path of `name` on the PATH, or `None` after printing why the test
/// is skipped (a failure under `QBD_REQUIRE_TOOLS=1`).
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        let reason = format!("{name} not installed");
        if std::env::var("QBD_REQUIRE_TOOLS").is_ok_and(|v| v == "1") {
            panic!("{reason}, and QBD_REQUIRE_TOOLS=1");
        }
        println!("SKIPPED: {reason}");
    }
    found
}

/// Builds `qbd-node` and `qbd-master` next to `qbd-bench` (where `qbd-bench
/// e2e` looks for them). Under `cargo test --workspace --all-targets` they
/// are there already (both packages have integration tests, so cargo
/// builds their binaries); under `cargo test -p qbd-bench` they may be
/// missing or stale, so with `$CARGO` set they are built with the test
/// profile into the same target directory (quick when current).
pub fn build_daemons() {
    let bench = Path::new(env!("CARGO_BIN_EXE_qbd-bench"));
    let dir = bench.parent().expect("qbd-bench has a directory");
    if let Some(cargo) = std::env::var_os("CARGO") {
        let target = dir.parent().expect("a target directory");
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "test",
            Some(name) => name,
        };
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--profile", profile])
            .args([
                "-p",
                "qbd-node",
                "-p",
                "qbd-master",
                "-p",
                "qbd-tools",
                "--bins",
            ])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(target)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building qbd-node and qbd-master failed");
    }
    for bin in ["qbd-node", "qbd-master", "qbd"] {
        assert!(
            dir.join(bin).is_file(),
            "{} missing: run `cargo build --workspace` (same profile as the tests)",
            dir.join(bin).display()
        );
    }
}
