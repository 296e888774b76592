//! Issue 15 (availability): a master starts and serves while redundancy allows, with a node of
//! the volume dead, and takes the node back when it returns.
//!
//! Through real `qbd-master`, `qbd-node` and `qbd` processes and a real NBD client (`nbdsh`),
//! replicate:3 over three nodes, over L2 with the nodes pinned (`--node MAC` ×3, a short
//! `--discover-timeout`) and over TCP (`--node HOST:PORT` ×3, the dead one refusing the
//! connection):
//! 1. the volume is written whole and flushed; one node is SIGKILLed, then the master (kill -9);
//! 2. the master is started again with the dead node still named: it starts (after the
//!    discovery timeout over L2), says once that it serves DEGRADED, and every block reads back
//!    its last written value; half the blocks are written again;
//! 3. the dead node is restarted: the master admits it into its slot, readmits it (epoch claim)
//!    and resyncs it; every block still reads its last value; after a clean stop `qbd verify
//!    --deep` says HEALTHY (every copy current: no stale part, no outdated block).
//!
//! Every wait is bounded and waits for a signal (the ready line, a stderr line). The L2 test
//! needs root and network namespaces (skipped otherwise, fails under
//! `QBD_REQUIRE_PRIVILEGED=1`); a missing `nbdsh` skips both (fails under
//! `QBD_REQUIRE_TOOLS=1`).

mod common;
mod heal_support;

use std::path::Path;
use std::time::Duration;

use common::{Backing, temp_dir, wait_until};
use heal_support::{
    BLOCK, L2Rig, Rig, TcpRig, Tools, assert_old_or_new, assert_verify_healthy, patterned, sweep,
    write_file, write_strided,
};

const VOLUME: &str = "avail";
const SIZE: usize = 8 << 20;
const SIZE_ARG: &str = "8M";
const BLOCKS: usize = SIZE / BLOCK;
/// The node that is dead when the master starts again.
const DEAD: usize = 2;
/// How long the master may take to log an event (admission, resync).
const LOG_TIMEOUT: Duration = Duration::from_secs(60);

/// What the scenario needs beyond a [`Rig`]: killing and restarting one node.
trait Nodes: Rig {
    fn crash_node(&mut self, i: usize);
    fn restart_node(&mut self, i: usize);
}

impl Nodes for L2Rig {
    fn crash_node(&mut self, i: usize) {
        self.segment.crash(i);
    }

    fn restart_node(&mut self, i: usize) {
        self.segment.restart(i);
    }
}

impl Nodes for TcpRig {
    fn crash_node(&mut self, i: usize) {
        self.cluster.crash(i);
    }

    fn restart_node(&mut self, i: usize) {
        self.cluster.restart(i);
    }
}

#[test]
fn l2_master_starts_without_a_dead_pinned_node_and_takes_it_back() {
    let Some(tools) = Tools::require() else {
        return;
    };
    let extra = ["--chunk-size", "1M", "--discover-timeout", "2"];
    let Some(mut rig) = L2Rig::start("avail", 3, VOLUME, SIZE_ARG, "replicate:3", &extra) else {
        return;
    };
    let mut args = rig.master_args();
    for i in 0..3 {
        args.extend(["--node".to_owned(), rig.segment.node(i).mac.clone()]);
    }
    rig.set_master_args(args);
    scenario(&mut rig, &tools, "l2");
}

#[test]
fn tcp_master_starts_without_a_dead_node_and_takes_it_back() {
    let Some(tools) = Tools::require() else {
        return;
    };
    let mut rig = TcpRig::start(3, VOLUME, SIZE_ARG, "replicate:3", &["--chunk-size", "1M"]);
    scenario(&mut rig, &tools, "tcp");
}

fn scenario(rig: &mut dyn Nodes, tools: &Tools, what: &str) {
    let scratch = temp_dir(Backing::Shm);
    let first = patterned(0xa1, SIZE);
    let first_file = write_file(scratch.path(), "first.bin", &first);

    let master = rig.start_master(&format!("{what}: first start"));
    write_strided(rig, tools, &master, &first_file, 1, 0);
    rig.crash_node(DEAD);
    master.crash();

    // The dead node is still named: the master starts without it.
    let master = rig.start_master(&format!("{what}: start with node {DEAD} dead"));
    // stderr is collected by another thread: wait for the line, then count.
    master.wait_stderr("serves DEGRADED", LOG_TIMEOUT);
    let log = master.stderr();
    assert_eq!(
        log.matches("serves DEGRADED").count(),
        1,
        "{what}: the master says once that it serves without the dead node:\n{log}"
    );
    assert_reads(
        rig,
        tools,
        &master,
        &first_file,
        &format!("{what}: degraded start"),
    );

    // Half the blocks written again while the node is dead.
    let second = patterned(0xb2, SIZE);
    let second_file = write_file(scratch.path(), "second.bin", &second);
    write_strided(rig, tools, &master, &second_file, 2, 0);
    let expected = interleave(&second, &first);
    let expected_file = write_file(scratch.path(), "expected.bin", &expected);
    assert_reads(
        rig,
        tools,
        &master,
        &expected_file,
        &format!("{what}: degraded writes"),
    );
    let log = master.stderr();
    assert!(
        !log.contains("still unusable"),
        "{what}: a missing node is not reported again and again:\n{log}"
    );

    // The node comes back: admitted into its slot, readmitted, resynced.
    rig.restart_node(DEAD);
    let name = format!("node n{DEAD} ");
    let healed = wait_until(LOG_TIMEOUT, || {
        let log = master.stderr();
        after(&log, "answered: it takes backend slot", &name)
            .and_then(|rest| after(rest, "is back", &name))
            .is_some_and(|rest| rest.contains("resync complete"))
    });
    assert!(
        healed,
        "{what}: the master admits {name}, readmits and resyncs it:\n{}",
        master.stderr()
    );
    assert_reads(
        rig,
        tools,
        &master,
        &expected_file,
        &format!("{what}: after the resync"),
    );
    println!("{what}: the master's log:\n{}", master.stop_cleanly());
    assert_verify_healthy(rig, &format!("{what}: after node {DEAD} came back"));
}

/// Panics unless every block read through `master` is the block of the file `expected`.
fn assert_reads(
    rig: &dyn Rig,
    tools: &Tools,
    master: &common::Master,
    expected: &Path,
    what: &str,
) {
    let result = sweep(rig, tools, master, expected);
    assert_old_or_new(&result, BLOCKS, what);
    assert!(
        !result.contains('0'),
        "{what}: every block holds its last written value, none reads as zeros: {result}"
    );
}

/// Even blocks from `even`, odd blocks from `odd`.
fn interleave(even: &[u8], odd: &[u8]) -> Vec<u8> {
    even.chunks_exact(BLOCK)
        .zip(odd.chunks_exact(BLOCK))
        .enumerate()
        .flat_map(|(i, (e, o))| if i % 2 == 0 { e } else { o }.to_vec())
        .collect()
}

/// The part of `log` after the first line that holds both `event` and `who`.
fn after<'a>(log: &'a str, event: &str, who: &str) -> Option<&'a str> {
    let mut offset = 0;
    for line in log.split_inclusive('\n') {
        offset += line.len();
        if line.contains(event) && line.contains(who) {
            return Some(&log[offset..]);
        }
    }
    None
}
