//! `qbd repair`: rebuild missing, corrupt and stale parts of a volume from
//! the good ones, chunk by chunk from the front (user guide:
//! `docs/repair.md`).
//!
//! - [`client`]: through a running master's admin socket (the master's
//!   range locks order the repair against its clients' writes).
//! - [`offline`]: no master runs: open the volume on its backends (taking
//!   the locks and an epoch as a master would) and repair it here.
//! - [`replace`]: `--replace OLD=NEW` (through the master when one
//!   serves the volume, else offline).
//! - [`progress`], [`render`]: the progress bar or lines on stderr, the
//!   summary (or `--json`) on stdout.
//!
//! The repair itself is `qbd_master::volume::repair`, the same code either
//! way. Exit codes: 0 everything repaired (or, with `--dry-run`, would
//! be); 1 problems left (an unreachable designated backend, lost blocks);
//! 2 the tool could not run ([`RepairError`]; nothing was modified).

pub mod client;
pub mod offline;
pub mod progress;
pub mod render;
pub mod replace;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use qbd_master::volume::repair::{RepairOptions, RepairReport};

use crate::backends::{BackendArgs, BackendsError};

/// Flags of `qbd repair`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct RepairArgs {
    /// Which volume and where its backends are.
    #[command(flatten)]
    pub backends: BackendArgs,

    /// The master's state directory: the repair checkpoint
    /// (<uuid>.repair) and the admin socket's default place. Give the
    /// master's --state.
    #[arg(long, value_name = "DIR", default_value = qbd_master::cli::DEFAULT_STATE)]
    pub state: PathBuf,

    /// The running master's admin socket [default: <state>/<volume>.admin.sock].
    /// If it answers, the repair runs inside that master.
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,

    /// At most this many bytes per second read from and written to the
    /// backends (binary suffixes: 50M).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub max_rate: Option<u64>,

    /// Report what would be rebuilt; write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Start from chunk 0, ignoring the checkpoint of an interrupted run.
    #[arg(long)]
    pub restart: bool,

    /// Replace backend OLD (its UUID, or a --dir path / --node address
    /// given here) by the fresh backend NEW (a directory path, or a node
    /// HOST:PORT reached like the --node ones) in the placement table,
    /// then fill it. With a master serving the volume, the master makes the
    /// switch (NEW must be reachable from it) and the repair runs in it.
    #[arg(long, value_name = "OLD=NEW")]
    pub replace: Option<String>,

    /// Chunks repaired at once (1 to 8) [default: the number of CPUs, at most 4].
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,

    /// Print the result as JSON (the RepairReport) instead of text.
    #[arg(long)]
    pub json: bool,
}

const AFTER_HELP: &str = "\
Exit codes: 0 all repaired; 1 problems left (unreachable designated backend,
lost blocks); 2 could not run (unknown volume, malformed .meta, no backend
reachable, bad flags): nothing was modified.
Progress goes to stderr (a bar on a terminal, a line every 2 s otherwise).

Examples:
  qbd repair --volume vm1 --dir /srv/a --dir /srv/b --dir /srv/c --state /var/lib/qbd
  qbd repair --volume vm1 --dry-run --json --dir /srv/a --dir /srv/b --dir /srv/c
  qbd repair --volume vm2 --cluster-key /etc/qbd/cluster.key --node 10.0.0.5:7000 \\
      --node 10.0.0.6:7000 --replace 10.0.0.7:7000=10.0.0.8:7000";

fn parse_size(s: &str) -> Result<u64, String> {
    qbd_core::size::parse_size(s).map_err(|e| e.to_string())
}

/// Why repair could not run (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// A setup mistake in the backend flags.
    #[error(transparent)]
    Backends(#[from] BackendsError),
    /// Not one backend answered.
    #[error("no backend reachable: {0}")]
    NoneReachable(String),
    /// The volume could not be opened (unknown, malformed `.meta`, locked).
    #[error("{0}")]
    Open(String),
    /// The running master's admin socket misbehaved or refused.
    #[error("admin socket {path}: {why}")]
    Admin {
        /// The socket.
        path: PathBuf,
        /// What happened.
        why: String,
    },
    /// A bad flag value.
    #[error("{0}")]
    Usage(String),
    /// The serving master refused `--replace` (nothing was switched).
    #[error("{0}")]
    Replace(String),
    /// The repair stopped on an error.
    #[error("repair failed: {0}")]
    Run(String),
}

impl RepairError {
    /// True unless the repair had started (then backends may have changed).
    pub fn changed_nothing(&self) -> bool {
        !matches!(self, RepairError::Run(_))
    }
}

impl RepairArgs {
    /// The repair options the flags ask for.
    pub fn options(&self) -> RepairOptions {
        RepairOptions {
            dry_run: self.dry_run,
            max_rate: self.max_rate,
            restart: self.restart,
            jobs: self.jobs.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
            }),
        }
    }

    /// The admin socket to try.
    pub fn socket(&self) -> PathBuf {
        self.admin_socket.clone().unwrap_or_else(|| {
            qbd_master::admin::default_socket(&self.state, &self.backends.volume)
        })
    }
}

/// Runs `qbd repair`.
pub fn run(args: RepairArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("qbd repair: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let report = runtime.block_on(repair(&args));
    match report {
        Ok(r) => finish(&args, &r),
        Err(e) if e.changed_nothing() => {
            eprintln!("qbd repair: {e} (nothing was changed)");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("qbd repair: {e}");
            ExitCode::from(2)
        }
    }
}

/// Through the master if one answers on the admin socket, else offline.
pub async fn repair(args: &RepairArgs) -> Result<RepairReport, RepairError> {
    let socket = args.socket();
    let mut view = progress::View::new();
    if let Some(conn) = client::connect(&socket, &args.backends.volume).await? {
        eprintln!(
            "qbd repair: through the running master ({})",
            socket.display()
        );
        if let Some(s) = &args.replace {
            replace_online(&conn, s, args.dry_run).await?;
        }
        return conn.repair(&args.options(), &mut |p| view.show(p)).await;
    }
    offline::repair(args, &mut |p| view.show(p)).await
}

/// `--replace` through the master: it switches the table, then the
/// repair that follows fills NEW.
async fn replace_online(conn: &client::Master, spec: &str, dry: bool) -> Result<(), RepairError> {
    if dry {
        return Err(RepairError::Usage(
            "--replace changes the placement table: it cannot be a dry run".into(),
        ));
    }
    let spec = replace::Spec::parse(spec)?;
    let (old, new) = (
        replace::for_master(&spec.old),
        replace::for_master(&spec.new),
    );
    let said = conn.replace(&old, &new).await?;
    eprintln!("qbd repair: --replace through the master: {said}");
    Ok(())
}

fn finish(args: &RepairArgs, r: &RepairReport) -> ExitCode {
    let text = match args.json {
        true => serde_json::to_string_pretty(r).unwrap_or_default() + "\n",
        false => render::summary(r),
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    if r.all_repaired() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
