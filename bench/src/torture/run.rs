//! One fault cycle after another until the duration (or `--cycles`) is
//! spent or something is found:
//!
//! 1. the workers run on the serving master for a while;
//! 2. one fault (`faults::pick`) is injected while they run, and they go
//!    on for a while after it (degraded I/O);
//! 3. the workers stop; what the fault left is put back (a stopped
//!    process continued, a dead master restarted, a master restarted
//!    after a node came back);
//! 4. every block is read and checked (`check`);
//! 5. after on-disk damage, and every tenth cycle, with every node up:
//!    the master stops, `qbd verify --deep`, `qbd repair`, `qbd verify
//!    --deep` must say HEALTHY, the master starts, every block is checked.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use qbd_netlab::Lab;

use super::TortureArgs;
use super::check::full_pass;
use super::client::Client;
use super::cluster::{Cluster, VOLUME};
use super::config::{Config, Transport};
use super::damage;
use super::faults::{Budget, Fault, pick};
use super::report::Tally;
use super::rng::Rng;
use super::workload::{IO_TIMEOUT, Shared, Workers, write_probe};

/// Runs the harness as `args` say.
pub fn main(args: &TortureArgs) -> Result<(), String> {
    crate::interrupt::install()?;
    let seed = args.seed.unwrap_or_else(clock_seed);
    let cfg = args.config.config(args.loss, args.dup, args.size_mib << 20);
    println!(
        "qbd-bench torture: {cfg}, seed {seed}, for {} s",
        args.duration.as_secs()
    );
    let (work, temp) = workdir(args)?;
    let mut lab = match cfg.transport {
        Transport::L2 => Some(Lab::new("qbd-bench torture").ok_or(
            "the QBD-L2 configurations need root (network namespaces); \
             run as root or pick a TCP configuration",
        )?),
        Transport::Tcp => None,
    };
    let shared = Shared::new(cfg.size / super::pattern::BLOCK as u64);
    let mut tally = Tally::new(seed, cfg);
    let result = Run::start(args, cfg, seed, &work, lab.as_mut(), &shared)
        .and_then(|mut run| run.cycles(args, &mut tally));
    let passed = result.is_ok() && !shared.found();
    let verdict = match (&result, passed) {
        (Ok(_), true) => "PASSED: nothing lost".to_string(),
        (Err(e), _) => format!("FAILED: {e}"),
        (Ok(_), false) => "FAILED: see the findings".to_string(),
    };
    let text = tally.text(&shared, &verdict);
    print!("{text}");
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&tally.json(&shared, passed)).unwrap_or_default();
        std::fs::write(path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let _ = std::fs::write(work.join("summary.txt"), &text);
    drop(lab);
    if passed {
        if let Some(t) = temp {
            let _ = t.close();
        }
        Ok(())
    } else {
        if let Some(t) = temp {
            let kept = t.keep();
            println!(
                "qbd-bench torture: logs and volume kept in {}",
                kept.display()
            );
        } else {
            println!(
                "qbd-bench torture: logs and volume kept in {}",
                work.display()
            );
        }
        Err(verdict)
    }
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

fn workdir(args: &TortureArgs) -> Result<(PathBuf, Option<tempfile::TempDir>), String> {
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).map_err(|e| format!("mkdir {}: {e}", out.display()))?;
        return Ok((out.clone(), None));
    }
    let t = tempfile::Builder::new()
        .prefix("qbd-torture.")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::Builder::new().prefix("qbd-torture.").tempdir())
        .map_err(|e| format!("cannot make a work directory: {e}"))?;
    Ok((t.path().to_path_buf(), Some(t)))
}

/// A run in progress.
struct Run {
    cluster: Cluster,
    shared: Arc<Shared>,
    rng: Rng,
    seed: u64,
    budget: Budget,
    /// A node holds damage no repair has seen yet.
    damaged: bool,
    /// The master must restart before the check (a node came back, or was
    /// stopped, and the scheme cannot afford to wait for its readmission).
    restart_master: bool,
}

impl Run {
    fn start(
        args: &TortureArgs,
        cfg: Config,
        seed: u64,
        work: &std::path::Path,
        lab: Option<&mut Lab>,
        shared: &Arc<Shared>,
    ) -> Result<Run, String> {
        let mut cluster = Cluster::create(cfg, work, lab)?;
        cluster.start_master()?;
        let mut budget = Budget::new(cfg.nodes);
        if !args.faults.is_empty() {
            for (on, kind) in budget.kinds.iter_mut().zip(super::faults::KINDS) {
                *on = args.faults.iter().any(|f| f == kind);
            }
        }
        Ok(Run {
            cluster,
            shared: Arc::clone(shared),
            rng: Rng::stream(seed, 0),
            seed,
            budget,
            damaged: false,
            restart_master: false,
        })
    }

