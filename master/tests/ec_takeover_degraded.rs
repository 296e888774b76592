//! Found by the torture harness (`qbd-bench torture --config ec42-tcp`): a master on another
//! host (another state directory) that took over an erasure-coded volume while a node was down
//! could not restore the rows its predecessor left half-written (`reconcile: chunk N has rows
//! that cannot be restored; they read as EIO`): the journal that closes the write hole stays
//! with the master that wrote it, and a torn row is restored from the parts alone only when
//! every part is there.
//!
//! Through real `qbd-master` and `qbd-node` processes over TCP, ec:4+2 on six nodes: after a
//! master is killed and a node dies, a master with another state directory refuses to start
//! degraded, says why, and leaves the volume's epoch alone; the master with the last state
//! directory starts degraded; with every node back, the other one starts too.

mod common;
mod heal_support;

use common::{Backing, Master, temp_dir};
use heal_support::{Rig, TcpRig, volume_epoch, with_arg};

const VOLUME: &str = "ecblind";

#[test]
fn an_ec_master_without_the_last_journal_refuses_a_degraded_start() {
    let mut rig = TcpRig::start(6, VOLUME, "8M", "ec:4+2", &["--chunk-size", "1M"]);
    let home = rig.master_args();
    let master = rig.start_master("first start");
    master.crash();
    rig.cluster.crash(5);
    let epoch = volume_epoch(rig.cluster.data(0));

    let elsewhere = temp_dir(Backing::Shm);
    let other = with_arg(
        home.clone(),
        "--state",
        elsewhere.path().to_str().expect("utf-8 path"),
    );
    let refused = Master::try_start(&other).expect_err("a blind degraded EC start is refused");
    assert!(
        refused.stderr.contains("erasure coded") && refused.stderr.contains("write hole"),
        "the refusal says why:\n{}",
        refused.stderr
    );
    assert_eq!(
        volume_epoch(rig.cluster.data(0)),
        epoch,
        "the refused master took no epoch"
    );

    rig.set_master_args(home);
    let master = rig.start_master("degraded start on the last master's state");
    assert!(
        master.wait_stderr("serves DEGRADED", std::time::Duration::from_secs(30)),
        "the master with the last journal serves degraded:\n{}",
        master.stderr()
    );
    drop(master);

    rig.cluster.restart(5);
    rig.set_master_args(other);
    let master = rig.start_master("start elsewhere with every node");
    drop(master);
}
