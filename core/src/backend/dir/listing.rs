//! Verify's view of a volume directory: names and sizes, the allocation
//! map and the degraded maps (no part file is opened, nothing written).
//!
//! Named by the format (`docs/format.md` §1) and so not stray: `.meta`,
//! `.alloc`, `.lock`, `.stale.<uuid>`, the part directories `a`..`x` and
//! in them `<chunk>` (decimal, no leading zero). Everything else, including
//! leftovers of interrupted writes (`.<chunk>.new`, `.<name>.tmp.<pid>`),
//! is listed as stray.
//!
//! Part directories can hold 256k files: [`list_part_dir`] returns them by
//! pages of chunk numbers (sorted), so a node can answer within its message
//! size; a page reads the directory's names, then stats only its entries
//! (`fstatat` on the open directory).

use std::fs::{self, DirEntry};
use std::path::Path;

use uuid::Uuid;

use crate::CoreError;
use crate::backend::{BackendResult, PartId};
use crate::meta::atomic::read_optional;
use crate::meta::volume::{self, VolumeMeta};
use crate::placement::BackendId;
use crate::redundancy::MAX_PARTS;
use crate::verify::{PartFile, StrayFile, VolumeListing};

/// The volume directory's own files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeFiles {
    /// `.alloc` bytes, if present.
    pub alloc: Option<Vec<u8>>,
    /// Degraded maps: (backend described, file bytes).
    pub stale: Vec<(BackendId, Vec<u8>)>,
    /// Part directories present (0 = `a`).
    pub part_dirs: Vec<u8>,
    /// Other entries.
    pub strays: Vec<StrayFile>,
}

/// One page of a part directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartDirPage {
    /// Part files with chunk ≥ the page's start, sorted, at most `max`.
    pub files: Vec<PartFile>,
    /// Entries that are not part files (only on the page starting at 0).
    pub strays: Vec<StrayFile>,
    /// The chunk the next page starts at, if there are more.
    pub next: Option<u64>,
}

const STALE_PREFIX: &str = ".stale.";

