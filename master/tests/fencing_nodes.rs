//! Issue 14, defects 4 and 5: one master per volume on nodes, enforced by the epoch.
//!
//! - Two masters started at once on the same nodes and volume (different `--state` dirs and NBD
//!   ports): at most one may serve. Each writes its own pattern over the same blocks through
//!   whichever became ready and FLUSHes; a fresh master started afterwards must read back the
//!   data of every master whose write and FLUSH were acknowledged, so two masters can never both
//!   have acknowledged conflicting writes. Before the fix both took the same epoch (the node took
//!   a `SaveMeta` of an equal epoch from any master), both served, and the second one's writes
//!   were skipped by the nodes as "not newer" yet acknowledged.
//! - A master fenced by a newer one (started on the same nodes while it runs, taking the volume
//!   with a newer epoch) must neither read (EIO, never the data it wrote, never the newer
//!   master's) nor write. Before the fix the nodes did not fence reads, so it kept serving them.
//!
//! Each runs over TCP nodes and over L2 nodes (`common/l2.rs`: the first master in the segment's
//! master namespace, the second on an extra host of the segment; needs root, skipped without).
//! The I/O goes through `nbdsh` (libnbd), one short session per step, run in the namespace of
//! the master it talks to; each step prints `ok ...` or `err ERRNO`.
//!
//! Caught before the fix: the race in every run (6 of 6 over TCP: at rounds 1, 2, 3, 1, 8 and
//! 4, with 4 rounds one earlier run missed it, hence 16; 3 of 3 over L2, rounds 1 to 4): both masters ready, both writes and FLUSHes acknowledged, the fresh
//! master reads the first one's pattern (`left: Ok("44")`, `right: Ok("45")`). Fenced reads:
//! every run (deterministic): the fenced master returns the newer master's data (`Ok("b2")`)
//! instead of EIO. Runtime: a few seconds each (the race stops at its first catch; after the fix
//! it runs all [`ROUNDS`], about 1.5 s each).
//!
//! Every process listens on 127.0.0.1 (of its namespace) only and is stopped when dropped, even
//! on panic; every wait is bounded (ready lines, tool runs).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::l2::{IFACE, Segment};
use common::nodes::Cluster;
use common::tools::{nbdsh, require_tool, run};
use common::{Backing, Master, StartFailure, temp_dir};

const VOLUME: &str = "fence";
const SIZE: &str = "64M";
/// The region every master writes: 1 MiB over 16 chunks of 64 KiB.
const REGION: u64 = 1 << 20;
const CHUNK_SIZE: &str = "64K";
/// Rounds of the two-master race (each on the volume the previous rounds left).
const ROUNDS: u8 = 16;

// ---- the two tests, each over TCP and over L2 ----

/// Two masters started at once over TCP nodes: no FLUSH-acknowledged write is lost.
#[test]
fn two_masters_started_at_once_never_both_acknowledge_tcp() {
    let Some(nbdsh) = require_tool("nbdsh") else {
        return;
    };
    let sites = TcpSites::new(nbdsh);
    two_masters_race(&sites);
}

/// Two masters started at once over L2 nodes: no FLUSH-acknowledged write is lost.
#[test]
fn two_masters_started_at_once_never_both_acknowledge_l2() {
    let Some(nbdsh) = require_tool("nbdsh") else {
        return;
    };
    let Some(sites) = L2Sites::new("two_masters_l2", nbdsh) else {
        return;
    };
    two_masters_race(&sites);
}

/// A master fenced by a newer one over TCP nodes neither reads nor writes.
#[test]
fn a_fenced_master_neither_reads_nor_writes_tcp() {
    let Some(nbdsh) = require_tool("nbdsh") else {
        return;
    };
    let sites = TcpSites::new(nbdsh);
    fenced_master(&sites);
}

/// A master fenced by a newer one over L2 nodes neither reads nor writes.
#[test]
fn a_fenced_master_neither_reads_nor_writes_l2() {
    let Some(nbdsh) = require_tool("nbdsh") else {
        return;
    };
    let Some(sites) = L2Sites::new("fenced_master_l2", nbdsh) else {
        return;
    };
    fenced_master(&sites);
}

// ---- the scenarios ----

