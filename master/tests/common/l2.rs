//! A switched Ethernet segment for masters with `--transport l2`: one namespace for the master,
//! one per `qbd-node`, optional extra hosts (an attacker), all joined by a bridge "switch" in its
//! own namespace; links carry only MAC addresses (no IP), loopback is up in each namespace.
//!
//! - [`Segment`]: the namespaces (a `qbd_netlab::Lab`), a cluster key, the nodes' data
//!   directories and the master's `--state`; nodes run inside their namespaces with
//!   `--iface eth0` and no `--listen`. Programs for the master's namespace (the master itself, NBD
//!   clients talking to it on 127.0.0.1 there) are built with [`Segment::in_master`].
//! - [`L2Node`]: one such node, stopped with SIGTERM when dropped.
//! - [`Stats`]: the `key=value` counters a daemon prints on its last stderr line (the node's
//!   `qbd-node: stats ...`, the master's `qbd-master: l2 stats ...`), parsed by key.
//!
//! Without root the segment cannot be built: [`Segment::new`] prints `SKIPPED: ...` and returns
//! `None`, unless `QBD_REQUIRE_PRIVILEGED=1` (then it panics). Everything is removed on drop, in
//! order (daemons, directories, namespaces), also when the test panics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;

use qbd_netlab::{Lab, Ns};
use tempfile::TempDir;

use super::nodes::{bins, keygen};
use super::{
    Backing, Log, Master, READY_TIMEOUT, StartFailure, fail, kill, stdout_lines, temp_dir,
    terminate,
};

/// The QBD EtherType (the default of both daemons).
pub const ETHERTYPE: u16 = 0x88B5;
/// The interface every host of the segment has.
pub const IFACE: &str = "eth0";

/// Namespaces on one switch, a cluster key, and `qbd-node`s serving over L2.
/// Fields drop in order: nodes first, namespaces last.
#[derive(Debug)]
pub struct Segment {
    /// `None` while a node is down.
    nodes: Vec<Option<L2Node>>,
    node_ns: Vec<Ns>,
    master_ns: Ns,
    hosts: Vec<Ns>,
    switch: Ns,
    mtu: u32,
    data: Vec<TempDir>,
    state: TempDir,
    key: PathBuf,
    keys: TempDir,
    lab: Lab,
}

impl Segment {
    /// A switch at `mtu` with a master namespace, `nodes` running nodes (`n0`, `n1`, ... sharing
    /// one `qbd keygen` key) and `hosts` extra empty hosts; `None` if skipped (no root).
    pub fn new(test: &str, nodes: usize, hosts: usize, mtu: u32) -> Option<Segment> {
        let mut lab = Lab::new(test)?;
        let master_ns = lab.namespace();
        let node_ns: Vec<Ns> = (0..nodes).map(|_| lab.namespace()).collect();
        let extra: Vec<Ns> = (0..hosts).map(|_| lab.namespace()).collect();
        let all: Vec<&Ns> = std::iter::once(&master_ns)
            .chain(&node_ns)
            .chain(&extra)
            .collect();
        let switch = lab.switch(&all, mtu);
        let keys = temp_dir(Backing::Shm);
        let key = keygen(keys.path(), "cluster.key");
        let mut segment = Segment {
            nodes: Vec::new(),
            data: (0..nodes).map(|_| temp_dir(Backing::Shm)).collect(),
            node_ns,
            master_ns,
            hosts: extra,
            switch,
            mtu,
            state: temp_dir(Backing::Shm),
            key,
            keys,
            lab,
        };
        for i in 0..nodes {
            let node = segment.start_node(i);
            segment.nodes.push(Some(node));
        }
        Some(segment)
    }

    /// The master's namespace.
    pub fn master_ns(&self) -> &Ns {
        &self.master_ns
    }

    /// Node `i`'s namespace.
    pub fn node_ns(&self, i: usize) -> &Ns {
        &self.node_ns[i]
    }

    /// Every namespace with a node, in order.
    pub fn node_namespaces(&self) -> &[Ns] {
        &self.node_ns
    }

