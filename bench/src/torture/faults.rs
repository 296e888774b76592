//! The faults and their schedule. Each cycle injects one fault while the
//! workload runs; the fault budget keeps the damage within what the
//! redundancy survives: at most one node out (down, stopped, or with
//! damage not yet repaired), so every block always has a good copy and
//! an I/O error is a finding.

use super::damage::Damage;
use super::rng::Rng;

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the master, restart it.
    MasterKill,
    /// SIGSTOP the master for a while, then SIGCONT.
    MasterStop,
    /// SIGKILL a node; it stays down for a few cycles.
    NodeKill(usize),
    /// SIGSTOP a node for a while, then SIGCONT.
    NodeStop(usize),
    /// Restart the node that is down.
    NodeReturn(usize),
    /// SIGKILL a node, damage a part file, restart it.
    Damage(usize, Damage),
    /// Start a master on the other host against the same nodes.
    SecondMaster,
    /// L2: 2,000 forged session openings to the nodes, and frames to one
    /// node captured and replayed from another host.
    Forge(usize),
    /// `--self-test`: every copy of chunk 0 deleted behind the master's back.
    LoseEveryCopy,
}

impl Fault {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Fault::MasterKill => "master SIGKILL",
            Fault::MasterStop => "master SIGSTOP/SIGCONT",
            Fault::NodeKill(_) => "node SIGKILL",
            Fault::NodeStop(_) => "node SIGSTOP/SIGCONT",
            Fault::NodeReturn(_) => "node restart",
            Fault::Damage(_, d) => d.name(),
            Fault::SecondMaster => "second master",
            Fault::Forge(_) => "forged and replayed frames",
            Fault::LoseEveryCopy => "self-test: every copy of chunk 0 deleted",
        }
    }
}

/// The kinds `--faults` names, in the order of [`pick`]'s weights.
pub const KINDS: [&str; 7] = [
    "master-kill",
    "master-stop",
    "node-kill",
    "node-stop",
    "damage",
    "second-master",
    "forge",
];

/// What the schedule knows of the cluster.
#[derive(Debug, Default, Clone, Copy)]
pub struct Budget {
    /// The node that is down, and for how many more cycles.
    pub down: Option<(usize, u32)>,
    /// A master may start with one node down: more than half the
    /// placement stays (replicate:2 on two nodes cannot).
    pub start_degraded: bool,
    /// The kinds of [`KINDS`] that may be picked (`--faults`).
    pub kinds: [bool; 7],
    /// A node came back (or was stopped, or damaged) and the master was
    /// left to readmit and resync it: it counts as out, so no other node
    /// fault comes until a master start or a repair.
    pub settling: bool,
}

impl Budget {
    /// The budget of a cluster of `nodes` nodes.
    pub fn new(nodes: usize) -> Budget {
        Budget {
            down: None,
            start_degraded: (nodes - 1) * 2 > nodes,
            kinds: [true; 7],
            settling: false,
        }
    }
}

/// Picks the next fault for a cluster of `nodes` nodes (`l2`: on a segment
/// where frames can be forged).
pub fn pick(rng: &mut Rng, budget: &mut Budget, nodes: usize, l2: bool) -> Fault {
    if let Some((node, left)) = budget.down {
        if left == 0 {
            return Fault::NodeReturn(node);
        }
        budget.down = Some((node, left - 1));
        let on = |k: usize, w: u64| if budget.kinds[k] { w } else { 0 };
        let restart = if budget.start_degraded { on(0, 45) } else { 0 };
        let rival = if budget.start_degraded { on(5, 10) } else { 0 };
        return match rng.weighted(&[restart, on(1, 10), rival, 35]) {
            0 => Fault::MasterKill,
            1 => Fault::MasterStop,
            2 => Fault::SecondMaster,
            _ => Fault::NodeReturn(node),
        };
    }
    let node = rng.below(nodes as u64) as usize;
    let nf: u64 = if budget.settling { 0 } else { 1 };
    let weights: Vec<u64> = [24, 6, 16 * nf, 16 * nf, 28 * nf, 8, if l2 { 8 } else { 0 }]
        .iter()
        .zip(budget.kinds)
        .map(|(w, on)| if on { *w } else { 0 })
        .collect();
    match rng.weighted(&weights) {
        0 => Fault::MasterKill,
        1 => Fault::MasterStop,
        2 => Fault::NodeKill(node),
        3 => Fault::NodeStop(node),
        4 => Fault::Damage(node, Damage::ALL[rng.below(4) as usize]),
        5 => Fault::SecondMaster,
        _ => Fault::Forge(node),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_out_is_never_joined_by_another_node_fault() {
        let mut rng = Rng::new(3);
        let mut budget = Budget::new(6);
        for _ in 0..2000 {
            let f = pick(&mut rng, &mut budget, 6, true);
            let down = budget.down.map(|(n, _)| n);
            match f {
                Fault::NodeKill(n) => {
                    assert!(down.is_none() && !budget.settling);
                    budget.down = Some((n, 2));
                }
                Fault::NodeStop(_) | Fault::Damage(..) => {
                    assert!(down.is_none() && !budget.settling);
                    budget.settling = rng.chance(50);
                }
                Fault::NodeReturn(n) => {
                    assert_eq!(down, Some(n));
                    budget.down = None;
                    budget.settling = rng.chance(50);
                }
                Fault::MasterKill => budget.settling = false,
                _ => {}
            }
        }
    }
}
