//! NBD protocol (placeholder).
