//! [`L2Transport`]: one node over an [`L2Link`], as a [`Transport`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use qbd_core::proto::msg::Request;
use qbd_core::proto::session::NodeHello;
use qbd_core::transport::{Pending, Transport, TransportError};
use tokio::sync::oneshot;

use super::L2Link;
use super::handler::Cmd;
use super::peer::{Job, Sink};
use crate::engine::Mac;

/// A node reached over raw Ethernet. Requests go to the link's polling
/// thread, which seals, sends, retransmits and completes them; each
/// future resolves with the response, `Timeout` at the engine's deadline,
/// or `Disconnected` (node restarted, link stopped). After a node restart
/// the next request redoes the handshake, which must find the same
/// backend. Nothing is resent by this layer.
#[derive(Debug)]
pub struct L2Transport {
    link: Arc<L2Link>,
    /// Names this transport's peer on the polling thread.
    token: u64,
    mac: Mac,
    node: NodeHello,
    mtu: usize,
    next_id: AtomicU64,
}

/// Slack on top of the engine's deadline before a future gives up on its
/// own (the engine fails every message at its deadline; this only guards
/// against a stopped polling thread).
const SLACK: Duration = Duration::from_secs(2);

impl L2Transport {
    pub(super) fn new(
        link: Arc<L2Link>,
        token: u64,
        mac: Mac,
        node: NodeHello,
        mtu: usize,
    ) -> Self {
        L2Transport {
            link,
            token,
            mac,
            node,
            mtu,
            next_id: AtomicU64::new(1),
        }
    }

    /// The node's identity and name, from the first handshake.
    pub fn node(&self) -> NodeHello {
        self.node.clone()
    }

    /// The node's MAC address.
    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// The MTU the session uses (1500, or the probed jumbo size).
    pub fn mtu(&self) -> usize {
        self.mtu
    }
}

impl Transport for L2Transport {
    fn submit(&self, batch: Vec<Request>) -> Vec<Pending> {
        let mut jobs = Vec::with_capacity(batch.len());
        let mut futures = Vec::with_capacity(batch.len());
        for req in batch {
            let (tx, rx) = oneshot::channel();
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            jobs.push(Job {
                id,
                req,
                tx: Sink::Task(tx),
            });
            futures.push(wait(rx, self.link.engine.deadline + SLACK));
        }
        self.link.command(Cmd::Submit {
            token: self.token,
            jobs,
        });
        futures
    }

    fn describe(&self) -> String {
        format!("l2:{}/{}", self.link.iface(), self.mac)
    }
}

impl L2Transport {
    /// Runs `l` on the link's polling thread against this node until it
    /// says it is done: requests it issues are sealed and sent in the same
    /// pass, and their outcomes come back to it without a thread hop. For
    /// benchmarks measuring the transport alone (like the floor probe):
    /// the product path is [`Transport::submit`].
    pub fn run_closed_loop(&self, l: Box<dyn super::ClosedLoop>) {
        self.link.command(Cmd::Loop {
            token: self.token,
            l,
        });
    }
}

impl Drop for L2Transport {
    fn drop(&mut self) {
        self.link.command(Cmd::Disconnect { token: self.token });
    }
}

fn wait(rx: oneshot::Receiver<super::peer::Reply>, limit: Duration) -> Pending {
    Box::pin(async move {
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(TransportError::Disconnected("the L2 link stopped".into())),
            Err(_) => Err(TransportError::Timeout(
                u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
            )),
        }
    })
}
