//! `qbd`: the operator's tool. Subcommands live one per module:
//! - [`keygen`]: a fresh cluster key.
//!
//! Verify, repair, dedupe and inspect arrive with their issues.

pub mod keygen;
