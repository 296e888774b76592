//! Backends missing when a master opens the volume: when it may serve
//! without them, and how one that answers later takes its slot back.
//!
//! A master whose nodes do not all answer (a node down, a connection
//! refused, a MAC that L2 discovery did not find within
//! `--discover-timeout`) opens the volume in [`OpenMode::ServeDegraded`]:
//! each missing entry of the placement table gets an [`Absent`] stand-in,
//! failed from the start, exactly like a backend that went down while
//! serving. Writes skip it and record its parts in the degraded map on the
//! backends present; chunks the previous master's write-intent log names
//! are recorded stale for it after reconcile (it may have missed their last
//! writes). The master serves only if [`check_present`] and [`check_stale`]
//! hold ("enough" below).
//!
//! [`Volume::admit`]: a backend that answers later with the identity of an
//! absent slot takes the slot, still failed; the next maintenance pass
//! readmits it as it readmits any failed backend ([`super::maintain`]: the
//! volume re-opened on it, the current epoch claimed with `SaveMeta`), and
//! its stale parts are resynced by the one heal path before they are read.
//!
//! **Enough.** Every chunk must keep enough usable parts to be read and
//! written (one copy, or K parts of an `ec:K+M` row), counting out the
//! absent backends and the parts the present backends' degraded maps mark
//! stale; and more than half of the placement table must be present. The
//! majority is there because of what the present backends cannot know: a
//! backend that failed during the previous master's epoch does not know it
//! missed writes; only the backends that took those writes recorded it. If
//! all of those are absent now, the present ones would serve old data as
//! current. Requiring a majority means that can only happen if more than
//! half of the table failed in one epoch and the rest is missing now; a
//! two-backend volume never starts with one. (`docs/replication.md`,
//! "Starting without a backend".)
//!
//! [`OpenMode::ServeDegraded`]: super::OpenMode::ServeDegraded
//! [`Absent`]: super::repair::absent::Absent

use std::collections::BTreeSet;
use std::sync::Arc;

use qbd_core::backend::Backend;
use qbd_core::placement::{BackendId, PlacementTable};
use qbd_core::redundancy::Redundancy;

use super::health::Health;
use super::{Volume, VolumeError};

