//! `qbd-node`: thin binary over the library.

use std::process::ExitCode;

use clap::Parser;
use qbd_node::cli::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("qbd-node: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(qbd_node::run::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qbd-node: {e}");
            ExitCode::from(2)
        }
    }
}
