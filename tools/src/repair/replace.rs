//! `--replace OLD=NEW` on the tool's side. Offline: find OLD's identity and
//! reach NEW, then let the volume switch its table
//! ([`qbd_master::volume::Volume::replace_backend`], crash-safe) and hand
//! back the backend set to reopen the volume on. Through a serving master,
//! the master does both ([`for_master`] makes paths absolute, as the
//! master's working directory is not ours).

use std::path::Path;
use std::sync::Arc;

use qbd_core::backend::Backend;
use qbd_core::backend::dir::DirBackend;
use qbd_core::placement::BackendId;
use uuid::Uuid;

use super::RepairError;
use crate::backends::{BackendArgs, connect_all};

/// A parsed `--replace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// OLD as given.
    pub old: String,
    /// NEW as given.
    pub new: String,
}

impl Spec {
    /// Parses `OLD=NEW`.
    pub fn parse(s: &str) -> Result<Spec, RepairError> {
        match s.split_once('=') {
            Some((o, n)) if !o.is_empty() && !n.is_empty() => Ok(Spec {
                old: o.into(),
                new: n.into(),
            }),
            _ => Err(RepairError::Usage(format!(
                "--replace {s:?}: expected OLD=NEW"
            ))),
        }
    }

    /// Whether a backend flag value names OLD (it is left out).
    pub fn is_old(&self, given: &str) -> bool {
        given == self.old
    }
}

/// One side of `OLD=NEW` as a serving master must get it: a path (it has
/// a `/` or names a directory here) made absolute; a UUID or `HOST:PORT`
/// as given.
pub fn for_master(side: &str) -> String {
    let p = Path::new(side);
    if !side.contains('/') && !p.is_dir() {
        return side.to_owned();
    }
    std::path::absolute(p).map_or_else(|_| side.to_owned(), |a| a.display().to_string())
}

/// OLD's identity: a UUID as written, or read from the directory or node
/// it names (which must then answer).
pub async fn old_id(spec: &Spec, args: &BackendArgs, me: &str) -> Result<BackendId, RepairError> {
    if let Ok(u) = Uuid::parse_str(&spec.old) {
        return Ok(BackendId(u));
    }
    let b = reach(&spec.old, args, me, false).await.map_err(|why| {
        RepairError::Usage(format!(
            "--replace: OLD {} cannot be reached ({why}): give its UUID (from the placement table in .meta)",
            spec.old
        ))
    })?;
    Ok(b.id())
}

/// NEW: a directory (initialised as a backend if fresh) or a node.
pub async fn new_backend(
    spec: &Spec,
    args: &BackendArgs,
    me: &str,
) -> Result<Arc<dyn Backend>, RepairError> {
    reach(&spec.new, args, me, true)
        .await
        .map_err(|why| RepairError::Usage(format!("--replace: NEW {}: {why}", spec.new)))
}

/// A directory path or a node address, as a backend.
async fn reach(
    what: &str,
    args: &BackendArgs,
    me: &str,
    init: bool,
) -> Result<Arc<dyn Backend>, String> {
    let path = Path::new(what);
    if path.is_dir() {
        let b = match init {
            true => DirBackend::open(path),
            false => DirBackend::open_existing(path),
        };
        return b
            .map(|b| Arc::new(b) as Arc<dyn Backend>)
            .map_err(|e| e.to_string());
    }
    let mut one = args.clone();
    one.dirs.clear();
    one.nodes = vec![what.to_owned()];
    let c = connect_all(&one, me).await.map_err(|e| e.to_string())?;
    if let Some(u) = c.unreachable.first() {
        return Err(u.why.clone());
    }
    c.backends
        .into_iter()
        .next()
        .ok_or_else(|| "not a directory, and no node answered there".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_needs_both_sides() {
        assert_eq!(
            Spec::parse("/srv/a=/srv/z").ok(),
            Some(Spec {
                old: "/srv/a".into(),
                new: "/srv/z".into()
            })
        );
        assert!(Spec::parse("/srv/a").is_err());
        assert!(Spec::parse("=/srv/z").is_err());
    }
}
