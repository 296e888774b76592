//! The backend flags shared by `qbd verify` and `qbd repair`, and connecting
//! to every backend they name while tolerating the ones that do not answer.
//!
//! The flags mirror `qbd-master`'s (`--dir`, `--node`, `--transport`,
//! `--iface`, `--ethertype`, `--discover-timeout`, `--cluster-key`,
//! `--insecure`). Unlike the master, a backend that cannot be reached is not
//! fatal here: [`connect_all`] returns the reachable ones and a list of the
//! others with the reason, so a tool can check (or repair) the rest and
//! report them. Only setup mistakes (no backend given, an unreadable cluster
//! key, an L2 interface that cannot be opened) are errors.
//!
//! Directories are opened read-only ([`DirBackend::open_existing`]): a path
//! without a `.backend` file is reported unreachable, never initialised.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use qbd_core::backend::Backend;
use qbd_core::backend::dir::DirBackend;
use qbd_core::proto::ClusterKey;
use qbd_master::backend_node::NodeBackend;
use qbd_master::cli::TransportKind;
use qbd_transport_l2::engine::Mac;
use qbd_transport_l2::{Found, L2Link, LinkOptions};
use qbd_transport_tcp::TcpOptions;

/// Which volume, and where its backends are.
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// The volume name (as in the backends' `.volumesmeta`).
    #[arg(long)]
    pub volume: String,

    /// A directory backend; repeat for several.
    #[arg(long = "dir", value_name = "PATH")]
    pub dirs: Vec<PathBuf>,

    /// A qbd-node backend; repeat for several. With --transport tcp:
    /// HOST:PORT. With --transport l2: the node's MAC address (pins the
    /// set discovery waits for).
    #[arg(long = "node", value_name = "HOST:PORT|MAC")]
    pub nodes: Vec<String>,

    /// How nodes are reached: tcp (--node HOST:PORT) or l2 (raw Ethernet
    /// on --iface; nodes are discovered on the segment).
    #[arg(long, value_enum, default_value = "tcp")]
    pub transport: TransportKind,

    /// With --transport l2: the interface on the nodes' Ethernet segment
    /// (needs CAP_NET_RAW).
    #[arg(long, value_name = "IFACE", required_if_eq("transport", "l2"))]
    pub iface: Option<String>,

    /// With --transport l2: EtherType of QBD-L2 frames (must match the nodes').
    #[arg(long, value_name = "TYPE", default_value = "0x88B5",
          value_parser = qbd_transport_l2::engine::wire::parse_ethertype)]
    pub ethertype: u16,

    /// Seconds to wait for nodes: L2 discovery, and each TCP connection.
    #[arg(long, value_name = "S", default_value_t = 10)]
    pub discover_timeout: u64,

    /// The cluster key file the nodes use (`qbd keygen`). Required with
    /// --node or --transport l2 unless --insecure.
    #[arg(long, value_name = "FILE")]
    pub cluster_key: Option<PathBuf>,

    /// Talk to nodes without a cluster key (the all-zero key). Tests only.
    #[arg(long, conflicts_with = "cluster_key")]
    pub insecure: bool,
}

/// A backend named on the command line that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    /// What was given: `dir:PATH`, `node:HOST:PORT` or `l2:MAC`.
    pub what: String,
    /// Why it could not be used.
    pub why: String,
}

/// The outcome of [`connect_all`].
#[derive(Debug)]
pub struct Connected {
    /// The backends that answered.
    pub backends: Vec<Arc<dyn Backend>>,
    /// The ones that did not, with the reason.
    pub unreachable: Vec<Unreachable>,
    /// The L2 link the nodes are reached through (keep it alive).
    pub link: Option<Arc<L2Link>>,
}

/// A setup mistake: the tool cannot run at all.
#[derive(Debug, thiserror::Error)]
pub enum BackendsError {
    /// No `--dir`, `--node` or `--transport l2` was given.
    #[error("no backends: give at least one --dir PATH or --node HOST:PORT")]
    NoBackends,
    /// The cluster key is missing or unreadable.
    #[error("{0}")]
    ClusterKey(String),
    /// The L2 interface cannot be opened, or a --node is not a MAC.
    #[error("{0}")]
    L2(String),
}

/// Per-request timeout of the tool's node connections: a deep scan of a
/// batch of parts runs on the node within one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Connects to every backend `args` names; `me` introduces the tool to the
/// nodes (`qbd verify host:pid`).
pub async fn connect_all(args: &BackendArgs, me: &str) -> Result<Connected, BackendsError> {
    let l2 = args.transport == TransportKind::L2;
    if args.dirs.is_empty() && args.nodes.is_empty() && !l2 {
        return Err(BackendsError::NoBackends);
    }
    let mut out = Connected {
        backends: Vec::new(),
        unreachable: Vec::new(),
        link: None,
    };
    for d in &args.dirs {
        match DirBackend::open_existing(d) {
            Ok(b) => out.backends.push(Arc::new(b)),
            Err(e) => out.unreachable.push(Unreachable {
                what: format!("dir:{}", d.display()),
                why: e.to_string(),
            }),
        }
    }
    if l2 {
        let key = cluster_key(args)?;
        connect_l2(args, key, me, &mut out).await?;
    } else if !args.nodes.is_empty() {
        let key = cluster_key(args)?;
        connect_tcp_nodes(args, key, me, &mut out).await;
    }
    Ok(out)
}

