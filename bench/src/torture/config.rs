//! The configurations the harness runs: a redundancy scheme over a
//! transport, with the fault budget that scheme allows.

use std::fmt;

use clap::ValueEnum;

/// How the master reaches its nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP on 127.0.0.1.
    Tcp,
    /// QBD-L2 on a bridge of network namespaces (root only).
    L2,
}

/// A named configuration (`--config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// replicate:3 over TCP.
    #[value(name = "r3-tcp")]
    R3Tcp,
    /// replicate:3 over QBD-L2 (5 % of frames dropped unless --loss says otherwise).
    #[value(name = "r3-l2")]
    R3L2,
    /// ec:4+2 over TCP.
    #[value(name = "ec42-tcp")]
    Ec42Tcp,
    /// ec:4+2 over QBD-L2.
    #[value(name = "ec42-l2")]
    Ec42L2,
    /// replicate:2 over TCP.
    #[value(name = "r2-tcp")]
    R2Tcp,
}

/// What one run builds.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// The preset's name.
    pub name: &'static str,
    /// `--redundancy` of the volume.
    pub redundancy: &'static str,
    /// Nodes (one per part).
    pub nodes: usize,
    /// Failures of one chunk's parts it survives.
    pub tolerance: usize,
    /// How the master reaches the nodes.
    pub transport: Transport,
    /// Percent of QBD-L2 frames dropped at every host (L2 only).
    pub loss: u8,
    /// Percent of QBD-L2 frames the switch sends twice (L2 only).
    pub dup: u8,
    /// Volume size in bytes.
    pub size: u64,
}

impl Preset {
    /// The configuration, with `loss` (None: the preset's default) and `size`.
    pub fn config(self, loss: Option<u8>, dup: Option<u8>, size: u64) -> Config {
        let (name, redundancy, nodes, tolerance, transport) = match self {
            Preset::R3Tcp => ("r3-tcp", "replicate:3", 3, 2, Transport::Tcp),
            Preset::R3L2 => ("r3-l2", "replicate:3", 3, 2, Transport::L2),
            Preset::Ec42Tcp => ("ec42-tcp", "ec:4+2", 6, 2, Transport::Tcp),
            Preset::Ec42L2 => ("ec42-l2", "ec:4+2", 6, 2, Transport::L2),
            Preset::R2Tcp => ("r2-tcp", "replicate:2", 2, 1, Transport::Tcp),
        };
        let default_loss = if self == Preset::R3L2 { 5 } else { 0 };
        Config {
            name,
            redundancy,
            nodes,
            tolerance,
            transport,
            loss: if transport == Transport::L2 {
                loss.unwrap_or(default_loss)
            } else {
                0
            },
            dup: if transport == Transport::L2 {
                dup.unwrap_or(1)
            } else {
                0
            },
            size,
        }
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.name, self.redundancy)?;
        match self.transport {
            Transport::Tcp => write!(f, " over TCP")?,
            Transport::L2 => write!(
                f,
                " over QBD-L2, {} % loss, {} % duplication",
                self.loss, self.dup
            )?,
        }
        write!(f, ", {} MiB)", self.size >> 20)
    }
}