/// Reads the volume directory `<root>/<number>` (not its part directories).
pub fn volume_files(root: &Path, number: u16) -> BackendResult<VolumeFiles> {
    let dir = VolumeMeta::dir(root, number);
    let mut out = VolumeFiles::default();
    let entries = fs::read_dir(&dir).map_err(|e| CoreError::io("list", &dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| CoreError::io("list", &dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        match classify_top(&name, is_dir) {
            Top::Known => {}
            Top::Alloc => out.alloc = read_optional(&entry.path())?,
            Top::Stale(of) => {
                if let Some(b) = read_optional(&entry.path())? {
                    out.stale.push((of, b));
                }
            }
            Top::PartDir(p) => out.part_dirs.push(p),
            Top::Stray => out.strays.push(stray(&entry, name, is_dir)),
        }
    }
    out.part_dirs.sort_unstable();
    out.stale.sort_by_key(|(of, _)| *of);
    out.strays.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Lists part directory `part` of the volume: files of chunks ≥ `from`,
/// sorted, at most `max` of them.
pub fn list_part_dir(
    root: &Path,
    number: u16,
    part: u8,
    from: u64,
    max: usize,
) -> BackendResult<PartDirPage> {
    let pname = crate::redundancy::part_name(usize::from(part));
    let dir = VolumeMeta::dir(root, number).join(pname.to_string());
    let mut out = PartDirPage::default();
    let mut chunks: Vec<(u64, DirEntry)> = Vec::new();
    let entries = fs::read_dir(&dir).map_err(|e| CoreError::io("list", &dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| CoreError::io("list", &dir, e))?;
        let name = entry.file_name();
        match name.to_str().and_then(parse_chunk) {
            Some(c) if c >= from => chunks.push((c, entry)),
            Some(_) => {}
            None if from == 0 => {
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                let path = format!("{pname}/{}", name.to_string_lossy());
                out.strays.push(stray(&entry, path, is_dir));
            }
            None => {}
        }
    }
    chunks.sort_unstable_by_key(|(c, _)| *c);
    if chunks.len() > max {
        out.next = Some(chunks[max].0);
        chunks.truncate(max);
    }
    for (chunk, entry) in chunks {
        let md = entry
            .metadata()
            .map_err(|e| CoreError::io("stat", entry.path(), e))?;
        let part = PartId { chunk, part };
        if md.is_file() {
            out.files.push(PartFile {
                part,
                size: md.len(),
            });
        } else {
            out.strays.push(StrayFile {
                path: format!("{pname}/{chunk}/"),
                size: 0,
            });
        }
    }
    out.strays.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The whole listing of a volume, unpaged (a directory backend's
/// `list_volume`).
pub fn list_volume(root: &Path, number: u16) -> BackendResult<VolumeListing> {
    let top = volume_files(root, number)?;
    let mut out = VolumeListing {
        alloc: top.alloc,
        stale: top.stale,
        parts: Vec::new(),
        strays: top.strays,
    };
    for p in top.part_dirs {
        let page = list_part_dir(root, number, p, 0, usize::MAX)?;
        out.parts.extend(page.files);
        out.strays.extend(page.strays);
    }
    Ok(out)
}

enum Top {
    Known,
    Alloc,
    Stale(BackendId),
    PartDir(u8),
    Stray,
}

fn classify_top(name: &str, is_dir: bool) -> Top {
    if is_dir {
        let b = name.as_bytes();
        return match b {
            [c] if c.is_ascii_lowercase() && usize::from(c - b'a') < MAX_PARTS => {
                Top::PartDir(c - b'a')
            }
            _ => Top::Stray,
        };
    }
    match name {
        volume::FILE | ".lock" => Top::Known,
        ".alloc" => Top::Alloc,
        _ => name
            .strip_prefix(STALE_PREFIX)
            .and_then(|id| Uuid::parse_str(id).ok())
            .map_or(Top::Stray, |u| Top::Stale(BackendId(u))),
    }
}

/// A chunk number as the format writes it: decimal, no sign, no leading
/// zero (but "0").
pub fn parse_chunk(name: &str) -> Option<u64> {
    let b = name.as_bytes();
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) || (b.len() > 1 && b[0] == b'0') {
        return None;
    }
    name.parse().ok()
}

fn stray(entry: &DirEntry, path: String, is_dir: bool) -> StrayFile {
    let size = if is_dir {
        0
    } else {
        entry.metadata().map_or(0, |m| m.len())
    };
    StrayFile {
        path: if is_dir { format!("{path}/") } else { path },
        size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_names_are_canonical_decimal() {
        assert_eq!(parse_chunk("0"), Some(0));
        assert_eq!(parse_chunk("262143"), Some(262_143));
        for bad in ["", "01", "+1", "1.new", ".1.new", "1.dd", "x", "-1"] {
            assert_eq!(parse_chunk(bad), None, "{bad}");
        }
    }

    #[test]
    fn top_level_names() {
        assert!(matches!(classify_top(".meta", false), Top::Known));
        assert!(matches!(classify_top(".lock", false), Top::Known));
        assert!(matches!(classify_top(".alloc", false), Top::Alloc));
        assert!(matches!(classify_top("a", true), Top::PartDir(0)));
        assert!(matches!(classify_top("x", true), Top::PartDir(23)));
        assert!(matches!(classify_top("y", true), Top::Stray));
        assert!(matches!(classify_top("a", false), Top::Stray));
        assert!(matches!(classify_top(".stale.nope", false), Top::Stray));
        let id = Uuid::from_u128(7);
        assert!(matches!(
            classify_top(&format!(".stale.{id}"), false),
            Top::Stale(BackendId(u)) if u == id
        ));
    }
}
