//! `qbd-master`: thin binary over the library.

use std::process::ExitCode;

use clap::Parser;
use qbd_master::cli::Args;

fn main() -> ExitCode {
    let mut args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("qbd-master: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = args.apply_demo() {
        eprintln!("qbd-master: cannot create the demo directories: {e}");
        return ExitCode::from(2);
    }
    match runtime.block_on(qbd_master::run::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qbd-master: {e}");
            ExitCode::from(2)
        }
    }
}
