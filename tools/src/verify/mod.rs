//! `qbd verify`: is every part of a volume where it should be, whole and
//! current? Read-only on every backend. (User guide and JSON schema:
//! `docs/verify.md`.)
//!
//! - [`gather`]: connect, find the volume and its `.meta`, list every
//!   backend once, run the fast check (and the deep scan), assemble the
//!   report.
//! - [`deep`]: the deep scan's schedule: batches of parts per backend,
//!   several in flight, with progress.
//! - [`progress`]: the progress bar (tty) or periodic lines (otherwise).
//! - [`render`]: the `zpool status`-like text.
//!
//! Exit codes: 0 healthy; 1 problems found (including unreachable
//! backends while the rest could be checked); 2 the tool could not run
//! ([`VerifyError`]).

pub mod deep;
pub mod gather;
pub mod progress;
pub mod render;

use std::io::Write;
use std::process::ExitCode;

use qbd_core::verify::{Report, State};

use crate::backends::{BackendArgs, BackendsError};

/// Flags of `qbd verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Which volume and where its backends are.
    #[command(flatten)]
    pub backends: BackendArgs,

    /// Also read every part: headers, every block's record and data
    /// checksums, generations compared across parts (stale replicas, torn
    /// EC rows). Nodes scan their own files.
    #[arg(long)]
    pub deep: bool,

    /// Print the report as JSON (schema in docs/verify.md) instead of text.
    #[arg(long)]
    pub json: bool,

    /// Deep scan: parts scanned at once per directory backend
    /// [default: the number of CPUs].
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
}

/// Why verify could not run at all (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A setup mistake in the backend flags.
    #[error(transparent)]
    Backends(#[from] BackendsError),
    /// Not one backend answered.
    #[error("no backend reachable: {0}")]
    NoneReachable(String),
    /// No reachable backend holds the volume.
    #[error("unknown volume {name:?}: none of the {reachable} reachable backend(s) holds it")]
    UnknownVolume {
        /// The name asked for.
        name: String,
        /// How many backends answered.
        reachable: usize,
    },
    /// A `.meta` that cannot be read, parsed or validated.
    #[error("{backend}: cannot use the volume's .meta: {why}")]
    BadMeta {
        /// The backend holding it.
        backend: String,
        /// What is wrong.
        why: String,
    },
    /// The backends disagree about which volume the name is.
    #[error("the backends disagree about volume {name:?}: {why}")]
    Inconsistent {
        /// The volume name.
        name: String,
        /// How.
        why: String,
    },
    /// The tool's own runtime could not start.
    #[error("cannot start: {0}")]
    Runtime(String),
}

/// Runs `qbd verify`: exit 0 healthy, 1 problems found, 2 could not run.
pub fn run(args: VerifyArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&VerifyError::Runtime(e.to_string())),
    };
    match rt.block_on(gather::verify(&args)) {
        Ok(report) => print_report(&report, args.json),
        Err(e) => fail(&e),
    }
}

/// The exit code a report means.
pub fn exit_code(report: &Report) -> u8 {
    match report.state {
        State::Healthy => 0,
        State::Degraded | State::Faulted => 1,
    }
}

fn print_report(report: &Report, json: bool) -> ExitCode {
    let text = if json {
        match serde_json::to_string_pretty(report) {
            Ok(t) => t + "\n",
            Err(e) => return fail(&VerifyError::Runtime(format!("cannot encode JSON: {e}"))),
        }
    } else {
        render::text(report)
    };
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        eprintln!("qbd verify: cannot write the report: {e}");
        return ExitCode::from(2);
    }
    ExitCode::from(exit_code(report))
}

fn fail(e: &VerifyError) -> ExitCode {
    eprintln!("qbd verify: {e}");
    eprintln!("qbd verify: nothing was checked and nothing was changed");
    ExitCode::from(2)
}
