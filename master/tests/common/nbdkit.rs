//! Harness debugging only: `QBD_TEST_SERVER=nbdkit` serves the volume with nbdkit's file plugin.
//!
//! It translates the `qbd-master` flags the tests use (volume, size, block size, read-only,
//! socket, first dir) and stands in for the ready line by waiting for nbdkit's pid file, which
//! nbdkit writes once it listens. Flags nbdkit has no equivalent for are ignored, so tests of
//! qbd-only behaviour fail in this mode.

use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{Log, Master, READY_TIMEOUT, StartFailure, fail, parse_size, wait_until};

/// Whether the tests were pointed at nbdkit.
pub fn selected() -> bool {
    std::env::var("QBD_TEST_SERVER").is_ok_and(|v| v == "nbdkit")
}

/// The subset of `qbd-master` flags this stand-in understands.
#[derive(Debug, Default)]
struct Flags {
    volume: String,
    size: u64,
    block_size: Option<u64>,
    read_only: bool,
    socket: Option<PathBuf>,
    dir: Option<PathBuf>,
}

impl Flags {
    fn parse(args: &[String]) -> Flags {
        let mut flags = Flags::default();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--read-only" => flags.read_only = true,
                "--volume" => flags.volume = it.next().expect("value").clone(),
                "--size" => flags.size = parse_size(it.next().expect("value")),
                "--block-size" => flags.block_size = Some(parse_size(it.next().expect("value"))),
                "--socket" => flags.socket = Some(it.next().expect("value").into()),
                "--dir" => {
                    let dir = PathBuf::from(it.next().expect("value"));
                    flags.dir.get_or_insert(dir);
                }
                _ => {}
            }
        }
        flags
    }
}

/// Starts nbdkit on a fresh port in place of `qbd-master`.
pub fn start(args: &[String]) -> Result<Master, StartFailure> {
    let flags = Flags::parse(args);
    let dir = flags.dir.clone().expect("a --dir");
    let image = dir.join(format!("nbdkit-{}.img", flags.volume));
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&image);
    file.and_then(|f| f.set_len(flags.size))
        .expect("create nbdkit image");
    let pidfile = dir.join(format!("nbdkit-{}.pid", std::process::id()));
    let _ = std::fs::remove_file(&pidfile);
    let port = free_port();

    let mut cmd = Command::new("nbdkit");
    cmd.args(["-f", "--exit-with-parent", "-e", &flags.volume]);
    cmd.arg("-P").arg(&pidfile);
    match &flags.socket {
        Some(path) => cmd.arg("-U").arg(path),
        None => cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()]),
    };
    if flags.read_only {
        cmd.arg("-r");
    }
    cmd.args(["--filter=blocksize-policy", "file"]).arg(&image);
    let preferred = flags.block_size.unwrap_or(4096);
    cmd.args([
        "blocksize-minimum=1",
        &format!("blocksize-preferred={preferred}"),
    ]);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nbdkit");
    let stderr = Log::collect(child.stderr.take().expect("piped stderr"));
    if !wait_until(READY_TIMEOUT, || pidfile.exists()) {
        return Err(fail(child, stderr, "nbdkit wrote no pid file".to_owned()));
    }
    Ok(Master {
        child: Some(child),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        unix: flags.socket,
        volume: flags.volume,
        size: flags.size,
        stderr,
    })
}

/// A port that was free a moment ago (racy, which is acceptable for harness debugging).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}
