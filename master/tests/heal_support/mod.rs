//! Helpers for `heal_nodes.rs` and `start_degraded.rs`: heal after a crash, through real
//! `qbd-master`, `qbd-node` and `qbd` processes and real NBD clients.
//!
//! - [`Rig`]: where the daemons run, so one scenario runs over TCP nodes ([`TcpRig`]) and over
//!   L2 nodes in network namespaces ([`L2Rig`]) alike: how to start the master, how to run a
//!   client next to it, where the nodes keep their data, how `qbd` reaches them;
//! - [`Tools`]: the client tools (a missing one skips the test, or fails it under
//!   `QBD_REQUIRE_TOOLS=1`);
//! - [`patterned`]: source data whose every 4 KiB block is unique and never all zeros, so a
//!   block read back names which value it holds ([`sweep`]: `.` the expected block, `0` zeros,
//!   `W` anything else, `E` EIO, `X` another error);
//! - [`copy_in_background`] and [`wait_stored`]: a copy in flight, and the signal that it is
//!   well under way (the nodes' data directories grew by a given amount);
//! - [`qbd`]: `qbd verify` / `qbd repair` against the rig's nodes;
//! - [`volume_epoch`]: the epoch a node stores in the volume's `.meta`;
//! - [`flip_data`]: one flipped byte in a block of a part file (damage only a checksum sees);
//! - [`snapshot_parts`], [`restore_parts`]: a replica rolled back to an older state of its part
//!   files, unknown to the degraded map (a lagging replica).
//!
//! Every wait is bounded; nothing sleeps in place of a signal.

#![allow(dead_code)] // heal_nodes.rs and start_degraded.rs use different parts of it

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::JoinHandle;
use std::time::Duration;

use qbd_core::format::layout::PartLayout;
use qbd_core::meta::volume::VolumeMeta;

use crate::common::l2::Segment;
use crate::common::nodes::{Cluster, allocated_bytes, bins};
use crate::common::tools::{Outcome, require_tool, run, run_bounded};
use crate::common::{Master, StartFailure, wait_until};

/// The NBD block size the volumes use and the unit every check works in.
pub const BLOCK: usize = 4096;
/// How long a copy may take to reach the point where the test kills the master.
pub const PROGRESS_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `qbd verify --deep` / `qbd repair` may take.
pub const QBD_TIMEOUT: Duration = Duration::from_secs(300);

/// Where the daemons of a test run, and how to reach them.
pub trait Rig {
    /// The master's arguments (after the program), as the test last set them.
    fn master_args(&self) -> Vec<String>;
    /// Replaces the master's arguments (e.g. a fresh `--state`).
    fn set_master_args(&mut self, args: Vec<String>);
    /// Starts the master with [`Rig::master_args`] and waits for its ready line.
    fn try_start_master(&self) -> Result<Master, StartFailure>;
    /// `program` as a command that runs next to the master (same network namespace).
    fn command(&self, program: &Path) -> Command;
    /// Every node's data directory.
    fn data_dirs(&self) -> Vec<PathBuf>;
    /// The `qbd verify` / `qbd repair` flags that name the volume and reach its nodes.
    fn backend_args(&self) -> Vec<String>;

    /// [`Rig::try_start_master`], panicking with the master's stderr if it does not start.
    fn start_master(&self, what: &str) -> Master {
        self.try_start_master()
            .unwrap_or_else(|e| panic!("{what}: qbd-master did not start: {e}"))
    }

    /// The value of `flag` in the master's arguments.
    fn master_arg(&self, flag: &str) -> String {
        let args = self.master_args();
        arg_value(&args, flag).unwrap_or_else(|| panic!("no {flag} in {args:?}"))
    }
}

/// N `qbd-node`s over TCP on 127.0.0.1 ([`Cluster`]).
#[derive(Debug)]
pub struct TcpRig {
    pub cluster: Cluster,
    args: Vec<String>,
}

impl TcpRig {
    /// `nodes` nodes; the master serves `volume` of `size` with `redundancy` over all of them,
    /// plus `extra` arguments.
    pub fn start(nodes: usize, volume: &str, size: &str, redundancy: &str, extra: &[&str]) -> Self {
        let cluster = Cluster::start(nodes);
        let args = cluster.master_args(volume, size, 1, extra);
        let args = with_arg(args, "--redundancy", redundancy);
        TcpRig { cluster, args }
    }
}

impl Rig for TcpRig {
    fn master_args(&self) -> Vec<String> {
        self.args.clone()
    }

    fn set_master_args(&mut self, args: Vec<String>) {
        self.args = args;
    }

    fn try_start_master(&self) -> Result<Master, StartFailure> {
        Master::try_start(&self.args)
    }

