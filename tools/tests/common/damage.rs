//! What the tests do to a backend's files, and how they prove the tools
//! changed nothing: part files deleted, truncated, a byte flipped inside a
//! written block's data or inside the header; a hash of a whole tree.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use qbd_core::format::header::{HEADER_LEN, PartHeader};

/// The volume directory `<root>/<nr>` of the one volume a root holds.
pub fn volume_dir(root: &Path) -> PathBuf {
    let mut numbered: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("list {}: {e}", root.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    assert_eq!(numbered.len(), 1, "{} holds one volume", root.display());
    numbered.remove(0)
}

/// A root's identity (`id` in `.backend`).
pub fn backend_id(root: &Path) -> String {
    let text = std::fs::read_to_string(root.join(".backend"))
        .unwrap_or_else(|e| panic!("read {}/.backend: {e}", root.display()));
    text.lines()
        .find_map(|l| {
            Some(
                l.strip_prefix("id")?
                    .trim_start()
                    .strip_prefix('=')?
                    .trim()
                    .trim_matches('"')
                    .to_owned(),
            )
        })
        .unwrap_or_else(|| panic!("no id in {}/.backend", root.display()))
}

/// Deletes a part file.
pub fn delete(path: &Path) {
    std::fs::remove_file(path).unwrap_or_else(|e| panic!("delete {}: {e}", path.display()));
}

/// Cuts a part file to `len` bytes.
pub fn truncate(path: &Path, len: u64) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.set_len(len)
        .unwrap_or_else(|e| panic!("truncate {}: {e}", path.display()));
}

/// The decoded header of a part file.
pub fn header(path: &Path) -> PartHeader {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut b = [0u8; HEADER_LEN];
    f.read_exact_at(&mut b, 0)
        .unwrap_or_else(|e| panic!("read header: {e}"));
    PartHeader::decode(&b).unwrap_or_else(|e| panic!("header of {}: {e}", path.display()))
}

/// Flips one bit in the data of part block `block` (which must have been
/// written: its record then no longer matches).
pub fn flip_data(path: &Path, block: u32) {
    let h = header(path);
    let at = h.data_offset + u64::from(block) * u64::from(h.block_size) + 100;
    flip_at(path, at);
}

/// Flips one bit inside the header.
pub fn flip_header(path: &Path) {
    flip_at(path, 20);
}

fn flip_at(path: &Path, at: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at)
        .unwrap_or_else(|e| panic!("read: {e}"));
    b[0] ^= 0x10;
    f.write_all_at(&b, at)
        .unwrap_or_else(|e| panic!("write: {e}"));
}

/// A hash of every file under `roots`: path, size, mode, mtime, content.
pub fn tree_hash(roots: &[PathBuf]) -> u64 {
    let mut h = DefaultHasher::new();
    for r in roots {
        hash_dir(r, &mut h);
    }
    h.finish()
}

fn hash_dir(dir: &Path, h: &mut DefaultHasher) {
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(e) => e.filter_map(Result::ok).map(|e| e.path()).collect(),
        Err(_) => return,
    };
    entries.sort();
    for p in entries {
        p.hash(h);
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_dir() {
            hash_dir(&p, h);
        } else {
            md.len().hash(h);
            md.modified().ok().hash(h);
            std::fs::read(&p).unwrap_or_default().hash(h);
        }
    }
}
