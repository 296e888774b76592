//! Replication end to end, through the `qbd-master` binary and real clients:
//!
//! - a backend (a small tmpfs) fills up mid-copy: I/O continues on the other replicas, the
//!   degraded map names it, a restart after it has room again resyncs it, and it then serves the
//!   whole volume alone when the other replicas' parts are gone;
//! - `--dir` order does not move data, and a directory holding another volume of the same name
//!   (or none) is refused.
//!
//! The first needs root (`mount -t tmpfs`): it prints `SKIPPED: <reason>` otherwise, or fails
//! under `QBD_REQUIRE_PRIVILEGED=1`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::data::{assert_same, random_bytes};
use common::tools::{Outcome, require_privileged, require_tool, run, run_bounded};
use common::{Backing, Master, Volume, backend_id, read_all, volume_dir, write_all};
use tempfile::TempDir;

/// How long the master may take to log something after the client saw its effect.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// A tmpfs of a given size mounted on a fresh directory; unmounted when dropped (even on panic),
/// before its directory is removed.
struct Tmpfs {
    /// Holds the mount point; removed after the unmount (fields drop after `drop`).
    _base: TempDir,
    mount_point: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let base = common::temp_dir(Backing::Disk);
        let mount_point = base.path().join("mnt");
        std::fs::create_dir(&mount_point).expect("mkdir mount point");
        let out = mount(&[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "tmpfs",
            &mount_point.display().to_string(),
        ]);
        out.assert_success();
        Tmpfs {
            _base: base,
            mount_point,
        }
    }

    fn path(&self) -> &Path {
        &self.mount_point
    }

    /// `mount -o remount,size=SIZE`: the files stay, the limit changes.
    fn resize(&self, size: &str) {
        mount(&[
            "-o",
            &format!("remount,size={size}"),
            &self.mount_point.display().to_string(),
        ])
        .assert_success();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let mut cmd = Command::new("umount");
        cmd.arg(&self.mount_point);
        let out = run_bounded(cmd, Duration::from_secs(30));
        if !out.success() {
            // Still busy (a master that was killed late?): detach it so the dir can go.
            eprintln!("tmpfs teardown: {out}");
            let mut lazy = Command::new("umount");
            lazy.arg("-l").arg(&self.mount_point);
            let _ = run_bounded(lazy, Duration::from_secs(30));
        }
    }
}

fn mount(args: &[&str]) -> Outcome {
    let mut cmd = Command::new("mount");
    cmd.args(args);
    run_bounded(cmd, Duration::from_secs(30))
}