    fn command(&self, program: &Path) -> Command {
        Command::new(program)
    }

    fn data_dirs(&self) -> Vec<PathBuf> {
        let n = self.args.iter().filter(|a| *a == "--node").count();
        (0..n).map(|i| self.cluster.data(i).to_owned()).collect()
    }

    fn backend_args(&self) -> Vec<String> {
        let mut args = vec![
            "--volume".to_owned(),
            self.master_arg("--volume"),
            "--cluster-key".to_owned(),
            self.cluster.key().display().to_string(),
        ];
        args.extend(node_flags(&self.args));
        args
    }
}

/// N `qbd-node`s over raw Ethernet in network namespaces ([`Segment`]); the master and its
/// clients run in the master's namespace.
#[derive(Debug)]
pub struct L2Rig {
    pub segment: Segment,
    nodes: usize,
    args: Vec<String>,
}

impl L2Rig {
    /// Like [`TcpRig::start`] over L2 at MTU 9000; `None` (after printing `SKIPPED: ...`)
    /// without root.
    pub fn start(
        test: &str,
        nodes: usize,
        volume: &str,
        size: &str,
        redundancy: &str,
        extra: &[&str],
    ) -> Option<Self> {
        let segment = Segment::new(test, nodes, 0, 9000)?;
        let cmd = segment.master_command(volume, size, 1, extra);
        // The command is `ip netns exec NS qbd-master ARGS...`: keep the master's arguments only.
        let all: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let start = all
            .iter()
            .position(|a| a.ends_with("qbd-master"))
            .unwrap_or_else(|| panic!("no qbd-master in {all:?}"));
        let args = with_arg(all[start + 1..].to_vec(), "--redundancy", redundancy);
        Some(L2Rig {
            segment,
            nodes,
            args,
        })
    }
}

impl Rig for L2Rig {
    fn master_args(&self) -> Vec<String> {
        self.args.clone()
    }

    fn set_master_args(&mut self, args: Vec<String>) {
        self.args = args;
    }

    fn try_start_master(&self) -> Result<Master, StartFailure> {
        let mut cmd = self.segment.in_master(env!("CARGO_BIN_EXE_qbd-master"));
        cmd.args(&self.args);
        Master::try_start_command(cmd)
    }

    fn command(&self, program: &Path) -> Command {
        self.segment.in_master(program)
    }

    fn data_dirs(&self) -> Vec<PathBuf> {
        (0..self.nodes)
            .map(|i| self.segment.data(i).to_owned())
            .collect()
    }

    fn backend_args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "--volume",
            &self.master_arg("--volume"),
            "--transport",
            "l2",
            "--iface",
            crate::common::l2::IFACE,
            "--cluster-key",
            &self.segment.key().display().to_string(),
        ]
        .map(str::to_owned)
        .into();
        // Pinned by MAC: discovery ends when these answer instead of waiting out its timeout.
        for i in 0..self.nodes {
            args.push("--node".to_owned());
            args.push(self.segment.node(i).mac.clone());
        }
        args
    }
}

/// The client tools the scenarios drive.
#[derive(Debug)]
pub struct Tools {
    pub nbdcopy: PathBuf,
    pub nbdsh: PathBuf,
}

impl Tools {
    /// `None` (after printing `SKIPPED: ...`, or a panic under `QBD_REQUIRE_TOOLS=1`) if one
    /// is missing.
    pub fn require() -> Option<Tools> {
        Some(Tools {
            nbdcopy: require_tool("nbdcopy")?,
            nbdsh: require_tool("nbdsh")?,
        })
    }
}

/// `args` with the value after `flag` set to `value` (appended if `flag` is absent).
pub fn with_arg(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    match args.iter().position(|a| a == flag) {
        Some(i) if i + 1 < args.len() => args[i + 1] = value.to_owned(),
        _ => args.extend([flag.to_owned(), value.to_owned()]),
    }
    args
}

/// The value after `flag` in `args`.
pub fn arg_value(args: &[String], flag: &str) -> Option<String> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1).cloned()
}

/// Every `--node VALUE` pair of `args`, in order.
fn node_flags(args: &[String]) -> Vec<String> {
    args.windows(2)
        .filter(|w| w[0] == "--node")
        .flat_map(|w| w.iter().cloned())
        .collect()
}

