//! Command-line flags of `qbd-master`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Serves one QBD volume to NBD clients, striped as chunk files over backends.
///
/// The first start creates the volume (needs --size and --redundancy); later
/// starts read its .meta from the backends and refuse contradicting flags.
/// Backends can be given in any order: placement follows their identities.
#[derive(Debug, Parser)]
#[command(name = "qbd-master", version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Args {
    /// Volume name, also the NBD export name.
    #[arg(long, required_unless_present = "demo")]
    pub volume: Option<String>,

    /// Volume size when creating it (binary suffixes: 512M, 10G, 1T).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,

    /// Redundancy when creating: replicate:N (N copies on N distinct backends;
    /// I/O continues while one copy is reachable, missed writes are recorded
    /// in the degraded map and resynced at the next start).
    #[arg(long)]
    pub redundancy: Option<String>,

    /// Block size when creating: a power of two from 4K to 64K [default: 4K].
    #[arg(long, value_parser = parse_size)]
    pub block_size: Option<u64>,

    /// Chunk size (size of each chunk file's data) when creating; a multiple of the block size [default: 4M].
    #[arg(long, value_parser = parse_size)]
    pub chunk_size: Option<u64>,

    /// Serve the volume read-only (writes, trims get EPERM).
    #[arg(long)]
    pub read_only: bool,

    /// A directory backend (local disk or NFS mount); repeat for several.
    #[arg(long = "dir", value_name = "PATH")]
    pub dirs: Vec<PathBuf>,

    /// A qbd-node backend; repeat for several. With --transport tcp:
    /// HOST:PORT. With --transport l2: the node's MAC address, which pins
    /// the set discovery may use. Mixes with --dir in any order: backends
    /// are matched by their identity.
    #[arg(long = "node", value_name = "HOST:PORT|MAC")]
    pub nodes: Vec<String>,

    /// How the master reaches its nodes: tcp (--node HOST:PORT) or l2 (raw
    /// Ethernet on --iface, no IP; nodes are discovered on the segment).
    #[arg(long, value_enum, default_value = "tcp")]
    pub transport: TransportKind,

    /// With --transport l2: the interface on the nodes' Ethernet segment.
    /// Needs CAP_NET_RAW.
    #[arg(long, value_name = "IFACE", required_if_eq("transport", "l2"))]
    pub iface: Option<String>,

    /// With --transport l2: seconds to wait for the nodes the volume needs
    /// (every pinned --node MAC, or as many as --redundancy has parts)
    /// to answer discovery. Nodes still missing then (like a TCP --node that
    /// refuses the connection) do not stop an existing volume: it serves
    /// DEGRADED without them if more than half of its backends answered and
    /// they hold enough parts of every chunk (one copy; K for ec:K+M); else
    /// the master refuses to start. A missing node is failed (the writes it
    /// misses are recorded in the degraded map), logged once, looked for
    /// again every 2 s, and readmitted when it answers: its epoch claimed,
    /// its stale parts resynced before it serves reads. Creating a volume
    /// needs every node.
    #[arg(long, value_name = "S", default_value_t = 10)]
    pub discover_timeout: u64,

    /// With --transport l2: EtherType of QBD-L2 frames (must match the nodes').
    #[arg(long, value_name = "TYPE", default_value = "0x88B5", value_parser = qbd_transport_l2::engine::wire::parse_ethertype)]
    pub ethertype: u16,

    /// The cluster key file the nodes use (64 hex characters, `qbd keygen`):
    /// it authenticates the sessions with them. Required with --node unless
    /// --insecure.
    #[arg(long, value_name = "FILE")]
    pub cluster_key: Option<PathBuf>,

    /// Talk to nodes without a cluster key (the all-zero key: anyone on the
    /// network can impersonate either side). For tests only.
    #[arg(long, conflicts_with = "cluster_key")]
    pub insecure: bool,

    /// The master's local state directory: the write-intent log of each
    /// volume (`<uuid>.intent`). Keep it on a local disk of the master host.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/qbd")]
    pub state: PathBuf,

    /// TCP address to serve NBD on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:10809")]
    pub listen: SocketAddr,

    /// Also serve NBD on this unix socket path.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// The admin socket (`qbd repair` runs through it while this master
    /// serves the volume) [default: <state>/<volume>.admin.sock].
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,

    /// Seconds a client may take to finish the NBD handshake.
    #[arg(long, default_value_t = 10)]
    pub handshake_timeout: u64,

    /// Most NBD connections served at once (each may hold up to ~64 MiB
    /// of request buffers). Beyond it a client is refused during the
    /// handshake: its options are answered NBD_REP_ERR_POLICY with the text
    /// "too many connections" (qemu-img prints it; nbdinfo says "server
    /// replied with error", the text under LIBNBD_DEBUG=1). A slot frees
    /// when a served client disconnects.
    #[arg(long, value_name = "N", default_value_t = crate::nbd::DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Demo: a 1G volume "demo", replicate:1 striped over three directories
    /// under $TMPDIR/qbd-demo (created if needed), state in
    /// $TMPDIR/qbd-demo/state. Other flags override.
    #[arg(long)]
    pub demo: bool,
}

