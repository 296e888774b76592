//! Command-line flags of `qbd-node`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Serves the part files of every volume under one backend root to QBD
/// masters, over TCP and/or raw Ethernet (no IP needed), authenticated with
/// the cluster key.
#[derive(Debug, Parser)]
#[command(name = "qbd-node", version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Args {
    /// The backend root (same layout as a master's --dir; created on first use).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,

    /// TCP address to serve masters on (port 0 picks a free port).
    #[arg(long, value_name = "ADDR:PORT", required_unless_present = "iface")]
    pub listen: Option<SocketAddr>,

    /// Serve masters over raw Ethernet (QBD-L2) on this interface; it
    /// needs no IP address. Needs CAP_NET_RAW. Combines with --listen.
    #[arg(long, value_name = "IFACE")]
    pub iface: Option<String>,

    /// EtherType of QBD-L2 frames (must match the master's).
    #[arg(long, value_name = "TYPE", default_value = "0x88B5", value_parser = qbd_transport_l2::engine::wire::parse_ethertype)]
    pub ethertype: u16,

    /// File holding the cluster key: 64 hex characters (`qbd keygen`).
    #[arg(long, value_name = "FILE")]
    pub cluster_key: Option<PathBuf>,

    /// The node's name in handshakes and logs [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub id: Option<String>,

    /// Run without a cluster key: the all-zero key, which authenticates
    /// nothing. For tests on one machine only.
    #[arg(long, conflicts_with = "cluster_key")]
    pub insecure: bool,

    /// Seconds a client may take to send its handshake.
    #[arg(long, default_value_t = 10, value_name = "S")]
    pub handshake_timeout: u64,
}

const AFTER_HELP: &str = "\
When ready, prints one line to stdout:
  qbd-node: ready id=NAME backend=UUID [tcp=ADDR] [l2=IFACE mac=MAC mtu=N]
SIGTERM or SIGINT: finishes in-flight requests, syncs, prints one line of
counters to stderr (qbd-node: stats requests=N bad_mac=N ...), exits 0.

Examples:
  qbd-node --data /srv/qbd --listen 0.0.0.0:7000 --cluster-key /etc/qbd/cluster.key
  qbd-node --data /srv/qbd --iface eth1 --cluster-key /etc/qbd/cluster.key";
