//! On-disk binary formats (specified byte by byte in `docs/format.md`).
//!
//! - [`header`]: the part file header (magic, version, volume UUID, chunk, part, shape).
//! - [`record`]: the per-block meta record (checksums, generation, flags).
//! - [`groups`]: which groups of records a part has initialised (an
//!   all-zero record in an initialised group is damage, not "never written").
//! - [`layout`]: where header, meta region and data region sit in a part file.
//! - [`alloc`]: the allocation map of written chunks (`<nr>/.alloc`).
//!
//! All integers are little-endian. Every structure carries its own checksum:
//! BLAKE3 truncated to 128 bits ([`checksum128`]).

pub mod alloc;
pub mod groups;
pub mod header;
pub mod layout;
pub mod record;

/// BLAKE3 of the concatenated slices, truncated to 128 bits.
pub fn checksum128(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(p);
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

/// Reads a little-endian integer at a fixed range of a slice whose length
/// was checked by the caller.
pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

pub(crate) fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