/// `len` bytes (a multiple of [`BLOCK`]) in which every 4 KiB block is unique and never all
/// zeros: the block's index and `tag` in its first 16 bytes, seeded noise after.
pub fn patterned(tag: u64, len: usize) -> Vec<u8> {
    assert_eq!(len % BLOCK, 0, "whole blocks");
    let mut out = vec![0u8; len];
    for (i, block) in out.chunks_exact_mut(BLOCK).enumerate() {
        let (head, rest) = block.split_at_mut(16);
        head[..8].copy_from_slice(&(i as u64).to_le_bytes());
        head[8..].copy_from_slice(&(tag | 1).to_le_bytes());
        let seed = tag.rotate_left(17) ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        crate::common::data::Prng::new(seed).fill(rest);
    }
    out
}

/// Starts `nbdcopy FROM TO` (run next to the master) on a thread; join it for the outcome.
pub fn copy_in_background(
    rig: &dyn Rig,
    tools: &Tools,
    from: &str,
    to: &str,
) -> JoinHandle<Outcome> {
    let mut cmd = rig.command(&tools.nbdcopy);
    cmd.args([from, to]);
    std::thread::spawn(move || run(cmd))
}

/// Total bytes allocated under `dirs`.
pub fn stored(dirs: &[PathBuf]) -> u64 {
    dirs.iter().map(|d| allocated_bytes(d)).sum()
}

/// Waits (bounded) until the nodes' data directories hold `grown` bytes more than `baseline`,
/// or `job` ends. True if they grew while `job` still ran: the signal that a copy is under way.
pub fn wait_stored<T>(dirs: &[PathBuf], baseline: u64, grown: u64, job: &JoinHandle<T>) -> bool {
    let hit = wait_until(PROGRESS_TIMEOUT, || {
        stored(dirs) >= baseline + grown || job.is_finished()
    });
    hit && !job.is_finished()
}

/// Reads every 4 KiB block on its own (8 in flight) and compares it with the file
/// `QBD_EXPECTED`: one character per block, `.` same bytes, `0` all zeros, `W` other bytes,
/// `E` EIO, `X` another error.
const SWEEP: &str = r#"
import os
expected = open(os.environ["QBD_EXPECTED"], "rb").read()
bs = 4096
zero = bytes(bs)
n = len(expected) // bs
res = bytearray(b"?" * n)
def done(i, buf):
    def f(err):
        if err.value == 0:
            got = bytes(buf.to_bytearray())
            if got == expected[i * bs:(i + 1) * bs]:
                res[i] = ord(".")
            elif got == zero:
                res[i] = ord("0")
            else:
                res[i] = ord("W")
        else:
            res[i] = ord("E") if err.value == 5 else ord("X")
        return 1
    return f
for i in range(n):
    while h.aio_in_flight() >= 8:
        h.poll(-1)
    buf = nbd.Buffer(bs)
    h.aio_pread(buf, i * bs, completion=done(i, buf))
while h.aio_in_flight() > 0:
    h.poll(-1)
print(res.decode())
"#;

/// Writes block `i` of the file `QBD_SOURCE` for every `i` with `i % QBD_STRIDE == QBD_PHASE`
/// (16 in flight), then FLUSHes; exits 1 if any write failed.
const WRITE_STRIDED: &str = r#"
import os, sys
src = open(os.environ["QBD_SOURCE"], "rb").read()
stride = int(os.environ["QBD_STRIDE"])
phase = int(os.environ["QBD_PHASE"])
bs = 4096
failed = []
def done(i):
    def f(err):
        if err.value != 0:
            failed.append(i)
        return 1
    return f
