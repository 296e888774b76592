//! Starting the systems measured, each serving one NBD export of the
//! run's size with its data on tmpfs:
//!
//! - `qbd-tcp`: as many `qbd-node`s as the redundancy has parts, each
//!   with its own directory, and a `qbd-master` over them (`--node ADDR
//!   ...`, ports from the nodes' ready lines), NBD on 127.0.0.1. Either
//!   all on 127.0.0.1, or on a [`Segment`] with IPv4 addresses: a
//!   namespace per node and one for the master (and fio), on a bridge.
//! - `qbd-l2`: the same over QBD-L2 on a [`Segment`]: nodes serve
//!   `--iface eth0` with no IP, the master discovers them and serves NBD
//!   on 127.0.0.1 inside its namespace, where fio runs too.
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

use std::net::Ipv4Addr;

use qbd_netlab::{Lab, Ns};

use super::args::{Kind, parts};
use super::daemon::{Daemon, Ready, field};
use super::segment::{IFACE, Segment};
use super::tools::Tools;
use crate::report::Net;

/// How long a daemon may take to be ready (an L2 master waits up to 10 s
/// for discovery).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
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
    /// Returns the master's last `qbd-master: l2 stats ...` line, if any.
    pub fn stop(mut self) -> Option<String> {
        let mut stats = None;
        if let Some(mut m) = self.master.take() {
            m.stop();
            let text = m.stderr_text();
            let line = text
                .lines()
                .rev()
                .find(|l| l.starts_with("qbd-master: l2 stats "));
            stats = line.map(|l| format!("{}: {l}", self.label()));
        }
        self.nodes.iter_mut().for_each(Daemon::stop);
        stats
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

/// Where a `qbd-tcp` target's nodes talk to its master.
#[derive(Debug)]
pub enum TcpLink<'a> {
    /// Everything on 127.0.0.1 in the bench's namespace.
    Loopback,
    /// A segment like `qbd-l2`'s, with IPv4 on the links: (lab, MTU, subnet).
    Bridge(&'a mut Lab, u32, u8),
}

/// qbd-master over `qbd-node`s reached by TCP over `link`.
pub fn qbd_tcp(ctx: &Ctx, redundancy: &str, link: TcpLink<'_>) -> Result<Target, String> {
    let tag = format!("tcp-{}", redundancy.replace([':', '+'], "-"));
    let node_bin = ctx.bin(&ctx.tools.node, "qbd-node")?;
    let n = parts(redundancy)?;
    let (seg, listen, net) = match link {
        TcpLink::Loopback => {
            let net = Net {
                link: "loopback",
                mtu: crate::plan::loopback_mtu(),
            };
            (None, vec![Ipv4Addr::LOCALHOST; n], net)
        }
        TcpLink::Bridge(lab, mtu, subnet) => {
            let seg = Segment::new(lab, n, mtu);
            let addrs = seg.address(subnet)?;
            let net = Net {
                link: "bridge",
                mtu: Some(mtu),
            };
            (Some(seg), addrs, net)
        }
    };
    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for (i, ip) in listen.iter().enumerate() {
        crate::interrupt::check()?;
        let mut cmd = match &seg {
            Some(seg) => seg.nodes[i].command(&node_bin),
            None => Command::new(&node_bin),
        };
        cmd.arg("--data")
            .arg(ctx.dir(&format!("{tag}-n{i}"))?)
            .args(["--listen", &format!("{ip}:0"), "--id", &format!("n{i}")])
            .arg("--cluster-key")
            .arg(ctx.key);
        let name = format!("qbd-node n{i} ({tag})");
        let (node, line) =
            Daemon::start(&name, cmd, Ready::Line("qbd-node: ready "), READY_TIMEOUT)?;
        let addr = field(&line, "tcp").ok_or(format!("{name}: no tcp= in {line:?}"))?;
        addrs.push(addr.to_owned());
        nodes.push(node);
    }
    let master_bin = ctx.bin(&ctx.tools.master, "qbd-master")?;
    let mut cmd = match &seg {
        Some(seg) => seg.master.command(master_bin),
        None => Command::new(master_bin),
    };
    ctx.master_args(&mut cmd, redundancy, &tag)?;
    for a in &addrs {
        cmd.args(["--node", a]);
    }
    let (master, addr) = start_master(cmd, &tag)?;
    Ok(Target {
        kind: Kind::QbdTcp,
        redundancy: Some(redundancy.to_owned()),
        net,
        uri: format!("nbd://{addr}/{VOLUME}"),
        ns: seg.map(|s| s.master),
        master: Some(master),
        nodes,
    })
}

/// qbd-master over `qbd-node`s on an L2 segment of namespaces from `lab`.
pub fn qbd_l2(ctx: &Ctx, lab: &mut Lab, redundancy: &str, mtu: u32) -> Result<Target, String> {
    let tag = format!("l2-{}", redundancy.replace([':', '+'], "-"));
    let node_bin = ctx.bin(&ctx.tools.node, "qbd-node")?;
    let seg = Segment::new(lab, parts(redundancy)?, mtu);
    let mut nodes = Vec::new();
    for (i, ns) in seg.nodes.iter().enumerate() {
        crate::interrupt::check()?;
        let mut cmd = ns.command(&node_bin);
        cmd.arg("--data")
            .arg(ctx.dir(&format!("{tag}-n{i}"))?)
            .args(["--iface", IFACE, "--id", &format!("n{i}")])
            .arg("--cluster-key")
            .arg(ctx.key);
        let name = format!("qbd-node n{i} ({tag})");
        let ready = Ready::Line("qbd-node: ready ");
        nodes.push(Daemon::start(&name, cmd, ready, READY_TIMEOUT)?.0);
    }
    let mut cmd = seg
        .master
        .command(ctx.bin(&ctx.tools.master, "qbd-master")?);
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
        ns: Some(seg.master),
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
