//! Flags of `qbd-bench e2e`, and the run's effective settings.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::fio::{WORKLOADS, Workload};

/// A system `qbd-bench e2e` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Kind {
    /// qbd-master with qbd-node backends over TCP on 127.0.0.1.
    #[value(name = "qbd-tcp")]
    QbdTcp,
    /// qbd-master with qbd-node backends over QBD-L2 (raw Ethernet), each
    /// in a network namespace of its own on a bridge the bench makes.
    #[value(name = "qbd-l2")]
    QbdL2,
    /// nbdkit's file plugin on a raw file (peer).
    Nbdkit,
    /// qemu-nbd on a raw file (peer).
    #[value(name = "qemu-nbd")]
    QemuNbd,
}

impl Kind {
    /// The name in results.
    pub fn name(self) -> &'static str {
        match self {
            Kind::QbdTcp => "qbd-tcp",
            Kind::QbdL2 => "qbd-l2",
            Kind::Nbdkit => "nbdkit",
            Kind::QemuNbd => "qemu-nbd",
        }
    }

    /// Whether it is a QBD cluster (as opposed to a peer).
    pub fn is_qbd(self) -> bool {
        matches!(self, Kind::QbdTcp | Kind::QbdL2)
    }
}

/// Where `qbd-tcp`'s nodes and master talk (`--tcp-link`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TcpLink {
    /// `bridge` when the bench can make namespaces (root), else `loopback`.
    Auto,
    /// Namespaces on a bridge as for qbd-l2, with IPv4 addresses on the
    /// links: the L2/TCP ratios then compare the transports on the same
    /// links.
    Bridge,
    /// Everything on 127.0.0.1 in the bench's own namespace.
    Loopback,
}

/// Flags of `qbd-bench e2e`.
#[derive(Debug, Clone, Args)]
pub struct E2eArgs {
    /// Systems to measure [default: all; qbd-l2 only with the privileges
    /// for network namespaces, otherwise skipped with a note].
    #[arg(long, value_delimiter = ',')]
    pub target: Vec<Kind>,

    /// Redundancy of the QBD volumes: each gets its own nodes (as many as
    /// its parts) and master, per transport.
    #[arg(long, value_delimiter = ',', default_value = "replicate:3,ec:4+2")]
    pub redundancy: Vec<String>,

    /// Size of every target (binary suffixes K, M, G) [default: 256M; 32M
    /// with --quick]. Each is written in full before the rounds, so reads
    /// hit data.
    #[arg(long, value_name = "SIZE")]
    pub size: Option<String>,

    /// Seconds of each fio run [default: 3; 0.5 with --quick].
    #[arg(long, value_name = "SECONDS")]
    pub runtime: Option<f64>,

    /// Seconds of each fio run's ramp before it measures [default: 0.5; 0
    /// with --quick].
    #[arg(long, value_name = "SECONDS")]
    pub ramp: Option<f64>,

    /// Rounds; each runs every workload on every target, targets
    /// interleaved per workload, the starting ones rotating [default: 3; 1
    /// with --quick].
    #[arg(long)]
    pub rounds: Option<u32>,

    /// fio workloads to run, by name (`randread-4k-qd1`, `randread-4k-qd32`,
    /// `randwrite-4k-qd1`, `randwrite-4k-qd32`, `read-1m-qd8`,
    /// `write-1m-qd8`) [default: all six].
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub workloads: Vec<String>,

    /// The MTU of the L2 links (veth to the bridge).
    #[arg(long, default_value_t = 9000,
          value_parser = clap::value_parser!(u32).range(1280..=65535))]
    pub mtu: u32,

    /// Where qbd-tcp's nodes and master talk.
    #[arg(long, value_enum, default_value = "auto")]
    pub tcp_link: TcpLink,

    /// A quick run (CI smoke): 32 MiB targets, 0.5 s per fio run, 1 round.
    #[arg(long)]
    pub quick: bool,

    /// Write `results.json`, `results.md` and the SVG charts to this
    /// directory (created if needed).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// The effective settings of a run, defaults and --quick applied.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The targets, in order.
    pub kinds: Vec<Kind>,
    /// Bytes of every target.
    pub size: u64,
    /// Each fio run's measured time.
    pub runtime: Duration,
    /// Each fio run's ramp.
    pub ramp: Duration,
    /// Rounds.
    pub rounds: u32,
    /// The fio workloads, in the order of [`WORKLOADS`].
    pub workloads: Vec<Workload>,
}

