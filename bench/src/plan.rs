//! What `qbd-bench transport` measures where: the place (a remote node,
//! loopback, or veth between namespaces the bench makes) and the targets,
//! chosen from the flags and the privileges; and the report's header,
//! which says so.

use std::net::{SocketAddr, ToSocketAddrs};

use qbd_core::proto::ClusterKey;
use qbd_netlab::Lab;
use qbd_transport_l2::af_packet::PollerConfig;

use crate::cli::{TargetKind, Timing, TransportArgs, Wait};
use crate::netns;
use crate::volume::BLOCK;

/// Where the traffic goes.
#[derive(Debug)]
pub enum Place {
    /// A `--node`, over TCP.
    Remote {
        /// Its address.
        addr: SocketAddr,
        /// The cluster key.
        key: ClusterKey,
    },
    /// An in-process node on 127.0.0.1, over TCP; `note` says why, if
    /// the bench fell back to it.
    Loopback {
        /// Why, when the bench fell back to it.
        note: Option<String>,
    },
    /// Namespaces joined by veth, one pair per MTU.
    Veth(Lab),
}

/// Where to measure and which targets, from the flags and the privileges.
pub fn choose(args: &TransportArgs) -> Result<(Place, Vec<TargetKind>), String> {
    let mut kinds: Vec<TargetKind> = Vec::new();
    for &k in &args.target {
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    let wants_l2 = kinds.iter().any(|k| k.is_l2());
    if let (Some(node), Some(file)) = (&args.node, &args.cluster_key) {
        if wants_l2 {
            return Err(
                "--node is measured over TCP only; L2 rows need the bench's own \
                        namespaces (drop --node)"
                    .into(),
            );
        }
        let place = Place::Remote {
            addr: resolve(node)?,
            key: read_key(file)?,
        };
        return Ok((place, vec![TargetKind::Tcp]));
    }
    if args.loopback {
        if wants_l2 {
            return Err("--loopback measures TCP only (L2 needs the veth namespaces)".into());
        }
        return Ok((Place::Loopback { note: None }, vec![TargetKind::Tcp]));
    }
    match netns::lab() {
        Some(lab) => {
            if kinds.is_empty() {
                kinds = vec![TargetKind::Tcp, TargetKind::L2, TargetKind::L2Loop];
            }
            Ok((Place::Veth(lab), kinds))
        }
        None if wants_l2 => Err("L2 targets need network namespaces: run as root \
                                  (CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN)"
            .into()),
        None => {
            let note = "no network namespaces here (not root): measuring TCP over loopback \
                        only, no L2 rows; run as root for both transports over veth";
            eprintln!("qbd-bench: note: {note}");
            let place = Place::Loopback {
                note: Some(note.into()),
            };
            Ok((place, vec![TargetKind::Tcp]))
        }
    }
}

/// The report's header: what ran where, with which threads and timing.
pub fn header(args: &TransportArgs, place: &Place, kinds: &[TargetKind], timing: Timing) -> String {
    let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    let mut s = format!(
        "# qbd-bench transport: node round trips over {} (one connection per target; QD n = n \
         requests in flight: n tokio tasks each looping call().await through the Transport \
         trait, or for l2-loop a closed loop on the L2 polling thread)\n",
        names.join(" and ")
    );
    match place {
        Place::Remote { addr, .. } => s.push_str(&format!("node: qbd-node at {addr}\n")),
        Place::Loopback { note } => {
            s.push_str("node: in-process qbd-node on 127.0.0.1 (data on /dev/shm)\n");
            if let Some(note) = note {
                s.push_str(&format!("note: {note}\n"));
            }
        }
        Place::Veth(_) => {
            let mtus: Vec<String> = args.mtu.iter().map(u32::to_string).collect();
            s.push_str(&format!(
                "link: veth between two namespaces the bench made, MTU {}: node in one \
                 (in-process qbd-node, data on /dev/shm; TCP on {}, QBD-L2 on {}), \
                 client in the other ({}); targets alternated case by case\n",
                mtus.join(" then "),
                netns::NODE_ADDR,
                netns::IFACE,
                netns::CLIENT_ADDR
            ));
        }
    }
    s.push_str(&format!("waiting: --wait {}", args.wait.name()));
    s.push_str(match args.wait {
        Wait::Product => " (as shipped: tokio workers block in epoll)\n",
        Wait::Block => " (every idle thread blocks at once)\n",
        Wait::Spin => {
            " (socket waiters busy-poll: L2 polling threads as shipped; in TCP cases \
             spinner tasks keep the client's and the node's tokio worker polling epoll; \
             one worker per runtime)\n"
        }
    });
    if kinds.iter().any(|k| k.is_l2()) {
        let spin = args
            .l2_spin()
            .unwrap_or(PollerConfig::default().spin)
            .as_micros();
        let pin = match args.l2_pin.as_slice() {
            [c, n] => format!("client poller on CPU {c}, node poller on CPU {n}"),
            _ => "not pinned".into(),
        };
        s.push_str(&format!(
            "l2 pollers: spin {spin} µs then block; {pin}; tokio threads not pinned\n"
        ));
        if let Some(us) = args.l2_min_rto_us {
            s.push_str(&format!("l2 engines (diagnosis): RTO floor {us} µs\n"));
        }
        if let Some(frames) = args.l2_min_cwnd {
            s.push_str(&format!(
                "l2 engines (diagnosis): congestion window floor {frames} frames\n"
            ));
        }
        if args.l2_no_bundle {
            s.push_str("l2 engines (diagnosis): no bundles, one fragment per frame\n");
        }
    }
    s.push_str(&format!(
        "cpus: {}  load before: {}  client threads: {}  node threads: {}\n\
         per case: warm-up {:.2} s, timed {:.2} s; {} round(s), cases interleaved; \
         blocks: {} x {BLOCK} B\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
        threads_desc(args.client_workers()),
        match place {
            Place::Remote { .. } => "remote".into(),
            _ => threads_desc(args.node_workers()),
        },
        timing.warmup.as_secs_f64(),
        timing.duration.as_secs_f64(),
        timing.rounds,
        args.blocks,
    ));
    s
}

fn threads_desc(n: Option<usize>) -> String {
    n.map_or_else(|| "default".into(), |n| n.to_string())
}

fn resolve(node: &str) -> Result<SocketAddr, String> {
    node.to_socket_addrs()
        .map_err(|e| format!("--node {node}: {e}"))?
        .next()
        .ok_or_else(|| format!("--node {node}: no address"))
}

fn read_key(file: &std::path::Path) -> Result<ClusterKey, String> {
    ClusterKey::load(file).map_err(|e| e.to_string())
}

/// The MTU of `lo` (from sysfs), if readable.
pub fn loopback_mtu() -> Option<u32> {
    std::fs::read_to_string("/sys/class/net/lo/mtu")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// The 1, 5 and 15 minute load averages (from /proc/loadavg).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}
