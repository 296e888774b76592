//! `qbd-bench`: benchmarks of QBD's parts.
//!
//! Module map:
//! - [`cli`]: the flags (`qbd-bench transport ...`).
//! - [`node`]: the in-process `qbd-node` the transport suite measures by
//!   default (own tokio runtime on its own threads, data on /dev/shm).
//! - [`transport`]: the transport suite: node round trips (ping, 4 KiB read,
//!   4 KiB write) over `TcpTransport` at several queue depths.
//! - [`stats`]: percentiles and medians.
//! - [`report`]: the `results.json` rows and the printed table.
//!
//! The end-to-end comparison with nbdkit is the shell script
//! `bench/nbd-vs-nbdkit.sh` (fio's nbd engine against a running master).

pub mod cli;
pub mod node;
pub mod report;
pub mod stats;
pub mod transport;
