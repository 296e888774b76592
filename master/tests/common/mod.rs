//! Harness for the tests that drive `qbd-master` with real NBD clients.
//!
//! - this module: [`Volume`] (the on-disk state, which outlives any one master) and [`Master`]
//!   (one running server process, stopped with SIGTERM when dropped);
//! - [`tools`]: finding client tools (`SKIPPED` or, under `QBD_REQUIRE_TOOLS=1`, a failure) and
//!   running them with a time bound;
//! - [`raw`]: a hand-rolled NBD client over `TcpStream`, for bytes real clients never send;
//! - [`data`]: seeded test data and byte comparison that names the first difference;
//! - [`nodes`]: `qbd-node` daemons, cluster keys and clusters, for masters over `--node`;
//! - [`l2`]: a switched Ethernet segment of network namespaces with `qbd-node`s serving over raw
//!   Ethernet, for masters with `--transport l2`;
//! - [`attacker`]: a host on that segment that speaks QBD-L2 by hand and injects untrusted frames.
//!
//! Every wait here is bounded: a hung server fails the test with its stderr attached instead of
//! hanging the suite.
//!
//! Harness debugging: with `QBD_TEST_SERVER=nbdkit` the same tests run against nbdkit's file
//! plugin instead (tests of qbd-specific behaviour, such as refusing contradicting flags, then
//! fail; that is expected). The suite proper always tests `qbd-master`.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod attacker;
pub mod data;
pub mod l2;
mod nbdkit;
pub mod nodes;
pub mod raw;
pub mod tools;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a master may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a master may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Where a volume's directories live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// The default temp dir (real disk on these machines).
    Disk,
    /// tmpfs (`/dev/shm`): for tests that move a lot of data.
    Shm,
}

/// The directories of one volume; they live as long as this value, across master restarts.
#[derive(Debug)]
pub struct Volume {
    pub name: String,
    pub replicas: usize,
    /// The `--dir` arguments, in the order they are passed.
    dirs: Vec<PathBuf>,
    /// The temp dirs this value created (and removes when dropped).
    owned: Vec<TempDir>,
    /// The master's `--state` directory (its write-intent log), kept across restarts.
    state: TempDir,
}

impl Volume {
    /// A volume named `name`, replicated `replicas` times over as many fresh directories.
    pub fn new(name: &str, replicas: usize, backing: Backing) -> Volume {
        Volume::spread(name, replicas, replicas, backing)
    }

    /// A volume named `name`, replicated `replicas` times over `dirs` (≥ `replicas`) fresh
    /// directories.
    pub fn spread(name: &str, replicas: usize, dirs: usize, backing: Backing) -> Volume {
        let owned: Vec<TempDir> = (0..dirs).map(|_| temp_dir(backing)).collect();
        Volume {
            name: name.to_owned(),
            replicas,
            dirs: owned.iter().map(|d| d.path().to_owned()).collect(),
            owned,
            state: temp_dir(backing),
        }
    }

    /// A volume over directories the caller owns (e.g. mount points); only its `--state`
    /// directory is created here, on `backing`.
    pub fn over(name: &str, replicas: usize, dirs: Vec<PathBuf>, backing: Backing) -> Volume {
        Volume {
            name: name.to_owned(),
            replicas,
            dirs,
            owned: Vec::new(),
            state: temp_dir(backing),
        }
    }

    /// Command-line arguments for a master serving this volume with `size`, plus `extra`.
    pub fn args(&self, size: &str, extra: &[&str]) -> Vec<String> {
        self.args_with_dirs(&self.dirs, size, extra)
    }

