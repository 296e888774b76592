//! `<root>/.backend`: who this backend is.
//!
//! ```toml
//! format_version = 1
//! id = "6f1c0c4e-..."   # made when the root is first used
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::atomic::{parse_toml, read_optional, write_atomic};
use crate::placement::BackendId;
use crate::{CoreError, CoreResult};

/// File name under the backend root.
pub const FILE: &str = ".backend";

/// The decoded `.backend` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendFile {
    /// Format version (1).
    pub format_version: u32,
    /// The identity.
    pub id: BackendId,
}

impl BackendFile {
    /// Encodes as TOML.
    pub fn to_toml(&self) -> String {
        format!(
            "format_version = {}\nid = \"{}\"\n",
            self.format_version, self.id
        )
    }
}

/// Reads the identity of `root`, creating it if the root has none yet.
pub fn load_or_create(root: &Path) -> CoreResult<BackendId> {
    let path = root.join(FILE);
    if let Some(bytes) = read_optional(&path)? {
        let f: BackendFile = parse_toml("backend identity", &path, &bytes)?;
        if f.format_version != 1 {
            return Err(CoreError::Corrupt {
                what: "backend identity",
                path,
                why: format!("unsupported format_version {}", f.format_version),
            });
        }
        return Ok(f.id);
    }
    let f = BackendFile {
        format_version: 1,
        id: BackendId(Uuid::new_v4()),
    };
    write_atomic(&path, f.to_toml().as_bytes())?;
    Ok(f.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_and_round_trip() -> CoreResult<()> {
        let f = BackendFile {
            format_version: 1,
            id: BackendId(Uuid::from_u128(1)),
        };
        let text = f.to_toml();
        assert_eq!(
            text,
            "format_version = 1\nid = \"00000000-0000-0000-0000-000000000001\"\n"
        );
        let back: BackendFile = parse_toml("b", Path::new("x"), text.as_bytes())?;
        assert_eq!(back, f);
        Ok(())
    }

    #[test]
    fn truncated_or_garbage_is_an_error() {
        let text = BackendFile {
            format_version: 1,
            id: BackendId(Uuid::from_u128(1)),
        }
        .to_toml();
        for n in [5, 20, text.len() - 10] {
            assert!(
                parse_toml::<BackendFile>("b", Path::new("x"), &text.as_bytes()[..n]).is_err(),
                "{n}"
            );
        }
        assert!(parse_toml::<BackendFile>("b", Path::new("x"), b"\xff\xfe").is_err());
    }

    #[test]
    fn created_once_then_stable() -> CoreResult<()> {
        let d = tempfile::tempdir().map_err(|e| CoreError::io("tempdir", "/tmp", e))?;
        let a = load_or_create(d.path())?;
        assert_eq!(load_or_create(d.path())?, a);
        Ok(())
    }
}
