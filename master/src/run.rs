//! Wiring: flags → backends → volume → NBD server, until a signal.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use qbd_core::backend::Backend;
use qbd_core::backend::dir::DirBackend;
use qbd_core::meta::volume::RequestedShape;
use qbd_core::proto::ClusterKey;
use qbd_core::transport::TransportError;
use qbd_transport_tcp::TcpOptions;
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};

use crate::backend_node::NodeBackend;
use crate::cli::{Args, TransportKind};
use crate::device::BlockDevice;
use crate::missing::{Credentials, Missing};
use crate::nbd::{ExportConfig, Listener, Server};
use crate::volume::{OpenMode, OpenRequest, VolumeError, open_volume_with};
use qbd_transport_l2::L2Link;

/// Runs the master until SIGTERM/SIGINT.
pub async fn run(args: Args) -> Result<(), VolumeError> {
    let req = open_request(&args)?;
    // The key file first: a bad one is refused before any backend is
    // touched.
    let reach = admin_reach(&args)?;
    let reached = all_backends(&args).await?;
    let link = reached.link.clone();
    // With nodes, some may not have answered: serve without them if the
    // others are enough (`volume/admit.rs`). Directories are all needed.
    let mode = match reached.nodes {
        true => OpenMode::ServeDegraded {
            unreached: reached.unreached,
        },
        false => OpenMode::Serve,
    };
    let volume = Arc::new(open_volume_with(reached.backends, &req, mode).await?);
    let mut listeners = Vec::new();
    let tcp = TcpListener::bind(args.listen)
        .await
        .map_err(|e| setup(format!("cannot listen on {}: {e}", args.listen)))?;
    let tcp_addr = tcp.local_addr().map_err(|e| setup(e.to_string()))?;
    listeners.push(Listener::Tcp(tcp));
    let mut ready = format!(
        "qbd-master: ready volume={} size={} tcp={tcp_addr}",
        req.name,
        volume.size()
    );
    if let Some(path) = &args.socket {
        remove_stale_socket(path)?;
        let unix = UnixListener::bind(path)
            .map_err(|e| setup(format!("cannot listen on {}: {e}", path.display())))?;
        listeners.push(Listener::Unix(unix));
        ready.push_str(&format!(" unix={}", path.display()));
    }
    let admin_path = args
        .admin_socket
        .clone()
        .unwrap_or_else(|| crate::admin::default_socket(&args.state, &req.name));
    remove_stale_socket(&admin_path)?;
    let admin_listener = UnixListener::bind(&admin_path)
        .map_err(|e| setup(format!("cannot listen on {}: {e}", admin_path.display())))?;
    ready.push_str(&format!(" admin={}", admin_path.display()));
    let mut cfg = ExportConfig::new(req.name.clone());
    cfg.handshake_timeout = Duration::from_secs(args.handshake_timeout);
    cfg.max_connections = args.max_connections as usize;
    let server = Server::new(Arc::clone(&volume), cfg);
    // Handlers go in before the ready line: a SIGTERM right after it must
    // stop us gracefully, not kill us.
    let shutdown = shutdown_signal()?;
    announce(&ready);
    let maintenance = tokio::spawn(maintain_forever(Arc::clone(&volume)));
    let admitting = match reached.missing.is_empty() {
        true => None,
        false => Some(tokio::spawn(crate::missing::admit_forever(
            Arc::clone(&volume),
            reached.missing,
            credentials(&args)?,
        ))),
    };
    let admin = crate::admin::server::Admin::new(Arc::clone(&volume), args.state.clone(), reach);
    let admin = tokio::spawn(admin.serve(admin_listener));
    let served = server.run(listeners, shutdown).await;
    admin.abort();
    let _ = std::fs::remove_file(&admin_path);
    maintenance.abort();
    if let Some(a) = admitting {
        a.abort();
    }
    let flushed = volume.flush_all().await;
    if let Some(path) = &args.socket {
        let _ = std::fs::remove_file(path);
    }
    if let Some(link) = &link {
        eprintln!("{}", crate::l2::stats_line(&link.stats()));
    }
    served.map_err(|e| setup(format!("server failed: {e}")))?;
    flushed?;
    eprintln!("qbd-master: stopped cleanly");
    Ok(())
}

/// Readmits failed backends and resyncs stale parts, once a second.
async fn maintain_forever(volume: Arc<crate::volume::Volume>) {
    let mut schedule = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        volume
            .maintain(&mut schedule, std::time::Instant::now())
            .await;
    }
}

fn setup(msg: String) -> VolumeError {
    VolumeError::Setup(msg)
}

fn open_request(args: &Args) -> Result<OpenRequest, VolumeError> {
    let name = args
        .volume
        .clone()
        .ok_or_else(|| setup("--volume is required".into()))?;
    let redundancy = args.redundancy.as_deref().map(str::parse).transpose()?;
    let block_size = args
        .block_size
        .map(|b| u32::try_from(b).map_err(|_| setup(format!("--block-size {b} is too large"))))
        .transpose()?;
    let shape = RequestedShape {
        size: args.size,
        block_size,
        chunk_size: args.chunk_size,
        redundancy,
    };
    Ok(OpenRequest {
        name,
        shape,
        read_only: args.read_only,
        state_dir: args.state.clone(),
    })
}

/// The backends the master reached at start, and what it could not reach.
struct Reached {
    /// The --dir and node backends (their order does not matter).
    backends: Vec<Arc<dyn Backend>>,
    /// Whether any nodes were given (`--node`, or L2 discovery).
    nodes: bool,
    /// How many of the nodes given (or waited for) did not answer.
    unreached: usize,
    /// How to reach them later.
    missing: Vec<Missing>,
    /// The L2 link the nodes are reached through, if any.
    link: Option<Arc<L2Link>>,
}

