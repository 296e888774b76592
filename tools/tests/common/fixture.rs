//! A volume over directories or `qbd-node`s, written through a real
//! `qbd-master` and an NBD client, and the flags `qbd verify`/`qbd repair`
//! take to reach its backends.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::raw::Client;
use super::{Daemon, Outcome, bins, qbd, run_bounded};

/// Where the backends are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `--dir` backends.
    Dirs,
    /// `qbd-node`s over TCP.
    Nodes,
}

/// The chunk size of test volumes: small, so a few MiB make many chunks.
pub const CHUNK: u64 = 256 << 10;
/// The size of test volumes.
pub const SIZE: u64 = 4 << 20;

/// A volume's backends (and the nodes serving them).
#[derive(Debug)]
pub struct Fixture {
    pub kind: Kind,
    pub name: String,
    pub redundancy: String,
    roots: Vec<TempDir>,
    nodes: Vec<Option<Daemon>>,
    addrs: Vec<String>,
    /// Directory backends moved away (unreachable): their real place.
    hidden: Vec<Option<PathBuf>>,
    keys: TempDir,
    state: TempDir,
}

fn shm() -> TempDir {
    tempfile::Builder::new()
        .prefix("qbd-tools-test-")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::Builder::new().prefix("qbd-tools-test-").tempdir())
        .unwrap_or_else(|e| panic!("create temp dir: {e}"))
}

impl Fixture {
    /// `count` empty backends of `kind` for a volume `name` with
    /// `redundancy` (`replicate:3`, `ec:4+2`); nodes are started.
    pub fn new(kind: Kind, name: &str, redundancy: &str, count: usize) -> Fixture {
        let keys = shm();
        let mut f = Fixture {
            kind,
            name: name.to_owned(),
            redundancy: redundancy.to_owned(),
            roots: (0..count).map(|_| shm()).collect(),
            nodes: Vec::new(),
            addrs: Vec::new(),
            hidden: vec![None; count],
            state: shm(),
            keys,
        };
        if kind == Kind::Nodes {
            f.write_key();
            for i in 0..count {
                let d = f.start_node_at(i, "127.0.0.1:0");
                f.addrs.push(d.field("tcp"));
                f.nodes.push(Some(d));
            }
        }
        f
    }

    fn key(&self) -> PathBuf {
        self.keys.path().join("cluster.key")
    }

    fn write_key(&self) {
        let mut cmd = Command::new(&bins().qbd);
        cmd.arg("keygen");
        let out = run_bounded(cmd, super::QBD_TIMEOUT);
        assert_eq!(out.code, Some(0), "qbd keygen: {out:?}");
        std::fs::write(self.key(), &out.stdout).unwrap_or_else(|e| panic!("write key: {e}"));
    }

    fn start_node_at(&self, i: usize, listen: &str) -> Daemon {
        let mut cmd = Command::new(&bins().node);
        cmd.arg("--data")
            .arg(self.roots[i].path())
            .args(["--listen", listen, "--id", &format!("n{i}")])
            .arg("--cluster-key")
            .arg(self.key());
        Daemon::start(cmd, "qbd-node: ready ")
    }

    /// Backend `i`'s root directory (a node's data directory).
    pub fn root(&self, i: usize) -> &Path {
        self.roots[i].path()
    }

    /// Every root.
    pub fn roots(&self) -> Vec<PathBuf> {
        self.roots.iter().map(|r| r.path().to_owned()).collect()
    }

    /// Node `i`'s `HOST:PORT`.
    pub fn addr(&self, i: usize) -> &str {
        &self.addrs[i]
    }

    /// The backend flags of the tools: `--volume NAME` and `--dir ...` or
    /// `--node ... --cluster-key KEY`.
    pub fn backend_args(&self) -> Vec<String> {
        let mut a = vec!["--volume".to_owned(), self.name.clone()];
        match self.kind {
            Kind::Dirs => {
                for r in &self.roots {
                    a.push("--dir".into());
                    a.push(r.path().display().to_string());
                }
            }
            Kind::Nodes => {
                for addr in &self.addrs {
                    a.push("--node".into());
                    a.push(addr.clone());
                }
                a.push("--cluster-key".into());
                a.push(self.key().display().to_string());
                a.push("--discover-timeout".into());
                a.push("2".into());
            }
        }
        a
    }

    /// `qbd verify <backend flags> EXTRA`.
    pub fn verify(&self, extra: &[&str]) -> Outcome {
        let mut a = vec!["verify".to_owned()];
        a.extend(self.backend_args());
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        qbd(&a)
    }

    /// Master flags serving the volume (creating it on first start).
    pub fn master_args(&self) -> Vec<String> {
        let mut a: Vec<String> = [
            "--volume",
            &self.name,
            "--size",
            &SIZE.to_string(),
            "--chunk-size",
            &CHUNK.to_string(),
            "--redundancy",
            &self.redundancy,
            "--listen",
            "127.0.0.1:0",
            "--state",
            &self.state.path().display().to_string(),
        ]
        .map(str::to_owned)
        .into();
        let backend = self.backend_args();
        a.extend(
            backend
                .into_iter()
                .skip(2)
                .filter(|s| s != "--discover-timeout" && s != "2"),
        );
        a
    }

