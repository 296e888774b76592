//! Nodes over raw Ethernet (`--transport l2 --iface IFACE`): discovery on
//! the segment, then one [`L2Transport`] per node as a [`NodeBackend`].
//!
//! Discovery waits (up to `--discover-timeout`) for every pinned `--node
//! MAC`, or else for as many nodes as `--redundancy` has parts; without
//! either (an existing volume) it takes what answers until answers stop
//! for a moment. Which node holds which part is decided by the backend
//! identities the handshakes prove, never by the order of discovery.
//!
//! Nodes still missing after the timeout do not stop the start: they are
//! returned as [`Missing`] (logged once), the volume opens degraded if the
//! others are enough (`volume/admit.rs`), and they are admitted when they
//! answer a later discovery ([`crate::missing`]). Only a segment where no
//! node answers at all is an error here.

use std::sync::Arc;
use std::time::Duration;

use qbd_core::backend::Backend;
use qbd_core::proto::ClusterKey;
use qbd_core::redundancy::Redundancy;
use qbd_transport_l2::engine::Mac;
use qbd_transport_l2::{Found, L2Link, LinkOptions, LinkStats};

use crate::backend_node::NodeBackend;
use crate::cli::Args;
use crate::missing::Missing;
use crate::volume::VolumeError;

/// When the volume's width is unknown: stop once no new node answered for
/// this long.
const SETTLE: Duration = Duration::from_millis(1500);

/// What discovery brought: the link, the nodes found on it, how many of
/// the nodes it waited for did not answer, and how to look for them later.
#[derive(Debug)]
pub struct Discovered {
    /// The link the nodes are reached through.
    pub link: Arc<L2Link>,
    /// The nodes found.
    pub backends: Vec<Arc<dyn Backend>>,
    /// How many of the nodes waited for (pinned, or as many as the
    /// redundancy has parts) did not answer.
    pub unreached: usize,
    /// How to look for missing nodes later.
    pub missing: Missing,
}

/// The link and the nodes found on it.
pub async fn l2_backends(
    args: &Args,
    key: ClusterKey,
    me: &str,
) -> Result<Discovered, VolumeError> {
    let iface = args
        .iface
        .as_deref()
        .ok_or_else(|| setup("--transport l2 needs --iface IFACE".into()))?;
    let pinned = pinned_macs(&args.nodes)?;
    let mut opts = LinkOptions::new(iface);
    opts.engine.ethertype = args.ethertype;
    let link = L2Link::open(opts).map_err(|e| {
        setup(format!(
            "cannot open QBD-L2 on {iface}: {e} (needs CAP_NET_RAW)"
        ))
    })?;
    let want = wanted(args, &pinned)?;
    let wait = Duration::from_secs(args.discover_timeout);
    eprintln!(
        "qbd-master: l2: discovering nodes on {iface} (mac {}, mtu {}), waiting up to {} s for {}",
        link.mac(),
        link.mtu(),
        wait.as_secs(),
        match want {
            Some(n) => format!("{n}"),
            None => "any".into(),
        }
    );
    let settle = if want.is_none() { Some(SETTLE) } else { None };
    let found = link
        .discover(&pinned, want.unwrap_or(usize::MAX), wait, settle)
        .await;
    let unreached = check_found(&found, &pinned, want, iface)?;
    let connects = found.iter().map(|f| connect(&link, f, key.clone(), me));
    let backends = futures_util::future::join_all(connects)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let still: Vec<Mac> = pinned
        .iter()
        .filter(|m| !found.iter().any(|f| f.mac == **m))
        .copied()
        .collect();
    let missing = Missing::L2 {
        link: Arc::clone(&link),
        pinned: still,
    };
    Ok(Discovered {
        link,
        backends,
        unreached,
        missing,
    })
}

