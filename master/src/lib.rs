//! `qbd-master`: serves one QBD volume to NBD clients.
//!
//! - [`device`]: the [`device::BlockDevice`] trait between the NBD server and the volume.
//! - [`nbd`]: the NBD protocol: a sans-IO codec and a tokio connection driver.

pub mod cli;
pub mod device;
pub mod nbd;
pub mod run;
pub mod volume;