    /// Extra host `i`'s namespace.
    pub fn host(&self, i: usize) -> &Ns {
        &self.hosts[i]
    }

    /// The switch's namespace (ports `p0` = master, `p1..` = nodes, then the extra hosts).
    pub fn switch(&self) -> &Ns {
        &self.switch
    }

    /// The links' MTU.
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// The cluster key file.
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// A directory for scratch files, removed with the segment.
    pub fn scratch(&self) -> &Path {
        self.keys.path()
    }

    /// Node `i`'s data directory.
    pub fn data(&self, i: usize) -> &Path {
        self.data[i].path()
    }

    /// Node `i`, which must be running.
    pub fn node(&self, i: usize) -> &L2Node {
        self.nodes[i].as_ref().expect("node is running")
    }

    /// `program` run inside the master's namespace.
    pub fn in_master(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.master_ns.command(program)
    }

    /// `qbd-master --transport l2 --iface eth0` in the master's namespace, with the cluster key,
    /// a fresh volume's `size` and `replicate:<replicas>`, the segment's `--state`, listening on
    /// 127.0.0.1 there; `extra` is appended.
    pub fn master_command(
        &self,
        volume: &str,
        size: &str,
        replicas: usize,
        extra: &[&str],
    ) -> Command {
        let mut cmd = self.in_master(env!("CARGO_BIN_EXE_qbd-master"));
        cmd.args(["--transport", "l2", "--iface", IFACE, "--cluster-key"])
            .arg(&self.key)
            .args(["--volume", volume, "--size", size])
            .args(["--redundancy", &format!("replicate:{replicas}")])
            .arg("--state")
            .arg(self.state.path())
            .args(["--listen", "127.0.0.1:0"])
            .args(extra);
        cmd
    }

    /// [`Segment::master_command`], started; panics (with its stderr) unless it becomes ready.
    pub fn start_master(
        &self,
        volume: &str,
        size: &str,
        replicas: usize,
        extra: &[&str],
    ) -> Master {
        let cmd = self.master_command(volume, size, replicas, extra);
        Master::try_start_command(cmd)
            .unwrap_or_else(|e| panic!("qbd-master over L2 did not start: {e}"))
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

    /// Starts node `i` again on its data directory (same namespace, so the same MAC).
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} is still running");
        let node = self.start_node(i);
        self.nodes[i] = Some(node);
    }

    fn start_node(&self, i: usize) -> L2Node {
        let id = format!("n{i}");
        let mut cmd = self.node_ns[i].command(&bins().node);
        cmd.arg("--data")
            .arg(self.data[i].path())
            .args(["--iface", IFACE, "--id", &id, "--cluster-key"])
            .arg(&self.key);
        let node =
            L2Node::try_start(cmd).unwrap_or_else(|e| panic!("qbd-node {id} did not start: {e}"));
        let mac = mac_string(self.node_ns[i].mac(IFACE));
        assert_eq!(
            (node.id.as_str(), node.mac.as_str(), node.l2.as_str()),
            (id.as_str(), mac.as_str(), IFACE),
            "ready line of {id}"
        );
        assert_eq!(node.mtu, self.mtu, "{id} reports its interface's MTU");
        node
    }
}

/// One running `qbd-node` serving over L2. Dropping it sends SIGTERM (then SIGKILL).
#[derive(Debug)]
pub struct L2Node {
    child: Option<Child>,
    /// `--id`, from the ready line.
    pub id: String,
    /// The backend identity (UUID), from the ready line.
    pub backend: String,
    /// The interface (`l2=`), from the ready line.
    pub l2: String,
    /// The interface's MAC (`mac=`, `aa:bb:cc:dd:ee:ff`), from the ready line.
    pub mac: String,
    /// The interface's MTU (`mtu=`), from the ready line.
    pub mtu: u32,
    stderr: Log,
}

