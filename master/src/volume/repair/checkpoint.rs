//! The repair checkpoint: `<state>/<volume-uuid>.repair`, TOML, written
//! atomically (temp, fsync, rename) at most about once a second while a
//! repair runs, and removed when a run completes. It names the first chunk
//! not yet repaired and what earlier chunks left, so an interrupted repair
//! continues from there (`--restart` ignores it). Resuming from an older
//! checkpoint than the last chunk done only repeats work: the repair of a
//! chunk is idempotent.

use std::path::{Path, PathBuf};

use qbd_core::meta::atomic::{read_optional, write_atomic};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::super::VolumeError;

/// What an interrupted run had done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The volume it belongs to.
    pub volume: Uuid,
    /// The first chunk not yet repaired.
    pub next_chunk: u64,
    /// Parts the earlier chunks left unrepaired.
    pub parts_left: u64,
    /// Blocks the earlier chunks had lost.
    pub lost_blocks: u64,
}

/// The checkpoint file of volume `uuid` under `state`.
pub fn path(state: &Path, uuid: Uuid) -> PathBuf {
    state.join(format!("{uuid}.repair"))
}

impl Checkpoint {
    /// The checkpoint under `state`, if one for this volume exists. A file
    /// that does not parse or names another volume is ignored (a fresh
    /// start repeats work, it loses nothing) and reported.
    pub fn load(state: &Path, uuid: Uuid) -> Result<Option<Checkpoint>, VolumeError> {
        let p = path(state, uuid);
        let Some(bytes) = read_optional(&p)? else {
            return Ok(None);
        };
        let parsed = std::str::from_utf8(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|t| toml::from_str::<Checkpoint>(t).map_err(|e| e.to_string()));
        match parsed {
            Ok(c) if c.volume == uuid => Ok(Some(c)),
            Ok(_) => Ok(None),
            Err(e) => {
                eprintln!(
                    "qbd repair: ignoring unreadable checkpoint {}: {e}",
                    p.display()
                );
                Ok(None)
            }
        }
    }

    /// Writes it atomically under `state`.
    pub fn save(&self, state: &Path) -> Result<(), VolumeError> {
        std::fs::create_dir_all(state)
            .map_err(|e| VolumeError::Setup(format!("create {}: {e}", state.display())))?;
        let text =
            toml::to_string(self).map_err(|e| VolumeError::Setup(format!("checkpoint: {e}")))?;
        write_atomic(&path(state, self.volume), text.as_bytes())?;
        Ok(())
    }

    /// Removes the checkpoint of `uuid` (a run completed).
    pub fn remove(state: &Path, uuid: Uuid) -> Result<(), VolumeError> {
        match std::fs::remove_file(path(state, uuid)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(VolumeError::Setup(format!(
                "remove checkpoint in {}: {e}",
                state.display()
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_checkpoint_loads_back_only_for_its_volume() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Checkpoint {
            volume: Uuid::new_v4(),
            next_chunk: 17,
            parts_left: 2,
            lost_blocks: 0,
        };
        c.save(dir.path()).expect("save");
        assert_eq!(
            Checkpoint::load(dir.path(), c.volume).expect("load"),
            Some(c)
        );
        assert_eq!(
            Checkpoint::load(dir.path(), Uuid::new_v4()).expect("load"),
            None
        );
        Checkpoint::remove(dir.path(), c.volume).expect("remove");
        assert_eq!(Checkpoint::load(dir.path(), c.volume).expect("load"), None);
    }

    #[test]
    fn garbage_checkpoint_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let uuid = Uuid::new_v4();
        std::fs::write(path(dir.path(), uuid), b"next_chunk = \"x\"").expect("write");
        assert_eq!(Checkpoint::load(dir.path(), uuid).expect("load"), None);
    }
}
