//! QBD core.