/// One line of the link's counters, `key=value` separated by spaces.
pub fn stats_line(s: &LinkStats) -> String {
    let e = &s.engine;
    format!(
        "qbd-master: l2 stats frames_sent={} frames_received={} retransmissions={} \
         retransmitted_frames={} malformed={} foreign={} duplicates={} resets={} expired={} \
         tx_dropped={} rx_errors={}",
        e.frames_sent,
        e.frames_received,
        e.retransmissions,
        e.retransmitted_frames,
        e.malformed,
        e.foreign,
        e.duplicates,
        e.resets,
        e.expired,
        s.poller.tx_dropped,
        s.poller.rx_errors
    )
}

async fn connect(
    link: &Arc<L2Link>,
    f: &Found,
    key: ClusterKey,
    me: &str,
) -> Result<Arc<dyn Backend>, VolumeError> {
    // One more try on a new session (a new client epoch) before giving up:
    // the torture harness saw a node that answered discovery leave one
    // handshake unanswered after forged and replayed frames (cause not yet
    // known); the next session went through. A refusal fails twice, fast.
    let t = match link.connect(f, key.clone(), me).await {
        Ok(t) => t,
        Err(first) => {
            eprintln!(
                "qbd-master: l2: node {} at {}: {first}; trying once more on a new session",
                f.name, f.mac
            );
            link.connect(f, key, me)
                .await
                .map_err(|e| setup(format!("node {} ({}) at {}: {e}", f.name, f.backend, f.mac)))?
        }
    };
    eprintln!(
        "qbd-master: l2: found node {} backend={} mac={} mtu={}",
        f.name,
        f.backend,
        f.mac,
        t.mtu()
    );
    let node = t.node();
    Ok(Arc::new(NodeBackend::new(t, node)))
}

fn pinned_macs(nodes: &[String]) -> Result<Vec<Mac>, VolumeError> {
    nodes
        .iter()
        .map(|n| {
            n.parse::<Mac>()
                .map_err(|e| setup(format!("--node {n}: with --transport l2, {e}")))
        })
        .collect()
}

/// How many nodes to wait for: every pinned one, or the redundancy's width.
fn wanted(args: &Args, pinned: &[Mac]) -> Result<Option<usize>, VolumeError> {
    if !pinned.is_empty() {
        return Ok(Some(pinned.len()));
    }
    let Some(r) = args.redundancy.as_deref() else {
        return Ok(None);
    };
    let r: Redundancy = r.parse()?;
    Ok(Some(r.parts().saturating_sub(args.dirs.len()).max(1)))
}

/// Refuses a segment where no node answered; logs (once) each node
/// waited for that did not. Returns how many of those there are.
fn check_found(
    found: &[Found],
    pinned: &[Mac],
    want: Option<usize>,
    iface: &str,
) -> Result<usize, VolumeError> {
    let list = || {
        let names: Vec<String> = found
            .iter()
            .map(|f| format!("{} ({}, {})", f.mac, f.name, f.backend))
            .collect();
        names.join(", ")
    };
    if found.is_empty() {
        return Err(setup(format!(
            "no node answered discovery on {iface}{} (are the nodes running with --iface on this \
             segment and the same --ethertype?)",
            match want {
                Some(n) => format!(" (waited for {n})"),
                None => String::new(),
            }
        )));
    }
    let missing: Vec<String> = pinned
        .iter()
        .filter(|m| !found.iter().any(|f| f.mac == **m))
        .map(Mac::to_string)
        .collect();
    let unreached = want.unwrap_or(0).saturating_sub(found.len());
    if !missing.is_empty() {
        eprintln!(
            "qbd-master: l2: --node {} did not answer discovery on {iface}; found: {}. Starting \
             without it if the volume allows (it is admitted when it answers)",
            missing.join(", "),
            list()
        );
    } else if unreached > 0 {
        eprintln!(
            "qbd-master: l2: found {} of the {} nodes waited for on {iface}: {}. Starting without \
             the others if the volume allows (they are admitted when they answer)",
            found.len(),
            found.len() + unreached,
            list()
        );
    }
    Ok(unreached)
}

fn setup(msg: String) -> VolumeError {
    VolumeError::Setup(msg)
}
