//! `qbd-master` over three real `qbd-node` daemons (`--node`, `--cluster-key`), driven by real
//! NBD clients: a replicate:3 volume copies in and out byte-identical and passes fio's verify;
//! a node killed with SIGKILL in the middle of a fio verify run is survived, readmitted and
//! resynced after it restarts, then serves the whole volume alone; a master with the wrong
//! cluster key is refused and the nodes keep serving.
//!
//! Every process listens on 127.0.0.1 only and is stopped when dropped, even on panic. Every
//! wait is bounded and waits for a signal (a ready line, a stderr line, a file growing), never a
//! fixed sleep. A missing client tool skips a test (fails under `QBD_REQUIRE_TOOLS=1`).
//!
//! The `qbd-node` and `qbd` binaries belong to other packages; `common/nodes.rs` explains how
//! they are found (next to `qbd-master`, built once per test process if missing or stale).
//!
//! Runtime: about 15 s in all on two cores (the tests run in parallel); none takes 20 s alone.
//! [`a_node_killed_during_fio_is_resynced_and_then_serves_alone`] is the longest (about 8 s: the
//! master's probe of the dead node backs off 1 s, 2 s, 4 s).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::data::{assert_same, random_bytes};
use common::nodes::{Cluster, allocated_bytes, keygen};
use common::tools::{assert_fio_passed, fio_randwrite_verify, require_tool, run};
use common::{Backing, Master, raw, wait_until};

/// How long the master may take to log an event (a failure, a readmission, a resync).
const LOG_TIMEOUT: Duration = Duration::from_secs(30);

/// `nbdcopy FROM TO`, which must succeed.
fn nbdcopy(tool: &Path, from: &str, to: &str) {
    let mut cmd = Command::new(tool);
    cmd.args([from, to]);
    run(cmd).assert_success();
}

/// Copies the whole export out to `file` with nbdcopy and returns its bytes.
fn copy_out(tool: &Path, master: &Master, file: &Path) -> Vec<u8> {
    nbdcopy(tool, &master.uri(), &file.display().to_string());
    let bytes = std::fs::read(file).expect("read copied-out file");
    std::fs::remove_file(file).expect("remove copied-out file");
    bytes
}

/// Three nodes, replicate:3: 128 MiB of random data copied in and out with nbdcopy is
/// byte-identical, and fio's random writes pass their crc32c verify.
#[test]
fn three_nodes_replicate_3_copy_round_trip_and_fio_verify() {
    let (Some(nbdcopy_path), Some(fio)) = (require_tool("nbdcopy"), require_tool("fio")) else {
        return;
    };
    let cluster = Cluster::start(3);
    let master = Master::start(&cluster.master_args("copy", "128M", 3, &[]));

    let scratch = common::temp_dir(Backing::Shm);
    let input = scratch.path().join("in.bin");
    let expected = random_bytes(0x5eed_40de, 128 << 20);
    std::fs::write(&input, &expected).expect("write input file");
    nbdcopy(&nbdcopy_path, &input.display().to_string(), &master.uri());
    std::fs::remove_file(&input).expect("remove input file");
    let got = copy_out(&nbdcopy_path, &master, &scratch.path().join("out.bin"));
    assert_same("copied out over three nodes", &expected, &got);
    drop(got);

    assert_fio_passed(&run(fio_randwrite_verify(
        Command::new(&fio),
        &master.uri(),
        &[],
    )));
    let stderr = master.stop_cleanly();
    assert!(
        !stderr.contains("failed"),
        "no backend failed with every node up:\n{stderr}"
    );
}

