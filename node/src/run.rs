//! Wiring: flags → key, root → node → TCP and/or L2 server, until a signal.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use qbd_core::proto::ClusterKey;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::Args;
use crate::conn::ConnConfig;
use crate::error::NodeError;
use crate::l2::NodeService;
use crate::node::Node;
use crate::serve::serve_with;
use qbd_transport_l2::serve::{L2Server, ServeOptions};

/// Runs the node until SIGTERM/SIGINT, then syncs every open volume.
pub async fn run(args: Args) -> Result<(), NodeError> {
    let key = cluster_key(&args)?;
    let name = args.id.clone().unwrap_or_else(host_name);
    let node = Arc::new(Node::open(&args.data, name)?);
    let listener = match args.listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| setup(format!("cannot listen on {addr}: {e}")))?,
        ),
        None => None,
    };
    let l2 = start_l2(&args, &node, &key)?;
    let cfg = ConnConfig {
        handshake_timeout: Duration::from_secs(args.handshake_timeout),
        ..ConnConfig::default()
    };
    // Handlers go in before the ready line: a SIGTERM right after it must
    // stop us gracefully, not kill us.
    let shutdown = shutdown_signal()?;
    let mut ready = format!("qbd-node: ready id={} backend={}", node.name(), node.id().0);
    if let Some(l) = &listener {
        let addr = l.local_addr().map_err(|e| setup(e.to_string()))?;
        ready.push_str(&format!(" tcp={addr}"));
    }
    if let Some(s) = &l2 {
        ready.push_str(&format!(
            " l2={} mac={} mtu={}",
            s.iface(),
            s.mac(),
            s.mtu()
        ));
    }
    announce(&ready);
    match listener {
        Some(l) => serve_with(Arc::clone(&node), l, key, cfg, shutdown).await,
        None => shutdown.await,
    }
    if let Some(s) = &l2 {
        s.stop();
    }
    node.sync_all().await?;
    eprintln!("{}", stats_line(&node, l2.as_ref()));
    eprintln!("qbd-node: stopped cleanly");
    Ok(())
}

/// Starts the raw-Ethernet server if `--iface` asks for one.
fn start_l2(
    args: &Args,
    node: &Arc<Node>,
    key: &ClusterKey,
) -> Result<Option<L2Server>, NodeError> {
    let Some(iface) = &args.iface else {
        return Ok(None);
    };
    let mut opts = ServeOptions::new(iface);
    opts.engine.ethertype = args.ethertype;
    let service = Arc::new(NodeService(Arc::clone(node)));
    L2Server::start(
        opts,
        key.clone(),
        service,
        tokio::runtime::Handle::current(),
    )
    .map(Some)
    .map_err(|e| {
        setup(format!(
            "cannot serve QBD-L2 on {iface}: {e} (needs CAP_NET_RAW)"
        ))
    })
}

/// One line of counters, `key=value` separated by spaces.
fn stats_line(node: &Node, l2: Option<&L2Server>) -> String {
    let s = node.stats().snapshot();
    let mut line = format!(
        "qbd-node: stats requests={} bad_mac={} replay={} malformed={} handshake_failed={} connections={}",
        s.requests, s.bad_mac, s.replay, s.malformed, s.handshake_failed, s.connections
    );
    if let Some(l2) = l2 {
        let l = l2.stats();
        line.push_str(&format!(
            " l2_malformed={} l2_foreign={} l2_dropped={} l2_duplicates={} l2_retransmissions={} l2_sessions={} l2_evicted={} l2_pending={} l2_pending_evicted={} l2_unauth_answers={} l2_unauth_refused={} l2_unauth_retransmissions={}",
            l.engine.malformed + l.malformed,
            l.engine.foreign,
            l.dropped,
            l.engine.duplicates,
            l.engine.retransmissions,
            l.sessions,
            l.evicted,
            l.pending,
            l.pending_evicted,
            l.unauth_answers,
            l.unauth_refused,
            l.unauth_retransmissions
        ));
    }
    line
}

fn setup(msg: String) -> NodeError {
    NodeError::Setup(msg)
}

/// The key from `--cluster-key`, or the insecure key with `--insecure`.
fn cluster_key(args: &Args) -> Result<ClusterKey, NodeError> {
    match (&args.cluster_key, args.insecure) {
        (Some(path), _) => ClusterKey::load(path).map_err(|e| setup(e.to_string())),
        (None, true) => {
            eprintln!(
                "qbd-node: WARNING: --insecure: no cluster key, anyone who can reach this \
                 port can read and overwrite every volume"
            );
            Ok(ClusterKey::INSECURE)
        }
        (None, false) => Err(setup(
            "no --cluster-key FILE (make one with `qbd keygen`); --insecure runs without".into(),
        )),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into())
}

fn announce(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Installs SIGTERM/SIGINT handlers now; the future resolves on either.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, NodeError> {
    let term = signal(SignalKind::terminate())
        .map_err(|e| setup(format!("cannot handle SIGTERM: {e}")))?;
    let int =
        signal(SignalKind::interrupt()).map_err(|e| setup(format!("cannot handle SIGINT: {e}")))?;
    Ok(async move {
        let (mut term, mut int) = (term, int);
        tokio::select! {
            _ = term.recv() => eprintln!("qbd-node: SIGTERM: finishing in-flight requests"),
            _ = int.recv() => eprintln!("qbd-node: SIGINT: finishing in-flight requests"),
        }
    })
}
