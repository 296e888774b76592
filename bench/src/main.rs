//! `qbd-bench`: see the library docs and `qbd-bench --help`.

use std::process::ExitCode;

use clap::Parser;
use qbd_bench::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Transport(args) => qbd_bench::transport::main(&args),
        Command::E2e(args) => qbd_bench::e2e::main(&args),
        Command::Torture(args) => qbd_bench::torture::main(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qbd-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