    /// Like [`Volume::args`], with `dirs` as the `--dir` arguments instead of this volume's.
    pub fn args_with_dirs(&self, dirs: &[PathBuf], size: &str, extra: &[&str]) -> Vec<String> {
        let mut args = vec![
            "--volume".to_owned(),
            self.name.clone(),
            "--size".to_owned(),
            size.to_owned(),
            "--redundancy".to_owned(),
            format!("replicate:{}", self.replicas),
            "--listen".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--state".to_owned(),
            self.state.path().display().to_string(),
        ];
        for dir in dirs {
            args.push("--dir".to_owned());
            args.push(dir.display().to_string());
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }

    /// The `--dir` arguments, in order.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The first directory (a place for scratch files such as a unix socket).
    pub fn first_dir(&self) -> &Path {
        &self.dirs[0]
    }

    /// The master's `--state` directory.
    pub fn state(&self) -> &Path {
        self.state.path()
    }
}

/// The volume directory `<root>/<nr>` of the one volume a backend root holds.
pub fn volume_dir(root: &Path) -> PathBuf {
    let numbered: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("list {}: {e}", root.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    assert_eq!(
        numbered.len(),
        1,
        "{} holds exactly one volume: {numbered:?}",
        root.display()
    );
    numbered.into_iter().next().expect("one volume")
}

/// The part files (`<root>/<nr>/<letter>/<chunk>`) a backend root holds.
pub fn part_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for part in std::fs::read_dir(volume_dir(root)).expect("list volume dir") {
        let part = part.expect("dir entry").path();
        if !part.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&part).expect("list part dir") {
            let file = file.expect("dir entry").path();
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or(".");
            if !name.starts_with('.') && name.bytes().all(|b| b.is_ascii_digit()) {
                files.push(file);
            }
        }
    }
    files.sort();
    files
}

/// A backend root's identity: `id` in `<root>/.backend`.
pub fn backend_id(root: &Path) -> String {
    let path = root.join(".backend");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .find_map(|line| {
            let value = line.strip_prefix("id")?.trim_start().strip_prefix('=')?;
            Some(value.trim().trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| panic!("no id in {}:\n{text}", path.display()))
}

/// A fresh temporary directory on `backing`.
pub fn temp_dir(backing: Backing) -> TempDir {
    let mut builder = tempfile::Builder::new();
    builder.prefix("qbd-test-");
    match backing {
        Backing::Disk => builder.tempdir(),
        Backing::Shm => builder.tempdir_in("/dev/shm"),
    }
    .expect("create temp dir")
}

/// Why a master did not become ready.
#[derive(Debug)]
pub struct StartFailure {
    /// Exit status, if the process exited (None: it hung and was killed).
    pub status: Option<ExitStatus>,
    pub stderr: String,
    pub reason: String,
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (status {:?}); stderr:\n{}",
            self.reason, self.status, self.stderr
        )
    }
}

/// One running server process. Dropping it sends SIGTERM (then SIGKILL if it does not exit).
#[derive(Debug)]
pub struct Master {
    child: Option<Child>,
    /// The TCP address from the ready line.
    pub addr: SocketAddr,
    /// The unix socket from the ready line, if one was asked for.
    pub unix: Option<PathBuf>,
    /// The export name (= volume name).
    pub volume: String,
    /// The export size in bytes, from the ready line.
    pub size: u64,
    stderr: Log,
}

impl Master {
    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts a server with `args`; panics (with its stderr) unless it becomes ready.
    pub fn start(args: &[String]) -> Master {
        Master::try_start(args).unwrap_or_else(|e| panic!("server did not start: {e}"))
    }

    /// Starts a server with `args` and waits (bounded) for its ready line.
    pub fn try_start(args: &[String]) -> Result<Master, StartFailure> {
        if nbdkit::selected() {
            return nbdkit::start(args);
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_qbd-master"));
        cmd.args(args);
        Master::try_start_command(cmd)
    }

    /// Starts a server through `cmd` (the binary with its arguments, possibly wrapped, e.g. in
    /// `ip netns exec NS`; the wrapper must exec the binary so that signals reach it) and waits
    /// (bounded) for its ready line.
    pub fn try_start_command(mut cmd: Command) -> Result<Master, StartFailure> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn qbd-master");
        let stderr = Log::collect(child.stderr.take().expect("piped stderr"));
        let lines = stdout_lines(&mut child);
        match lines.recv_timeout(READY_TIMEOUT) {
            Ok(Some(line)) => match ReadyLine::parse(&line) {
                Some(ready) => Ok(Master::ready(child, ready, stderr)),
                None => Err(fail(
                    child,
                    stderr,
                    format!("unexpected first stdout line {line:?}"),
                )),
            },
            Ok(None) => Err(fail(
                child,
                stderr,
                "exited before the ready line".to_owned(),
            )),
            Err(_) => Err(fail(
                child,
                stderr,
                format!("no ready line within {READY_TIMEOUT:?}"),
            )),
        }
    }

