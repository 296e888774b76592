//! The in-process node: `qbd_node::serve` on a TCP address in its own
//! tokio runtime (its own threads, as a separate daemon would have),
//! optionally also an [`L2Server`] on an interface, data in a temporary
//! directory on /dev/shm, a fresh random cluster key.
//!
//! Sockets belong to the network namespace of the thread that opens them:
//! [`LocalNode::start`] opens the listener and the L2 socket, and spawns
//! the runtime's threads, from the calling thread, so calling it inside
//! `Ns::run` puts the whole node in that namespace.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use qbd_core::proto::ClusterKey;
use qbd_node::Node;
use qbd_node::l2::NodeService;
use qbd_transport_l2::serve::{L2Server, ServeOptions, ServeStats};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// How to run a [`LocalNode`].
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Worker threads of its runtime (tokio's default, one per CPU, when `None`).
    pub threads: Option<usize>,
    /// Where TCP listens (port 0: any free port).
    pub listen: SocketAddr,
    /// Also serve QBD-L2 with these options.
    pub l2: Option<ServeOptions>,
}

impl NodeOptions {
    /// TCP only, on 127.0.0.1, any port.
    pub fn loopback(threads: Option<usize>) -> Self {
        NodeOptions {
            threads,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            l2: None,
        }
    }
}

/// A node served until dropped (then it stops gracefully and its data goes).
#[derive(Debug)]
pub struct LocalNode {
    addr: SocketAddr,
    key: ClusterKey,
    runtime: tokio::runtime::Handle,
    /// Dropped (stopped) before the runtime its slow requests run on.
    l2: Option<L2Server>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    dir: tempfile::TempDir,
}

/// A fresh random cluster key (two UUIDv4s from the OS CSPRNG, as `qbd keygen`).
pub fn random_key() -> ClusterKey {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    k[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    ClusterKey(k)
}

impl LocalNode {
    /// Starts the node as `opts` says.
    pub fn start(opts: NodeOptions) -> Result<LocalNode, String> {
        let dir = tempfile::Builder::new()
            .prefix("qbd-bench-node.")
            .tempdir_in("/dev/shm")
            .or_else(|_| tempfile::Builder::new().prefix("qbd-bench-node.").tempdir())
            .map_err(|e| format!("cannot make the node's directory: {e}"))?;
        let key = random_key();
        let node =
            Arc::new(Node::open(dir.path(), "qbd-bench-node").map_err(|e| format!("node: {e}"))?);
        let mut rt = tokio::runtime::Builder::new_multi_thread();
        rt.enable_all().thread_name("qbd-bench-node");
        if let Some(n) = opts.threads {
            rt.worker_threads(n.max(1));
        }
        let rt = rt.build().map_err(|e| format!("node runtime: {e}"))?;
        let runtime = rt.handle().clone();
        let l2 = match opts.l2 {
            Some(l2) => {
                let iface = l2.iface.clone();
                let service = Arc::new(NodeService(Arc::clone(&node)));
                let server = L2Server::start(l2, key.clone(), service, rt.handle().clone())
                    .map_err(|e| format!("node: cannot serve QBD-L2 on {iface}: {e}"))?;
                Some(server)
            }
            None => None,
        };
        let (addr_tx, addr_rx) = mpsc::channel::<Result<SocketAddr, String>>();
        let (stop, stopped) = oneshot::channel::<()>();
        let serve_key = key.clone();
        let listen = opts.listen;
        let thread = std::thread::Builder::new()
            .name("qbd-bench-node-main".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match TcpListener::bind(listen).await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ =
                                addr_tx.send(Err(format!("node: cannot listen on {listen}: {e}")));
                            return;
                        }
                    };
                    let addr = listener.local_addr().map_err(|e| e.to_string());
                    let _ = addr_tx.send(addr);
                    qbd_node::serve(Arc::clone(&node), listener, serve_key, stopped).await;
                    let _ = node.sync_all().await;
                });
            })
            .map_err(|e| format!("node thread: {e}"))?;
        let addr = addr_rx
            .recv()
            .map_err(|_| "the node thread ended before listening".to_string())??;
        Ok(LocalNode {
            addr,
            key,
            runtime,
            l2,
            stop: Some(stop),
            thread: Some(thread),
            dir,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its cluster key.
    pub fn key(&self) -> ClusterKey {
        self.key.clone()
    }

    /// Its runtime (to run tasks next to it).
    pub fn runtime(&self) -> tokio::runtime::Handle {
        self.runtime.clone()
    }

    /// Its backend root.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The L2 server's counters, if it serves L2.
    pub fn l2_stats(&self) -> Option<ServeStats> {
        self.l2.as_ref().map(L2Server::stats)
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        if let Some(l2) = self.l2.take() {
            l2.stop();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
