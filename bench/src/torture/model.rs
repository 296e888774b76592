//! The model the harness checks every read against.
//!
//! For each 4 KiB block it keeps the writes that may still be what the
//! block holds, each with a logical time for its issue and its end:
//!
//! - A write `E` is *superseded* by a write `D` once `E` ended before `D`
//!   was issued (so `D` was applied after `E`, whichever master did it).
//! - *Durable* writes: acknowledged before a FLUSH that completed was
//!   issued, or acknowledged with FUA (by the same master incarnation).
//!   What a durable write supersedes can never be read again, across any
//!   number of crashes, by a read issued after it became durable.
//! - *Visible* writes: acknowledged, by the master now serving, before a
//!   read was issued. The read must not return what they supersede (an
//!   acknowledged write is read back until a crash may lose it).
//! - Everything else (acknowledged but unflushed before a crash, failed,
//!   in flight) may or may not be there: any of them is allowed.
//!
//! TRIM and WRITE_ZEROES are writes of [`ZERO`]. After a full check pass
//! (no I/O in flight, the volume recovered), each block is *settled* to
//! the value it showed: recovery made every copy agree, so a later
//! crash must not bring back another.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use super::pattern::ZERO;

/// One write that may be what a block holds.
#[derive(Debug, Clone)]
struct Entry {
    value: u64,
    issued: u64,
    /// When it ended (answered, failed, or its master died); `None` in flight.
    done: Option<u64>,
    /// Acknowledged without error.
    acked: bool,
    /// The master incarnation that acknowledged it.
    life: u32,
    /// When it became durable (FUA, a FLUSH, a settling check pass).
    durable_at: Option<u64>,
}

impl Entry {
    /// Whether, for a read issued at `at` while incarnation `life` serves,
    /// this write supersedes what ended before it was issued.
    fn binds(&self, at: u64, life: u32) -> bool {
        let visible = self.acked && self.life == life && self.done.is_some_and(|d| d < at);
        visible || self.durable_at.is_some_and(|d| d < at)
    }

    fn ended_before(&self, t: u64) -> bool {
        self.done.is_some_and(|d| d < t)
    }
}

/// When a read or a FLUSH was issued: the logical time and the master
/// incarnation then serving (a reply may arrive after that master died).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// Logical issue time.
    pub t: u64,
    /// The master incarnation it was sent to.
    pub life: u32,
}

/// A read that returned what the model forbids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The volume block.
    pub block: u64,
    /// What was read (`None`: bytes no write put there).
    pub seen: Option<u64>,
    /// What the model allowed.
    pub allowed: Vec<u64>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seen {
            Some(v) => write!(f, "block {} read value {v}", self.block)?,
            None => write!(f, "block {} read bytes no write put there", self.block)?,
        }
        write!(f, "; allowed {:?}", self.allowed)
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct Model {
    blocks: Vec<Vec<Entry>>,
    clock: u64,
    life: u32,
    /// Issue times of the reads in flight (with multiplicity): what they
    /// may still show is never pruned.
    reads: BTreeMap<u64, usize>,
}

impl Model {
    /// A volume of `blocks` blocks, all zeros.
    pub fn new(blocks: u64) -> Model {
        let zero = Entry {
            value: ZERO,
            issued: 0,
            done: Some(0),
            acked: true,
            life: 0,
            durable_at: Some(0),
        };
        let n = usize::try_from(blocks).unwrap_or(0);
        Model {
            blocks: vec![vec![zero]; n],
            clock: 1,
            life: 0,
            reads: BTreeMap::new(),
        }
    }

    /// Number of blocks.
    pub fn len(&self) -> u64 {
        self.blocks.len() as u64
    }

    /// Whether the volume has no blocks.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The next logical time.
    pub fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// A read is about to be sent; returns its ticket ([`Model::end_read`] after checking).
    pub fn begin_read(&mut self) -> Ticket {
        let t = self.tick();
        *self.reads.entry(t).or_default() += 1;
        Ticket { t, life: self.life }
    }

    /// A FLUSH is about to be sent; returns its ticket.
    pub fn begin_flush(&mut self) -> Ticket {
        Ticket {
            t: self.tick(),
            life: self.life,
        }
    }

