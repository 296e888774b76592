//! `qbd repair` in the tools' tests: run it on a [`Fixture`] (with the
//! master's state directory, so the checkpoint and the admin socket are
//! where the master's are) and read its `--json` report.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use qbd_master::volume::repair::RepairReport;

use crate::common::fixture::Fixture;
use crate::common::{Outcome, bins, run_bounded};

/// The fixture's master state directory (its `--state`).
pub fn state(f: &Fixture) -> PathBuf {
    let a = f.master_args();
    let i = a
        .iter()
        .position(|x| x == "--state")
        .unwrap_or_else(|| panic!("no --state in {a:?}"));
    PathBuf::from(&a[i + 1])
}

/// `qbd repair <backend flags> --state STATE EXTRA` as a command.
pub fn command(f: &Fixture, extra: &[&str]) -> Command {
    let mut cmd = Command::new(&bins().qbd);
    cmd.arg("repair")
        .args(f.backend_args())
        .arg("--state")
        .arg(state(f))
        .args(extra);
    cmd
}

/// Runs `qbd repair` (bounded).
pub fn repair(f: &Fixture, extra: &[&str]) -> Outcome {
    run_bounded(command(f, extra), crate::common::QBD_TIMEOUT)
}

/// The `--json` report of a run.
pub fn report(out: &Outcome) -> RepairReport {
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not a repair report ({e}): {out:#?}"))
}
