//! The transport suite between two network namespaces joined by a veth
//! pair: the node in namespace B, the client (every target) in A.
//!
//! - Per MTU, [`measure_at`] makes a fresh pair of namespaces from the
//!   run's [`Lab`] (`eth0` on both sides, at that MTU), gives the two ends
//!   the addresses [`CLIENT_ADDR`] and [`NODE_ADDR`] (only there: these
//!   interfaces exist only in namespaces the bench made), starts an
//!   in-process node in B that serves TCP on its address and QBD-L2 on its
//!   `eth0`, then runs the client in A: its tokio runtime is built on a
//!   thread inside A, so every socket it opens (the TCP connection, the
//!   L2 link's AF_PACKET socket) belongs to A.
//! - Both transports reach the same node, so they share one bench volume
//!   (see [`crate::volume`]), and the rounds alternate them case by case.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use qbd_core::proto::ClusterKey;
use qbd_netlab::{Lab, Ns};
use qbd_transport_l2::engine::Config;
use qbd_transport_l2::serve::ServeOptions;
use qbd_transport_l2::{L2Link, LinkOptions};

use crate::cli::{TargetKind, Timing, TransportArgs};
use crate::node::{LocalNode, NodeOptions};
use crate::report::Net;
use crate::transport::{Conn, Measured, client_runtime, connect_tcp, measure, prepare, spinners};

/// The interface on both sides of the pair.
pub const IFACE: &str = "eth0";
/// The client end's address (namespace A).
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// The node end's address (namespace B).
pub const NODE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
/// How long L2 discovery waits for the node.
const DISCOVERY: Duration = Duration::from_secs(5);

/// A lab for the suite, or `None` (after `SKIPPED: ...` on stdout) when
/// namespaces cannot be made here.
pub fn lab() -> Option<Lab> {
    Lab::new("qbd-bench transport")
}

/// Runs every case of `kinds` over a fresh veth pair at `mtu`.
pub fn measure_at(
    lab: &mut Lab,
    mtu: u32,
    args: &TransportArgs,
    kinds: &[TargetKind],
    cases: &[(crate::cli::Op, u32)],
    timing: Timing,
) -> Result<Measured, String> {
    let (a, b) = lab.pair(mtu);
    address(&a, CLIENT_ADDR)?;
    address(&b, NODE_ADDR)?;
    let serve_l2 = kinds.iter().any(|k| k.is_l2()).then(|| serve_options(args));
    let opts = NodeOptions {
        threads: args.node_workers(),
        listen: SocketAddr::from((NODE_ADDR, 0)),
        l2: serve_l2,
    };
    let node = b.run(|| LocalNode::start(opts))?;
    let (addr, key) = (node.addr(), node.key());
    let spinners = spinners(args, &node);
    let net = Net {
        link: "veth",
        mtu: Some(mtu),
    };
    let mut measured = a.run(|| {
        let rt = client_runtime(args)?;
        let measured = rt.block_on(async {
            let mut conns = Vec::new();
            let mut link = None;
            for &kind in kinds {
                conns.push(match kind {
                    TargetKind::Tcp => connect_tcp(addr, key.clone()).await?,
                    kind => {
                        let l = match &link {
                            Some(l) => Arc::clone(l),
                            None => open_link(args).await?,
                        };
                        let conn = connect_l2(&l, kind, key.clone(), mtu).await?;
                        link = Some(l);
                        conn
                    }
                });
            }
            let targets = prepare(conns, args.blocks).await?;
            let mut m = measure(&targets, cases, timing, net, &spinners).await?;
            if let Some(l) = &link {
                m.notes.push(link_note(mtu, l));
            }
            Ok::<_, String>(m)
        });
        drop(rt);
        measured
    })?;
    if let Some(s) = node.l2_stats() {
        measured.notes.push(format!(
            "mtu {mtu}: l2 node: engine {:?}; poller blocks {} syscalls {} rx {} tx {}; sessions {}",
            s.engine,
            s.poller.blocks,
            s.poller.socket.syscalls,
            s.poller.socket.rx_frames,
            s.poller.socket.tx_frames,
            s.sessions
        ));
    }
    Ok(measured)
}

/// `addr/24` on `eth0` of `ns`.
fn address(ns: &Ns, addr: Ipv4Addr) -> Result<(), String> {
    ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", IFACE])
        .map(|_| ())
        .map_err(|e| format!("addressing {IFACE} in {}: {e}", ns.name()))
}

/// The L2 server's options: the transport's defaults, but the spin and
/// pinning given on the command line.
fn serve_options(args: &TransportArgs) -> ServeOptions {
    let mut opts = ServeOptions::new(IFACE);
    if let Some(spin) = args.l2_spin() {
        opts.poller.spin = spin;
    }
    tune_engine(args, &mut opts.engine);
    opts.poller.cpu = args.l2_pin.get(1).copied();
    opts
}

/// The diagnosis flags' engine settings (both ends get the same).
fn tune_engine(args: &TransportArgs, engine: &mut Config) {
    if let Some(us) = args.l2_min_rto_us {
        engine.min_rto = Duration::from_micros(us);
        engine.initial_rto = engine.initial_rto.max(engine.min_rto);
    }
    if let Some(frames) = args.l2_min_cwnd {
        engine.min_cwnd = frames.max(1);
    }
    engine.bundle = !args.l2_no_bundle;
}

/// Opens the link in the calling thread's namespace (shared by the L2
/// targets, one polling thread).
async fn open_link(args: &TransportArgs) -> Result<Arc<L2Link>, String> {
    let mut opts = LinkOptions::new(IFACE);
    if let Some(spin) = args.l2_spin() {
        opts.poller.spin = spin;
    }
    tune_engine(args, &mut opts.engine);
    opts.poller.cpu = args.l2_pin.first().copied();
    L2Link::open(opts).map_err(|e| format!("L2 link on {IFACE}: {e}"))
}

/// Discovers the node on `link` and connects to it (a session of its
/// own for each target); warns if the session's MTU is not the link's.
async fn connect_l2(
    link: &Arc<L2Link>,
    kind: TargetKind,
    key: ClusterKey,
    mtu: u32,
) -> Result<Conn, String> {
    let found = link.discover(&[], 1, DISCOVERY, None).await;
    let node = found.first().ok_or_else(|| {
        format!(
            "no node answered L2 discovery on {IFACE} within {} s",
            DISCOVERY.as_secs()
        )
    })?;
    let t = link
        .connect(node, key, "qbd-bench")
        .await
        .map_err(|e| format!("L2 connect to {}: {e}", node.mac))?;
    if t.mtu() != mtu as usize {
        eprintln!(
            "qbd-bench: warning: the L2 session uses MTU {} on a {mtu}-byte link",
            t.mtu()
        );
    }
    Ok(Conn {
        kind,
        backend: t.node().backend,
        t: Arc::clone(&t) as Arc<dyn qbd_core::transport::Transport>,
        l2: Some(t),
    })
}

/// The master link's counters, for the report.
fn link_note(mtu: u32, link: &L2Link) -> String {
    let s = link.stats();
    format!(
        "mtu {mtu}: l2 master: engine {:?}; poller blocks {} syscalls {} rx {} tx {}",
        s.engine,
        s.poller.blocks,
        s.poller.socket.syscalls,
        s.poller.socket.rx_frames,
        s.poller.socket.tx_frames
    )
}