    /// The read of `ticket` was checked.
    pub fn end_read(&mut self, ticket: Ticket) {
        if let Some(n) = self.reads.get_mut(&ticket.t) {
            *n -= 1;
            if *n == 0 {
                self.reads.remove(&ticket.t);
            }
        }
    }

    /// A write of `value` to `blocks` is about to be sent; returns its issue time.
    pub fn issue(&mut self, blocks: Range<u64>, value: u64) -> u64 {
        let t = self.tick();
        for b in blocks {
            if let Some(list) = self.blocks.get_mut(b as usize) {
                list.push(Entry {
                    value,
                    issued: t,
                    done: None,
                    acked: false,
                    life: self.life,
                    durable_at: None,
                });
            }
        }
        t
    }

    /// The write issued at `issued` to `blocks` ended: acknowledged (`ok`),
    /// durable too when it had FUA. An acknowledgement counts even if it
    /// arrives after its master was declared lost: it was given.
    pub fn complete(&mut self, blocks: Range<u64>, issued: u64, ok: bool, fua: bool) {
        let t = self.tick();
        let horizon = self.horizon();
        for b in blocks {
            let Some(list) = self.blocks.get_mut(b as usize) else {
                continue;
            };
            if let Some(e) = list.iter_mut().find(|e| e.issued == issued) {
                e.done = Some(t);
                e.acked = ok;
                if ok && fua {
                    e.durable_at = Some(t);
                }
            }
            prune(list, horizon);
        }
    }

    /// The FLUSH of `ticket` completed: every write its master (the
    /// incarnation it was sent to) acknowledged before it was issued is durable.
    pub fn flushed(&mut self, ticket: Ticket) {
        let t = self.tick();
        let (started, life) = (ticket.t, ticket.life);
        let horizon = self.horizon();
        for list in &mut self.blocks {
            for e in list.iter_mut() {
                if e.acked && e.life == life && e.ended_before(started) && e.durable_at.is_none() {
                    e.durable_at = Some(t);
                }
            }
            prune(list, horizon);
        }
    }

    /// The serving master died (or was replaced): what it acknowledged
    /// without a FLUSH may be lost, and writes still in flight end now.
    pub fn master_lost(&mut self) {
        let t = self.tick();
        self.life += 1;
        for e in self.blocks.iter_mut().flatten() {
            if e.done.is_none() {
                e.done = Some(t);
            }
        }
    }

    /// The values `block` may show to the read of `ticket`.
    pub fn allowed(&self, block: u64, ticket: Ticket) -> Vec<u64> {
        let Some(list) = self.blocks.get(block as usize) else {
            return Vec::new();
        };
        let cut = list
            .iter()
            .filter(|e| e.binds(ticket.t, ticket.life))
            .map(|e| e.issued)
            .max()
            .unwrap_or(0);
        let mut out: Vec<u64> = list
            .iter()
            .filter(|e| !e.ended_before(cut))
            .map(|e| e.value)
            .collect();
        out.dedup();
        out
    }

    /// Checks that the read of `ticket` may show `seen` in `block`
    /// (`None`: garbage).
    pub fn check(&self, block: u64, ticket: Ticket, seen: Option<u64>) -> Result<(), Violation> {
        let allowed = self.allowed(block, ticket);
        match seen {
            Some(v) if allowed.contains(&v) => Ok(()),
            _ => Err(Violation {
                block,
                seen,
                allowed,
            }),
        }
    }

    /// After a check pass with nothing in flight: `block` holds `value` for good.
    pub fn settle(&mut self, block: u64, value: u64) {
        let t = self.tick();
        let life = self.life;
        let Some(list) = self.blocks.get_mut(block as usize) else {
            return;
        };
        let Some(keep) = list.iter().rev().find(|e| e.value == value).cloned() else {
            return;
        };
        list.clear();
        list.push(Entry {
            done: Some(keep.done.unwrap_or(t)),
            acked: true,
            life,
            durable_at: Some(t),
            ..keep
        });
    }

    /// The oldest read in flight's issue time, or now.
    fn horizon(&self) -> u64 {
        self.reads.keys().next().copied().unwrap_or(self.clock + 1)
    }
}