    fn ready(child: Child, ready: ReadyLine, stderr: Log) -> Master {
        Master {
            child: Some(child),
            addr: ready.tcp,
            unix: ready.unix,
            volume: ready.volume,
            size: ready.size,
            stderr,
        }
    }

    /// `nbd://127.0.0.1:PORT/NAME`.
    pub fn uri(&self) -> String {
        format!("nbd://{}/{}", self.addr, self.volume)
    }

    /// `nbd+unix:///NAME?socket=PATH`, if the master listens on a unix socket.
    pub fn unix_uri(&self) -> Option<String> {
        let path = self.unix.as_ref()?;
        Some(format!(
            "nbd+unix:///{}?socket={}",
            self.volume,
            path.display()
        ))
    }

    /// What the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Sends SIGTERM and returns the exit status; panics if the server does not exit in time.
    pub fn stop(self) -> ExitStatus {
        self.stop_with_stderr().0
    }

    /// Waits (bounded by `timeout`) until the server's stderr contains `needle`.
    pub fn wait_stderr(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.stderr.text().contains(needle))
    }

    /// Sends SIGTERM and panics (with the server's stderr) unless it exits with status 0;
    /// returns everything it wrote to stderr.
    pub fn stop_cleanly(self) -> String {
        let (status, stderr) = self.stop_with_stderr();
        assert_eq!(
            status.code(),
            Some(0),
            "exit status after SIGTERM: {status}; stderr:\n{stderr}"
        );
        stderr
    }

    /// SIGKILL: a crash, with no chance to flush anything.
    pub fn crash(mut self) {
        let mut child = self.child.take().expect("master still running");
        kill(&child, "KILL");
        child.wait().expect("wait for killed master");
    }

    fn stop_with_stderr(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("master still running");
        match terminate(&mut child) {
            Ok(status) => (status, self.stderr.wait_text()),
            Err(e) => panic!("{e}; stderr:\n{}", self.stderr.wait_text()),
        }
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let result = terminate(&mut child);
            if thread::panicking() || result.is_err() {
                eprintln!(
                    "--- server stderr ({:?}) ---\n{}",
                    result,
                    self.stderr.wait_text()
                );
            }
        }
    }
}

/// The fields of `qbd-master: ready volume=NAME size=BYTES tcp=ADDR [unix=PATH]`.
#[derive(Debug)]
struct ReadyLine {
    volume: String,
    size: u64,
    tcp: SocketAddr,
    unix: Option<PathBuf>,
}

impl ReadyLine {
    fn parse(line: &str) -> Option<ReadyLine> {
        let rest = line.trim_end().strip_prefix("qbd-master: ready ")?;
        let field = |key: &str| {
            rest.split(' ')
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        };
        Some(ReadyLine {
            volume: field("volume")?.to_owned(),
            size: field("size")?.parse().ok()?,
            tcp: field("tcp")?.parse().ok()?,
            unix: field("unix").map(PathBuf::from),
        })
    }
}

/// Sends the first stdout line (None on EOF) through a channel; later lines are ignored.
fn stdout_lines(child: &mut Child) -> mpsc::Receiver<Option<String>> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok);
        let _ = tx.send(first);
        for _ in lines {} // keep draining so the server never blocks on a full pipe
    });
    rx
}

fn fail(mut child: Child, stderr: Log, reason: String) -> StartFailure {
    let status = match child.try_wait() {
        Ok(Some(status)) => Some(status),
        _ => wait_bounded(&mut child, STOP_TIMEOUT)
            .ok()
            .flatten()
            .or_else(|| {
                kill(&child, "KILL");
                child.wait().ok();
                None
            }),
    };
    StartFailure {
        status,
        stderr: stderr.wait_text(),
        reason,
    }
}

