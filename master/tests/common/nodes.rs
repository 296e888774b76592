//! `qbd-node` daemons and cluster keys, for tests that run `qbd-master --node ...`.
//!
//! - [`bins`]: the `qbd-node` and `qbd` binaries (see below for how they are found);
//! - [`keygen`]: a cluster key file written by `qbd keygen`;
//! - [`Node`]: one running `qbd-node` (SIGTERM, then SIGKILL, when dropped, even on panic);
//! - [`Cluster`]: a key, N nodes on their own tmpfs data directories, and a master `--state`
//!   directory; nodes can be crashed, stopped and restarted on the same directory and port.
//!
//! **Finding the binaries.** Cargo gives an integration test `CARGO_BIN_EXE_<name>` only for
//! its own package's binaries; `qbd-node` (package `qbd-node`) and `qbd` (package `qbd-tools`)
//! belong to other packages, and a dev-dependency does not build a package's binaries. Every
//! package's binaries of one profile land in one directory, so they are looked up next to
//! `qbd-master`. Under `cargo test --workspace --all-targets` (the README's command) they are
//! always there and current: both packages have integration tests of their own, so cargo builds
//! their binaries before running any test (checked from a clean target directory). Under
//! `cargo test -p qbd-master` they may be missing or older than the sources, so the first use
//! runs `$CARGO build --profile test -p qbd-node -p qbd-tools --bins` once per test process,
//! into the same target directory (cargo does not hold its build lock while tests run; when
//! everything is current this takes a fraction of a second). Without `$CARGO` (a test binary
//! run by hand) the binaries must already exist, and a missing one fails the test with the
//! command that builds it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use tempfile::TempDir;

use super::tools::run_bounded;
use super::{Backing, Log, READY_TIMEOUT, StartFailure, kill, temp_dir, terminate};

/// How long building `qbd-node` and `qbd` may take (a cold build of both, on two cores).
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// The binaries of the other packages.
#[derive(Debug)]
pub struct Bins {
    pub node: PathBuf,
    pub qbd: PathBuf,
}

/// `qbd-node` and `qbd`, built if needed (once per test process); panics with the reason if
/// they cannot be had.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Result<Bins, String>> = OnceLock::new();
    match BINS.get_or_init(find_bins) {
        Ok(bins) => bins,
        Err(why) => panic!("{why}"),
    }
}

fn find_bins() -> Result<Bins, String> {
    let master = Path::new(env!("CARGO_BIN_EXE_qbd-master"));
    let dir = master
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", master.display()))?;
    let bins = Bins {
        node: dir.join("qbd-node"),
        qbd: dir.join("qbd"),
    };
    let build_hint = "build them with `cargo build --profile test -p qbd-node -p qbd-tools --bins`, \
                      or run `cargo test --workspace --all-targets`";
    if let Some(cargo) = std::env::var_os("CARGO") {
        build(Path::new(&cargo), dir)?;
    }
    for bin in [&bins.node, &bins.qbd] {
        if !bin.is_file() {
            return Err(format!("{} is missing: {build_hint}", bin.display()));
        }
    }
    Ok(bins)
}

/// `cargo build` of both binaries into the profile directory `dir` (`<target>/<profile dir>`).
fn build(cargo: &Path, dir: &Path) -> Result<(), String> {
    let target = dir
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", dir.display()))?;
    // `cargo test` builds binaries with the `test` profile into `debug`, and with `--release`
    // into `release`; a custom profile's directory is named after it.
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "test",
        Some(name) => name,
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--profile", profile])
        .args(["-p", "qbd-node", "-p", "qbd-tools", "--bins"])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target);
    let out = run_bounded(cmd, BUILD_TIMEOUT);
    if out.success() {
        Ok(())
    } else {
        Err(format!("building qbd-node and qbd failed: {out}"))
    }
}

/// Writes a fresh key from `qbd keygen` to `<dir>/<name>` and returns its path.
pub fn keygen(dir: &Path, name: &str) -> PathBuf {
    let mut cmd = Command::new(&bins().qbd);
    cmd.arg("keygen");
    let out = run_bounded(cmd, READY_TIMEOUT);
    out.assert_success();
    let key = out.stdout.trim();
    assert!(
        key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()),
        "qbd keygen prints 64 hex characters: {out}"
    );
    let path = dir.join(name);
    std::fs::write(&path, &out.stdout).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// One running `qbd-node`. Dropping it sends SIGTERM (then SIGKILL if it does not exit).
