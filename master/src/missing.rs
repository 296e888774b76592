//! Nodes the master was given but could not reach at start, and the loop
//! that brings them in once they answer.
//!
//! At start a `--node HOST:PORT` whose connection fails as unreachable
//! (refused, timed out) and an L2 node that did not answer discovery within
//! `--discover-timeout` are *missing*: the volume opens degraded without
//! them if the others are enough (`volume/admit.rs`), and each is logged
//! once, here. [`admit_forever`] then tries them every [`RETRY`] (quietly)
//! and hands each one that answers to [`Volume::admit`]; the volume's
//! maintenance readmits it from there (epoch claim, resync). The loop ends
//! once no slot of the volume is absent.

use std::sync::Arc;
use std::time::Duration;

use qbd_core::backend::Backend;
use qbd_core::proto::ClusterKey;
use qbd_transport_l2::engine::Mac;
use qbd_transport_l2::{Found, L2Link};
use qbd_transport_tcp::TcpOptions;

use crate::backend_node::NodeBackend;
use crate::volume::Volume;

/// How often missing nodes are tried again.
pub const RETRY: Duration = Duration::from_secs(2);
/// Bound on one attempt to reach a TCP node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one L2 attempt listens for discovery answers.
const DISCOVER_WAIT: Duration = Duration::from_secs(1);

/// One way to reach nodes that were missing at start.
#[derive(Debug)]
pub enum Missing {
    /// A `--node HOST:PORT` that did not accept a connection.
    Tcp(String),
    /// Nodes on an L2 segment that did not answer discovery: the pinned
    /// MACs still missing, or (empty) any node whose identity is one of
    /// the volume's absent backends.
    L2 {
        /// The link the master uses.
        link: Arc<L2Link>,
        /// Pinned `--node MAC`s that did not answer.
        pinned: Vec<Mac>,
    },
}

/// How the master introduces itself to nodes.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The cluster key.
    pub key: ClusterKey,
    /// The master's name in handshakes.
    pub me: String,
}

/// Tries the missing nodes every [`RETRY`] until the volume has no absent
/// slot; each one that answers is admitted into its slot.
pub async fn admit_forever(volume: Arc<Volume>, mut missing: Vec<Missing>, who: Credentials) {
    let mut tick = tokio::time::interval(RETRY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !missing.is_empty() && !volume.absent_backends().is_empty() {
        tick.tick().await;
        let mut left = Vec::new();
        for mut m in missing {
            if !try_admit(&volume, &mut m, &who).await {
                left.push(m);
            }
        }
        missing = left;
    }
}

/// One attempt at `m`; true once it needs no more attempts (admitted, or
/// answered as something that cannot take a slot). An L2 entry keeps the
/// pinned MACs still missing.
async fn try_admit(volume: &Volume, m: &mut Missing, who: &Credentials) -> bool {
    match m {
        Missing::Tcp(node) => match dial_tcp(node, who).await {
            Some(b) => {
                admit(volume, b);
                true
            }
            None => false,
        },
        Missing::L2 { link, pinned } => {
            let absent = volume.absent_backends();
            let want = if pinned.is_empty() {
                usize::MAX
            } else {
                pinned.len()
            };
            let found = link.discover(pinned, want, DISCOVER_WAIT, None).await;
            for f in found
                .iter()
                .filter(|f| absent.iter().any(|a| a.0 == f.backend))
            {
                if let Some(b) = dial_l2(link, f, who).await {
                    admit(volume, b);
                    pinned.retain(|m| *m != f.mac);
                }
            }
            // Unpinned: the loop ends once nothing is absent.
            want != usize::MAX && pinned.is_empty()
        }
    }
}

/// Hands `b` to the volume; a refusal (not one of its absent backends, or
/// the volume fenced) is logged and ends the attempts at that node.
fn admit(volume: &Volume, b: Arc<dyn Backend>) {
    let describe = b.describe();
    if let Err(e) = volume.admit(b) {
        eprintln!("qbd-master: {describe} answered but cannot take a slot: {e}");
    }
}

async fn dial_tcp(node: &str, who: &Credentials) -> Option<Arc<dyn Backend>> {
    let addr = tokio::net::lookup_host(node).await.ok()?.next()?;
    let connect = NodeBackend::connect_tcp(addr, who.key.clone(), &who.me, TcpOptions::default());
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(b)) => Some(Arc::new(b)),
        _ => None,
    }
}

async fn dial_l2(link: &Arc<L2Link>, f: &Found, who: &Credentials) -> Option<Arc<dyn Backend>> {
    match link.connect(f, who.key.clone(), &who.me).await {
        Ok(t) => {
            let node = t.node();
            Some(Arc::new(NodeBackend::new(t, node)))
        }
        Err(e) => {
            eprintln!(
                "qbd-master: l2: node {} ({}) answered discovery but not the handshake: {e}",
                f.name, f.mac
            );
            None
        }
    }
}