impl E2eArgs {
    /// The settings, checked.
    pub fn settings(&self) -> Result<Settings, String> {
        let (size, runtime, ramp, rounds) = if self.quick {
            ("32M", 0.5, 0.0, 1)
        } else {
            ("256M", 3.0, 0.5, 3)
        };
        let secs = |v: Option<f64>, default: f64, what: &str| {
            let v = v.unwrap_or(default);
            if v.is_finite() && (0.0..=600.0).contains(&v) {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(format!("--{what} must be 0..600 seconds, got {v}"))
            }
        };
        let runtime = secs(self.runtime, runtime, "runtime")?;
        if runtime < Duration::from_millis(100) {
            return Err("--runtime must be at least 0.1 s".into());
        }
        let rounds = self.rounds.unwrap_or(rounds);
        if !(1..=100).contains(&rounds) {
            return Err("--rounds must be 1..100".into());
        }
        let size = parse_size(self.size.as_deref().unwrap_or(size))?;
        if size < 16 << 20 || size % (1 << 20) != 0 {
            return Err("--size must be a whole number of MiB, at least 16M".into());
        }
        for r in &self.redundancy {
            parts(r)?;
        }
        let mut kinds = if self.target.is_empty() {
            vec![Kind::QbdTcp, Kind::QbdL2, Kind::Nbdkit, Kind::QemuNbd]
        } else {
            self.target.clone()
        };
        kinds.sort();
        kinds.dedup();
        if kinds.iter().any(|k| k.is_qbd()) && self.redundancy.is_empty() {
            return Err("QBD targets need at least one --redundancy".into());
        }
        Ok(Settings {
            kinds,
            size,
            runtime,
            ramp: secs(self.ramp, ramp, "ramp")?,
            rounds,
            workloads: workloads(&self.workloads)?,
        })
    }
}

/// The workloads `names` selects (all when empty), in the order of
/// [`WORKLOADS`]; an unknown name is an error that lists the known ones.
pub fn workloads(names: &[String]) -> Result<Vec<Workload>, String> {
    if let Some(bad) = names
        .iter()
        .find(|n| !WORKLOADS.iter().any(|w| w.name() == **n))
    {
        let known: Vec<String> = WORKLOADS.iter().map(Workload::name).collect();
        return Err(format!(
            "--workloads {bad}: unknown; known: {}",
            known.join(", ")
        ));
    }
    Ok(WORKLOADS
        .into_iter()
        .filter(|w| names.is_empty() || names.contains(&w.name()))
        .collect())
}

/// The parts (so the nodes) a redundancy needs: `replicate:N` → N,
/// `ec:K+M` → K + M.
pub fn parts(redundancy: &str) -> Result<usize, String> {
    let bad = || format!("--redundancy {redundancy}: want replicate:N or ec:K+M");
    let n = if let Some(n) = redundancy.strip_prefix("replicate:") {
        n.parse::<usize>().map_err(|_| bad())?
    } else if let Some(km) = redundancy.strip_prefix("ec:") {
        let (k, m) = km.split_once('+').ok_or_else(bad)?;
        let k = k.parse::<usize>().map_err(|_| bad())?;
        let m = m.parse::<usize>().map_err(|_| bad())?;
        if k == 0 || m == 0 {
            return Err(bad());
        }
        k + m
    } else {
        return Err(bad());
    };
    if (1..=16).contains(&n) {
        Ok(n)
    } else {
        Err(format!("--redundancy {redundancy}: 1 to 16 nodes, not {n}"))
    }
}

/// A size with an optional binary suffix (K, M, G).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, shift) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("--size {s}: not a size"))?;
    n.checked_mul(1 << shift)
        .filter(|&b| b <= 64 << 30)
        .ok_or_else(|| format!("--size {s}: at most 64G"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redundancies_name_their_parts() {
        assert_eq!(parts("replicate:3"), Ok(3));
        assert_eq!(parts("ec:4+2"), Ok(6));
        for bad in ["replicate:0", "ec:4", "ec:0+2", "raid5", "replicate:x"] {
            assert!(parts(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn workloads_are_selected_by_name() {
        assert_eq!(workloads(&[]), Ok(WORKLOADS.to_vec()));
        let names = ["randread-4k-qd32".to_owned(), "randread-4k-qd1".to_owned()];
        assert_eq!(workloads(&names), Ok(vec![WORKLOADS[0], WORKLOADS[1]]));
        assert!(workloads(&["randread-4k-qd2".to_owned()]).is_err());
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("32M"), Ok(32 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("x").is_err());
        assert!(parse_size("65G").is_err());
    }
}
