//! On-disk damage to a stopped node's part files (docs/format.md: a part
//! file is `<data>/<volume nr>/<part letter>/<chunk>`): a flipped bit, a
//! zeroed 4 KiB record, a truncated file, a deleted file. The node is
//! restarted on the damaged directory; verify, read repair and `qbd
//! repair` must find and heal it.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::rng::Rng;

/// A kind of damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// One bit of one byte flipped.
    BitFlip,
    /// One aligned 4 KiB range zeroed.
    ZeroRecord,
    /// The file cut short.
    Truncate,
    /// The file deleted.
    Delete,
}

impl Damage {
    /// Every kind, in the order of the report.
    pub const ALL: [Damage; 4] = [
        Damage::BitFlip,
        Damage::ZeroRecord,
        Damage::Truncate,
        Damage::Delete,
    ];

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Damage::BitFlip => "damage: bit flip",
            Damage::ZeroRecord => "damage: zeroed record",
            Damage::Truncate => "damage: truncated part",
            Damage::Delete => "damage: deleted part",
        }
    }
}

/// Damages one part file under `data` chosen by `rng`; returns what it did
/// (None if the node holds no part file yet).
pub fn apply(data: &Path, kind: Damage, rng: &mut Rng) -> Result<Option<String>, String> {
    let mut parts = part_files(data);
    if parts.is_empty() {
        return Ok(None);
    }
    parts.sort();
    let path = parts[rng.below(parts.len() as u64) as usize].clone();
    let len = std::fs::metadata(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    let what = match kind {
        Damage::BitFlip => {
            let at = rng.below(len.max(1));
            flip(&path, at, 1 << rng.below(8))?;
            format!("flipped a bit at {at}")
        }
        Damage::ZeroRecord => {
            let at = rng.below((len / 4096).max(1)) * 4096;
            write_at(&path, at, &[0u8; 4096])?;
            format!("zeroed 4 KiB at {at}")
        }
        Damage::Truncate => {
            let to = rng.below(len.max(1));
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            f.set_len(to)
                .map_err(|e| format!("truncate {}: {e}", path.display()))?;
            format!("truncated to {to} of {len} bytes")
        }
        Damage::Delete => {
            std::fs::remove_file(&path).map_err(|e| format!("rm {}: {e}", path.display()))?;
            "deleted".to_string()
        }
    };
    Ok(Some(format!("{}: {what}", path.display())))
}

fn flip(path: &Path, at: u64, mask: u8) -> Result<(), String> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at)
        .map_err(|e| format!("read {}: {e}", path.display()))?;
    b[0] ^= mask;
    f.write_all_at(&b, at)
        .map_err(|e| format!("write {}: {e}", path.display()))
}

fn write_at(path: &Path, at: u64, bytes: &[u8]) -> Result<(), String> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all_at(bytes, at)
        .map_err(|e| format!("write {}: {e}", path.display()))
}

/// Every part file under a node's data directory: a file named by a
/// decimal chunk number in a one-letter part directory.
pub fn part_files(data: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(volumes) = std::fs::read_dir(data) else {
        return out;
    };
    for vol in volumes.flatten() {
        let Ok(letters) = std::fs::read_dir(vol.path()) else {
            continue;
        };
        for letter in letters.flatten() {
            let name = letter.file_name();
            let is_part_dir = name.len() == 1
                && name
                    .to_string_lossy()
                    .chars()
                    .all(|c| c.is_ascii_lowercase());
            if !is_part_dir {
                continue;
            }
            let Ok(files) = std::fs::read_dir(letter.path()) else {
                continue;
            };
            for f in files.flatten() {
                let n = f.file_name();
                if !n.is_empty() && n.to_string_lossy().chars().all(|c| c.is_ascii_digit()) {
                    out.push(f.path());
                }
            }
        }
    }
    out
}