/// Rounds of: masters 0 and 1 started at the same moment; each one that became ready writes
/// its own pattern over [`REGION`] and FLUSHes; both stop; a fresh master (site 0, a fresh
/// `--state`) reads the region back, which must be the pattern of every master whose write and
/// FLUSH were acknowledged.
fn two_masters_race(sites: &dyn Sites) {
    // The volume exists before the race: the race is over taking its epoch, not creating it.
    let state = temp_dir(Backing::Shm);
    start(sites, 0, state.path()).stop_cleanly();
    let mut served = [0u32; 3]; // rounds in which 0, 1 or 2 masters became ready
    for round in 0..ROUNDS {
        let states = [temp_dir(Backing::Shm), temp_dir(Backing::Shm)];
        let started = start_together(sites, [states[0].path(), states[1].path()]);
        let ready = started.iter().filter(|m| m.is_ok()).count();
        served[ready] += 1;
        let mut acked = Vec::new();
        for (site, master) in started.iter().enumerate() {
            let master = match master {
                Ok(master) => master,
                Err(failure) => {
                    assert_exited_nonzero(site, failure);
                    continue;
                }
            };
            let byte = pattern(round, site);
            let answers = session(sites, site, master, &[Op::Write(byte), Op::Flush]);
            if answers.iter().all(Answer::is_ok) {
                acked.push((site, byte));
            }
        }
        println!(
            "round {round}: ready {:?}, write and FLUSH acknowledged {acked:02x?}",
            started.iter().map(Result::is_ok).collect::<Vec<_>>()
        );
        let stderr: Vec<String> = started.into_iter().map(stop_any).collect();
        let state = temp_dir(Backing::Shm);
        let fresh = start(sites, 0, state.path());
        let read = session(sites, 0, &fresh, &[Op::Read]).remove(0);
        let fresh_stderr = fresh.stop_cleanly();
        assert_race_outcome(round, &acked, &read, &stderr, &fresh_stderr);
    }
    println!("rounds with 0, 1, 2 masters ready: {served:?}");
}

/// Panics unless the fresh master read back the pattern of every master that had its write and
/// FLUSH acknowledged (so at most one may have).
fn assert_race_outcome(
    round: u8,
    acked: &[(usize, u8)],
    read: &Answer,
    stderr: &[String],
    fresh_stderr: &str,
) {
    let context = || {
        let logs: Vec<String> = stderr
            .iter()
            .enumerate()
            .map(|(i, s)| format!("--- master {i} stderr ---\n{s}"))
            .collect();
        format!(
            "{}\n--- fresh master stderr ---\n{fresh_stderr}",
            logs.join("\n")
        )
    };
    for &(site, byte) in acked {
        assert_eq!(
            read,
            &Answer::Ok(format!("{byte:02x}")),
            "round {round}: master {site} had its write of {byte:#04x} and its FLUSH \
             acknowledged, but a fresh master reads back something else (acknowledged by both \
             masters: {acked:02x?}; two masters served the volume at once and one's flushed \
             writes were lost)\n{}",
            context()
        );
    }
}

/// Master 0 serves and writes v1 + FLUSH; master 1 starts on the same nodes while 0 still runs
/// (a newer epoch) and writes v2 + FLUSH; then master 0 must fail a read with EIO (never return
/// v1 or v2) and fail a write; master 1 still reads v2.
fn fenced_master(sites: &dyn Sites) {
    const V1: u8 = 0xa1;
    const V2: u8 = 0xb2;
    const V3: u8 = 0xc3;
    let states = [temp_dir(Backing::Shm), temp_dir(Backing::Shm)];
    let old = start(sites, 0, states[0].path());
    let wrote = session(sites, 0, &old, &[Op::Write(V1), Op::Flush, Op::Read]);
    assert_eq!(
        wrote,
        [ok(""), ok(""), ok(&format!("{V1:02x}"))],
        "v1 via master 0"
    );

    let new = start(sites, 1, states[1].path());
    let wrote = session(sites, 1, &new, &[Op::Write(V2), Op::Flush, Op::Read]);
    assert_eq!(
        wrote,
        [ok(""), ok(""), ok(&format!("{V2:02x}"))],
        "v2 via master 1"
    );

    let read = session(sites, 0, &old, &[Op::Read]).remove(0);
    assert_eq!(
        read,
        Answer::Err("EIO".into()),
        "a read through master 0, fenced by master 1's newer epoch, must fail with EIO \
         (v1 = {V1:02x}, v2 = {V2:02x}); master 0 stderr:\n{}",
        old.stderr()
    );
    let write = session(sites, 0, &old, &[Op::Write(V3)]).remove(0);
    assert!(
        !write.is_ok(),
        "a write through the fenced master 0 must fail, got {write:?}; its stderr:\n{}",
        old.stderr()
    );
    let read = session(sites, 1, &new, &[Op::Read]).remove(0);
    assert_eq!(read, ok(&format!("{V2:02x}")), "master 1 still reads v2");
    new.stop_cleanly();
    stop_any(Ok(old));
}

