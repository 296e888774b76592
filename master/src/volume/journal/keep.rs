//! Which records a cut of the journal must keep (compaction's rule).
//!
//! A record's footprint is the rows of one chunk it touches ([`Rows`]):
//! every record writes the parity of each of its rows, so two records of
//! the same row overlap even when their data blocks differ. Rows are
//! therefore the granularity: blocks would be finer than what a record's
//! parity actually rewrites.
//!
//! **The rule** ([`kept`]). Walking the records in sequence order, a
//! record is kept if it is live (not known synced), or if it is retired
//! but touches a row of an earlier kept record.
//!
//! **Why it is sound.** Invariant of the file: *if it holds any record of
//! a row, it holds the newest record of that row* (and every live record).
//! Take a row R with a kept record, and let N be R's newest record: N is
//! live (kept), or retired and newer than a kept record of R, so kept too.
//! By induction every record of R after its first kept one is kept: replay
//! in sequence order redoes R's updates from there on, in the order they
//! were applied, and ends at R's last written value (data blocks and the
//! parity over them). Blocks of R that no kept record writes were last
//! written by dropped records, which were retired, i.e. synced: the disk
//! already holds their last value, and no later update of them exists to
//! be rolled back. Rows with no kept record had only retired records:
//! synced, nothing to redo. The kept retired records touch other rows too,
//! which is why the rule grows the set of rows as it walks (transitively),
//! not just the rows of the live records.
//!
//! Dropping a retired record that is newer than a live one of the same row
//! — the rule this replaces — broke the invariant: replay redid the old
//! live record over the newer, synced one (a FUA write rolled back).

use std::collections::BTreeMap;

use super::RowUpdate;

/// The rows `start..end` of one chunk that a record touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rows {
    /// Chunk.
    pub chunk: u64,
    /// First row.
    pub start: u32,
    /// One past the last row.
    pub end: u32,
}

impl Rows {
    /// Every row `u` writes: its covered rows and every part entry's blocks
    /// (a part block is a row). The union, so a malformed update can only
    /// widen the footprint, never hide a row.
    pub fn of(u: &RowUpdate) -> Rows {
        let covered = (u.first_row, end_of(u.first_row, u.covers.len() as u64));
        let (start, end) = u.parts.iter().fold(covered, |(s, e), p| {
            (s.min(p.first), e.max(end_of(p.first, u64::from(p.count))))
        });
        Rows {
            chunk: u.chunk,
            start,
            end,
        }
    }
}

fn end_of(first: u32, count: u64) -> u32 {
    u32::try_from(u64::from(first) + count).unwrap_or(u32::MAX)
}

/// Disjoint row ranges per chunk, merged as they are added.
#[derive(Debug, Default)]
struct RowSet {
    /// (chunk, start) → end; no two ranges of a chunk overlap or touch.
    ranges: BTreeMap<(u64, u32), u32>,
}

impl RowSet {
    fn overlaps(&self, r: Rows) -> bool {
        // The range starting last before `r.end` ends furthest (disjoint
        // ranges): if any range overlaps `r`, that one does.
        self.ranges
            .range((r.chunk, 0)..(r.chunk, r.end))
            .next_back()
            .is_some_and(|(_, &end)| end > r.start)
    }

    fn add(&mut self, r: Rows) {
        let (mut start, mut end) = (r.start, r.end);
        // Each pass removes one range: bounded by the set's size.
        while let Some((&(c, s), &e)) = self.ranges.range((r.chunk, 0)..=(r.chunk, end)).next_back()
            && e >= start
        {
            self.ranges.remove(&(c, s));
            start = start.min(s);
            end = end.max(e);
        }
        self.ranges.insert((r.chunk, start), end);
    }
}

/// Per record, in sequence order (`(rows, live)`), whether a cut keeps it.
pub fn kept(records: impl IntoIterator<Item = (Rows, bool)>) -> Vec<bool> {
    let mut rows = RowSet::default();
    records
        .into_iter()
        .map(|(r, live)| {
            let keep = live || rows.overlaps(r);
            if keep {
                rows.add(r);
            }
            keep
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(chunk: u64, start: u32, end: u32) -> Rows {
        Rows { chunk, start, end }
    }

    #[test]
    fn retired_records_newer_than_a_live_one_of_its_rows_are_kept() {
        let got = kept([
            (rows(0, 0, 1), false), // older than any live record: dropped
            (rows(0, 0, 1), true),  // live
            (rows(0, 0, 1), false), // newer FUA of the same row: kept
            (rows(0, 1, 2), false), // another row: dropped
            (rows(1, 0, 1), false), // another chunk: dropped
        ]);
        assert_eq!(got, [false, true, true, false, false]);
    }

    #[test]
    fn the_kept_rows_grow_transitively() {
        let got = kept([
            (rows(3, 4, 6), true),   // live: rows 4, 5
            (rows(3, 5, 9), false),  // overlaps row 5: kept, adds 6..9
            (rows(3, 8, 9), false),  // row 8, newer than the kept 5..9
            (rows(3, 9, 10), false), // touches but does not overlap 4..9
            (rows(3, 0, 4), false),  // just below
        ]);
        assert_eq!(got, [true, true, true, false, false]);
    }

    #[test]
    fn merged_ranges_still_find_every_overlap() {
        let got = kept([
            (rows(0, 10, 11), true),
            (rows(0, 20, 21), true),
            (rows(0, 11, 20), true), // joins both into 10..21
            (rows(0, 15, 16), false),
            (rows(0, 20, 22), false),
            (rows(0, 9, 10), false),
        ]);
        assert_eq!(got, [true, true, true, true, true, false]);
    }
}