/// `nbdcopy FROM TO`, which must succeed.
fn nbdcopy(nbdcopy: &Path, from: &str, to: &str) {
    let mut cmd = Command::new(nbdcopy);
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

/// One of three backends of a replicate:3 volume runs out of space during an nbdcopy: the copy
/// still succeeds, the master reports the backend failed, the other two record its missed chunks
/// (`.stale.<its uuid>`); after it gets room and the master restarts, it is resynced, and it then
/// serves the whole volume alone once the other two backends' part directories are deleted.
#[test]
fn backend_that_fills_up_is_degraded_then_resynced_and_serves_alone() {
    if !require_privileged(&["mount", "umount"]) {
        return;
    }
    let Some(nbdcopy_path) = require_tool("nbdcopy") else {
        return;
    };
    let small = Tmpfs::mount("3M");
    let (left, right) = (
        common::temp_dir(Backing::Shm),
        common::temp_dir(Backing::Shm),
    );
    let dirs = vec![
        left.path().to_owned(),
        small.path().to_owned(),
        right.path().to_owned(),
    ];
    let volume = Volume::over("fill", 3, dirs, Backing::Shm);
    let args = volume.args("64M", &["--chunk-size", "1M"]);
    let scratch = common::temp_dir(Backing::Shm);
    let input = scratch.path().join("in.bin");
    let out = scratch.path().join("out.bin");
    let expected = random_bytes(0x5eed_e2e1, 64 << 20);
    std::fs::write(&input, &expected).expect("write input file");

    // 1. The copy fills the 3 MiB tmpfs after a few 1 MiB chunks, and still succeeds.
    let master = Master::start(&args);
    nbdcopy(&nbdcopy_path, &input.display().to_string(), &master.uri());
    let small_name = format!("dir:{}", small.path().display());
    let failed = format!("backend {small_name} failed");
    assert!(
        master.wait_stderr(&failed, LOG_TIMEOUT),
        "stderr reports {failed:?}:\n{}",
        master.stderr()
    );
    assert_same(
        "copied out while degraded",
        &expected,
        &copy_out(&nbdcopy_path, &master, &out),
    );
    let stderr = master.stop_cleanly();
    let stale_name = format!(".stale.{}", backend_id(small.path()));
    for healthy in [left.path(), right.path()] {
        let stale = volume_dir(healthy).join(&stale_name);
        assert!(
            stale.is_file(),
            "{} holds the degraded map of the full backend; master stderr:\n{stderr}",
            stale.display()
        );
    }

    // 2. With room again, the next start resyncs the missed chunks before the ready line.
    small.resize("256M");
    let master = Master::start(&args);
    let stderr = master.stderr();
    assert!(
        stderr.contains(&format!("stale chunk(s) on {small_name}"))
            && stderr.contains("resync complete"),
        "stderr reports a resync of {small_name}:\n{stderr}"
    );
    let stderr = master.stop_cleanly();
    assert!(
        !stderr.contains("failed"),
        "no failures after the resync:\n{stderr}"
    );

    // 3. The other two replicas' parts are taken away: the resynced backend serves everything.
    for gone in [left.path(), right.path()] {
        let vol = volume_dir(gone);
        for part in ["a", "b", "c"] {
            let dir = vol.join(part);
            std::fs::remove_dir_all(&dir)
                .unwrap_or_else(|e| panic!("rm -rf {}: {e}", dir.display()));
        }
    }
    let master = Master::start(&args);
    let got = copy_out(&nbdcopy_path, &master, &out);
    assert_same(
        &format!(
            "copied out from the resynced backend alone; master stderr:\n{}",
            master.stderr()
        ),
        &expected,
        &got,
    );
    master.stop_cleanly();
}

/// Starts a master with `args` and returns its failure; panics if it serves.
fn refused(args: &[String], what: &str) -> common::StartFailure {
    match Master::try_start(args) {
        Ok(master) => panic!("{what} was accepted: {master:?}"),
        Err(failure) => {
            let status = failure.status.expect("exits rather than hangs");
            assert!(!status.success(), "{what}: nonzero exit: {failure}");
            failure
        }
    }
}

/// replicate:2 over four directories: the `--dir` order of a restart does not matter (placement
/// holds identities), and a directory that holds another volume of the same name, or none, is
/// refused with a message naming it, leaving the volume intact.
#[test]
fn dir_order_does_not_matter_and_foreign_dirs_are_refused() {
    let volume = Volume::spread("order", 2, 4, Backing::Shm);
    let size = 16 << 20;
    let args = volume.args("16M", &["--chunk-size", "1M"]);
    let expected = random_bytes(0x5eed_e2e2, size);
    let master = Master::start(&args);
    write_all(&master, &expected);
    master.stop_cleanly();

    let d = volume.dirs();
    let shuffled = [d[2].clone(), d[0].clone(), d[3].clone(), d[1].clone()];
    let master = Master::start(&volume.args_with_dirs(&shuffled, "16M", &[]));
    assert_same(
        "read back after restarting with the dirs in another order",
        &expected,
        &read_all(&master, size),
    );
    master.stop_cleanly();

    // Another volume named "order" (so also number 1) on a directory of its own.
    let other = Volume::new("order", 1, Backing::Shm);
    Master::start(&other.args("16M", &[])).stop_cleanly();
    let foreign = other.first_dir().to_owned();
    let with_foreign = [d[0].clone(), d[1].clone(), d[2].clone(), foreign.clone()];
    let failure = refused(
        &volume.args_with_dirs(&with_foreign, "16M", &[]),
        "a start with a foreign directory",
    );
    assert!(
        failure.stderr.contains("foreign")
            && failure.stderr.contains(&foreign.display().to_string()),
        "stderr calls {} foreign: {failure}",
        foreign.display()
    );

    // A fresh, empty directory in place of one of the volume's.
    let empty = common::temp_dir(Backing::Shm);
    let with_empty = [
        d[0].clone(),
        empty.path().to_owned(),
        d[2].clone(),
        d[3].clone(),
    ];
    let failure = refused(
        &volume.args_with_dirs(&with_empty, "16M", &[]),
        "a start with an empty directory in place of a backend",
    );
    assert!(
        failure.stderr.contains(&empty.path().display().to_string()),
        "stderr names {}: {failure}",
        empty.path().display()
    );

    // Neither refusal touched the volume.
    let master = Master::start(&args);
    assert_same(
        "read back after the refused starts",
        &expected,
        &read_all(&master, size),
    );
    master.stop_cleanly();
}

/// The foreign directory given first: the message must still name it, not one of the volume's
/// own directories (three of which agree with each other).
#[test]
fn a_foreign_dir_given_first_is_the_one_named() {
    let volume = Volume::spread("order", 2, 3, Backing::Shm);
    Master::start(&volume.args("16M", &[])).stop_cleanly();
    let other = Volume::new("order", 1, Backing::Shm);
    Master::start(&other.args("16M", &[])).stop_cleanly();
    let foreign = other.first_dir().to_owned();
    let d = volume.dirs();
    let with_foreign = [foreign.clone(), d[1].clone(), d[2].clone()];
    let failure = refused(
        &volume.args_with_dirs(&with_foreign, "16M", &[]),
        "a start with a foreign directory first",
    );
    for own in &d[1..] {
        assert!(
            !failure.stderr.contains(&own.display().to_string()),
            "stderr blames the volume's own {}: {failure}",
            own.display()
        );
    }
    assert!(
        failure.stderr.contains(&foreign.display().to_string()),
        "stderr names {}: {failure}",
        foreign.display()
    );
}