/// Drops the entries that a write durable before `horizon` superseded:
/// no read in flight or to come may show them.
fn prune(list: &mut Vec<Entry>, horizon: u64) {
    let cut = list
        .iter()
        .filter(|e| e.durable_at.is_some_and(|d| d < horizon))
        .map(|e| e.issued)
        .max()
        .unwrap_or(0);
    list.retain(|e| !e.ended_before(cut));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acknowledged_write_must_be_read_back_until_its_master_dies() {
        let mut m = Model::new(4);
        let t = m.issue(1..2, 7);
        m.complete(1..2, t, true, false);
        let r = m.begin_read();
        assert!(m.check(1, r, Some(7)).is_ok());
        assert!(
            m.check(1, r, Some(ZERO)).is_err(),
            "the old value is superseded"
        );
        m.master_lost();
        let r = m.begin_read();
        assert!(m.check(1, r, Some(ZERO)).is_ok(), "unflushed: may be lost");
        assert!(m.check(1, r, Some(7)).is_ok());
        assert!(m.check(1, r, None).is_err(), "garbage never");
    }

    #[test]
    fn a_flush_makes_what_was_acknowledged_before_it_durable() {
        let mut m = Model::new(2);
        let t = m.issue(0..2, 5);
        m.complete(0..2, t, true, false);
        let f = m.begin_flush();
        let late = m.issue(0..1, 6); // issued after the flush: not covered
        m.flushed(f);
        m.complete(0..1, late, true, false);
        m.master_lost();
        let r = m.begin_read();
        assert!(m.check(0, r, Some(ZERO)).is_err(), "flushed: never lost");
        assert!(m.check(0, r, Some(5)).is_ok());
        assert!(m.check(0, r, Some(6)).is_ok());
        assert!(m.check(1, r, Some(5)).is_ok());
    }

    #[test]
    fn overlapping_writes_may_land_in_either_order_and_fua_is_durable() {
        let mut m = Model::new(1);
        let a = m.issue(0..1, 1);
        let b = m.issue(0..1, 2);
        m.complete(0..1, b, true, true);
        m.complete(0..1, a, true, false);
        m.master_lost();
        let r = m.begin_read();
        assert_eq!(m.allowed(0, r), vec![1, 2], "a overlapped b");
        assert!(m.check(0, r, Some(ZERO)).is_err());
    }

    #[test]
    fn a_failed_write_may_be_there_until_a_durable_one_follows() {
        let mut m = Model::new(1);
        let a = m.issue(0..1, 1);
        m.complete(0..1, a, false, false);
        let r = m.begin_read();
        assert_eq!(m.allowed(0, r), vec![ZERO, 1]);
        let b = m.issue(0..1, 2);
        m.complete(0..1, b, true, true);
        let r = m.begin_read();
        assert_eq!(m.allowed(0, r), vec![2]);
    }

    #[test]
    fn a_settled_block_keeps_its_value_across_crashes() {
        let mut m = Model::new(1);
        let a = m.issue(0..1, 1);
        m.complete(0..1, a, true, false);
        m.master_lost();
        m.settle(0, 1);
        m.master_lost();
        let r = m.begin_read();
        assert_eq!(m.allowed(0, r), vec![1]);
    }

    #[test]
    fn a_read_in_flight_may_still_show_what_a_later_durable_write_supersedes() {
        let mut m = Model::new(1);
        let a = m.issue(0..1, 1);
        m.complete(0..1, a, true, false);
        let r = m.begin_read();
        let b = m.issue(0..1, 2);
        m.complete(0..1, b, true, true);
        assert!(
            m.check(0, r, Some(1)).is_ok(),
            "the read may have run before b"
        );
        m.end_read(r);
        let c = m.issue(0..1, 3);
        m.complete(0..1, c, true, false);
        let r = m.begin_read();
        assert_eq!(m.allowed(0, r), vec![3]);
        m.master_lost();
        let r = m.begin_read();
        assert_eq!(m.allowed(0, r), vec![2, 3], "1 was pruned for good");
    }

    #[test]
    fn a_fua_acknowledgement_that_arrives_after_its_master_was_declared_lost_still_counts() {
        let mut m = Model::new(1);
        let a = m.issue(0..1, 1);
        let f = m.begin_flush();
        m.master_lost(); // the kill, before the worker read the replies
        m.complete(0..1, a, true, true);
        m.flushed(f);
        m.master_lost();
        let r = m.begin_read();
        assert_eq!(m.allowed(0, r), vec![1], "the FUA write is durable");
    }
}
