//! `qbd-bench`: benchmarks of QBD's parts.
//!
//! Module map:
//! - [`cli`]: the flags (`qbd-bench transport ...`).
//! - [`node`]: the in-process `qbd-node` the transport suite measures by
//!   default (own tokio runtime on its own threads, data on /dev/shm; TCP
//!   and optionally QBD-L2).
//! - [`transport`]: the transport suite: node round trips (ping, 4 KiB read,
//!   4 KiB write) over `TcpTransport` and `L2Transport` at several queue
//!   depths, targets alternated; where the traffic goes.
//! - [`plan`]: where the suite runs (remote, loopback, veth) and which
//!   targets, from the flags and the privileges; the report's header.
//! - [`netns`]: the suite between two network namespaces joined by veth
//!   (node in one, client in the other), one pair per MTU.
//! - [`volume`]: the bench volume, set up on the node through requests.
//! - [`case`]: one timed case (an op at a queue depth on one target).
//! - [`closed_loop`]: the `l2-loop` target's case, run on the L2 link's
//!   polling thread.
//! - [`stats`]: percentiles and medians.
//! - [`threads`]: CPU time per request by thread group (scheduler counters).
//! - [`report`]: the `results.json` rows and the printed table.
//! - [`e2e`]: the end-to-end suite: real `qbd-node`/`qbd-master` daemons
//!   (replicate and erasure coded, over TCP and over QBD-L2 in namespaces)
//!   and the peers nbdkit and qemu-nbd, driven by fio's nbd engine.
//! - [`output`]: the files of `--out DIR` for both suites: `results.json`,
//!   `results.md` ([`markdown`]) and SVG charts ([`chart`]).
//! - [`torture`]: the torture harness: a seeded workload against real
//!   daemons while faults are injected, every block checked against a model.
//! - [`interrupt`]: SIGINT/SIGTERM turned into an orderly stop, so guards
//!   stop child processes and delete namespaces.

pub mod case;
pub mod chart;
pub mod cli;
pub mod closed_loop;
pub mod e2e;
pub mod interrupt;
pub mod markdown;
pub mod netns;
pub mod node;
pub mod output;
pub mod plan;
pub mod report;
pub mod stats;
pub mod threads;
pub mod torture;
pub mod transport;
pub mod volume;
