//! Repair (`qbd repair`, issue 7): rebuild missing, corrupt and stale parts
//! from the good ones, chunk by chunk from the front.
//!
//! - [`job`]: a run over the written chunks, from chunk 0 upward (or from
//!   the [`checkpoint`]), paced by [`pace`], reporting progress.
//! - [`replica`] and [`ec`]: one chunk, under its exclusive range lock (so
//!   on a running master, NBD writes to the chunk wait and none is lost):
//!   find what is wrong with each part and rebuild it on the backend the
//!   placement table designates, with the heal operation (blocks keep
//!   their generations; EC parity gets covers of the restored data).
//! - [`report`]: findings and counters, the result of a run.
//! - [`replace`]: `--replace OLD=NEW`, moving a slot of the placement table
//!   to a fresh backend, crash-safe, before the repair fills it.
//! - [`absent`]: the stand-in for a backend that could not be reached.
//!
//! Invariants: a whole part is rebuilt only after its chunk is recorded
//! stale for it in the degraded map (durably, on the other backends), and
//! the entry is cleared only once the rebuilt part is synced: a crash
//! half-way never leaves a part that reads as never-written. A block
//! without any good copy is written as lost (an invalid record), never as
//! zeros. A dry run writes nothing.

pub mod absent;
pub mod checkpoint;
mod ec;
pub mod job;
pub mod pace;
pub mod replace;
mod replica;
pub mod report;

pub use job::{Progress, RepairOptions, run_repair};
pub use report::{Finding, Problem, RepairReport};