    /// Starts a master on the volume.
    pub fn start_master(&self) -> Daemon {
        let mut cmd = Command::new(&bins().master);
        cmd.args(self.master_args());
        Daemon::start(cmd, "qbd-master: ready ")
    }

    /// Writes the whole volume with seeded data through a master and an
    /// NBD client, flushes, stops the master cleanly; returns the data.
    pub fn write(&self, seed: u64) -> Vec<u8> {
        let data = seeded(seed, SIZE as usize);
        let master = self.start_master();
        let addr = master
            .field("tcp")
            .parse()
            .unwrap_or_else(|e| panic!("tcp=: {e}"));
        let mut c = Client::connect(addr, &self.name);
        for (i, piece) in data.chunks(1 << 20).enumerate() {
            assert_eq!(c.write((i as u64) << 20, piece), Ok(()), "write MiB {i}");
        }
        assert_eq!(c.flush(), Ok(()), "flush");
        c.disconnect();
        master.stop();
        data
    }

    /// Reads the whole volume back through a master.
    pub fn read_back(&self) -> Vec<u8> {
        let master = self.start_master();
        let addr = master
            .field("tcp")
            .parse()
            .unwrap_or_else(|e| panic!("tcp=: {e}"));
        let mut c = Client::connect(addr, &self.name);
        let mut out = Vec::with_capacity(SIZE as usize);
        for i in 0..SIZE >> 20 {
            let piece = c
                .read(i << 20, 1 << 20)
                .unwrap_or_else(|e| panic!("read MiB {i}: errno {e}"));
            out.extend(piece);
        }
        c.disconnect();
        master.stop();
        out
    }

    /// The path of a part file (on whichever backend holds it).
    pub fn part_path(&self, chunk: u64, part: u8) -> PathBuf {
        self.find_part(chunk, part)
            .map(|(_, p)| p)
            .unwrap_or_else(|| panic!("no backend holds chunk {chunk} part {part}"))
    }

    /// Which backend holds a part, and its path.
    pub fn find_part(&self, chunk: u64, part: u8) -> Option<(usize, PathBuf)> {
        let letter = char::from(b'a' + part);
        self.roots.iter().enumerate().find_map(|(i, r)| {
            let p = super::damage::volume_dir(r.path())
                .join(letter.to_string())
                .join(chunk.to_string());
            p.is_file().then_some((i, p))
        })
    }

    /// The backend that holds a part (by placement: where its file is).
    pub fn backend_of(&self, chunk: u64, part: u8) -> usize {
        self.find_part(chunk, part)
            .map(|(i, _)| i)
            .unwrap_or_else(|| panic!("no backend holds chunk {chunk} part {part}"))
    }

    /// Backend `i`'s identity (`.backend`).
    pub fn backend_id(&self, i: usize) -> String {
        super::damage::backend_id(self.root(i))
    }

    /// Makes backend `i` unreachable: stops its node, or moves its
    /// directory away (the same path then names nothing).
    pub fn make_unreachable(&mut self, i: usize) {
        match self.kind {
            Kind::Nodes => {
                if let Some(n) = self.nodes[i].take() {
                    n.stop();
                }
            }
            Kind::Dirs => {
                let from = self.roots[i].path().to_owned();
                let to = from.with_extension("away");
                std::fs::rename(&from, &to)
                    .unwrap_or_else(|e| panic!("hide {}: {e}", from.display()));
                self.hidden[i] = Some(to);
            }
        }
    }

    /// Undoes [`Fixture::make_unreachable`] (same port, same path).
    pub fn make_reachable(&mut self, i: usize) {
        match self.kind {
            Kind::Nodes => {
                if self.nodes[i].is_none() {
                    let d = self.start_node_at(i, &self.addrs[i].clone());
                    self.nodes[i] = Some(d);
                }
            }
            Kind::Dirs => {
                if let Some(to) = self.hidden[i].take() {
                    std::fs::rename(&to, self.roots[i].path())
                        .unwrap_or_else(|e| panic!("unhide {}: {e}", to.display()));
                }
            }
        }
    }

    /// How the tools name an unreachable backend `i` (`node:ADDR`, `dir:PATH`).
    pub fn address(&self, i: usize) -> String {
        match self.kind {
            Kind::Nodes => format!("node:{}", self.addrs[i]),
            Kind::Dirs => format!("dir:{}", self.roots[i].path().display()),
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Moved-away directories go back so their TempDir removes them.
        for i in 0..self.hidden.len() {
            if let Some(to) = self.hidden[i].take() {
                let _ = std::fs::rename(&to, self.roots[i].path());
            }
        }
    }
}

/// `len` bytes from a seeded xorshift generator.
pub fn seeded(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