/// The byte master `site` writes in `round`: distinct across rounds and sites.
fn pattern(round: u8, site: usize) -> u8 {
    0x40 + round * 4 + site as u8
}

// ---- masters ----

/// Starts masters 0 and 1 at the same moment (one thread each) and waits for both outcomes.
fn start_together(sites: &dyn Sites, states: [&Path; 2]) -> Vec<Result<Master, StartFailure>> {
    let commands = [0, 1].map(|site| sites.master(site, states[site]));
    std::thread::scope(|s| {
        let handles = commands.map(|cmd| s.spawn(move || Master::try_start_command(cmd)));
        handles
            .into_iter()
            .map(|h| h.join().expect("starter thread"))
            .collect()
    })
}

/// Starts master `site` with `state`; panics (with its stderr) unless it becomes ready.
fn start(sites: &dyn Sites, site: usize, state: &Path) -> Master {
    Master::try_start_command(sites.master(site, state))
        .unwrap_or_else(|e| panic!("master {site} did not start: {e}"))
}

/// A master that did not become ready must have exited, with a nonzero status.
fn assert_exited_nonzero(site: usize, failure: &StartFailure) {
    assert!(
        failure.status.is_some_and(|s| !s.success()),
        "master {site} neither served nor exited nonzero: {failure}"
    );
}

/// Stops a master (its exit status is not judged: a fenced master may exit nonzero) and
/// returns its stderr; a start failure gives its stderr.
fn stop_any(master: Result<Master, StartFailure>) -> String {
    match master {
        Ok(master) => {
            let stderr = master.stderr();
            let status = master.stop();
            format!("{stderr}(exit: {status})")
        }
        Err(failure) => failure.to_string(),
    }
}

// ---- where the masters run ----

/// Where master `site` runs and how its clients reach it.
trait Sites {
    /// `qbd-master` for site `site` (0 or 1) with `--state STATE`, not yet started.
    fn master(&self, site: usize, state: &Path) -> Command;
    /// `nbdsh` able to reach site `site`'s master on 127.0.0.1.
    fn nbdsh(&self, site: usize) -> Command;
}

/// Two TCP nodes; every master and client on the host.
struct TcpSites {
    cluster: Cluster,
    nbdsh: PathBuf,
}

impl TcpSites {
    fn new(nbdsh: PathBuf) -> TcpSites {
        TcpSites {
            cluster: Cluster::start(2),
            nbdsh,
        }
    }
}

impl Sites for TcpSites {
    fn master(&self, _site: usize, state: &Path) -> Command {
        let args = self
            .cluster
            .master_args(VOLUME, SIZE, 2, &["--chunk-size", CHUNK_SIZE]);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_qbd-master"));
        cmd.args(with_state(args, state));
        cmd
    }

    fn nbdsh(&self, _site: usize) -> Command {
        nbdsh(&self.nbdsh)
    }
}

/// `args` with the value of `--state` replaced by `state`.
fn with_state(mut args: Vec<String>, state: &Path) -> Vec<String> {
    if let Some(i) = args.iter().position(|a| a == "--state") {
        args[i + 1] = state.display().to_string();
    }
    args
}

/// Two L2 nodes; master 0 in the segment's master namespace, master 1 on an extra host, each
/// with its clients.
struct L2Sites {
    segment: Segment,
    nbdsh: PathBuf,
}

impl L2Sites {
    fn new(test: &str, nbdsh: PathBuf) -> Option<L2Sites> {
        Some(L2Sites {
            segment: Segment::new(test, 2, 1, 1500)?,
            nbdsh,
        })
    }

