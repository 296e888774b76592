//! QBD core: everything about a volume that is not I/O scheduling.
//!
//! No sockets, no threads, no clocks of its own. Module map:
//! - [`size`]: binary size suffixes (`4K`, `4M`, `1G`).
//! - [`redundancy`]: `replicate:N` / `ec:K+M` policies and part names.
//! - [`ec`]: erasure coding — the K+M codec, EC row geometry, the torn-row rule.
//! - [`geometry`]: volume → chunk → block → part arithmetic.
//! - [`placement`]: the placement table of backend identities.
//! - [`generation`]: 64-bit write generations (epoch high, counter low).
//! - [`format`]: the part file (header, meta records, data region) and the
//!   allocation map — byte-exact, specified in `docs/format.md`.
//! - [`meta`]: the TOML meta files `.backend`, `.volumesmeta`, `<nr>/.meta`.
//! - [`backend`]: the [`backend::Backend`] trait, the directory backend and
//!   the fault-injecting wrapper used by tests.
//! - [`proto`]: the node protocol (messages, frames, sessions).
//! - [`transport`]: the message-based [`transport::Transport`] trait.
//! - [`verify`]: what `qbd verify` compares (listings and block scans
//!   against the volume's shape, placement and maps), pure.

pub mod backend;
pub mod ec;
pub mod error;
pub mod format;
pub mod generation;
pub mod geometry;
pub mod meta;
pub mod placement;
pub mod proto;
pub mod redundancy;
pub mod size;
pub mod transport;
pub mod verify;

pub use error::{CoreError, CoreResult};