/// One of three nodes is killed with SIGKILL while fio writes and verifies: fio still passes.
/// The volume is copied out from the two survivors as the reference. The node restarts on the
/// same directory and port; the master readmits it ("is back") and resyncs what it missed
/// ("resync complete"). A copy with all three up, and then one from the restarted node alone
/// (the other two stopped), must equal the reference: a stale block it served would differ.
#[test]
fn a_node_killed_during_fio_is_resynced_and_then_serves_alone() {
    let (Some(nbdcopy_path), Some(fio)) = (require_tool("nbdcopy"), require_tool("fio")) else {
        return;
    };
    const VICTIM: usize = 1;
    let mut cluster = Cluster::start(3);
    let master = Master::start(&cluster.master_args("kill", "64M", 3, &[]));

    // fio verifies in batches while it writes (verify_backlog), so reads are in flight too when
    // the node dies, and again over everything at the end.
    let uri = master.uri();
    let fio_cmd = fio_randwrite_verify(Command::new(&fio), &uri, &["--verify_backlog=1024"]);
    let fio_run = std::thread::spawn(move || run(fio_cmd));

    // The signal that fio is mid-run: the victim has stored a quarter of fio's 64 MiB.
    let stored = 16 << 20;
    let victim_dir = cluster.data(VICTIM).to_owned();
    let mid_run = wait_until(LOG_TIMEOUT, || {
        allocated_bytes(&victim_dir) >= stored || fio_run.is_finished()
    });
    assert!(
        mid_run && !fio_run.is_finished(),
        "fio still running once node {VICTIM} stored {stored} bytes (it holds {})",
        allocated_bytes(&victim_dir)
    );
    let victim = cluster.node(VICTIM).id.clone();
    cluster.crash(VICTIM);

    let out = fio_run.join().expect("fio thread");
    assert_fio_passed(&out);
    let failed = format!("backend node {victim} ");
    assert!(
        master.wait_stderr(&failed, LOG_TIMEOUT),
        "stderr reports {victim} failed:\n{}",
        master.stderr()
    );

    // The reference: the volume as the two surviving nodes serve it, fio's writes included
    // (fio verified them). Nothing writes from here on.
    let scratch = common::temp_dir(Backing::Shm);
    let out = scratch.path().join("out.bin");
    let reference = copy_out(&nbdcopy_path, &master, &out);

    // Back on the same directory and port: the master's probe readmits it and resyncs it.
    cluster.restart(VICTIM);
    let back = format!("node {victim} ");
    assert!(
        wait_until(LOG_TIMEOUT, || after(&master.stderr(), "is back", &back)
            .is_some_and(|rest| rest.contains("resync complete"))),
        "stderr reports {victim} back and resynced:\n{}",
        master.stderr()
    );
    let stderr = master.stderr();
    assert!(
        !stderr.contains("stays stale"),
        "every stale part was resynced:\n{stderr}"
    );
    assert_same(
        "copied out with all three nodes up after the resync",
        &reference,
        &copy_out(&nbdcopy_path, &master, &out),
    );

    // The restarted node alone: a block it missed and still held stale would differ.
    for other in (0..3).filter(|&i| i != VICTIM) {
        cluster.stop(other);
    }
    let alone = copy_out(&nbdcopy_path, &master, &out);
    assert_same(
        &format!(
            "copied out from the resynced node alone; master stderr:\n{}",
            master.stderr()
        ),
        &reference,
        &alone,
    );
}

/// The text after the first line of `log` that contains both `event` and `who`.
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

/// A master with another cluster key is refused (nonzero exit, an error naming the node and the
/// handshake) without harming anything: the nodes keep running, and a master with the right
/// key then reads back what was written before.
#[test]
fn a_master_with_the_wrong_cluster_key_is_refused_and_the_nodes_keep_serving() {
    let mut cluster = Cluster::start(3);
    let data = random_bytes(0x5eed_0bad, 4 << 20);
    let args = cluster.master_args("key", "16M", 3, &[]);
    let master = Master::start(&args);
    let mut client = raw::Client::connect(master.addr, &master.volume);
    client.write(0, &data).expect("write 4 MiB");
    client.flush().expect("flush");
    client.disconnect();
    master.stop_cleanly();

    let wrong = keygen(cluster.scratch(), "wrong.key");
    let wrong_args = cluster.master_args_with_key("key", "16M", 3, &wrong, &[]);
    let failure = match Master::try_start(&wrong_args) {
        Ok(master) => panic!("a master with the wrong key serves: {master:?}"),
        Err(failure) => failure,
    };
    let status = failure.status.expect("the master exits rather than hangs");
    assert!(!status.success(), "nonzero exit: {failure}");
    let lower = failure.stderr.to_lowercase();
    assert!(
        lower.contains("handshake") || lower.contains("key"),
        "the error says the handshake or key failed: {failure}"
    );
    let named = (0..3).any(|i| failure.stderr.contains(&cluster.node(i).addr.to_string()));
    assert!(named, "the error names a node: {failure}");

    // Each node refused the handshake (the master connects to all of them at once) and runs on.
    for i in 0..3 {
        let refused = "handshake failed";
        assert!(
            wait_until(LOG_TIMEOUT, || cluster.node(i).stderr().contains(refused)),
            "node {i} logs {refused:?}; its stderr:\n{}",
            cluster.node(i).stderr()
        );
        assert!(
            cluster.node_mut(i).is_running(),
            "node {i} still runs after the wrong-key master; its stderr:\n{}",
            cluster.node(i).stderr()
        );
    }
    let master = Master::start(&args);
    let mut client = raw::Client::connect(master.addr, &master.volume);
    let got = client.read(0, 4 << 20).expect("read 4 MiB");
    client.disconnect();
    assert_same("read back after the wrong-key master", &data, &got);
    master.stop_cleanly();
}
