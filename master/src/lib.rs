//! `qbd-master`: serves one QBD volume to NBD clients.
//!
//! - [`admin`]: the admin socket (`qbd repair` through a running master).
//! - [`backend_node`]: [`backend_node::NodeBackend`], a `qbd-node` over a transport as a backend.
//! - [`device`]: the [`device::BlockDevice`] trait between the NBD server and the volume.
//! - [`l2`]: nodes over raw Ethernet: discovery, then one L2 transport per node.
//! - [`missing`]: nodes that did not answer at start, admitted once they do.
//! - [`nbd`]: the NBD protocol: a sans-IO codec and a tokio connection driver.

pub mod admin;
pub mod backend_node;
pub mod cli;
pub mod device;
pub mod l2;
pub mod missing;
pub mod nbd;
pub mod run;
pub mod volume;