/// How nodes are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportKind {
    /// TCP, `--node HOST:PORT`.
    Tcp,
    /// Raw Ethernet (QBD-L2) on `--iface`.
    L2,
}

/// The default of `--state`.
pub const DEFAULT_STATE: &str = "/var/lib/qbd";

const AFTER_HELP: &str = "\
When ready, prints one line to stdout:
  qbd-master: ready volume=NAME size=BYTES tcp=ADDR [unix=PATH] admin=PATH
SIGTERM or SIGINT: stops accepting, finishes in-flight requests, syncs, exits 0.
The admin socket (--admin-socket, default <state>/<volume>.admin.sock) takes
one JSON request per connection: {\"op\":\"hello\"} or {\"op\":\"repair\",
\"options\":{\"dry_run\":false,\"max_rate\":null,\"restart\":false}}; see docs/repair.md.

Examples:
  qbd-master --volume vm1 --size 20G --redundancy replicate:2 --dir /srv/a --dir /mnt/nfs/b
  qbd-master --volume vm2 --size 1T --redundancy replicate:3 --cluster-key /etc/qbd/cluster.key \\
      --node 10.0.0.5:7000 --node 10.0.0.6:7000 --dir /srv/a
  qbd-master --volume vm3 --size 1T --redundancy replicate:3 --cluster-key /etc/qbd/cluster.key \\
      --transport l2 --iface eth1
With --transport l2, stderr gets one line per node found
(qbd-master: l2: found node NAME backend=UUID mac=MAC mtu=N) and, at exit,
one line of the link's counters (qbd-master: l2 stats frames_sent=N ...).
  nbdinfo nbd://127.0.0.1/vm1";

/// Checks a `--node` value for TCP.
pub fn parse_node(s: &str) -> Result<String, String> {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(s.to_owned()),
        _ => Err(format!("{s:?} is not HOST:PORT")),
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    qbd_core::size::parse_size(s).map_err(|e| e.to_string())
}

impl Args {
    /// Fills in the demo defaults (flags given explicitly win).
    pub fn apply_demo(&mut self) -> std::io::Result<()> {
        if !self.demo {
            return Ok(());
        }
        self.volume.get_or_insert_with(|| "demo".into());
        self.size.get_or_insert(1 << 30);
        self.redundancy.get_or_insert_with(|| "replicate:1".into());
        let base = std::env::temp_dir().join("qbd-demo");
        if self.state == std::path::Path::new(DEFAULT_STATE) {
            self.state = base.join("state");
        }
        if self.dirs.is_empty() && self.nodes.is_empty() {
            for i in 0..3 {
                let d = base.join(format!("d{i}"));
                std::fs::create_dir_all(&d)?;
                self.dirs.push(d);
            }
        }
        Ok(())
    }
}
