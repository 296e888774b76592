//! Chunk bitmaps: one bit per chunk, in checksummed 4 KiB pages.
//!
//! Three files share this format, told apart by their magic:
//! - `QBDALLOC`, `<nr>/.alloc`: the allocation map (below).
//! - `QBDSTALE`, `<nr>/.stale.<backend-uuid>`: the degraded map — chunks
//!   whose part on that backend missed writes; held by the other backends.
//! - `QBDINTNT`, `<state>/<volume-uuid>.intent`: the master's write-intent
//!   log; the header's tag is the epoch of the master that wrote it.
//!
//! The allocation map: which chunks have ever been written (`<nr>/.alloc`).
//!
//! This is how a missing part is told from a never-written one: before the
//! first write to a chunk, the chunk's bit is set (and synced) on every
//! backend that holds one of its parts. A part file that is absent while its
//! bit is set is *missing* (an error, never zeros); absent with the bit clear
//! is *never written* (zeros). Bits are only ever set.
//!
//! File: 4 KiB pages. Page 0 is the header:
//!
//! | bytes    | field                         |
//! |----------|-------------------------------|
//! | 0..8     | magic (`QBDALLOC`, `QBDSTALE`, `QBDINTNT`) |
//! | 8..10    | version (1)                   |
//! | 10..16   | reserved (0)                  |
//! | 16..32   | volume UUID                   |
//! | 32..40   | chunk count                   |
//! | 40..48   | tag (intent: epoch; else 0)   |
//! | 48..112  | reserved (0)                  |
//! | 112..128 | BLAKE3-128 of bytes 0..112    |
//!
//! Page `p >= 1` holds the bits of chunks `(p-1)·32512 ..`: bytes 0..4064
//! bitmap (chunk `c` is bit `c % 8` of byte `(c % 32512) / 8` of its page),
//! 4064..4072 the page number, 4072..4080 reserved, 4080..4096 BLAKE3-128 of
//! bytes 0..4080. An all-zero page (a hole) is valid and empty. A page that
//! fails its checksum is reported; callers treat its chunks as allocated
//! (the safe side: absent parts then report as missing, not as zeros).

use uuid::Uuid;

use super::{checksum128, le_u16, le_u64};
use crate::{CoreError, CoreResult};

/// Page size of the map file.
pub const PAGE: usize = 4096;
/// Chunks per bitmap page.
pub const CHUNKS_PER_PAGE: u64 = 4064 * 8;

/// Which bitmap file this is (its magic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitmapKind {
    /// The allocation map.
    Alloc,
    /// A degraded (stale) map.
    Stale,
    /// The master's write-intent log.
    Intent,
}

impl BitmapKind {
    fn magic(self) -> [u8; 8] {
        match self {
            BitmapKind::Alloc => *b"QBDALLOC",
            BitmapKind::Stale => *b"QBDSTALE",
            BitmapKind::Intent => *b"QBDINTNT",
        }
    }
}

/// An in-memory chunk bitmap (allocation, stale or intent map).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocMap {
    kind: BitmapKind,
    volume: Uuid,
    chunks: u64,
    tag: u64,
    bits: Vec<u8>,
}

/// The result of decoding a map file.
#[derive(Debug)]
pub struct DecodedAlloc {
    /// The map (corrupt pages already treated as all-allocated).
    pub map: AllocMap,
    /// Page numbers that failed their checksum.
    pub corrupt_pages: Vec<u64>,
}

impl AllocMap {
    /// An empty allocation map.
    pub fn new(volume: Uuid, chunks: u64) -> Self {
        Self::with_kind(BitmapKind::Alloc, volume, chunks, 0)
    }

    /// An empty bitmap of `kind` with header tag `tag`.
    pub fn with_kind(kind: BitmapKind, volume: Uuid, chunks: u64, tag: u64) -> Self {
        let pages = chunks.div_ceil(CHUNKS_PER_PAGE).max(1);
        AllocMap {
            kind,
            tag,
            volume,
            chunks,
            bits: vec![0; (pages * 4064) as usize],
        }
    }

    /// The volume this map belongs to.
    pub fn volume(&self) -> Uuid {
        self.volume
    }

