//! `qbd-bench e2e` refuses what it cannot do, before starting anything:
//! bad flags, and missing programs (named with their Debian package).

use std::process::Command;

fn e2e(args: &[&str], path: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qbd-bench"));
    cmd.arg("e2e").args(args);
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let out = cmd.output().expect("run qbd-bench");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_are_refused() {
    for bad in [
        &["--redundancy", "raid5"][..],
        &["--redundancy", "ec:4"],
        &["--rounds", "0"],
        &["--size", "1M"],
        &["--runtime", "-1"],
        &["--mtu", "576"],
        &["--target", "nbd-server"],
    ] {
        let (ok, stderr) = e2e(bad, None);
        assert!(!ok, "{bad:?} must fail");
        assert!(!stderr.is_empty(), "{bad:?}: no reason given");
    }
}

#[test]
fn missing_programs_are_named_with_their_package() {
    let empty = tempfile::tempdir().expect("tempdir");
    let path = empty.path().to_str().expect("utf-8 path");
    let (ok, stderr) = e2e(&["--quick", "--target", "nbdkit,qemu-nbd"], Some(path));
    assert!(!ok, "a run without fio must fail");
    for want in [
        "fio (Debian package fio)",
        "nbdkit (Debian package nbdkit)",
        "qemu-nbd (Debian package qemu-utils)",
    ] {
        assert!(stderr.contains(want), "{want:?} not in:\n{stderr}");
    }
}