/// Refuses to serve unless more than half of the placement table is
/// present and every chunk keeps enough parts on present backends.
/// `absent`: the slots with no backend; `chunks`: the volume's chunk count.
pub(super) fn check_present(
    name: &str,
    table: &PlacementTable,
    redundancy: Redundancy,
    chunks: u64,
    absent: &[usize],
) -> Result<(), VolumeError> {
    let total = table.entries().len();
    let present = total - absent.len();
    let missing = || {
        absent
            .iter()
            .map(|&s| table.entries()[s].to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if present * 2 <= total {
        return Err(VolumeError::Setup(format!(
            "only {present} of the {total} backends of volume {name:?} answered (missing: {}); \
             a master starts without some only while more than half are present",
            missing()
        )));
    }
    // Placement repeats every `total` chunks: one period covers them all.
    for chunk in 0..chunks.min(total as u64) {
        let usable = parts_on(table, redundancy, chunk, |s| !absent.contains(&s));
        if usable < redundancy.data_parts() {
            return Err(short(name, chunk, usable, redundancy, &missing()));
        }
    }
    Ok(())
}

/// Refuses to serve if a chunk has too few parts that are neither absent
/// nor stale in the degraded maps the present backends hold.
pub(super) fn check_stale(
    name: &str,
    table: &PlacementTable,
    redundancy: Redundancy,
    health: &Health,
) -> Result<(), VolumeError> {
    let slots = table.entries().len();
    let stale: BTreeSet<u64> = (0..slots)
        .filter(|&s| !health.is_absent(s))
        .flat_map(|s| health.stale_chunks(s))
        .collect();
    for chunk in stale {
        let usable = parts_on(table, redundancy, chunk, |s| {
            !health.is_failed(s) && !health.is_stale(s, chunk)
        });
        if usable < redundancy.data_parts() {
            let why = "the present backends' degraded maps mark the others' parts stale";
            return Err(short(name, chunk, usable, redundancy, why));
        }
    }
    Ok(())
}

/// How many parts of `chunk` lie on slots `ok` accepts.
fn parts_on(
    table: &PlacementTable,
    redundancy: Redundancy,
    chunk: u64,
    ok: impl Fn(usize) -> bool,
) -> usize {
    (0..redundancy.parts())
        .filter(|&p| ok(table.slot(chunk, p)))
        .count()
}

fn short(name: &str, chunk: u64, usable: usize, r: Redundancy, why: &str) -> VolumeError {
    VolumeError::Setup(format!(
        "volume {name:?} cannot serve chunk {chunk} without the missing backends: {usable} of its \
         {} parts are usable, {} are needed ({why})",
        r.parts(),
        r.data_parts()
    ))
}

impl Volume {
    /// The identities of the slots that have had no backend since the
    /// volume was opened.
    pub fn absent_backends(&self) -> Vec<BackendId> {
        let meta = self.meta();
        (0..self.backends.len())
            .filter(|&s| self.health.is_absent(s))
            .filter_map(|s| meta.placement.get(s).copied())
            .collect()
    }

    /// Puts `b`, a backend that answered after the volume was opened, in
    /// the absent slot of its identity. The slot stays failed: the next
    /// maintenance pass readmits it (epoch claim, then resync of its stale
    /// parts), as for any backend that failed while serving. Returns the
    /// slot.
    pub fn admit(&self, b: Arc<dyn Backend>) -> Result<usize, VolumeError> {
        self.fence.check()?;
        let meta = self.meta();
        let id = b.id();
        let slot = meta
            .placement
            .iter()
            .position(|x| *x == id)
            .ok_or_else(|| {
                VolumeError::Setup(format!(
                    "{} (identity {id}) is not in volume {:?}'s placement table",
                    b.describe(),
                    meta.name
                ))
            })?;
        if !self.health.is_absent(slot) {
            return Err(VolumeError::Setup(format!(
                "backend {slot} of volume {:?} ({id}) is already there",
                meta.name
            )));
        }
        let describe = b.describe();
        self.backends.swap(slot, b);
        self.health.clear_absent(slot);
        eprintln!(
            "qbd-master: {describe} answered: it takes backend slot {slot} of volume {:?} again \
             (readmitted at epoch {}, then its stale parts are resynced)",
            meta.name, meta.epoch
        );
        Ok(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(n: u128, parts: usize) -> PlacementTable {
        let ids = (1..=n)
            .map(|i| BackendId(uuid::Uuid::from_u128(i)))
            .collect();
        PlacementTable::new(ids, parts).expect("a valid table")
    }

    #[test]
    fn replicate_3_serves_without_one_backend_but_not_two() {
        let r = Redundancy::Replicate(3);
        assert!(check_present("v", &table(3, 3), r, 100, &[2]).is_ok());
        assert!(check_present("v", &table(3, 3), r, 100, &[0, 2]).is_err());
    }

    #[test]
    fn a_two_backend_volume_never_starts_with_one() {
        let r = Redundancy::Replicate(2);
        let e = check_present("v", &table(2, 2), r, 10, &[1]);
        assert!(e.is_err_and(|e| e.to_string().contains("more than half")));
    }

    #[test]
    fn ec_needs_k_parts_of_every_chunk() {
        let ec = Redundancy::Ec { k: 2, m: 1 };
        assert!(check_present("v", &table(3, 3), ec, 10, &[1]).is_ok());
        // Wider table: 5 slots, 3 parts per chunk; losing 2 adjacent slots
        // leaves some chunk with a single part.
        let e = check_present("v", &table(5, 3), ec, 10, &[1, 2]);
        assert!(e.is_err_and(|e| e.to_string().contains("chunk")));
        // A volume smaller than one placement period checks its own chunks only.
        assert!(check_present("v", &table(5, 3), ec, 1, &[3, 4]).is_ok());
    }

    #[test]
    fn a_chunk_whose_present_parts_are_stale_refuses_the_start() {
        let r = Redundancy::Replicate(3);
        let t = table(3, 3);
        let health = Health::new(3, 8);
        health.set_absent(2);
        assert!(check_stale("v", &t, r, &health).is_ok());
        health.set_stale(0, 5);
        assert!(check_stale("v", &t, r, &health).is_ok(), "slot 1 holds it");
        health.set_stale(1, 5);
        let e = check_stale("v", &t, r, &health);
        assert!(e.is_err_and(|e| e.to_string().contains("chunk 5")));
    }
}
