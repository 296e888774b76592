//! `qbd`: the operator's tool. Subcommands live one per module:
//! - [`keygen`]: a fresh cluster key.
//! - [`verify`]: checks a volume's parts on its backends (fast listing, or
//!   `--deep` checksums), read-only.
//! - [`repair`]: rebuilds missing, corrupt and stale parts.
//! - [`backends`]: the backend flags both share, and connecting to the
//!   backends while tolerating unreachable ones.

pub mod backends;
pub mod keygen;
pub mod repair;
pub mod verify;
