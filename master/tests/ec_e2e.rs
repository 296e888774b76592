//! `qbd-master --redundancy ec:4+2` over six `--dir` backends, driven by
//! nbdcopy: a 128 MiB round trip is byte-identical, survives a restart,
//! survives the part files of two backends being deleted (reads
//! reconstruct, reads and writes record the lost parts stale) and, after another restart
//! (resync), still reads back identically with every part file back. Skips if
//! nbdcopy is missing (fails under `QBD_REQUIRE_TOOLS=1`).

mod common;

use std::path::Path;
use std::process::Command;

use common::data::{assert_same, random_bytes};
use common::tools::{require_tool, run};
use common::{Backing, Master, Volume};

fn ec_args(volume: &Volume, profile: &str) -> Vec<String> {
    let mut args = volume.args("128M", &[]);
    let i = args
        .iter()
        .position(|a| a == "--redundancy")
        .expect("--redundancy in the common arguments");
    args[i + 1] = profile.to_owned();
    args
}

#[test]
fn ec_4_2_nbdcopy_round_trip_restart_and_two_lost_backends() {
    let Some(nbdcopy) = require_tool("nbdcopy") else {
        return;
    };
    let scratch = common::temp_dir(Backing::Shm);
    let input = scratch.path().join("in.bin");
    let expected = random_bytes(0x5eed_00ec, 128 << 20);
    std::fs::write(&input, &expected).expect("write input file");
    let volume = Volume::spread("ec", 1, 6, Backing::Shm);
    let args = ec_args(&volume, "ec:4+2");
    let copy = |from: &Path, to: &str| {
        let mut cmd = Command::new(&nbdcopy);
        cmd.arg(from).arg(to);
        run(cmd).assert_success();
    };
    let copy_out = |master: &Master, name: &str, what: &str| {
        let out = scratch.path().join(name);
        copy(Path::new(&master.uri()), &out.display().to_string());
        assert_same(what, &expected, &std::fs::read(&out).expect("read copy"));
        std::fs::remove_file(&out).expect("remove copy");
    };

    let master = Master::start(&args);
    copy(&input, &master.uri());
    copy_out(&master, "out1.bin", "copied out");
    master.stop_cleanly();
    // Every directory holds one part (data or parity) of each of the 32
    // chunks, each a quarter of a chunk's data.
    for dir in volume.dirs() {
        assert_eq!(common::part_files(dir).len(), 32, "{}", dir.display());
    }

    let master = Master::start(&args);
    copy_out(&master, "out2.bin", "copied out after restart");
    master.stop_cleanly();

    // Two backends lose every part file: reads reconstruct from the other
    // four, and the lost parts are recorded stale.
    for dir in &volume.dirs()[1..3] {
        for f in common::part_files(dir) {
            std::fs::remove_file(&f).expect("delete part file");
        }
    }
    let master = Master::start(&args);
    copy_out(
        &master,
        "out3.bin",
        "copied out with two backends' parts lost",
    );
    // Reads touch data parts only: the lost parity parts are found (and
    // recorded stale) by the writes, which go on with the four others.
    copy(&input, &master.uri());
    copy_out(
        &master,
        "out3b.bin",
        "rewritten with two backends' parts lost",
    );
    master.stop_cleanly();

    // The stale parts are rebuilt by the maintenance pass while serving,
    // or at the latest by the next start, before its ready line.
    let master = Master::start(&args);
    copy_out(&master, "out4.bin", "copied out after resync");
    master.stop_cleanly();
    for dir in volume.dirs() {
        assert_eq!(common::part_files(dir).len(), 32, "{}", dir.display());
    }
}
