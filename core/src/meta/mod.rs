//! The human-readable meta files, all TOML, all written atomically.
//!
//! - [`backend_id`]: `<root>/.backend`, the backend's identity.
//! - [`volumes`]: `<root>/.volumesmeta`, volume name ↔ number.
//! - [`volume`]: `<root>/<nr>/.meta`, the volume's policy, shape, epoch and placement.
//! - [`atomic`]: write temp, fsync, rename, fsync directory.

pub mod atomic;
pub mod backend_id;
pub mod volume;
pub mod volumes;
