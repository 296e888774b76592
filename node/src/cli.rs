//! Command-line flags of `qbd-node`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Serves the part files of every volume under one backend root to QBD
/// masters, over TCP, authenticated with the cluster key.
#[derive(Debug, Parser)]
#[command(name = "qbd-node", version, about, long_about = None)]
pub struct Args {
    /// The backend root (same layout as a master's --dir; created on first use).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,

    /// TCP address to serve masters on (port 0 picks a free port).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: SocketAddr,

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
