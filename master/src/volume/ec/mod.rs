//! Erasure-coded volumes (`ec:K+M`): the volume layer over `qbd_core::ec`.
//!
//! - [`rows`]: reading runs of rows from the parts, the parity covers, and
//!   reconstruction of unavailable data blocks under the torn-row rule
//!   (`check_row`): only a row's consistent decode set goes to the codec,
//!   one codec call per run of rows with the same erasure pattern.
//! - [`cache`]: reconstructed data parts kept in memory, keyed by
//!   (chunk, part), so one decode serves many degraded reads.
//! - [`read`]: a block maps to (row, data part, part block) and is read from
//!   that one part; blocks of an unusable part, or failing their checks,
//!   come from the cache (built for the whole chunk in one decode).
//! - [`write`]: row updates; [`parity`]: how parity blocks and their
//!   records reach a backend.
//! - [`recover`]: the heal plans of EC chunks: resync of stale parts and
//!   reconcile after a crash.
//!
//! Locking: every EC request locks whole rows (the block range rounded out
//! to multiples of K), shared for reads and exclusive for writes, so parity
//! sees the writes of a row in one order. Building a cache entry takes a
//! shared lock over the whole chunk, so the entry is one consistent
//! snapshot; every write invalidates its chunk's entries before it releases
//! its lock.
//!
//! Partial rows read the old data blocks the new parity needs (never the
//! old parity): with all data parts usable that is K − (blocks written)
//! single-block reads and no cover lookups at all.

pub(super) mod cache;
pub(super) mod parity;
pub(super) mod read;
pub(super) mod recover;
pub(super) mod rows;
pub(super) mod write;

use std::ops::Range;

use qbd_core::ec::{EcCodec, EcError, RowGeometry};
use qbd_core::geometry::Geometry;
use qbd_core::redundancy::Redundancy;

use super::io::Segment;

/// Bytes of reconstructed part data kept in memory per volume.
pub const CACHE_BYTES: usize = 64 << 20;

/// The EC state of a volume.
#[derive(Debug)]
pub struct Ec {
    pub(super) rows: RowGeometry,
    pub(super) codec: EcCodec,
    pub(super) cache: cache::PartCache,
}

impl Ec {
    /// The EC state of an `ec:K+M` geometry (None for replication).
    pub fn for_geometry(g: &Geometry) -> Result<Option<Self>, EcError> {
        if !matches!(g.redundancy, Redundancy::Ec { .. }) {
            return Ok(None);
        }
        Ok(Some(Ec {
            rows: RowGeometry::for_geometry(g)?,
            codec: EcCodec::for_redundancy(g.redundancy)?,
            cache: cache::PartCache::new(CACHE_BYTES),
        }))
    }

    pub(super) fn k(&self) -> usize {
        self.rows.data_parts()
    }

    pub(super) fn m(&self) -> usize {
        self.rows.parity_parts()
    }

    /// The rows a segment touches.
    pub(super) fn rows_of(&self, s: Segment) -> Range<u32> {
        let k = self.k() as u32;
        s.first / k..(s.first + s.count).div_ceil(k)
    }

    /// The part blocks (= rows) of data part `part` that hold chunk blocks
    /// `blocks`: a contiguous range, maybe empty.
    pub(super) fn part_rows(&self, part: usize, blocks: Range<u32>) -> Range<u32> {
        let k = self.k() as u32;
        let p = part as u32;
        let lo = blocks.start.saturating_sub(p).div_ceil(k);
        let hi = blocks.end.saturating_sub(p).div_ceil(k);
        lo..hi.max(lo)
    }
}

impl super::Volume {
    /// Reconstructed data parts held in memory (0 for replicated volumes).
    pub fn ec_cached_parts(&self) -> usize {
        self.scheme.erasure().map_or(0, |e| e.ec.cache.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ec(k: u8, m: u8) -> Ec {
        let g = Geometry::new(1 << 24, 4096, 1 << 20, Redundancy::Ec { k, m }).expect("geometry");
        Ec::for_geometry(&g).expect("ec").expect("ec volume")
    }

    #[test]
    fn part_rows_hold_exactly_the_blocks_of_the_range() {
        let e = ec(4, 2);
        for start in 0..20u32 {
            for end in start..24u32 {
                for p in 0..4usize {
                    let want: Vec<u32> = (start..end)
                        .filter(|b| (*b % 4) as usize == p)
                        .map(|b| b / 4)
                        .collect();
                    let got: Vec<u32> = e.part_rows(p, start..end).collect();
                    assert_eq!(got, want, "part {p} blocks {start}..{end}");
                }
            }
        }
    }

    #[test]
    fn segments_lock_whole_rows() {
        let e = ec(4, 2);
        let s = Segment {
            chunk: 0,
            first: 5,
            count: 4,
            start: 0,
        };
        assert_eq!(e.rows_of(s), 1..3);
    }
}