/// SIGTERM, a bounded wait, then SIGKILL. Err if SIGKILL was needed.
pub fn terminate(child: &mut Child) -> Result<ExitStatus, String> {
    if let Ok(Some(status)) = child.try_wait() {
        return Ok(status);
    }
    kill(child, "TERM");
    match wait_bounded(child, STOP_TIMEOUT) {
        Ok(Some(status)) => Ok(status),
        other => {
            kill(child, "KILL");
            let _ = child.wait();
            Err(format!(
                "pid {} did not exit within {STOP_TIMEOUT:?} of SIGTERM ({other:?})",
                child.id()
            ))
        }
    }
}

/// Sends `signal` (a name such as "TERM") to the child.
pub fn kill(child: &Child, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .stderr(Stdio::null())
        .status();
}

/// Waits for the child to exit, up to `timeout`; Ok(None) if it is still running.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    wait_until(timeout, || {
        child.try_wait().map(|s| s.is_some()).unwrap_or(true)
    });
    child.try_wait()
}

/// Polls `done` until it holds or `timeout` passes; returns whether it held. This is a bounded
/// wait for a condition (a process exit, a file appearing), not a sleep standing in for one.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A child's stderr, collected by a thread so the child never blocks on a full pipe.
#[derive(Debug, Clone)]
struct Log {
    text: Arc<Mutex<String>>,
    done: Arc<Mutex<Option<mpsc::Receiver<()>>>>,
}

impl Log {
    fn collect(mut stderr: ChildStderr) -> Log {
        let text = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&text);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                sink.lock()
                    .expect("log lock")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            let _ = tx.send(());
        });
        Log {
            text,
            done: Arc::new(Mutex::new(Some(rx))),
        }
    }

    fn text(&self) -> String {
        self.text.lock().expect("log lock").clone()
    }

    /// The text once the writer has closed stderr (bounded: the process may have children).
    fn wait_text(&self) -> String {
        if let Some(rx) = self.done.lock().expect("log lock").take() {
            let _ = rx.recv_timeout(Duration::from_secs(5));
        }
        self.text()
    }
}

/// Parses a size with an optional binary suffix (K, M, G, T), as `qbd-master` does.
pub fn parse_size(s: &str) -> u64 {
    let (digits, shift) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 30),
        Some(b'T' | b't') => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    digits.parse::<u64>().expect("size digits") << shift
}

/// Writes `data` from offset 0 in 1 MiB requests, then flushes.
pub fn write_all(master: &Master, data: &[u8]) {
    let mut client = raw::Client::connect(master.addr, &master.volume);
    for (i, piece) in data.chunks(1 << 20).enumerate() {
        client
            .write((i as u64) << 20, piece)
            .unwrap_or_else(|e| panic!("write at MiB {i}: NBD error {e}"));
    }
    client.flush().expect("flush");
    client.disconnect();
}

/// Reads `len` bytes from offset 0 in 1 MiB requests.
pub fn read_all(master: &Master, len: usize) -> Vec<u8> {
    let mut client = raw::Client::connect(master.addr, &master.volume);
    let mut data = Vec::with_capacity(len);
    for offset in (0..len).step_by(1 << 20) {
        let n = (len - offset).min(1 << 20) as u32;
        let piece = client
            .read(offset as u64, n)
            .unwrap_or_else(|e| panic!("read at {offset}: NBD error {e}"));
        data.extend_from_slice(&piece);
    }
    client.disconnect();
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_parses_with_and_without_unix() {
        let r = ReadyLine::parse("qbd-master: ready volume=v size=4096 tcp=127.0.0.1:5\n")
            .expect("parse");
        assert_eq!(
            (r.volume.as_str(), r.size, r.tcp.port(), r.unix),
            ("v", 4096, 5, None)
        );
        let r = ReadyLine::parse("qbd-master: ready volume=v size=1 tcp=127.0.0.1:5 unix=/x/s")
            .expect("parse");
        assert_eq!(r.unix, Some(PathBuf::from("/x/s")));
        assert!(ReadyLine::parse("qbd-master: starting").is_none());
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("4K"), 4096);
        assert_eq!(parse_size("128M"), 128 << 20);
        assert_eq!(parse_size("1G"), 1 << 30);
        assert_eq!(parse_size("512"), 512);
    }
}
