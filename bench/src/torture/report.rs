//! The tally of a run: what was injected, what the workload did, what
//! was found; printed at the end and written as JSON with `--json`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::config::Config;
use super::workload::Shared;

/// Names of the workload's request counters (`Shared::ops`).
const OPS: [&str; 7] = [
    "write",
    "read",
    "flush",
    "fua write",
    "trim",
    "write zeroes",
    "error",
];

/// See the module documentation.
#[derive(Debug)]
pub struct Tally {
    /// The seed.
    pub seed: u64,
    /// The configuration.
    pub cfg: Config,
    started: Instant,
    /// Fault cycles completed.
    pub cycles: u64,
    /// Events by name (faults, restarts, verify/repair rounds).
    pub events: BTreeMap<&'static str, u64>,
    /// QBD-L2 frames (seen at hosts, dropped, duplicated by the switch).
    pub frames: Option<(u64, u64, u64)>,
}

impl Tally {
    /// A new tally.
    pub fn new(seed: u64, cfg: Config) -> Tally {
        Tally {
            seed,
            cfg,
            started: Instant::now(),
            cycles: 0,
            events: BTreeMap::new(),
            frames: None,
        }
    }

    /// Adds `n` to `event`.
    pub fn add(&mut self, event: &'static str, n: u64) {
        *self.events.entry(event).or_default() += n;
    }

    /// Counts one `event`.
    pub fn count(&mut self, event: &'static str) {
        *self.events.entry(event).or_default() += 1;
    }

    /// The printed summary.
    pub fn text(&self, shared: &Shared, verdict: &str) -> String {
        let mut s = format!(
            "qbd-bench torture: {} seed {} — {} cycles in {:.0} s: {verdict}\n",
            self.cfg,
            self.seed,
            self.cycles,
            self.started.elapsed().as_secs_f64()
        );
        s.push_str("  injected:\n");
        for (k, v) in &self.events {
            s.push_str(&format!("    {k:<28} {v}\n"));
        }
        match self.frames {
            Some((seen, dropped, dup)) if seen > 0 => s.push_str(&format!(
                "  QBD-L2 frames: {seen} arrived at hosts, {dropped} dropped, {dup} duplicated\n"
            )),
            Some((_, _, dup)) => s.push_str(&format!(
                "  QBD-L2 frames: {dup} duplicated (no loss rule)\n"
            )),
            None => {}
        }
        s.push_str("  requests:");
        for (name, n) in OPS.iter().zip(&shared.ops) {
            s.push_str(&format!(" {name} {},", n.load(Ordering::Relaxed)));
        }
        s.pop();
        s.push('\n');
        if let Ok(f) = shared.findings.lock() {
            for x in f.iter() {
                s.push_str(&format!("  FINDING: {x}\n"));
            }
        }
        s.push_str(&format!(
            "  replay: qbd-bench torture --config {} --seed {}\n",
            self.cfg.name, self.seed
        ));
        s
    }

    /// The JSON summary.
    pub fn json(&self, shared: &Shared, passed: bool) -> serde_json::Value {
        let ops: BTreeMap<&str, u64> = OPS
            .iter()
            .zip(&shared.ops)
            .map(|(k, n)| (*k, n.load(Ordering::Relaxed)))
            .collect();
        let findings = shared
            .findings
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default();
        serde_json::json!({
            "config": self.cfg.name,
            "redundancy": self.cfg.redundancy,
            "loss_percent": self.cfg.loss,
            "seed": self.seed,
            "seconds": self.started.elapsed().as_secs_f64(),
            "cycles": self.cycles,
            "events": self.events,
            "requests": ops,
            "findings": findings,
            "frames": self.frames.map(|(seen, dropped, dup)| serde_json::json!({
                "seen": seen, "dropped": dropped, "duplicated": dup
            })),
            "passed": passed,
        })
    }
}