    fn cycles(&mut self, args: &TortureArgs, tally: &mut Tally) -> Result<(), String> {
        let deadline = Instant::now() + args.duration;
        let max = args.cycles.unwrap_or(u64::MAX);
        let outcome = self.loop_until(args, tally, deadline, max);
        tally.frames = super::cluster::frame_counts(&self.cluster);
        self.cluster.shutdown();
        outcome
    }

    fn loop_until(
        &mut self,
        args: &TortureArgs,
        tally: &mut Tally,
        deadline: Instant,
        max: u64,
    ) -> Result<(), String> {
        while Instant::now() < deadline && tally.cycles < max && !self.shared.found() {
            crate::interrupt::check()?;
            self.cycle(args, tally)?;
            tally.cycles += 1;
            if tally.cycles.is_multiple_of(10) {
                println!(
                    "qbd-bench torture: {} cycles, {:?}",
                    tally.cycles, tally.events
                );
            }
        }
        Ok(())
    }

    fn cycle(&mut self, args: &TortureArgs, tally: &mut Tally) -> Result<(), String> {
        let base = 1 + tally.cycles * 64;
        let workers = Workers::start(
            &self.shared,
            self.cluster.socket(),
            args.workers,
            self.seed,
            base,
        );
        self.pause(300, 2000);
        let fault = if args.self_test && tally.cycles == 0 {
            Fault::LoseEveryCopy
        } else {
            pick(
                &mut self.rng,
                &mut self.budget,
                self.cluster.nodes.len(),
                self.cluster.cfg.transport == Transport::L2,
            )
        };
        tally.count(fault.name());
        self.inject(fault, tally)?;
        if self.cluster.master_up() {
            self.pause(200, 1500);
        }
        workers.stop();
        self.shared.errors_expected.store(false, Ordering::SeqCst);
        self.recover(tally)?;
        full_pass(&self.shared, &self.cluster.socket())?;
        let everyone_up = self.budget.down.is_none();
        if everyone_up && (self.damaged || tally.cycles % 10 == 9) {
            self.verify_repair(tally)?;
        }
        Ok(())
    }

    /// Lets the workload run for a random while (not a synchronisation).
    fn pause(&mut self, lo_ms: u64, hi_ms: u64) {
        std::thread::sleep(Duration::from_millis(self.rng.range(lo_ms, hi_ms)));
    }