for i in range(phase, len(src) // bs, stride):
    while h.aio_in_flight() >= 16:
        h.poll(-1)
    buf = nbd.Buffer.from_bytearray(bytearray(src[i * bs:(i + 1) * bs]))
    h.aio_pwrite(buf, i * bs, completion=done(i))
while h.aio_in_flight() > 0:
    h.poll(-1)
if failed:
    print("failed blocks", failed[:20], len(failed))
    sys.exit(1)
h.flush()
print("ok")
"#;

/// `nbdsh` run next to the master: python3-libnbd is installed for /usr/bin/python3, and
/// another python3 may come first in PATH.
fn nbdsh(rig: &dyn Rig, tools: &Tools) -> Command {
    let mut cmd = rig.command(&tools.nbdsh);
    let old = std::env::var("PATH").unwrap_or_default();
    cmd.env("PATH", format!("/usr/bin:{old}"));
    cmd
}

/// The per-block result string of [`SWEEP`] over `master`'s export against the file
/// `expected` (the whole export); panics if nbdsh itself fails.
pub fn sweep(rig: &dyn Rig, tools: &Tools, master: &Master, expected: &Path) -> String {
    let mut cmd = nbdsh(rig, tools);
    cmd.env("QBD_EXPECTED", expected)
        .args(["-u", &master.uri(), "-c", SWEEP]);
    let out = run(cmd);
    out.assert_success();
    out.stdout.trim().to_owned()
}

/// Writes every `stride`-th block (from `phase`) of the file `source` through `master`, then
/// FLUSHes; panics unless every write and the FLUSH succeeded.
pub fn write_strided(
    rig: &dyn Rig,
    tools: &Tools,
    master: &Master,
    source: &Path,
    stride: usize,
    phase: usize,
) {
    let mut cmd = nbdsh(rig, tools);
    cmd.env("QBD_SOURCE", source)
        .env("QBD_STRIDE", stride.to_string())
        .env("QBD_PHASE", phase.to_string())
        .args(["-u", &master.uri(), "-c", WRITE_STRIDED]);
    run(cmd).assert_success();
}

/// How many blocks of a sweep answered each way: (`.`, `0`, anything else).
pub fn tally(sweep: &str) -> (usize, usize, usize) {
    let count = |c: u8| sweep.bytes().filter(|&b| b == c).count();
    let (same, zero) = (count(b'.'), count(b'0'));
    (same, zero, sweep.len() - same - zero)
}

/// Panics unless every block of `sweep` (of `blocks` blocks) is `.` or `0` (the source block
/// or never written), naming the first other and the counts.
pub fn assert_old_or_new(sweep: &str, blocks: usize, what: &str) {
    assert_eq!(sweep.len(), blocks, "{what}: one result per block");
    if let Some(bad) = sweep.bytes().position(|b| b != b'.' && b != b'0') {
        panic!(
            "{what}: block {bad} (offset {}) answered {:?} (`.` source, `0` zeros, `W` other \
             bytes, `E` EIO, `X` other error); counts (source, zeros, other) {:?}",
            bad * BLOCK,
            char::from(sweep.as_bytes()[bad]),
            tally(sweep)
        );
    }
}

/// `qbd SUBCOMMAND` with `args` and the rig's backend flags, run next to the master.
pub fn qbd(rig: &dyn Rig, subcommand: &str, args: &[&str]) -> Outcome {
    let mut cmd = rig.command(&bins().qbd);
    cmd.arg(subcommand).args(args).args(rig.backend_args());
    run_bounded(cmd, QBD_TIMEOUT)
}

/// Panics unless `qbd verify --deep` exits 0 (healthy) and says HEALTHY.
pub fn assert_verify_healthy(rig: &dyn Rig, what: &str) {
    let out = qbd(rig, "verify", &["--deep"]);
    assert!(
        out.success() && out.stdout.contains("HEALTHY"),
        "{what}: qbd verify --deep is not HEALTHY: {out}"
    );
}

/// The epoch in the volume's `.meta` on the node whose data directory is `data`.
pub fn volume_epoch(data: &Path) -> u64 {
    let path = crate::common::volume_dir(data).join(".meta");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let meta: VolumeMeta =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{} parses: {e}\n{text}", path.display()));
    meta.epoch
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// Flips one byte inside the data of block `block` of the part file `path`, a part of `blocks`
/// blocks of [`BLOCK`] bytes (docs/format.md): silent damage a checksum must catch.
pub fn flip_data(path: &Path, blocks: u32, block: u32) {
    use std::os::unix::fs::FileExt;
    let at = PartLayout::new(BLOCK as u32, blocks).data_offset_of(block) + 100;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at)
        .unwrap_or_else(|e| panic!("read {} at {at}: {e}", path.display()));
    byte[0] ^= 0x5a;
    file.write_all_at(&byte, at)
        .unwrap_or_else(|e| panic!("write {} at {at}: {e}", path.display()));
}

/// Copies every part file under the node data directory `data` to `into` (same relative
/// paths): a snapshot to roll the replica back to with [`restore_parts`].
pub fn snapshot_parts(data: &Path, into: &Path) {
    for file in crate::common::part_files(data) {
        let to = into.join(relative(&file, data));
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        }
        std::fs::copy(&file, &to)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", file.display(), to.display()));
    }
}

/// Puts the part files of a [`snapshot_parts`] snapshot `from` back under `data`: the replica
/// loses every write made since, and nothing on the node says so (no degraded-map entry).
/// Returns how many files it restored.
pub fn restore_parts(data: &Path, from: &Path) -> usize {
    let files = crate::common::part_files(data);
    for file in &files {
        let saved = from.join(relative(file, data));
        std::fs::copy(&saved, file)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", saved.display(), file.display()));
    }
    files.len()
}

fn relative<'a>(file: &'a Path, root: &Path) -> &'a Path {
    file.strip_prefix(root)
        .unwrap_or_else(|e| panic!("{} is under {}: {e}", file.display(), root.display()))
}
