//! Harness of the `qbd` integration tests (verify, and repair's too).
//!
//! - this module: the binaries ([`bins`]), a running daemon ([`Daemon`]),
//!   running `qbd` with a time bound ([`qbd`]);
//! - [`fixture`]: a volume over directories or `qbd-node`s
//!   ([`fixture::Fixture`]), written through a real `qbd-master` with an
//!   NBD client, and the backend flags the tools take;
//! - [`damage`]: what the tests do to part files (delete, truncate, flip a
//!   byte in a written block's data or in the header), and a hash of a
//!   whole tree to prove nothing else changed;
//! - [`expect`]: a report's problems as comparable strings, and the ones
//!   a scenario should produce;
//! - [`scenario`]: issue 7's damage (delete, truncate, flip, one backend
//!   unreachable), recording what was done;
//! - `raw`: the hand-rolled NBD client of the master's tests (shared source).
//!
//! Every wait is bounded (ready lines, exits); nothing sleeps.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod damage;
pub mod expect;
pub mod fixture;
#[path = "../../../master/tests/common/raw.rs"]
pub mod raw;
pub mod scenario;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long a daemon may take to print its ready line, and to exit.
pub const DAEMON_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one `qbd` run may take.
pub const QBD_TIMEOUT: Duration = Duration::from_secs(120);

/// The binaries the tests run.
#[derive(Debug)]
pub struct Bins {
    pub qbd: PathBuf,
    pub master: PathBuf,
    pub node: PathBuf,
}

/// `qbd` (this package) and `qbd-master`, `qbd-node` (next to it; built
/// once per test process through `$CARGO` when it is set, as the master's
/// harness does for `qbd`).
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Result<Bins, String>> = OnceLock::new();
    match BINS.get_or_init(find_bins) {
        Ok(b) => b,
        Err(why) => panic!("{why}"),
    }
}

fn find_bins() -> Result<Bins, String> {
    let qbd = PathBuf::from(env!("CARGO_BIN_EXE_qbd"));
    let dir = qbd
        .parent()
        .ok_or("qbd has no parent directory")?
        .to_owned();
    if let Some(cargo) = std::env::var_os("CARGO") {
        build_others(Path::new(&cargo), &dir)?;
    }
    let bins = Bins {
        qbd,
        master: dir.join("qbd-master"),
        node: dir.join("qbd-node"),
    };
    for b in [&bins.master, &bins.node] {
        if !b.is_file() {
            return Err(format!(
                "{} is missing: `cargo build --profile test -p qbd-master -p qbd-node --bins`",
                b.display()
            ));
        }
    }
    Ok(bins)
}

fn build_others(cargo: &Path, dir: &Path) -> Result<(), String> {
    let target = dir.parent().ok_or("no target directory")?;
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "test",
        Some(name) => name,
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--profile", profile])
        .args(["-p", "qbd-master", "-p", "qbd-node", "--bins"])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target);
    let out = run_bounded(cmd, Duration::from_secs(900));
    if out.code == Some(0) {
        Ok(())
    } else {
        Err(format!("building qbd-master and qbd-node failed: {out:?}"))
    }
}

/// What a finished command did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Exit code (None: killed, or it hung).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Stdout parsed as JSON; panics with the whole outcome if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// Runs `qbd ARGS` (bounded).
pub fn qbd(args: &[String]) -> Outcome {
    let mut cmd = Command::new(&bins().qbd);
    cmd.args(args);
    run_bounded(cmd, QBD_TIMEOUT)
}

/// Runs `cmd`, killing it after `timeout`.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Outcome {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let code = match wait_bounded(&mut child, timeout) {
        Some(status) => status.code(),
        None => {
            signal(&child, "KILL");
            let _ = child.wait();
            None
        }
    };
    Outcome {
        code,
        stdout: out.recv().unwrap_or_default(),
        stderr: err.recv().unwrap_or_default(),
    }
}

fn drain(r: Option<impl Read + Send + 'static>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut r) = r {
            let _ = r.read_to_string(&mut s);
        }
        let _ = tx.send(s);
    });
    rx
}

/// Waits for `child` to exit, up to `timeout` (polling its status: a
/// bounded wait for an exit, not a sleep standing in for one).
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::park_timeout(Duration::from_millis(10));
    }
}

/// Sends `sig` ("TERM", "KILL") to `child`.
pub fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .stderr(Stdio::null())
        .status();
}

/// A running daemon (`qbd-master`, `qbd-node`); SIGTERM (then SIGKILL)
/// when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    /// Its ready line (first stdout line).
    pub ready: String,
    stderr: Arc<Mutex<String>>,
    what: String,
}

impl Daemon {
    /// Spawns `cmd` and waits for a first stdout line starting with
    /// `prefix`; panics with its stderr otherwise.
    pub fn start(mut cmd: Command, prefix: &str) -> Daemon {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        collect_lines(child.stderr.take(), Arc::clone(&stderr));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take();
        thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok));
            for _ in lines {}
        });
        let mut d = Daemon {
            child: Some(child),
            ready: String::new(),
            stderr,
            what,
        };
        match rx.recv_timeout(DAEMON_TIMEOUT) {
            Ok(Some(line)) if line.starts_with(prefix) => d.ready = line,
            other => panic!("{} not ready: {other:?}; stderr:\n{}", d.what, d.stderr()),
        }
        d
    }

    /// The value of `key=` in the ready line.
    pub fn field(&self, key: &str) -> String {
        self.ready
            .split(' ')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {key}= in {:?}", self.ready))
            .to_owned()
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// SIGTERM; panics unless it exits 0 in time.
    pub fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(&child, "TERM");
        match wait_bounded(&mut child, DAEMON_TIMEOUT) {
            Some(s) if s.code() == Some(0) => {}
            other => {
                signal(&child, "KILL");
                let _ = child.wait();
                panic!(
                    "{} after SIGTERM: {other:?}; stderr:\n{}",
                    self.what,
                    self.stderr()
                );
            }
        }
    }

    /// SIGKILL.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "KILL");
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "TERM");
            if wait_bounded(&mut child, DAEMON_TIMEOUT).is_none() {
                signal(&child, "KILL");
                let _ = child.wait();
            }
            if thread::panicking() {
                eprintln!("--- {} stderr ---\n{}", self.what, self.stderr());
            }
        }
    }
}

fn collect_lines(r: Option<impl Read + Send + 'static>, into: Arc<Mutex<String>>) {
    thread::spawn(move || {
        let Some(r) = r else { return };
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if let Ok(mut s) = into.lock() {
                s.push_str(&line);
                s.push('\n');
            }
        }
    });
}
