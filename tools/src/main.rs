//! `qbd`: thin binary over the library.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Operate on QBD volumes and clusters.
#[derive(Debug, Parser)]
#[command(name = "qbd", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a fresh cluster key (64 hex characters) for `qbd-node
    /// --cluster-key` and the masters: `qbd keygen > cluster.key`.
    Keygen,
    /// Check a volume's parts on its backends (read-only). Exit 0 healthy,
    /// 1 problems found, 2 could not run.
    Verify(qbd_tools::verify::VerifyArgs),
    /// Rebuild missing, corrupt and stale parts from the good ones.
    Repair(qbd_tools::repair::RepairArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Keygen => keygen(),
        Command::Verify(args) => qbd_tools::verify::run(args),
        Command::Repair(args) => qbd_tools::repair::run(args),
    }
}

fn keygen() -> ExitCode {
    let key = qbd_tools::keygen::fresh_key();
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{}", key.to_hex()).and_then(|()| out.flush()) {
        eprintln!("qbd: cannot write the key: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
