//! Starting the systems measured, each serving one NBD export of the
//! run's size with its data on tmpfs:
//!
//! - `qbd-tcp`: as many `qbd-node`s as the redundancy has parts, each on
//!   127.0.0.1 (port from its ready line) with its own directory, and a
//!   `qbd-master` over them (`--node ADDR ...`), NBD on 127.0.0.1.
//! - `qbd-l2`: the same over QBD-L2: a namespace per node and one for the
//!   master, each with an `eth0` on a bridge (its own namespace); nodes
//!   serve `--iface eth0` with no IP, the master discovers them and
//!   serves NBD on 127.0.0.1 inside its namespace, where fio runs too.
//! - `nbdkit` (file plugin) and `qemu-nbd` on a raw file, on 127.0.0.1 at
//!   a port the bench picked (bound and released: a tiny race with other
//!   programs picking ports, which only fails the start).
//!
//! Processes stop in field order when a [`Target`] drops: the master,
//! then its nodes. Namespaces belong to the run's `Lab`, which outlives
//! every target.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use qbd_netlab::{Lab, Ns};

use super::args::{Kind, parts};
use super::daemon::{Daemon, Ready, field};
use super::tools::Tools;
use crate::report::Net;

/// How long a daemon may take to be ready (an L2 master waits up to 10 s
/// for discovery).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The interface of every host on the L2 segment.
const IFACE: &str = "eth0";
/// The export name of the QBD volumes.
const VOLUME: &str = "bench";

/// One system serving the export.
#[derive(Debug)]
pub struct Target {
    /// Which system.
    pub kind: Kind,
    /// The QBD volume's redundancy.
    pub redundancy: Option<String>,
    /// Where its traffic goes.
    pub net: Net,
    /// The export's NBD URI.
    pub uri: String,
    /// The namespace fio must run in (the L2 master's), or none.
    pub ns: Option<Ns>,
    master: Option<Daemon>,
    nodes: Vec<Daemon>,
}

impl Target {
    /// The last lines the master (or peer) wrote to stderr, for errors.
    pub fn stderr_tail(&self) -> String {
        let text = self
            .master
            .as_ref()
            .map(Daemon::stderr_text)
            .unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(8).collect();
        if tail.is_empty() {
            return String::new();
        }
        let lines: Vec<&str> = tail.into_iter().rev().collect();
        format!("\n{} stderr ends:\n{}", self.label(), lines.join("\n"))
    }

    /// Stops the master (or peer), then the nodes.
    pub fn stop(mut self) {
        if let Some(mut m) = self.master.take() {
            m.stop();
        }
        self.nodes.iter_mut().for_each(Daemon::stop);
    }

    /// `qbd-tcp replicate:3`, `nbdkit`, ...
    pub fn label(&self) -> String {
        match &self.redundancy {
            Some(r) => format!("{} {r}", self.kind.name()),
            None => self.kind.name().to_owned(),
        }
    }
}

/// What starting a target needs.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The programs.
    pub tools: &'a Tools,
    /// The run's tmpfs directory.
    pub work: &'a Path,
    /// The cluster key file.
    pub key: &'a Path,
    /// The export size, bytes.
    pub size: u64,
}

impl Ctx<'_> {
    fn dir(&self, name: &str) -> Result<PathBuf, String> {
        let d = self.work.join(name);
        std::fs::create_dir_all(&d).map_err(|e| format!("cannot make {}: {e}", d.display()))?;
        Ok(d)
    }

    fn bin(&self, b: &Option<PathBuf>, name: &str) -> Result<PathBuf, String> {
        b.clone().ok_or_else(|| format!("{name} was not located"))
    }

    /// The master's flags common to both transports.
    fn master_args(&self, cmd: &mut Command, redundancy: &str, tag: &str) -> Result<(), String> {
        cmd.args(["--volume", VOLUME, "--size", &self.size.to_string()])
            .args(["--redundancy", redundancy, "--cluster-key"])
            .arg(self.key)
            .arg("--state")
            .arg(self.dir(&format!("{tag}-state"))?)
            .args(["--listen", "127.0.0.1:0"]);
        Ok(())
    }
}

/// qbd-master over `qbd-node`s on 127.0.0.1.
pub fn qbd_tcp(ctx: &Ctx, redundancy: &str) -> Result<Target, String> {
    let tag = format!("tcp-{}", redundancy.replace([':', '+'], "-"));
    let node_bin = ctx.bin(&ctx.tools.node, "qbd-node")?;
    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..parts(redundancy)? {
        crate::interrupt::check()?;
        let mut cmd = Command::new(&node_bin);
        cmd.arg("--data")
            .arg(ctx.dir(&format!("{tag}-n{i}"))?)
            .args(["--listen", "127.0.0.1:0", "--id", &format!("n{i}")])
            .arg("--cluster-key")
            .arg(ctx.key);
        let name = format!("qbd-node n{i} ({tag})");
        let (node, line) =
            Daemon::start(&name, cmd, Ready::Line("qbd-node: ready "), READY_TIMEOUT)?;
        addrs.push(
            field(&line, "tcp")
                .ok_or(format!("{name}: no tcp= in {line:?}"))?
                .to_owned(),
        );
        nodes.push(node);
    }
    let mut cmd = Command::new(ctx.bin(&ctx.tools.master, "qbd-master")?);
    ctx.master_args(&mut cmd, redundancy, &tag)?;
    for a in &addrs {
        cmd.args(["--node", a]);
    }
    let (master, addr) = start_master(cmd, &tag)?;
    let net = Net {
        link: "loopback",
        mtu: crate::plan::loopback_mtu(),
    };
    Ok(Target {
        kind: Kind::QbdTcp,
        redundancy: Some(redundancy.to_owned()),
        net,
        uri: format!("nbd://{addr}/{VOLUME}"),
        ns: None,
        master: Some(master),
        nodes,
    })
}

