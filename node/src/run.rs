//! Wiring: flags → key, root → node → TCP server, until a signal.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use qbd_core::proto::ClusterKey;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::Args;
use crate::conn::ConnConfig;
use crate::error::NodeError;
use crate::node::Node;
use crate::serve::serve_with;

/// Runs the node until SIGTERM/SIGINT, then syncs every open volume.
pub async fn run(args: Args) -> Result<(), NodeError> {
    let key = cluster_key(&args)?;
    let name = args.id.clone().unwrap_or_else(host_name);
    let node = Arc::new(Node::open(&args.data, name)?);
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| setup(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener.local_addr().map_err(|e| setup(e.to_string()))?;
    let cfg = ConnConfig {
        handshake_timeout: Duration::from_secs(args.handshake_timeout),
        ..ConnConfig::default()
    };
    // Handlers go in before the ready line: a SIGTERM right after it must
    // stop us gracefully, not kill us.
    let shutdown = shutdown_signal()?;
    announce(&format!(
        "qbd-node: ready id={} backend={} tcp={addr}",
        node.name(),
        node.id().0
    ));
    serve_with(Arc::clone(&node), listener, key, cfg, shutdown).await;
    node.sync_all().await?;
    eprintln!("qbd-node: stopped cleanly");
    Ok(())
}

fn setup(msg: String) -> NodeError {
    NodeError::Setup(msg)
}

/// The key from `--cluster-key`, or the insecure key with `--insecure`.
fn cluster_key(args: &Args) -> Result<ClusterKey, NodeError> {
    match (&args.cluster_key, args.insecure) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| setup(format!("cannot read {}: {e}", path.display())))?;
            ClusterKey::from_hex(&text).map_err(|e| {
                setup(format!(
                    "{}: {e} (make one with `qbd keygen`)",
                    path.display()
                ))
            })
        }
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
