//! Zeroed meta records (issue 14, defect 6), through a real `qbd-master` over directories:
//! replicate:3, distinct data written and flushed, the master stopped, the meta records of 8
//! blocks zeroed in the part file that reads are served from first, the master started again.
//! Every block must read back as written (the zeroed records are damage, not "never written":
//! the good copies serve and read repair rewrites the bad one). `qbd verify --deep` reports the
//! 8 blocks as corrupt before the restart and the volume HEALTHY after the reads.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::data::{assert_same, random_bytes};
use common::tools::{Outcome, run};
use common::{Backing, Master, Volume, read_all, volume_dir, write_all};
use qbd_core::format::header::{HEADER_LEN, PartHeader};
use qbd_core::format::layout::PartLayout;
use qbd_core::format::record::RECORD_SIZE;

const SIZE: usize = 8 << 20;
/// The blocks of chunk 0 whose records are zeroed.
const ZEROED: std::ops::Range<u32> = 3..11;

#[test]
fn zeroed_records_in_one_replica_are_healed_not_read_as_zeros() {
    let volume = Volume::new("zeroed", 3, Backing::Disk);
    let args = volume.args("8M", &[]);
    let expected = random_bytes(0x2e20_0006, SIZE);

    let master = Master::start(&args);
    write_all(&master, &expected);
    master.stop_cleanly();

    // Reads of chunk 0 try part `a` first: damage that copy.
    let target = part_a_of_chunk_0(volume.dirs());
    zero_records(&target, ZEROED);

    // Verify, deep, sees the zeroed records as corrupt blocks of that part.
    let damaged = qbd_verify(&volume);
    assert!(
        damaged.stdout.contains("state: DEGRADED")
            && damaged.stdout.contains("8 corrupt block(s), first 3"),
        "verify of the damaged volume: {damaged}"
    );

    let master = Master::start(&args);
    assert_same("read back", &expected, &read_all(&master, SIZE));
    let log = master.stderr();
    assert!(
        log.contains("record zeroed"),
        "the master names the damage it served around:\n{log}"
    );
    master.stop_cleanly();

    let out = qbd_verify(&volume);
    assert!(
        out.success() && out.stdout.contains("state: HEALTHY"),
        "verify after read repair: {out}"
    );
}

/// The one file `<root>/<nr>/a/0` among the volume's directories.
fn part_a_of_chunk_0(dirs: &[PathBuf]) -> PathBuf {
    let found: Vec<PathBuf> = dirs
        .iter()
        .map(|d| volume_dir(d).join("a").join("0"))
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(found.len(), 1, "part a of chunk 0: {found:?}");
    found[0].clone()
}

/// Overwrites the meta records of `blocks` in the part file at `path` with zeros (the layout
/// from the file's own header).
fn zero_records(path: &Path, blocks: std::ops::Range<u32>) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut head = [0u8; HEADER_LEN];
    f.read_exact_at(&mut head, 0).expect("read part header");
    let h = PartHeader::decode(&head).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let layout = PartLayout::new(h.block_size, h.blocks);
    for b in blocks {
        f.write_all_at(&[0u8; RECORD_SIZE], layout.record_offset(b))
            .expect("zero a record");
    }
    f.sync_all().expect("sync the damaged part file");
}

/// `qbd verify --deep` of the volume over its directories.
fn qbd_verify(volume: &Volume) -> Outcome {
    let mut cmd = Command::new(&common::nodes::bins().qbd);
    cmd.args(["verify", "--volume", &volume.name, "--deep"]);
    for d in volume.dirs() {
        cmd.arg("--dir").arg(d);
    }
    run(cmd)
}