    fn inject(&mut self, fault: Fault, tally: &mut Tally) -> Result<(), String> {
        match fault {
            Fault::MasterKill => {
                self.cluster.kill_master();
                self.shared.model().master_lost();
            }
            Fault::MasterStop => {
                self.cluster.pause_master(true);
                self.pause(500, 3000);
                self.cluster.pause_master(false);
            }
            Fault::NodeKill(i) => {
                self.cluster.kill_node(i);
                self.budget.down = Some((i, self.rng.below(3) as u32));
            }
            Fault::NodeStop(i) => {
                self.cluster.pause_node(i, true);
                self.pause(1000, 4000);
                self.cluster.pause_node(i, false);
                self.restart_master = self.must_restart();
            }
            Fault::NodeReturn(i) => {
                self.cluster.start_node(i)?;
                self.budget.down = None;
                self.restart_master = self.must_restart();
            }
            Fault::Damage(i, kind) => {
                self.cluster.kill_node(i);
                tally.count("node SIGKILL (to damage its disk)");
                let dir = self.cluster.nodes[i].dir.clone();
                match damage::apply(&dir, kind, &mut self.rng)? {
                    Some(what) => println!("qbd-bench torture: node {i}: {what}"),
                    None => tally.count("damage skipped: no part file yet"),
                }
                self.cluster.start_node(i)?;
                self.damaged = true;
                self.restart_master = self.must_restart();
            }
            Fault::SecondMaster => self.second_master(tally)?,
            Fault::Forge(i) => self.forge(i, tally)?,
            Fault::LoseEveryCopy => {
                let acked = self.probe(&self.cluster.socket(), 0)?;
                println!("qbd-bench torture: self-test: block 0 written (acknowledged: {acked})");
                self.cluster.kill_master();
                self.shared.model().master_lost();
                for n in &self.cluster.nodes {
                    for part in damage::part_files(&n.dir) {
                        if part.file_name().is_some_and(|f| f == "0") {
                            let _ = std::fs::remove_file(part);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// After a node came back: restart the master, or (half the time,
    /// where the scheme survives a second node out meanwhile) leave it to
    /// readmit the node by itself.
    fn must_restart(&mut self) -> bool {
        let restart = self.cluster.cfg.tolerance < 2 || self.rng.chance(50);
        // Not restarted: the node counts as out until a master start
        // (which resyncs every present node before it serves) or a repair.
        self.budget.settling |= !restart;
        restart
    }

    /// Starts a master on the other host. Exactly one may serve: if it
    /// started, the old one must refuse writes; if it was refused, the
    /// old one must still serve.
    fn second_master(&mut self, tally: &mut Tally) -> Result<(), String> {
        self.shared.errors_expected.store(true, Ordering::SeqCst);
        let old = self.cluster.socket();
        let block = self.rng.below(self.shared.model().len());
        match self.cluster.start_rival() {
            Ok(()) => {
                tally.count("second master took over");
                if let Ok(true) = self.probe(&old, block) {
                    self.shared.finding(
                        "the old master acknowledged a write after a second master \
                         took the volume"
                            .into(),
                    );
                }
                self.shared.model().master_lost();
                self.cluster.promote_rival();
                tally.count("master SIGKILL (old master after takeover)");
            }
            Err(e) => {
                // Refused before it took the epoch: the serving master must
                // go on as if nothing happened, errors included.
                self.shared.errors_expected.store(false, Ordering::SeqCst);
                tally.count("second master refused");
                let first = e.lines().last().unwrap_or("").to_owned();
                println!("qbd-bench torture: second master refused: {first}");
                match self.probe(&old, block) {
                    Ok(true) => {}
                    other => self.shared.finding(format!(
                        "no master serves: the second master was refused ({first}) and the \
                         first one no longer writes ({other:?})"
                    )),
                }
            }
        }
        Ok(())
    }

    /// Forged openings to every node, then a replay of frames to node `i`.
    fn forge(&mut self, i: usize, tally: &mut Tally) -> Result<(), String> {
        let (spare, node_host, macs) = self.cluster.hostile_hosts(i)?;
        let key = self.cluster.key()?;
        let n = super::forger::forge_openings(&spare, &macs, &key, 2000, &mut self.rng)?;
        tally.add("forged session-opening frames", n as u64);
        let (captured, replayed) = super::forger::replay(&node_host, &spare)?;
        tally.add("frames captured and replayed", replayed as u64);
        println!(
            "qbd-bench torture: forged {n} openings; replayed {replayed} of {captured} frames to node {i}"
        );
        Ok(())
    }

    /// A FUA write of one block through the master at `socket`: whether it was acknowledged.
    fn probe(&self, socket: &std::path::Path, block: u64) -> Result<bool, String> {
        let mut c = Client::connect(socket, VOLUME, IO_TIMEOUT).map_err(|e| e.to_string())?;
        Ok(write_probe(&self.shared, &mut c, block).is_ok())
    }

    fn recover(&mut self, tally: &mut Tally) -> Result<(), String> {
        if self.cluster.master_stopped {
            self.cluster.pause_master(false);
        }
        if self.cluster.master_up() && self.restart_master {
            if self.rng.chance(50) {
                self.cluster.kill_master();
                tally.count("master SIGKILL (restart)");
            } else {
                self.cluster.stop_master();
                tally.count("master SIGTERM (restart)");
            }
            self.shared.model().master_lost();
        }
        self.restart_master = false;
        if !self.cluster.master_up() {
            self.budget.settling = false;
            self.cluster
                .start_master()
                .map_err(|e| format!("the master did not start again: {e}"))?;
        }
        Ok(())
    }

    fn verify_repair(&mut self, tally: &mut Tally) -> Result<(), String> {
        self.cluster.stop_master();
        self.shared.model().master_lost();
        let (before_ok, _) = self.cluster.qbd("verify", &["--deep"]);
        tally.count(if before_ok {
            "verify: healthy before repair"
        } else {
            "verify: problems before repair"
        });
        let (_, repair) = self.cluster.qbd("repair", &[]);
        let (ok, after) = self.cluster.qbd("verify", &["--deep"]);
        tally.count("verify + repair rounds");
        if !(ok && after.contains("HEALTHY")) {
            self.shared.finding(format!(
                "after qbd repair, qbd verify --deep is not HEALTHY:\n{after}\nrepair said:\n{repair}"
            ));
        }
        self.damaged = false;
        self.budget.settling = false;
        self.cluster
            .start_master()
            .map_err(|e| format!("the master did not start after repair: {e}"))?;
        full_pass(&self.shared, &self.cluster.socket())
    }
}
