//! Network-namespace lab: throwaway namespaces, veth pairs and a bridge
//! "switch", all created by a test (or a benchmark) and deleted in `Drop`,
//! so also when the test panics.
//!
//! - [`Lab`] (`lab.rs`) owns the namespaces it creates and builds links
//!   between them: [`Lab::pair`], [`Lab::veth`], [`Lab::switch`].
//! - [`Ns`] (`ns.rs`) is one namespace: run Rust code inside it
//!   ([`Ns::run`], [`Ns::spawn`]), run a program inside it
//!   ([`Ns::command`]), configure it ([`Ns::ip`], [`Ns::nft`]).
//! - [`Loss`] (`nft.rs`) drops a share of one EtherType's frames at an
//!   interface's ingress (nftables, netdev family) and counts the drops:
//!   this kernel has no netem.
//! - [`Dup`] (`nft.rs`) sends a share of one EtherType's frames twice at
//!   an interface's egress (a switch port).
//! - [`sweep_stale`] (`sweep.rs`) deletes namespaces left by crashed runs.
//!
//! Invariants:
//! - Names are `qbdt-<pid>-<n>`: unique per process, and a namespace left
//!   behind by a crashed run (its pid dead) is swept by the next run.
//! - Links carry only MAC addresses: IPv6 is disabled in every namespace
//!   before links appear, and no IP address is ever configured on them.
//!   Loopback is up, so `127.0.0.1` works inside each namespace (a daemon
//!   and its local clients can talk there without touching the links).
//! - [`Ns::run`] moves a *fresh* thread into the namespace (setns on
//!   `/run/netns/NAME`); the caller's threads never move. Sockets opened
//!   there stay in that namespace and can be used from any thread.
//! - Without root (CAP_NET_ADMIN + CAP_NET_RAW + CAP_SYS_ADMIN) [`Lab::new`]
//!   prints `SKIPPED: <reason>` and returns `None`, unless
//!   `QBD_REQUIRE_PRIVILEGED=1`, in which case it panics.
//!
//! Every traffic-generating test runs only inside namespaces created here.

mod cmd;
mod lab;
mod nft;
mod ns;
mod sweep;

pub use cmd::ip;
pub use lab::Lab;
pub use nft::{Counter, Dup, Loss};
pub use ns::{Ns, parse_mac};
pub use sweep::sweep_stale;

/// Where `ip netns` keeps its namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// The prefix of every namespace a [`Lab`] creates.
const PREFIX: &str = "qbdt-";