/// qbd-master over `qbd-node`s on an L2 segment of namespaces from `lab`.
pub fn qbd_l2(ctx: &Ctx, lab: &mut Lab, redundancy: &str, mtu: u32) -> Result<Target, String> {
    let tag = format!("l2-{}", redundancy.replace([':', '+'], "-"));
    let node_bin = ctx.bin(&ctx.tools.node, "qbd-node")?;
    let master_ns = lab.namespace();
    let node_ns: Vec<Ns> = (0..parts(redundancy)?).map(|_| lab.namespace()).collect();
    let hosts: Vec<&Ns> = std::iter::once(&master_ns).chain(&node_ns).collect();
    lab.switch(&hosts, mtu);
    let mut nodes = Vec::new();
    for (i, ns) in node_ns.iter().enumerate() {
        crate::interrupt::check()?;
        let mut cmd = ns.command(&node_bin);
        cmd.arg("--data")
            .arg(ctx.dir(&format!("{tag}-n{i}"))?)
            .args(["--iface", IFACE, "--id", &format!("n{i}")])
            .arg("--cluster-key")
            .arg(ctx.key);
        let name = format!("qbd-node n{i} ({tag})");
        nodes.push(Daemon::start(&name, cmd, Ready::Line("qbd-node: ready "), READY_TIMEOUT)?.0);
    }
    let mut cmd = master_ns.command(ctx.bin(&ctx.tools.master, "qbd-master")?);
    cmd.args(["--transport", "l2", "--iface", IFACE]);
    ctx.master_args(&mut cmd, redundancy, &tag)?;
    let (master, addr) = start_master(cmd, &tag)?;
    Ok(Target {
        kind: Kind::QbdL2,
        redundancy: Some(redundancy.to_owned()),
        net: Net {
            link: "bridge",
            mtu: Some(mtu),
        },
        uri: format!("nbd://{addr}/{VOLUME}"),
        ns: Some(master_ns),
        master: Some(master),
        nodes,
    })
}

fn start_master(cmd: Command, tag: &str) -> Result<(Daemon, String), String> {
    crate::interrupt::check()?;
    let name = format!("qbd-master ({tag})");
    let (master, line) =
        Daemon::start(&name, cmd, Ready::Line("qbd-master: ready "), READY_TIMEOUT)?;
    let addr = field(&line, "tcp").ok_or(format!("{name}: no tcp= in {line:?}"))?;
    Ok((master, addr.to_owned()))
}

/// A peer (nbdkit or qemu-nbd) serving a raw tmpfs file.
pub fn peer(ctx: &Ctx, kind: Kind) -> Result<Target, String> {
    crate::interrupt::check()?;
    let name = kind.name();
    let image = ctx.work.join(format!("{name}.img"));
    let file = std::fs::File::create(&image)
        .map_err(|e| format!("cannot create {}: {e}", image.display()))?;
    file.set_len(ctx.size)
        .map_err(|e| format!("cannot size {}: {e}", image.display()))?;
    let pid_file = ctx.work.join(format!("{name}.pid"));
    let port = free_port()?.to_string();
    let cmd = match kind {
        Kind::Nbdkit => {
            let mut cmd = Command::new(ctx.bin(&ctx.tools.nbdkit, "nbdkit")?);
            cmd.args([
                "-f",
                "--exit-with-parent",
                "-i",
                "127.0.0.1",
                "-p",
                &port,
                "-P",
            ])
            .arg(&pid_file)
            .arg("file")
            .arg(&image);
            cmd
        }
        _ => {
            let mut cmd = Command::new(ctx.bin(&ctx.tools.qemu_nbd, "qemu-nbd")?);
            cmd.args(["-f", "raw", "-b", "127.0.0.1", "-p", &port, "-t", "-e", "8"])
                .arg(format!("--pid-file={}", pid_file.display()))
                .arg(&image);
            cmd
        }
    };
    let (daemon, _) = Daemon::start(name, cmd, Ready::PidFile(&pid_file), READY_TIMEOUT)?;
    Ok(Target {
        kind,
        redundancy: None,
        net: Net {
            link: "loopback",
            mtu: crate::plan::loopback_mtu(),
        },
        uri: format!("nbd://127.0.0.1:{port}/"),
        ns: None,
        master: Some(daemon),
        nodes: Vec::new(),
    })
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot find a free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}
