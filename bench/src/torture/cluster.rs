//! The cluster under torture: real `qbd-node` processes (each with its
//! data directory, kept across restarts) and a real `qbd-master` over
//! them, serving NBD on a unix socket the harness reaches from any
//! namespace. Over TCP everything is on 127.0.0.1 with fixed ports (a
//! restarted node comes back where the master expects it); over L2 each
//! node and each of two master "hosts" has a namespace on one bridge,
//! nodes pinned by MAC, optional loss on every link (nftables).
//!
//! Two master hosts (slots 0 and 1, each its own state directory and, on
//! L2, its own namespace and MAC): the "second master" fault starts the
//! other one against the same nodes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use qbd_netlab::{Dup, Lab, Loss, Ns};
use rustix::process::Signal;

use super::config::{Config, Transport};
use crate::e2e::daemon::{Daemon, Ready};
use crate::e2e::segment::IFACE;

/// The export (volume) name.
pub const VOLUME: &str = "torture";
/// The chunk size: small, so faults meet many chunks.
const CHUNK: &str = "256K";
/// How long a daemon may take to be ready (discovery waits included).
const READY: Duration = Duration::from_secs(60);
/// `--discover-timeout` of the L2 master and tools.
const DISCOVER: &str = "3";
/// QBD-L2's EtherType (the drop rules' match).
const ETHERTYPE: u16 = 0x88B5;

/// The daemons' binaries.
#[derive(Debug, Clone)]
pub struct Bins {
    master: PathBuf,
    node: PathBuf,
    qbd: PathBuf,
}

impl Bins {
    /// The binaries next to the running `qbd-bench`.
    pub fn locate() -> Result<Bins, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot locate qbd-bench: {e}"))?;
        let dir = exe.parent().ok_or("qbd-bench has no directory")?;
        let find = |name: &str| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(format!(
                    "{} is missing: build the workspace's binaries with the same profile \
                     as qbd-bench (`cargo build --release --workspace`)",
                    p.display()
                ))
            }
        };
        Ok(Bins {
            master: find("qbd-master")?,
            node: find("qbd-node")?,
            qbd: find("qbd")?,
        })
    }
}

/// One node: its process while up, its directory always.
#[derive(Debug)]
pub struct NodeProc {
    daemon: Option<Daemon>,
    /// Its data directory.
    pub dir: PathBuf,
    /// `127.0.0.1:PORT` (TCP) or its MAC (L2): how the master names it.
    pub name: String,
    ns: Option<Ns>,
    port: u16,
    /// SIGSTOPped now.
    pub stopped: bool,
}

impl NodeProc {
    /// Whether it runs (stopped or not).
    pub fn up(&self) -> bool {
        self.daemon.is_some()
    }
}

/// The namespaces of an L2 cluster.
#[derive(Debug)]
struct Net {
    masters: [Ns; 2],
    /// Loss rules (every host's ingress).
    loss: Vec<Loss>,
    /// Duplication rules (every switch port's egress).
    dup: Vec<Dup>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Cluster {
    /// Its configuration.
    pub cfg: Config,
    bins: Bins,
    work: PathBuf,
    key: PathBuf,
    net: Option<Net>,
    /// The nodes, in placement order.
    pub nodes: Vec<NodeProc>,
    master: Option<Daemon>,
    /// The other master of a takeover, until it replaces `master`.
    rival: Option<Daemon>,
    /// Which master host serves (0 or 1).
    slot: usize,
    /// Stopped (SIGSTOP) master.
    pub master_stopped: bool,
}

impl Cluster {
    /// Creates the directories, the key, the namespaces (L2) and starts the nodes.
    pub fn create(cfg: Config, work: &Path, lab: Option<&mut Lab>) -> Result<Cluster, String> {
        let bins = Bins::locate()?;
        let key = work.join("cluster.key");
        std::fs::write(&key, format!("{}\n", crate::node::random_key().to_hex()))
            .map_err(|e| format!("cannot write {}: {e}", key.display()))?;
        let (net, node_ns) = match (cfg.transport, lab) {
            (Transport::L2, Some(lab)) => {
                let (net, ns) = segment(lab, &cfg)?;
                (Some(net), ns.into_iter().map(Some).collect())
            }
            (Transport::L2, None) => return Err("QBD-L2 needs root (network namespaces)".into()),
            (Transport::Tcp, _) => (None, (0..cfg.nodes).map(|_| None).collect::<Vec<_>>()),
        };
        let mut nodes = Vec::new();
        for (i, ns) in node_ns.into_iter().enumerate() {
            let dir = work.join(format!("node{i}"));
            std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
            let port = free_port()?;
            let name = match &ns {
                Some(ns) => mac_text(ns.mac(IFACE)),
                None => format!("127.0.0.1:{port}"),
            };
            nodes.push(NodeProc {
                daemon: None,
                dir,
                name,
                ns,
                port,
                stopped: false,
            });
        }
        let mut c = Cluster {
            cfg,
            bins,
            work: work.to_path_buf(),
            key,
            net,
            nodes,
            master: None,
            rival: None,
            slot: 0,
            master_stopped: false,
        };
        for i in 0..c.nodes.len() {
            c.start_node(i)?;
        }
        Ok(c)
    }

