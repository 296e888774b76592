//! `qbd verify`: is every part of a volume where it should be, whole and
//! current? (See `docs/verify.md`.)

use std::process::ExitCode;

use crate::backends::BackendArgs;

/// Flags of `qbd verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Which volume and where its backends are.
    #[command(flatten)]
    pub backends: BackendArgs,

    /// Also read every part: headers, every block's record and data
    /// checksums, generations compared across parts.
    #[arg(long)]
    pub deep: bool,

    /// Print the report as JSON (schema in docs/verify.md) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `qbd verify`: exit 0 healthy, 1 problems found, 2 could not run.
pub fn run(_args: VerifyArgs) -> ExitCode {
    eprintln!("qbd verify: not implemented yet");
    ExitCode::from(2)
}