#[derive(Debug)]
pub struct Node {
    child: Option<Child>,
    /// The TCP address from the ready line.
    pub addr: SocketAddr,
    /// The node's name (`--id`), from the ready line.
    pub id: String,
    /// The backend identity (UUID), from the ready line.
    pub backend: String,
    stderr: Log,
}

impl Node {
    /// Starts `qbd-node --data DATA --listen LISTEN --cluster-key KEY --id ID`; panics (with its
    /// stderr) unless it prints its ready line in time.
    pub fn start(data: &Path, listen: &str, key: &Path, id: &str) -> Node {
        Node::try_start(data, listen, key, id)
            .unwrap_or_else(|e| panic!("qbd-node {id} did not start: {e}"))
    }

    /// Like [`Node::start`], returning why it did not become ready.
    pub fn try_start(
        data: &Path,
        listen: &str,
        key: &Path,
        id: &str,
    ) -> Result<Node, StartFailure> {
        let mut child = Command::new(&bins().node)
            .arg("--data")
            .arg(data)
            .args(["--listen", listen, "--id", id])
            .arg("--cluster-key")
            .arg(key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn qbd-node");
        let stderr = Log::collect(child.stderr.take().expect("piped stderr"));
        let lines = first_stdout_line(&mut child);
        let failure = |mut child: Child, stderr: Log, reason: String| {
            let status = match child.try_wait() {
                Ok(Some(status)) => Some(status),
                _ => {
                    kill(&child, "KILL");
                    child.wait().ok()
                }
            };
            StartFailure {
                status,
                stderr: stderr.wait_text(),
                reason,
            }
        };
        match lines.recv_timeout(READY_TIMEOUT) {
            Ok(Some(line)) => match NodeReady::parse(&line) {
                Some(ready) => Ok(Node {
                    child: Some(child),
                    addr: ready.tcp,
                    id: ready.id,
                    backend: ready.backend,
                    stderr,
                }),
                None => Err(failure(
                    child,
                    stderr,
                    format!("unexpected first stdout line {line:?}"),
                )),
            },
            Ok(None) => Err(failure(
                child,
                stderr,
                "exited before the ready line".to_owned(),
            )),
            Err(_) => Err(failure(
                child,
                stderr,
                format!("no ready line within {READY_TIMEOUT:?}"),
            )),
        }
    }

    /// What the node wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL: a crash, with nothing flushed or synced.
    pub fn crash(mut self) {
        let mut child = self.child.take().expect("node still running");
        kill(&child, "KILL");
        child.wait().expect("wait for killed node");
    }

    /// SIGTERM; panics (with the node's stderr) unless it exits with status 0 in time. Returns
    /// its stderr.
    pub fn stop_cleanly(mut self) -> String {
        let mut child = self.child.take().expect("node still running");
        let result: Result<ExitStatus, String> = terminate(&mut child);
        let stderr = self.stderr.wait_text();
        match result {
            Ok(status) if status.code() == Some(0) => stderr,
            other => panic!(
                "qbd-node {} after SIGTERM: {other:?}; stderr:\n{stderr}",
                self.id
            ),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let result = terminate(&mut child);
            if thread::panicking() || result.is_err() {
                eprintln!(
                    "--- qbd-node {} stderr ({result:?}) ---\n{}",
                    self.id,
                    self.stderr.wait_text()
                );
            }
        }
    }
}

/// The fields of `qbd-node: ready id=NAME backend=UUID tcp=ADDR`.
#[derive(Debug)]
struct NodeReady {
    id: String,
    backend: String,
    tcp: SocketAddr,
}

impl NodeReady {
    fn parse(line: &str) -> Option<NodeReady> {
        let rest = line.trim_end().strip_prefix("qbd-node: ready ")?;
        let field = |key: &str| {
            rest.split(' ')
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        };
        Some(NodeReady {
            id: field("id")?.to_owned(),
            backend: field("backend")?.to_owned(),
            tcp: field("tcp")?.parse().ok()?,
        })
    }
}

/// The first stdout line (None on EOF) through a channel; the rest is drained and ignored.
fn first_stdout_line(child: &mut Child) -> mpsc::Receiver<Option<String>> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next().and_then(Result::ok));
        for _ in lines {}
    });
    rx
}