    /// Starts node `i` (again) on its directory.
    pub fn start_node(&mut self, i: usize) -> Result<(), String> {
        let n = &self.nodes[i];
        let mut cmd = match &n.ns {
            Some(ns) => ns.command(&self.bins.node),
            None => Command::new(&self.bins.node),
        };
        cmd.arg("--data")
            .arg(&n.dir)
            .args(["--id", &format!("n{i}")]);
        cmd.arg("--cluster-key").arg(&self.key);
        match &n.ns {
            Some(_) => cmd.args(["--iface", IFACE]),
            None => cmd.args(["--listen", &format!("127.0.0.1:{}", n.port)]),
        };
        let name = format!("qbd-node n{i}");
        let (d, _) = Daemon::start(&name, cmd, Ready::Line("qbd-node: ready "), READY)?;
        let n = &mut self.nodes[i];
        n.daemon = Some(d);
        n.stopped = false;
        Ok(())
    }

    /// Appends a finished daemon's stderr to `logs/<name>.log`.
    fn archive(&self, name: &str, d: &Daemon) {
        use std::io::Write;
        let dir = self.work.join("logs");
        let _ = std::fs::create_dir_all(&dir);
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{name}.log")))
        {
            let _ = writeln!(f, "----- {name} (ended) -----\n{}", d.stderr_text());
        }
    }

