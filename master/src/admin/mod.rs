//! The master's admin endpoint: a unix socket speaking line-delimited JSON,
//! so `qbd repair` runs inside the master that serves the volume (its
//! range locks then order repair against NBD writes: none is lost).
//!
//! - [`proto`]: the requests and replies, one JSON object per line.
//! - [`server`]: the listener and one task per connection.
//! - [`reach`]: how the master reaches a backend a request names (NEW of
//!   `replace`).
//!
//! A connection sends one request line and reads reply lines until the
//! final one (`done` or `error`). One repair runs at a time; a client that
//! goes away stops its repair between two chunk operations (the chunk being
//! rebuilt stays recorded stale and is redone by the next run). A
//! `replace` switches a placement slot to a fresh backend while serving;
//! it and repairs exclude each other.

pub mod proto;
pub mod reach;
pub mod server;

use std::path::{Path, PathBuf};

/// The default admin socket of volume `name` under the state directory.
pub fn default_socket(state: &Path, name: &str) -> PathBuf {
    state.join(format!("{name}.admin.sock"))
}