    /// `program` in site `site`'s namespace.
    fn command(&self, site: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match site {
            0 => self.segment.in_master(program),
            n => self.segment.host(n - 1).command(program),
        }
    }
}

impl Sites for L2Sites {
    fn master(&self, site: usize, state: &Path) -> Command {
        let mut cmd = self.command(site, env!("CARGO_BIN_EXE_qbd-master"));
        cmd.args(["--transport", "l2", "--iface", IFACE, "--cluster-key"])
            .arg(self.segment.key())
            .args([
                "--volume",
                VOLUME,
                "--size",
                SIZE,
                "--chunk-size",
                CHUNK_SIZE,
            ])
            .args(["--redundancy", "replicate:2", "--listen", "127.0.0.1:0"])
            .arg("--state")
            .arg(state);
        cmd
    }

    fn nbdsh(&self, site: usize) -> Command {
        let mut cmd = self.command(site, &self.nbdsh);
        // python3-libnbd is installed for /usr/bin/python3 (see `tools::nbdsh`).
        let old = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("/usr/bin:{old}"));
        cmd
    }
}

// ---- client sessions ----

/// One step of an nbdsh session, always over [`REGION`] from offset 0.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// Writes the region filled with this byte.
    Write(u8),
    Flush,
    /// Reads the region; answers with its distinct byte values (`a1`, or `00,a1`).
    Read,
}

impl Op {
    fn python(self) -> String {
        match self {
            Op::Write(b) => format!("step('write', lambda: h.pwrite(bytes([{b}]) * {REGION}, 0))"),
            Op::Flush => "step('flush', lambda: h.flush())".to_owned(),
            Op::Read => format!("step('read', lambda: distinct(h.pread({REGION}, 0)))"),
        }
    }
}

/// What one step answered: `ok` with a value, an error (its errno name), or nothing (the
/// session ended before it, e.g. the connection was refused).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Ok(String),
    Err(String),
    Missing(String),
}

impl Answer {
    fn is_ok(&self) -> bool {
        matches!(self, Answer::Ok(_))
    }
}

fn ok(value: &str) -> Answer {
    Answer::Ok(value.to_owned())
}

/// Prints one line per step: `ok VALUE` or `err ERRNO`.
const PRELUDE: &str = r#"
import errno, os, sys
def distinct(buf):
    return ",".join("%02x" % b for b in sorted(set(buf)))
def errname(e):
    # libnbd may leave e.errno unset for an error the server replied with;
    # its message then ends with strerror() of the NBD error.
    if e.errno:
        return errno.errorcode.get(e.errno, str(e.errno))
    for n in (errno.EIO, errno.EPERM, errno.ENOSPC, errno.EINVAL, errno.ESHUTDOWN,
              errno.ENOTSUP, errno.EOVERFLOW, errno.ENOMEM):
        if e.string.endswith(os.strerror(n)):
            return errno.errorcode[n]
    return e.string.replace("\n", " ")
def step(what, f):
    try:
        value = f()
        print("ok", "" if value is None else value)
    except nbd.Error as e:
        print("err", errname(e))
    sys.stdout.flush()
"#;

/// Runs `ops` in one nbdsh session with site `site`'s `master`; one answer per op.
fn session(sites: &dyn Sites, site: usize, master: &Master, ops: &[Op]) -> Vec<Answer> {
    let script: String = std::iter::once(PRELUDE.to_owned())
        .chain(ops.iter().map(|op| op.python()))
        .collect::<Vec<_>>()
        .join("\n");
    let mut cmd = sites.nbdsh(site);
    cmd.args(["-u", &master.uri(), "-c", &script]);
    let out = run(cmd);
    let mut lines = out.stdout.lines();
    ops.iter()
        .map(|_| match lines.next().map(str::trim_end) {
            Some("ok") => Answer::Ok(String::new()),
            Some(line) if line.starts_with("ok ") => Answer::Ok(line[3..].to_owned()),
            Some(line) if line.starts_with("err ") => Answer::Err(line[4..].to_owned()),
            _ => Answer::Missing(format!("{:?}: {}", out.status, out.stderr.trim())),
        })
        .collect()
}
