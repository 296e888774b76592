//! How the admin endpoint reaches backends named in a request (NEW of
//! `replace`): a directory path on this host, or a node address over the
//! master's own transport with its cluster key.
//!
//! Paths must be absolute (the tool sends them so: the master's working
//! directory is not the tool's). A directory without `.backend` is
//! initialised as a backend, as offline `--replace` does. Nodes are reached
//! over TCP only; a master on the L2 transport refuses a node NEW.

use std::path::Path;
use std::sync::Arc;

use qbd_core::backend::Backend;
use qbd_core::backend::dir::DirBackend;
use qbd_core::placement::BackendId;
use qbd_core::proto::ClusterKey;
use qbd_transport_tcp::TcpOptions;
use uuid::Uuid;

use crate::backend_node::NodeBackend;

/// What a master needs to reach a backend it was not started with.
#[derive(Debug, Clone)]
pub struct Reach {
    /// The cluster key of the master's nodes (`None`: no `--cluster-key`
    /// nor `--insecure`, so no node can be reached).
    pub key: Option<ClusterKey>,
    /// How the master introduces itself to nodes.
    pub me: String,
    /// Nodes are reached over L2, not TCP (not supported here).
    pub l2: bool,
}

impl Reach {
    /// NEW as a backend: a directory (initialised if fresh) or a node.
    pub async fn backend(&self, what: &str) -> Result<Arc<dyn Backend>, String> {
        let path = Path::new(what);
        if path.is_absolute() {
            if !path.is_dir() {
                return Err(format!("{what} is not a directory"));
            }
            return DirBackend::open(path)
                .map(|b| Arc::new(b) as Arc<dyn Backend>)
                .map_err(|e| e.to_string());
        }
        self.node(what).await
    }

    async fn node(&self, addr: &str) -> Result<Arc<dyn Backend>, String> {
        crate::cli::parse_node(addr)
            .map_err(|e| format!("{e} (nor an absolute directory path)"))?;
        if self.l2 {
            return Err(
                "this master reaches its nodes over L2: a node NEW over TCP is not \
                        supported while serving; replace offline"
                    .into(),
            );
        }
        let Some(key) = &self.key else {
            return Err(
                "this master has no cluster key (--cluster-key): it cannot reach a node".into(),
            );
        };
        let sock = tokio::net::lookup_host(addr)
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("cannot resolve {addr}"))?;
        let b = NodeBackend::connect_tcp(sock, key.clone(), &self.me, TcpOptions::default())
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        Ok(Arc::new(b))
    }
}

/// OLD of a `replace` request: a UUID, or how one of the master's own
/// backends describes itself (`PATH` of `dir:PATH`, `HOST:PORT` of a node
/// reached over `tcp:HOST:PORT`), answered from the volume's backends as
/// `(identity, description)` by slot.
pub fn old_id(what: &str, slots: &[(BackendId, String)]) -> Option<BackendId> {
    if let Ok(u) = Uuid::parse_str(what) {
        return Some(BackendId(u));
    }
    let dir = format!("dir:{what}");
    let tcp = format!("(tcp:{what})");
    slots
        .iter()
        .find(|(_, d)| *d == dir || d.ends_with(&tcp))
        .map(|(id, _)| *id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_is_a_uuid_or_a_backend_description() {
        let a = BackendId(Uuid::from_u128(1));
        let b = BackendId(Uuid::from_u128(2));
        let slots = vec![
            (a, "dir:/srv/a".to_owned()),
            (b, "node n1 (tcp:127.0.0.1:7000)".to_owned()),
        ];
        assert_eq!(old_id("/srv/a", &slots), Some(a));
        assert_eq!(old_id("127.0.0.1:7000", &slots), Some(b));
        assert_eq!(old_id("127.0.0.1:700", &slots), None);
        assert_eq!(old_id(&b.0.to_string(), &slots), Some(b));
        assert_eq!(old_id("/srv", &slots), None);
    }
}