/// The --dir and node backends, and the nodes that did not answer.
async fn all_backends(args: &Args) -> Result<Reached, VolumeError> {
    let l2 = args.transport == TransportKind::L2;
    if args.dirs.is_empty() && args.nodes.is_empty() && !l2 {
        return Err(setup(
            "no backends: give at least one --dir PATH or --node HOST:PORT".into(),
        ));
    }
    let mut backends = dir_backends(args)?;
    if l2 {
        let who = credentials(args)?;
        let found = crate::l2::l2_backends(args, who.key, &who.me).await?;
        backends.extend(found.backends);
        return Ok(Reached {
            backends,
            nodes: true,
            unreached: found.unreached,
            missing: vec![found.missing],
            link: Some(found.link),
        });
    }
    let (nodes, missing) = node_backends(args).await?;
    backends.extend(nodes);
    Ok(Reached {
        backends,
        nodes: !args.nodes.is_empty(),
        unreached: missing.len(),
        missing,
        link: None,
    })
}

/// Connects to every --node at once (handshake with the cluster key); a
/// node that is unreachable (refused, timed out) is logged and returned as
/// missing, any other failure (a bad address, a failed handshake) stops
/// the start.
async fn node_backends(args: &Args) -> Result<(Vec<Arc<dyn Backend>>, Vec<Missing>), VolumeError> {
    if args.nodes.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let who = credentials(args)?;
    let connects = args.nodes.iter().map(|n| connect_node(n, &who));
    let (mut found, mut missing) = (Vec::new(), Vec::new());
    for (node, r) in args
        .nodes
        .iter()
        .zip(futures_util::future::join_all(connects).await)
    {
        match r? {
            Ok(b) => found.push(b),
            Err(e) => {
                eprintln!(
                    "qbd-master: --node {node} did not answer ({e}). Starting without it if the \
                     volume allows (it is admitted when it answers)"
                );
                missing.push(Missing::Tcp(node.clone()));
            }
        }
    }
    Ok((found, missing))
}

/// One node: a setup error stops the start; an unreachable node is the
/// inner error.
async fn connect_node(
    node: &str,
    who: &Credentials,
) -> Result<Result<Arc<dyn Backend>, TransportError>, VolumeError> {
    crate::cli::parse_node(node).map_err(|e| setup(format!("--node: {e}")))?;
    let addr = tokio::net::lookup_host(node)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| setup(format!("--node {node}: cannot resolve the address")))?;
    match NodeBackend::connect_tcp(addr, who.key.clone(), &who.me, TcpOptions::default()).await {
        Ok(b) => Ok(Ok(Arc::new(b))),
        Err(e) if e.is_retryable() => Ok(Err(e)),
        Err(e) => Err(setup(format!("--node {node}: {e}"))),
    }
}

/// The cluster key and the name this master gives nodes.
fn credentials(args: &Args) -> Result<Credentials, VolumeError> {
    Ok(Credentials {
        key: cluster_key(args)?,
        me: format!("qbd-master {}", master_name()),
    })
}

/// What the admin endpoint needs to reach a backend named in a request:
/// the nodes' cluster key (if the master has one) and its own name.
fn admin_reach(args: &Args) -> Result<crate::admin::reach::Reach, VolumeError> {
    let key = match args.cluster_key.is_some() || args.insecure {
        true => Some(cluster_key(args)?),
        false => None,
    };
    Ok(crate::admin::reach::Reach {
        key,
        me: format!("qbd-master {}", master_name()),
        l2: args.transport == TransportKind::L2,
    })
}

fn cluster_key(args: &Args) -> Result<ClusterKey, VolumeError> {
    let Some(path) = &args.cluster_key else {
        if args.insecure {
            return Ok(ClusterKey::INSECURE);
        }
        return Err(setup(
            "--node needs --cluster-key FILE (or --insecure, for tests)".into(),
        ));
    };
    ClusterKey::load(path).map_err(|e| setup(e.to_string()))
}

/// `host:pid`, as recorded in `.meta`.
fn master_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}:{}", host.trim(), std::process::id())
}

fn dir_backends(args: &Args) -> Result<Vec<Arc<dyn Backend>>, VolumeError> {
    args.dirs
        .iter()
        .map(|d| Ok(Arc::new(DirBackend::open(d)?) as Arc<dyn Backend>))
        .collect()
}

/// Removes a socket file left by a previous run; refuses to remove anything else.
fn remove_stale_socket(path: &std::path::Path) -> Result<(), VolumeError> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(|e| {
            setup(format!(
                "cannot remove stale socket {}: {e}",
                path.display()
            ))
        }),
        Ok(_) => Err(setup(format!(
            "{} exists and is not a socket",
            path.display()
        ))),
        Err(_) => Ok(()),
    }
}

fn announce(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Installs SIGTERM/SIGINT handlers now; the future resolves on either.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, VolumeError> {
    let term = signal(SignalKind::terminate())
        .map_err(|e| setup(format!("cannot handle SIGTERM: {e}")))?;
    let int =
        signal(SignalKind::interrupt()).map_err(|e| setup(format!("cannot handle SIGINT: {e}")))?;
    Ok(async move {
        let (mut term, mut int) = (term, int);
        tokio::select! {
            _ = term.recv() => eprintln!("qbd-master: SIGTERM: finishing in-flight requests"),
            _ = int.recv() => eprintln!("qbd-master: SIGINT: finishing in-flight requests"),
        }
    })
}