/// A cluster key, N nodes with data directories on tmpfs, and a master `--state` directory.
/// Nodes are stopped before their directories are removed (fields drop in order).
#[derive(Debug)]
pub struct Cluster {
    /// `None` while a node is down.
    nodes: Vec<Option<Node>>,
    /// The address each node listens on, kept while it is down (a restart reuses the port).
    addrs: Vec<SocketAddr>,
    data: Vec<TempDir>,
    state: TempDir,
    key: PathBuf,
    /// Holds the key file (and any other key a test writes there).
    keys: TempDir,
}

impl Cluster {
    /// `count` nodes named `n0`, `n1`, ..., sharing one `qbd keygen` key, on kernel-chosen ports.
    pub fn start(count: usize) -> Cluster {
        let keys = temp_dir(Backing::Shm);
        let key = keygen(keys.path(), "cluster.key");
        let data: Vec<TempDir> = (0..count).map(|_| temp_dir(Backing::Shm)).collect();
        let nodes: Vec<Node> = data
            .iter()
            .enumerate()
            .map(|(i, d)| Node::start(d.path(), "127.0.0.1:0", &key, &format!("n{i}")))
            .collect();
        Cluster {
            addrs: nodes.iter().map(|n| n.addr).collect(),
            nodes: nodes.into_iter().map(Some).collect(),
            data,
            state: temp_dir(Backing::Shm),
            key,
            keys,
        }
    }

    /// The cluster key file.
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// A directory for scratch files (such as other keys), removed with the cluster.
    pub fn scratch(&self) -> &Path {
        self.keys.path()
    }

    /// Node `i`'s data directory.
    pub fn data(&self, i: usize) -> &Path {
        self.data[i].path()
    }

    /// Node `i`, which must be running.
    pub fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("node is running")
    }

    /// Node `i`, mutably, which must be running.
    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        self.nodes[i].as_mut().expect("node is running")
    }

    /// Master arguments for a volume over every node with `key` as `--cluster-key`: a fresh
    /// volume takes `size` and `replicate:<replicas>`; `extra` is appended.
    pub fn master_args_with_key(
        &self,
        volume: &str,
        size: &str,
        replicas: usize,
        key: &Path,
        extra: &[&str],
    ) -> Vec<String> {
        let mut args: Vec<String> = [
            "--volume",
            volume,
            "--size",
            size,
            "--redundancy",
            &format!("replicate:{replicas}"),
            "--listen",
            "127.0.0.1:0",
            "--state",
            &self.state.path().display().to_string(),
            "--cluster-key",
            &key.display().to_string(),
        ]
        .map(str::to_owned)
        .into();
        for addr in &self.addrs {
            args.push("--node".to_owned());
            args.push(addr.to_string());
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }

    /// [`Cluster::master_args_with_key`] with the cluster's key.
    pub fn master_args(
        &self,
        volume: &str,
        size: &str,
        replicas: usize,
        extra: &[&str],
    ) -> Vec<String> {
        self.master_args_with_key(volume, size, replicas, &self.key, extra)
    }

    /// SIGKILL node `i`.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].take().expect("node is running").crash();
    }

    /// SIGTERM node `i`, which must exit 0; returns its stderr.
    pub fn stop(&mut self, i: usize) -> String {
        self.nodes[i]
            .take()
            .expect("node is running")
            .stop_cleanly()
    }

    /// Starts node `i` again on its data directory and port.
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} is still running");
        let listen = self.addrs[i].to_string();
        let node = Node::start(self.data[i].path(), &listen, &self.key, &format!("n{i}"));
        assert_eq!(node.addr, self.addrs[i], "restarted on the same address");
        self.nodes[i] = Some(node);
    }
}

/// Bytes allocated by the files under `dir` (recursively): how much a node has stored.
pub fn allocated_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => allocated_bytes(&entry.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}
