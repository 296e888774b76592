//! The node's state: one backend root, and per volume an opened
//! [`DirBackend`] with the volume's current epoch.
//!
//! Invariants:
//! - A volume's `DirBackend` is made on the first `CreateVolume`,
//!   `SaveMeta` or `OpenVolume` for it and kept for the node's lifetime;
//!   once opened, the node holds the volume's `flock`. So between masters
//!   the fence is the **epoch**, not the lock.
//! - A volume's [`Claim`] (epoch and the master holding it) starts as the
//!   `epoch` and `master` of its `.meta` on disk (so a restarted node
//!   remembers it) and only grows: `SaveMeta` is a compare-and-set (a newer
//!   epoch, or the same epoch from the same master), and it persists
//!   `.meta` before the new claim takes effect.
//! - The claim lock is held shared by every fenced request (`Read`,
//!   `Write`, `ReadRaw`, `WriteRaw`, `Allocate`, `Recreate`, `SetStale`)
//!   for its whole duration and exclusively by `SaveMeta`: once a
//!   `SaveMeta` to epoch E has returned, no fenced request of another
//!   session epoch can still take effect.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use qbd_core::backend::dir::DirBackend;
use qbd_core::backend::{Backend, BackendError};
use qbd_core::meta::volume::VolumeMeta;
use qbd_core::placement::BackendId;
use qbd_core::proto::session::NodeHello;
use tokio::sync::RwLock;

use crate::error::NodeError;
use crate::stats::NodeStats;

/// A storage node: serves every volume under one backend root.
#[derive(Debug)]
pub struct Node {
    /// The root, for operations that need no open volume.
    root: DirBackend,
    name: String,
    volumes: Mutex<HashMap<u16, Arc<NodeVolume>>>,
    /// Serialises `CreateVolume`s (`.volumesmeta` is read-modify-write).
    creating: tokio::sync::Mutex<()>,
    stats: NodeStats,
}

/// One volume the node has touched.
#[derive(Debug)]
pub(crate) struct NodeVolume {
    pub(crate) backend: DirBackend,
    /// The current claim (see the module doc for who holds it how).
    pub(crate) epoch: RwLock<Claim>,
    /// The meta the volume was opened with, once it is open.
    pub(crate) opened: tokio::sync::Mutex<Option<VolumeMeta>>,
}

/// Who holds a volume: the epoch and the master that took it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Claim {
    pub(crate) epoch: u64,
    /// The master's identity as `.meta` records it (`host:pid:nonce`).
    pub(crate) master: String,
}

impl Node {
    /// Opens (and on first use initialises) the backend root `root`, which
    /// must exist. `name` is the node's `--id`.
    pub fn open(root: impl Into<PathBuf>, name: impl Into<String>) -> Result<Self, NodeError> {
        Ok(Node {
            root: DirBackend::open(root)?,
            name: name.into(),
            volumes: Mutex::new(HashMap::new()),
            creating: tokio::sync::Mutex::new(()),
            stats: NodeStats::default(),
        })
    }

    /// The backend identity (`.backend`).
    pub fn id(&self) -> BackendId {
        self.root.id()
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The backend root.
    pub fn root(&self) -> &Path {
        self.root.root()
    }

    /// What the node tells clients in its handshake.
    pub fn hello(&self) -> NodeHello {
        NodeHello {
            backend: self.id().0,
            name: self.name.clone(),
        }
    }

    /// The refusal counters.
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// The current epoch of volume `number`, if the node has touched it.
    pub async fn epoch(&self, number: u16) -> Option<u64> {
        let v = self.volume(number)?;
        let e = v.epoch.read().await.epoch;
        Some(e)
    }

    /// Makes every completed write of every open volume durable.
    pub async fn sync_all(&self) -> Result<(), NodeError> {
        let all: Vec<Arc<NodeVolume>> = self.lock_volumes().values().cloned().collect();
        for v in all {
            if v.opened.lock().await.is_some() {
                v.backend.sync(None).await?;
            }
        }
        Ok(())
    }

    pub(crate) fn root_backend(&self) -> &DirBackend {
        &self.root
    }

    pub(crate) async fn creating(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.creating.lock().await
    }

    /// The volume's state, if the node has touched it.
    pub(crate) fn volume(&self, number: u16) -> Option<Arc<NodeVolume>> {
        self.lock_volumes().get(&number).cloned()
    }

    /// The volume's state, made on first use: a fresh `DirBackend` and the
    /// epoch stored in its `.meta` (0 when there is none yet).
    pub(crate) fn volume_or_new(&self, number: u16) -> Result<Arc<NodeVolume>, BackendError> {
        let mut map = self.lock_volumes();
        if let Some(v) = map.get(&number) {
            return Ok(Arc::clone(v));
        }
        let stored =
            VolumeMeta::load(self.root(), number)?.map_or_else(Claim::default, |m| Claim {
                epoch: m.epoch,
                master: m.master,
            });
        let v = Arc::new(NodeVolume {
            backend: DirBackend::open(self.root())?,
            epoch: RwLock::new(stored),
            opened: tokio::sync::Mutex::new(None),
        });
        map.insert(number, Arc::clone(&v));
        Ok(v)
    }

    /// The map holds only `Arc`s, so a poisoned lock is as good as a clean one.
    fn lock_volumes(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Arc<NodeVolume>>> {
        self.volumes.lock().unwrap_or_else(|e| e.into_inner())
    }
}