/// `qbd <tool> host:pid`, how the tool introduces itself to nodes.
pub fn tool_name(tool: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("qbd {tool} {}:{}", host.trim(), std::process::id())
}

fn cluster_key(args: &BackendArgs) -> Result<ClusterKey, BackendsError> {
    let Some(path) = &args.cluster_key else {
        if args.insecure {
            return Ok(ClusterKey::INSECURE);
        }
        return Err(BackendsError::ClusterKey(
            "nodes need --cluster-key FILE (or --insecure, for tests)".into(),
        ));
    };
    ClusterKey::load(path).map_err(|e| BackendsError::ClusterKey(e.to_string()))
}

fn tcp_options(args: &BackendArgs) -> TcpOptions {
    TcpOptions {
        request_timeout: REQUEST_TIMEOUT,
        connect_timeout: Duration::from_secs(args.discover_timeout.max(1)),
        ..TcpOptions::default()
    }
}

async fn connect_tcp_nodes(args: &BackendArgs, key: ClusterKey, me: &str, out: &mut Connected) {
    let opts = tcp_options(args);
    let connects = args
        .nodes
        .iter()
        .map(|n| connect_tcp(n, key.clone(), me, opts.clone()));
    for (node, r) in args
        .nodes
        .iter()
        .zip(futures_util::future::join_all(connects).await)
    {
        match r {
            Ok(b) => out.backends.push(b),
            Err(why) => out.unreachable.push(Unreachable {
                what: format!("node:{node}"),
                why,
            }),
        }
    }
}

async fn connect_tcp(
    node: &str,
    key: ClusterKey,
    me: &str,
    opts: TcpOptions,
) -> Result<Arc<dyn Backend>, String> {
    qbd_master::cli::parse_node(node)?;
    let addr = tokio::net::lookup_host(node)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| "cannot resolve the address".to_owned())?;
    let b = NodeBackend::connect_tcp(addr, key, me, opts)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(b))
}

/// Discovery as the master does it, but a pinned MAC that does not answer
/// (or fails its handshake) is reported, not fatal.
async fn connect_l2(
    args: &BackendArgs,
    key: ClusterKey,
    me: &str,
    out: &mut Connected,
) -> Result<(), BackendsError> {
    let iface = args
        .iface
        .as_deref()
        .ok_or_else(|| BackendsError::L2("--transport l2 needs --iface IFACE".into()))?;
    let pinned = args
        .nodes
        .iter()
        .map(|n| {
            n.parse::<Mac>()
                .map_err(|e| BackendsError::L2(format!("--node {n}: with --transport l2, {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut opts = LinkOptions::new(iface);
    opts.engine.ethertype = args.ethertype;
    let link = L2Link::open(opts).map_err(|e| {
        BackendsError::L2(format!(
            "cannot open QBD-L2 on {iface}: {e} (needs CAP_NET_RAW)"
        ))
    })?;
    let wait = Duration::from_secs(args.discover_timeout);
    let (want, settle) = if pinned.is_empty() {
        (usize::MAX, Some(Duration::from_millis(1500)))
    } else {
        (pinned.len(), None)
    };
    let found = link.discover(&pinned, want, wait, settle).await;
    for m in pinned
        .iter()
        .filter(|m| !found.iter().any(|f| f.mac == **m))
    {
        out.unreachable.push(Unreachable {
            what: format!("l2:{m}"),
            why: format!("did not answer discovery on {iface}"),
        });
    }
    let connects = found
        .iter()
        .map(|f| connect_found(&link, f, key.clone(), me));
    for (f, r) in found
        .iter()
        .zip(futures_util::future::join_all(connects).await)
    {
        match r {
            Ok(b) => out.backends.push(b),
            Err(why) => out.unreachable.push(Unreachable {
                what: format!("l2:{}", f.mac),
                why,
            }),
        }
    }
    out.link = Some(link);
    Ok(())
}

async fn connect_found(
    link: &Arc<L2Link>,
    f: &Found,
    key: ClusterKey,
    me: &str,
) -> Result<Arc<dyn Backend>, String> {
    // One retry: right after another client's session from this host
    // ended (a master just stopped), a node may not answer the first
    // handshake.
    let t = match link.connect(f, key.clone(), me).await {
        Ok(t) => t,
        Err(_) => link
            .connect(f, key, me)
            .await
            .map_err(|e| format!("node {} ({}): {e}", f.name, f.backend))?,
    };
    let node = t.node();
    Ok(Arc::new(NodeBackend::new(t, node)))
}