    /// SIGKILLs node `i`.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut d) = self.nodes[i].daemon.take() {
            d.kill();
            self.archive(&format!("node{i}"), &d);
        }
        self.nodes[i].stopped = false;
    }

    /// SIGSTOP (`stop`) or SIGCONT node `i`.
    pub fn pause_node(&mut self, i: usize, stop: bool) {
        let sig = if stop { Signal::STOP } else { Signal::CONT };
        if let Some(d) = &self.nodes[i].daemon {
            d.signal(sig);
        }
        self.nodes[i].stopped = stop;
    }

    /// The NBD socket of master host `slot`.
    pub fn socket_of(&self, slot: usize) -> PathBuf {
        self.work.join(format!("master{slot}.sock"))
    }

    /// The serving master's NBD socket.
    pub fn socket(&self) -> PathBuf {
        self.socket_of(self.slot)
    }

    /// Whether a master process runs.
    pub fn master_up(&mut self) -> bool {
        self.master.as_mut().is_some_and(Daemon::running)
    }

    /// Starts the master on its host (slot) and waits for its ready line.
    pub fn start_master(&mut self) -> Result<(), String> {
        let d = self.spawn_master(self.slot)?;
        self.master = Some(d);
        self.master_stopped = false;
        Ok(())
    }

    fn spawn_master(&self, slot: usize) -> Result<Daemon, String> {
        let socket = self.socket_of(slot);
        let _ = std::fs::remove_file(&socket);
        let state = self.work.join(format!("master{slot}-state"));
        std::fs::create_dir_all(&state).map_err(|e| format!("mkdir {}: {e}", state.display()))?;
        let mut cmd = self.command(&self.bins.master, slot);
        cmd.args(["--volume", VOLUME, "--size", &self.cfg.size.to_string()])
            .args(["--redundancy", self.cfg.redundancy, "--chunk-size", CHUNK])
            .arg("--state")
            .arg(&state)
            .args(["--listen", "127.0.0.1:0", "--socket"])
            .arg(&socket);
        self.backend_args(&mut cmd);
        let name = format!("qbd-master {slot}");
        let (d, _) = Daemon::start(&name, cmd, Ready::Line("qbd-master: ready "), READY)?;
        Ok(d)
    }

    /// SIGKILLs the master.
    pub fn kill_master(&mut self) {
        if let Some(mut d) = self.master.take() {
            d.kill();
            self.archive(&format!("master{}", self.slot), &d);
        }
        self.master_stopped = false;
    }

    /// Stops the master gracefully (SIGTERM).
    pub fn stop_master(&mut self) {
        if let Some(mut d) = self.master.take() {
            if self.master_stopped {
                d.signal(Signal::CONT);
            }
            d.stop();
            self.archive(&format!("master{}", self.slot), &d);
        }
        self.master_stopped = false;
    }

    /// SIGSTOP (`stop`) or SIGCONT the master.
    pub fn pause_master(&mut self, stop: bool) {
        let sig = if stop { Signal::STOP } else { Signal::CONT };
        if let Some(d) = &self.master {
            d.signal(sig);
        }
        self.master_stopped = stop;
    }

    /// Starts a master on the other host against the same nodes; returns
    /// whether it became ready (its error otherwise).
    pub fn start_rival(&mut self) -> Result<(), String> {
        let d = self.spawn_master(1 - self.slot)?;
        self.rival = Some(d);
        Ok(())
    }

    /// The rival took over: it serves from now on, the old master is killed.
    pub fn promote_rival(&mut self) {
        self.kill_master();
        self.master = self.rival.take();
        self.slot = 1 - self.slot;
    }

    /// The rival's socket.
    pub fn rival_socket(&self) -> PathBuf {
        self.socket_of(1 - self.slot)
    }

    /// The master's stderr so far (for a failure report).
    pub fn master_log(&self) -> String {
        self.master
            .as_ref()
            .map(Daemon::stderr_text)
            .unwrap_or_default()
    }

    /// Runs `qbd SUBCOMMAND ARGS <backend flags>` from the master's host;
    /// returns (success, stdout + stderr).
    pub fn qbd(&self, sub: &str, args: &[&str]) -> (bool, String) {
        let mut cmd = self.command(&self.bins.qbd, self.slot);
        cmd.arg(sub).args(["--volume", VOLUME]).args(args);
        self.backend_args(&mut cmd);
        match cmd.output() {
            Ok(out) => (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ),
            Err(e) => (false, format!("cannot run qbd {sub}: {e}")),
        }
    }

    fn command(&self, program: &Path, slot: usize) -> Command {
        match &self.net {
            Some(net) => net.masters[slot].command(program),
            None => Command::new(program),
        }
    }

    fn backend_args(&self, cmd: &mut Command) {
        cmd.arg("--cluster-key").arg(&self.key);
        if self.net.is_some() {
            cmd.args(["--transport", "l2", "--iface", IFACE])
                .args(["--discover-timeout", DISCOVER]);
        }
        for n in &self.nodes {
            cmd.args(["--node", &n.name]);
        }
    }

    /// For the forger (L2 only): the spare master host, node `i`'s host,
    /// and every node's MAC.
    pub fn hostile_hosts(&self, i: usize) -> Result<(Ns, Ns, Vec<[u8; 6]>), String> {
        let net = self.net.as_ref().ok_or("forged frames need QBD-L2")?;
        let node = self.nodes[i]
            .ns
            .clone()
            .ok_or("an L2 node has a namespace")?;
        let macs = self
            .nodes
            .iter()
            .filter_map(|n| n.ns.as_ref().map(|ns| ns.mac(IFACE)))
            .collect();
        Ok((net.masters[1 - self.slot].clone(), node, macs))
    }

    /// The cluster key.
    pub fn key(&self) -> Result<qbd_core::proto::ClusterKey, String> {
        qbd_core::proto::ClusterKey::load(&self.key).map_err(|e| e.to_string())
    }

    /// The run's directory.
    pub fn work(&self) -> &Path {
        &self.work
    }

    /// Every daemon's stderr, for the kept logs.
    pub fn logs(&self) -> Vec<(String, String)> {
        let mut out = vec![("master".to_string(), self.master_log())];
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(d) = &n.daemon {
                out.push((format!("node{i}"), d.stderr_text()));
            }
        }
        out
    }

    /// Stops everything: masters first, then nodes (continued if stopped).
    pub fn shutdown(&mut self) {
        if let Some(mut r) = self.rival.take() {
            r.kill();
            self.archive(&format!("master{}", 1 - self.slot), &r);
        }
        self.stop_master();
        for i in 0..self.nodes.len() {
            if self.nodes[i].stopped {
                self.pause_node(i, false);
            }
            if let Some(mut d) = self.nodes[i].daemon.take() {
                d.stop();
                self.archive(&format!("node{i}"), &d);
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Two master namespaces and one per node on a bridge; `cfg.loss` percent
/// of QBD-L2 frames dropped at every host's ingress, `cfg.dup` percent sent
/// twice by every switch port.
fn segment(lab: &mut Lab, cfg: &Config) -> Result<(Net, Vec<Ns>), String> {
    let masters = [lab.namespace(), lab.namespace()];
    let node_ns: Vec<Ns> = (0..cfg.nodes).map(|_| lab.namespace()).collect();
    let hosts: Vec<&Ns> = masters.iter().chain(&node_ns).collect();
    let switch = lab.switch(&hosts, 9000);
    let mut loss = Vec::new();
    if cfg.loss > 0 {
        for ns in &hosts {
            loss.push(Loss::install(ns, IFACE, ETHERTYPE, cfg.loss)?);
        }
    }
    let mut dup = Vec::new();
    if cfg.dup > 0 {
        for port in 0..hosts.len() {
            dup.push(Dup::install(
                &switch,
                &format!("p{port}"),
                ETHERTYPE,
                cfg.dup,
            )?);
        }
    }
    Ok((Net { masters, loss, dup }, node_ns))
}

/// Frames (seen, dropped, duplicated) by the segment's rules so far.
pub fn frame_counts(c: &Cluster) -> Option<(u64, u64, u64)> {
    let net = c.net.as_ref()?;
    let mut seen = 0;
    let mut dropped = 0;
    for l in &net.loss {
        seen += l.seen().map(|c| c.packets).unwrap_or(0);
        dropped += l.dropped().map(|c| c.packets).unwrap_or(0);
    }
    let dup = net
        .dup
        .iter()
        .map(|d| d.duplicated().map(|c| c.packets).unwrap_or(0))
        .sum();
    Some((seen, dropped, dup))
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot find a free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}
