//! `<root>/<nr>/.meta`: one volume's policy, shape, epoch and placement.
//!
//! ```toml
//! format_version = 1
//! name = "demo"
//! uuid = "0b7e..."
//! number = 1
//! size = 1073741824
//! block_size = 4096
//! chunk_size = 4194304
//! redundancy = "replicate:1"
//! read_only = false
//! append_only = false
//! epoch = 3
//! master = "host:pid"
//! placement = ["6f1c...", "..."]
//! ```
//!
//! Every backend of the volume holds the same file; the master rewrites it
//! atomically on all of them when it takes a new epoch.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::atomic::{parse_toml, read_optional, write_atomic};
use crate::geometry::Geometry;
use crate::placement::{BackendId, PlacementTable};
use crate::redundancy::Redundancy;
use crate::{CoreError, CoreResult};

/// File name inside the volume directory.
pub const FILE: &str = ".meta";

/// The decoded `.meta` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeMeta {
    /// Format version (1).
    pub format_version: u32,
    /// Volume name (= NBD export name).
    pub name: String,
    /// Volume UUID (in every part header).
    pub uuid: Uuid,
    /// Volume number (directory name).
    pub number: u16,
    /// Size in bytes.
    pub size: u64,
    /// Block size in bytes.
    pub block_size: u32,
    /// Chunk size in bytes.
    pub chunk_size: u64,
    /// `replicate:N` or `ec:K+M`.
    pub redundancy: String,
    /// The volume itself is read-only (e.g. a dedupe source).
    pub read_only: bool,
    /// Only appends allowed (reserved; not enforced yet).
    pub append_only: bool,
    /// The current master epoch.
    pub epoch: u64,
    /// Who took the current epoch (host:pid), for operators.
    pub master: String,
    /// The placement table: backend identities in order.
    pub placement: Vec<BackendId>,
}

/// What the operator asked for on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedShape {
    /// `--size`.
    pub size: Option<u64>,
    /// `--block-size` (None = default / as stored).
    pub block_size: Option<u32>,
    /// `--chunk-size`.
    pub chunk_size: Option<u64>,
    /// `--redundancy`.
    pub redundancy: Option<Redundancy>,
}

impl VolumeMeta {
    /// The directory of volume `number` under `root`.
    pub fn dir(root: &Path, number: u16) -> PathBuf {
        root.join(number.to_string())
    }

    /// Loads `<root>/<nr>/.meta`; `Ok(None)` if absent.
    pub fn load(root: &Path, number: u16) -> CoreResult<Option<Self>> {
        let path = Self::dir(root, number).join(FILE);
        let Some(bytes) = read_optional(&path)? else {
            return Ok(None);
        };
        let m: VolumeMeta = parse_toml("volume meta", &path, &bytes)?;
        m.validate().map_err(|e| CoreError::Corrupt {
            what: "volume meta",
            path,
            why: e.to_string(),
        })?;
        Ok(Some(m))
    }

    /// Saves atomically to `<root>/<nr>/.meta`.
    pub fn save(&self, root: &Path) -> CoreResult<()> {
        let text = toml::to_string(self).map_err(|e| CoreError::InvalidSetting(e.to_string()))?;
        write_atomic(&Self::dir(root, self.number).join(FILE), text.as_bytes())
    }

    /// Parses the stored policy.
    pub fn redundancy(&self) -> CoreResult<Redundancy> {
        self.redundancy.parse()
    }

    /// The stored geometry, validated.
    pub fn geometry(&self) -> CoreResult<Geometry> {
        Geometry::new(
            self.size,
            self.block_size,
            self.chunk_size,
            self.redundancy()?,
        )
    }

    /// The stored placement table, validated.
    pub fn placement(&self) -> CoreResult<PlacementTable> {
        PlacementTable::new(self.placement.clone(), self.redundancy()?.parts())
    }