    /// Number of chunks covered.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// Is chunk `c` allocated?
    pub fn get(&self, c: u64) -> bool {
        c < self.chunks && self.bits[(c / 8) as usize] & (1 << (c % 8)) != 0
    }

    /// Sets chunk `c`; returns the page number to persist if it changed.
    pub fn set(&mut self, c: u64) -> Option<u64> {
        if c >= self.chunks || self.get(c) {
            return None;
        }
        self.bits[(c / 8) as usize] |= 1 << (c % 8);
        Some(c / CHUNKS_PER_PAGE + 1)
    }

    /// Clears chunk `c` again after its page failed to persist, so memory
    /// never claims more than the file (on disk, bits are only ever set).
    pub(crate) fn unset_unpersisted(&mut self, c: u64) {
        if c < self.chunks {
            self.bits[(c / 8) as usize] &= !(1 << (c % 8));
        }
    }

    /// Clears chunk `c`; returns the page number to persist if it changed.
    pub fn clear(&mut self, c: u64) -> Option<u64> {
        if !self.get(c) {
            return None;
        }
        self.bits[(c / 8) as usize] &= !(1 << (c % 8));
        Some(c / CHUNKS_PER_PAGE + 1)
    }

    /// The header tag (the intent log's epoch).
    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// True if no chunk is set.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|&b| b == 0)
    }

    /// Merges another map (union).
    pub fn union(&mut self, other: &AllocMap) {
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            *a |= *b;
        }
    }

    /// Allocated chunk indexes, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.chunks).filter(|&c| self.get(c))
    }

    /// Number of pages the file has (header included).
    pub fn page_count(&self) -> u64 {
        self.bits.len() as u64 / 4064 + 1
    }

    /// Encodes the header page.
    pub fn encode_header(&self) -> [u8; PAGE] {
        let mut b = [0u8; PAGE];
        b[0..8].copy_from_slice(&self.kind.magic());
        b[8..10].copy_from_slice(&1u16.to_le_bytes());
        b[16..32].copy_from_slice(self.volume.as_bytes());
        b[32..40].copy_from_slice(&self.chunks.to_le_bytes());
        b[40..48].copy_from_slice(&self.tag.to_le_bytes());
        let sum = checksum128(&[&b[..112]]);
        b[112..128].copy_from_slice(&sum);
        b
    }

    /// Encodes bitmap page `page` (>= 1).
    pub fn encode_page(&self, page: u64) -> [u8; PAGE] {
        let mut b = [0u8; PAGE];
        let start = ((page - 1) * 4064) as usize;
        b[..4064].copy_from_slice(&self.bits[start..start + 4064]);
        b[4064..4072].copy_from_slice(&page.to_le_bytes());
        let sum = checksum128(&[&b[..4080]]);
        b[4080..].copy_from_slice(&sum);
        b
    }

    /// Encodes the whole file.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.encode_header().to_vec();
        for p in 1..self.page_count() {
            out.extend_from_slice(&self.encode_page(p));
        }
        out
    }

    /// Decodes a whole allocation map file, checking it belongs to `volume`.
    pub fn decode(bytes: &[u8], volume: Uuid) -> CoreResult<DecodedAlloc> {
        Self::decode_kind(bytes, BitmapKind::Alloc, volume)
    }

    /// Decodes a whole bitmap file of `kind`, checking it belongs to `volume`.
    pub fn decode_kind(bytes: &[u8], kind: BitmapKind, volume: Uuid) -> CoreResult<DecodedAlloc> {
        let bad = |why: &str| Err(CoreError::malformed("chunk bitmap", why));
        if bytes.len() < 128 {
            return bad("truncated header");
        }
        if bytes[0..8] != kind.magic() || checksum128(&[&bytes[..112]]) != bytes[112..128] {
            return bad("bad magic or header checksum");
        }
        if le_u16(bytes, 8) != 1 {
            return bad("unsupported version");
        }
        if bytes[16..32] != *volume.as_bytes() {
            return bad("belongs to another volume");
        }
        let mut map = AllocMap::with_kind(kind, volume, le_u64(bytes, 32), le_u64(bytes, 40));
        if bytes.len() as u64 > map.page_count() * PAGE as u64
            || !bytes.len().is_multiple_of(PAGE) && bytes.len() > PAGE
        {
            return bad("unexpected file length");
        }
        let mut corrupt_pages = Vec::new();
        for p in 1..map.page_count() {
            let at = (p as usize) * PAGE;
            let Some(page) = bytes.get(at..at + PAGE) else {
                continue;
            };
            let start = ((p - 1) * 4064) as usize;
            if page.iter().all(|&x| x == 0) {
                continue;
            }
            if checksum128(&[&page[..4080]]) != page[4080..] || le_u64(page, 4064) != p {
                corrupt_pages.push(p);
                map.bits[start..start + 4064].fill(0xff);
                continue;
            }
            map.bits[start..start + 4064].copy_from_slice(&page[..4064]);
        }
        Ok(DecodedAlloc { map, corrupt_pages })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOL: Uuid = Uuid::from_u128(42);

    #[test]
    fn set_reports_the_page_once() {
        let mut m = AllocMap::new(VOL, 100_000);
        assert_eq!(m.set(5), Some(1));
        assert_eq!(m.set(5), None);
        assert_eq!(m.set(CHUNKS_PER_PAGE), Some(2));
        assert_eq!(m.set(100_000), None);
        assert!(m.get(5) && !m.get(6));
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![5, CHUNKS_PER_PAGE]);
    }

    #[test]
    fn golden_header() {
        let m = AllocMap::new(VOL, 3);
        let h = m.encode_header();
        assert_eq!(&h[0..10], b"QBDALLOC\x01\x00");
        assert_eq!(&h[16..32], &42u128.to_be_bytes());
        assert_eq!(&h[32..40], &3u64.to_le_bytes());
    }

    #[test]
    fn round_trip_and_sparse_pages() -> CoreResult<()> {
        let mut m = AllocMap::new(VOL, 3 * CHUNKS_PER_PAGE);
        m.set(1);
        m.set(2 * CHUNKS_PER_PAGE + 7);
        let mut bytes = m.encode();
        // Page 2 never written: a hole reads as zeros and is valid.
        bytes[2 * PAGE..3 * PAGE].fill(0);
        let d = AllocMap::decode(&bytes, VOL)?;
        assert!(d.corrupt_pages.is_empty());
        assert_eq!(d.map, m);
        Ok(())
    }

    #[test]
    fn truncated_foreign_or_corrupt() -> CoreResult<()> {
        let mut m = AllocMap::new(VOL, 10);
        m.set(3);
        let bytes = m.encode();
        assert!(AllocMap::decode(&bytes[..100], VOL).is_err());
        assert!(AllocMap::decode(&bytes, Uuid::from_u128(1)).is_err());
        let mut flipped = bytes.clone();
        flipped[PAGE + 100] ^= 4;
        let d = AllocMap::decode(&flipped, VOL)?;
        assert_eq!(d.corrupt_pages, vec![1]);
        assert!(d.map.get(9), "a corrupt page counts as allocated");
        Ok(())
    }

    #[test]
    fn kinds_are_told_apart_and_the_tag_round_trips() -> CoreResult<()> {
        let mut m = AllocMap::with_kind(BitmapKind::Intent, VOL, 70_000, 17);
        m.set(40_000);
        let bytes = m.encode();
        assert_eq!(&bytes[0..8], b"QBDINTNT");
        assert_eq!(&bytes[40..48], &17u64.to_le_bytes());
        let d = AllocMap::decode_kind(&bytes, BitmapKind::Intent, VOL)?;
        assert_eq!(d.map, m);
        assert_eq!(d.map.tag(), 17);
        assert!(
            AllocMap::decode(&bytes, VOL).is_err(),
            "an intent log is not an allocation map"
        );
        assert!(AllocMap::decode_kind(&bytes, BitmapKind::Stale, VOL).is_err());
        Ok(())
    }

    #[test]
    fn clear_reports_the_page_once() {
        let mut m = AllocMap::with_kind(BitmapKind::Stale, VOL, 100, 0);
        assert_eq!(m.clear(3), None);
        m.set(3);
        assert_eq!(m.clear(3), Some(1));
        assert!(!m.get(3) && m.is_empty());
    }
}
