//! `qbd repair` (issue 7): a stub until it lands.

use std::process::ExitCode;

/// Flags of `qbd repair`.
#[derive(Debug, clap::Args)]
pub struct RepairArgs {
    /// Which volume and where its backends are.
    #[command(flatten)]
    pub backends: crate::backends::BackendArgs,
}

/// Runs `qbd repair`.
pub fn run(_args: RepairArgs) -> ExitCode {
    eprintln!("qbd repair: not implemented");
    ExitCode::from(2)
}
