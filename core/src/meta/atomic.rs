//! Atomic file replacement: write a temp file, fsync it, rename it over the
//! target, fsync the directory. A reader sees the old or the new file, whole.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::{CoreError, CoreResult};

/// Replaces `path` with `bytes` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> CoreResult<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("meta");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        CoreError::io("write", path, e)
    })
}

/// Reads a whole file; `Ok(None)` if it does not exist.
pub fn read_optional(path: &Path) -> CoreResult<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CoreError::io("read", path, e)),
    }
}

/// Parses TOML bytes, naming the file on error.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    what: &'static str,
    path: &Path,
    bytes: &[u8],
) -> CoreResult<T> {
    let corrupt = |why: String| CoreError::Corrupt {
        what,
        path: path.to_path_buf(),
        why,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| corrupt(e.to_string()))?;
    toml::from_str(text).map_err(|e| corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_no_temp() -> CoreResult<()> {
        let d = tempfile::tempdir().map_err(|e| CoreError::io("tempdir", "/tmp", e))?;
        let p = d.path().join(".meta");
        write_atomic(&p, b"one")?;
        write_atomic(&p, b"two")?;
        assert_eq!(read_optional(&p)?, Some(b"two".to_vec()));
        let names: Vec<_> = fs::read_dir(d.path())
            .map_err(|e| CoreError::io("ls", d.path(), e))?
            .collect();
        assert_eq!(names.len(), 1);
        assert_eq!(read_optional(&d.path().join("absent"))?, None);
        Ok(())
    }
}
