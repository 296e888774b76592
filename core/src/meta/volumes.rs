//! `<root>/.volumesmeta`: volume name ↔ number on one backend.
//!
//! ```toml
//! format_version = 1
//! [volumes]
//! mydevice1 = 11
//! ```
//!
//! Numbers are allocated by the master when it creates a volume: one number,
//! the same on every backend of the volume, unused on all of them (dedupe
//! pointers carry it in 2 bytes, so 1..=65535).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::atomic::{parse_toml, read_optional, write_atomic};
use crate::{CoreError, CoreResult};

/// File name under the backend root.
pub const FILE: &str = ".volumesmeta";

/// The decoded `.volumesmeta` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct VolumesFile {
    /// Format version (1).
    pub format_version: u32,
    /// Name → number.
    pub volumes: BTreeMap<String, u16>,
}

impl VolumesFile {
    /// Loads from `root` (empty if absent).
    pub fn load(root: &Path) -> CoreResult<Self> {
        let path = root.join(FILE);
        match read_optional(&path)? {
            None => Ok(VolumesFile {
                format_version: 1,
                volumes: BTreeMap::new(),
            }),
            Some(b) => parse_toml("volume list", &path, &b),
        }
    }

    /// Saves to `root` atomically.
    pub fn save(&self, root: &Path) -> CoreResult<()> {
        let text = toml::to_string(self).map_err(|e| CoreError::InvalidSetting(e.to_string()))?;
        write_atomic(&root.join(FILE), text.as_bytes())
    }

    /// The lowest number unused in every one of `files`.
    pub fn allocate(files: &[VolumesFile]) -> CoreResult<u16> {
        let used: std::collections::BTreeSet<u16> = files
            .iter()
            .flat_map(|f| f.volumes.values().copied())
            .collect();
        (1..=u16::MAX)
            .find(|n| !used.contains(n))
            .ok_or_else(|| CoreError::InvalidSetting("no free volume number".into()))
    }
}

/// Valid volume names: 1..=64 of `[A-Za-z0-9._-]`, not starting with a dot.
pub fn check_name(name: &str) -> CoreResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(CoreError::InvalidSetting(format!(
            "bad volume name {name:?}: use 1-64 of A-Z a-z 0-9 . _ - (not starting with '.')"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_and_round_trip() -> CoreResult<()> {
        let mut f = VolumesFile {
            format_version: 1,
            ..Default::default()
        };
        f.volumes.insert("mydevice1".into(), 11);
        let text = toml::to_string(&f).map_err(|e| CoreError::InvalidSetting(e.to_string()))?;
        assert_eq!(text, "format_version = 1\n\n[volumes]\nmydevice1 = 11\n");
        assert_eq!(
            parse_toml::<VolumesFile>("v", Path::new("x"), text.as_bytes())?,
            f
        );
        // Cut inside the entry (a cut at a line end can still be valid TOML;
        // whole-file atomic writes are what rule that out).
        assert!(parse_toml::<VolumesFile>("v", Path::new("x"), &text.as_bytes()[..35]).is_err());
        Ok(())
    }

    #[test]
    fn allocation_avoids_numbers_used_anywhere() {
        let mut a = VolumesFile::default();
        a.volumes.insert("x".into(), 1);
        let mut b = VolumesFile::default();
        b.volumes.insert("y".into(), 2);
        assert_eq!(VolumesFile::allocate(&[a, b]).ok(), Some(3));
        assert_eq!(VolumesFile::allocate(&[]).ok(), Some(1));
    }

    #[test]
    fn names() {
        assert!(check_name("demo").is_ok());
        assert!(check_name("vm-01.disk_a").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