impl L2Node {
    /// Starts `cmd` (a `qbd-node` with `--iface`) and waits (bounded) for its ready line
    /// `qbd-node: ready id=NAME backend=UUID [tcp=ADDR] l2=IFACE mac=MAC mtu=N`.
    pub fn try_start(mut cmd: Command) -> Result<L2Node, StartFailure> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn qbd-node");
        let stderr = Log::collect(child.stderr.take().expect("piped stderr"));
        let lines = stdout_lines(&mut child);
        let line = match lines.recv_timeout(READY_TIMEOUT) {
            Ok(Some(line)) => line,
            Ok(None) => return Err(fail(child, stderr, "exited before the ready line".into())),
            Err(_) => {
                let why = format!("no ready line within {READY_TIMEOUT:?}");
                return Err(fail(child, stderr, why));
            }
        };
        let ready = fields(&line, "qbd-node: ready ");
        let field = |key: &str| ready.as_ref().and_then(|f| f.get(key)).cloned();
        match (
            field("id"),
            field("backend"),
            field("l2"),
            field("mac"),
            field("mtu").and_then(|m| m.parse().ok()),
        ) {
            (Some(id), Some(backend), Some(l2), Some(mac), Some(mtu)) => Ok(L2Node {
                child: Some(child),
                id,
                backend,
                l2,
                mac,
                mtu,
                stderr,
            }),
            _ => Err(fail(
                child,
                stderr,
                format!("unexpected first stdout line {line:?}"),
            )),
        }
    }

    /// What the node wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// The process id (of `qbd-node` itself: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node still running").id()
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
        let result = terminate(&mut child);
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

impl Drop for L2Node {
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

/// Counters from a `PREFIX key=N key=N ...` line, looked up by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    line: String,
    values: BTreeMap<String, u64>,
}

impl Stats {
    /// The last line of `log` that starts with `prefix` (e.g. `"qbd-node: stats "`), or `None`.
    /// Keys whose value is not a number are ignored.
    pub fn find(log: &str, prefix: &str) -> Option<Stats> {
        let line = log.lines().rev().find(|l| l.starts_with(prefix))?;
        let values = fields(line, prefix)?
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
            .collect();
        Some(Stats {
            line: line.to_owned(),
            values,
        })
    }

    /// Like [`Stats::find`], panicking with the whole log if there is no such line.
    pub fn expect(log: &str, prefix: &str) -> Stats {
        Stats::find(log, prefix).unwrap_or_else(|| panic!("no {prefix:?} line in:\n{log}"))
    }

    /// The value of `key`; panics (with the line) if it is missing.
    pub fn get(&self, key: &str) -> u64 {
        *self
            .values
            .get(key)
            .unwrap_or_else(|| panic!("no {key}= in {:?}", self.line))
    }

    /// The line the values came from.
    pub fn line(&self) -> &str {
        &self.line
    }
}

/// The `key=value` words after `prefix` in `line` (`None` if the prefix is not there).
pub fn fields(line: &str, prefix: &str) -> Option<BTreeMap<String, String>> {
    let rest = line.trim_end().strip_prefix(prefix)?;
    Some(
        rest.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

/// `aa:bb:cc:dd:ee:ff`, as both daemons print MAC addresses.
pub fn mac_string(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_parse_by_key_and_tolerate_extra_keys() {
        let log = "qbd-node: ready id=n0\nqbd-node: stats requests=5 bad_mac=2 new=x extra=7\n";
        let s = Stats::expect(log, "qbd-node: stats ");
        assert_eq!(
            (s.get("requests"), s.get("bad_mac"), s.get("extra")),
            (5, 2, 7)
        );
        assert!(Stats::find(log, "qbd-master: l2 stats ").is_none());
        let f =
            fields("qbd-node: ready id=n0 l2=eth0 mtu=9000", "qbd-node: ready ").expect("prefix");
        assert_eq!(f.get("mtu").map(String::as_str), Some("9000"));
        assert_eq!(mac_string([0x02, 0, 0xab, 1, 2, 0xff]), "02:00:ab:01:02:ff");
    }
}
