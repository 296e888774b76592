//! Where the CPU goes: per-thread scheduler counters of this process
//! (`/proc/self/task/*/schedstat`: ns on a CPU, ns runnable but waiting
//! for one, times scheduled in), summed by thread group, between two
//! snapshots. The in-process node's threads are in this process too, so a
//! case's delta covers both ends of the round trip.
//!
//! Groups go by thread name: the client's tokio workers, the node's tokio
//! workers, the master link's L2 polling thread, the node's L2 polling
//! thread; everything else (the thread driving the rounds, `ip`
//! helpers) is "other".

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// Thread name of the client's tokio workers.
pub const CLIENT_THREADS: &str = "qbd-bench-cli";
/// Thread name of the in-process node's tokio workers.
pub const NODE_THREADS: &str = "qbd-bench-node";

/// A thread group, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    /// The client's tokio workers.
    ClientTokio,
    /// The master link's L2 polling thread.
    ClientPoller,
    /// The node's L2 polling thread.
    NodePoller,
    /// The node's tokio workers.
    NodeTokio,
    /// Anything else.
    Other,
}

impl Group {
    /// Every group, in report order.
    pub const ALL: [Group; 5] = [
        Group::ClientTokio,
        Group::ClientPoller,
        Group::NodePoller,
        Group::NodeTokio,
        Group::Other,
    ];

    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Group::ClientTokio => "client tokio",
            Group::ClientPoller => "client poller",
            Group::NodePoller => "node poller",
            Group::NodeTokio => "node tokio",
            Group::Other => "other",
        }
    }

    /// The group of a thread named `comm` (at most 15 bytes, as the
    /// kernel keeps it).
    fn of(comm: &str) -> Group {
        if comm.starts_with(CLIENT_THREADS) {
            Group::ClientTokio
        } else if comm.starts_with("qbd-l2-master") {
            Group::ClientPoller
        } else if comm.starts_with("qbd-l2-node") {
            Group::NodePoller
        } else if comm.starts_with(NODE_THREADS) {
            Group::NodeTokio
        } else {
            Group::Other
        }
    }
}

/// Scheduler time of some threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// On a CPU, ns.
    pub run_ns: u64,
    /// Runnable, waiting for a CPU, ns.
    pub wait_ns: u64,
    /// Times scheduled in.
    pub slices: u64,
}

impl Usage {
    fn add(&mut self, o: Usage) {
        self.run_ns += o.run_ns;
        self.wait_ns += o.wait_ns;
        self.slices += o.slices;
    }

    fn minus(self, o: Usage) -> Usage {
        Usage {
            run_ns: self.run_ns.saturating_sub(o.run_ns),
            wait_ns: self.wait_ns.saturating_sub(o.wait_ns),
            slices: self.slices.saturating_sub(o.slices),
        }
    }
}

/// Every thread's counters at one moment, by thread id.
#[derive(Debug, Clone, Default)]
pub struct Snapshot(HashMap<u32, (Group, Usage)>);

/// Reads every thread of this process (threads that end while being read
/// are skipped).
pub fn snapshot() -> Snapshot {
    let mut map = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Snapshot(map);
    };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let path = entry.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let Ok(stat) = std::fs::read_to_string(path.join("schedstat")) else {
            continue;
        };
        let v: Vec<u64> = stat
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect();
        if let [run_ns, wait_ns, slices] = v[..] {
            let usage = Usage {
                run_ns,
                wait_ns,
                slices,
            };
            map.insert(tid, (Group::of(comm.trim()), usage));
        }
    }
    Snapshot(map)
}

/// What each group used between `before` and `after` (threads born in
/// between count from zero; threads gone by `after` are left out).
pub fn delta(before: &Snapshot, after: &Snapshot) -> BTreeMap<Group, Usage> {
    let mut out: BTreeMap<Group, Usage> = BTreeMap::new();
    for (tid, &(group, now)) in &after.0 {
        let then = before.0.get(tid).map_or(Usage::default(), |&(_, u)| u);
        out.entry(group).or_default().add(now.minus(then));
    }
    out
}

/// Adds `more` into `sum`.
pub fn accumulate(sum: &mut BTreeMap<Group, Usage>, more: &BTreeMap<Group, Usage>) {
    for (&g, &u) in more {
        sum.entry(g).or_default().add(u);
    }
}

/// One line: per group "cpu+wait µs (switches)" per request, then the
/// total CPU µs per request.
pub fn per_request(usage: &BTreeMap<Group, Usage>, requests: u64) -> String {
    let n = requests.max(1) as f64;
    let mut s = String::new();
    let mut total = 0.0;
    for g in Group::ALL {
        let u = usage.get(&g).copied().unwrap_or_default();
        total += u.run_ns as f64 / n / 1000.0;
        let cell = if u.run_ns == 0 && u.wait_ns == 0 {
            "-".to_owned()
        } else {
            format!(
                "{:.1}+{:.1} ({:.2})",
                u.run_ns as f64 / n / 1000.0,
                u.wait_ns as f64 / n / 1000.0,
                u.slices as f64 / n
            )
        };
        let _ = write!(s, "{cell:>19}");
    }
    let _ = write!(s, "{total:>9.1}");
    s
}

/// The header of [`per_request`] lines (after the caller's own columns).
pub fn per_request_header() -> String {
    let mut s = String::new();
    for g in Group::ALL {
        let _ = write!(s, "{:>19}", g.name());
    }
    let _ = write!(s, "{:>9}", "cpu µs");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_thread_name() {
        assert_eq!(Group::of("qbd-bench-cli"), Group::ClientTokio);
        assert_eq!(Group::of("qbd-bench-node"), Group::NodeTokio);
        assert_eq!(Group::of("qbd-bench-node-"), Group::NodeTokio);
        assert_eq!(Group::of("qbd-l2-master"), Group::ClientPoller);
        assert_eq!(Group::of("qbd-l2-node"), Group::NodePoller);
        assert_eq!(Group::of("qbd-bench"), Group::Other);
    }

    #[test]
    fn deltas_count_new_threads_from_zero() {
        let u = |r, w, s| Usage {
            run_ns: r,
            wait_ns: w,
            slices: s,
        };
        let before = Snapshot(HashMap::from([(1, (Group::ClientTokio, u(10, 5, 1)))]));
        let after = Snapshot(HashMap::from([
            (1, (Group::ClientTokio, u(30, 6, 4))),
            (2, (Group::ClientTokio, u(7, 1, 1))),
        ]));
        let d = delta(&before, &after);
        assert_eq!(d[&Group::ClientTokio], u(27, 2, 4));
        assert!(!snapshot().0.is_empty());
    }
}
