//! The accept loop: one task per connection, graceful shutdown.
//!
//! On `shutdown`, the listener stops accepting (it is dropped), every
//! connection stops reading new requests, answers the ones in flight and
//! closes; `serve` returns when all have. Syncing the volumes afterwards is
//! the caller's job ([`crate::Node::sync_all`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use qbd_core::proto::ClusterKey;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::conn::{ConnConfig, serve_connection};
use crate::node::Node;
use crate::stats::bump;

/// Serves `listener` until `shutdown` resolves, then finishes every
/// connection's in-flight requests and returns.
pub async fn serve(node: Arc<Node>, listener: TcpListener, key: ClusterKey, shutdown: impl Future) {
    serve_with(node, listener, key, ConnConfig::default(), shutdown).await;
}

/// [`serve`] with explicit per-connection limits.
pub async fn serve_with(
    node: Arc<Node>,
    listener: TcpListener,
    key: ClusterKey,
    cfg: ConnConfig,
    shutdown: impl Future,
) {
    let key = Arc::new(key);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    bump(&node.stats().connections);
                    conns.spawn(serve_connection(
                        Arc::clone(&node),
                        Arc::clone(&key),
                        cfg.clone(),
                        stream,
                        peer,
                        stop_rx.clone(),
                    ));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    eprintln!("qbd-node: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while conns.join_next().await.is_some() {}
}