    fn validate(&self) -> CoreResult<()> {
        if self.format_version != 1 {
            return Err(CoreError::InvalidSetting(format!(
                "unsupported format_version {}",
                self.format_version
            )));
        }
        self.geometry()?;
        self.placement()?;
        Ok(())
    }

    /// Refuses flags that contradict what is stored, naming each one.
    pub fn check_requested(&self, req: &RequestedShape) -> CoreResult<()> {
        let mut conflicts = Vec::new();
        let mut check = |flag: &str, asked: Option<String>, stored: String| {
            if let Some(a) = asked.filter(|a| *a != stored) {
                conflicts.push(format!("{flag} {a} (volume has {stored})"));
            }
        };
        use crate::size::format_size as fs;
        check("--size", req.size.map(fs), fs(self.size));
        check(
            "--block-size",
            req.block_size.map(|b| fs(b.into())),
            fs(self.block_size.into()),
        );
        check("--chunk-size", req.chunk_size.map(fs), fs(self.chunk_size));
        check(
            "--redundancy",
            req.redundancy.map(|r| r.to_string()),
            self.redundancy.clone(),
        );
        if conflicts.is_empty() {
            Ok(())
        } else {
            Err(CoreError::Conflict(format!(
                "volume {:?} exists with other settings: {}; drop these flags or pass the stored values",
                self.name,
                conflicts.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> VolumeMeta {
        VolumeMeta {
            format_version: 1,
            name: "demo".into(),
            uuid: Uuid::from_u128(7),
            number: 1,
            size: 1 << 30,
            block_size: 4096,
            chunk_size: 4 << 20,
            redundancy: "replicate:1".into(),
            read_only: false,
            append_only: false,
            epoch: 3,
            master: "host:1".into(),
            placement: vec![BackendId(Uuid::from_u128(9))],
        }
    }

    #[test]
    fn golden_and_round_trip() -> CoreResult<()> {
        let text =
            toml::to_string(&sample()).map_err(|e| CoreError::InvalidSetting(e.to_string()))?;
        assert!(text.starts_with(
            "format_version = 1\nname = \"demo\"\nuuid = \"00000000-0000-0000-0000-000000000007\"\n"
        ));
        assert!(text.contains("redundancy = \"replicate:1\"\n"));
        assert!(text.contains("placement = [\"00000000-0000-0000-0000-000000000009\"]\n"));
        let back: VolumeMeta = parse_toml("m", Path::new("x"), text.as_bytes())?;
        assert_eq!(back, sample());
        for n in [10, text.len() / 2, text.len() - 5] {
            assert!(
                parse_toml::<VolumeMeta>("m", Path::new("x"), &text.as_bytes()[..n]).is_err(),
                "{n}"
            );
        }
        Ok(())
    }

    #[test]
    fn conflicts_are_named() {
        let m = sample();
        let ok = RequestedShape {
            size: Some(1 << 30),
            block_size: None,
            chunk_size: None,
            redundancy: None,
        };
        assert!(m.check_requested(&ok).is_ok());
        let bad = RequestedShape {
            size: Some(2 << 30),
            block_size: Some(65536),
            ..ok
        };
        let e = m
            .check_requested(&bad)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("--size 2G (volume has 1G)"), "{e}");
        assert!(e.contains("--block-size 64K (volume has 4K)"), "{e}");
    }

    #[test]
    fn invalid_stored_shape_is_corrupt() -> CoreResult<()> {
        let d = tempfile::tempdir().map_err(|e| CoreError::io("tempdir", "/tmp", e))?;
        let mut m = sample();
        std::fs::create_dir_all(VolumeMeta::dir(d.path(), 1))
            .map_err(|e| CoreError::io("mkdir", d.path(), e))?;
        m.save(d.path())?;
        assert_eq!(VolumeMeta::load(d.path(), 1)?, Some(m.clone()));
        m.block_size = 1000;
        m.save(d.path())?;
        assert!(matches!(
            VolumeMeta::load(d.path(), 1),
            Err(CoreError::Corrupt { .. })
        ));
        Ok(())
    }
}
