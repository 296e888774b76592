//! The in-process node: `qbd_node::serve` on 127.0.0.1:0 in its own tokio
//! runtime (its own threads, as a separate daemon would have), data in a
//! temporary directory on /dev/shm, a fresh random cluster key.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use qbd_core::proto::ClusterKey;
use qbd_node::Node;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A node served until dropped (then it stops gracefully and its data goes).
#[derive(Debug)]
pub struct LocalNode {
    addr: SocketAddr,
    key: ClusterKey,
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
    /// Starts the node; `threads` worker threads (tokio's default when `None`).
    pub fn start(threads: Option<usize>) -> Result<LocalNode, String> {
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
        if let Some(n) = threads {
            rt.worker_threads(n.max(1));
        }
        let rt = rt.build().map_err(|e| format!("node runtime: {e}"))?;
        let (addr_tx, addr_rx) = mpsc::channel::<Result<SocketAddr, String>>();
        let (stop, stopped) = oneshot::channel::<()>();
        let serve_key = key.clone();
        let thread = std::thread::Builder::new()
            .name("qbd-bench-node-main".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match TcpListener::bind("127.0.0.1:0").await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = addr_tx.send(Err(format!("node: cannot listen: {e}")));
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

    /// Its backend root.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
