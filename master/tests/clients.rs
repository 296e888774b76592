//! `qbd-master` driven by real NBD clients: nbdinfo, nbdcopy, qemu-io, nbdsh, fio, and a real
//! filesystem through nbdfuse + loop device. Each test starts its own master on fresh temp dirs
//! and a kernel-chosen port. A missing client tool skips the test (fails under
//! `QBD_REQUIRE_TOOLS=1`); see `common/tools.rs`.
//!
//! The data tests run once per redundancy (see [`per_redundancy!`]): `replicate:1` on one
//! directory and `replicate:3` on three, as `<test>::replicate_1` and `<test>::replicate_3`.

mod common;

use std::path::Path;
use std::process::Command;

use common::data::{assert_same, random_bytes};
use common::tools::{nbdsh, require_privileged, require_tool, run};
use common::{Backing, Master, Volume, raw};

/// For each named fn taking the replica count, a module of that name with two tests:
/// `replicate_1` (one `--dir`) and `replicate_3` (three `--dir`s, `--redundancy replicate:3`).
macro_rules! per_redundancy {
    ($($test:ident),+ $(,)?) => {$(
        mod $test {
            #[test]
            fn replicate_1() {
                super::$test(1);
            }

            #[test]
            fn replicate_3() {
                super::$test(3);
            }
        }
    )+};
}

per_redundancy!(
    nbdcopy_round_trip_is_byte_identical_and_persists_across_restart,
    qemu_io_unaligned_writes_read_back_with_neighbours_intact,
    qemu_io_write_zeroes_and_discard_read_back_as_zeros,
    nbdsh_512_byte_write_inside_a_block_reads_back_with_neighbours_intact,
    fio_randwrite_with_crc32c_verify_passes,
    read_only_export_refuses_qemu_io_writes_and_serves_reads,
    ext4_on_nbdfuse_loop_device_mounts_writes_and_fscks_clean,
);

/// `nbdinfo --json URI`, parsed; the single export it describes.
fn nbdinfo_export(nbdinfo: &Path, uri: &str) -> serde_json::Value {
    let mut cmd = Command::new(nbdinfo);
    cmd.args(["--json", uri]);
    let out = run(cmd);
    out.assert_success();
    let mut info: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("nbdinfo printed invalid JSON ({e}): {}", out.stdout));
    let exports = info["exports"].as_array_mut().expect("exports array");
    assert_eq!(exports.len(), 1, "one export: {}", out.stdout);
    exports.remove(0)
}

/// `qemu-io -f raw [-r] URI -c CMD...`, which exits nonzero when any command fails.
fn qemu_io(
    qemu_io: &Path,
    uri: &str,
    read_only: bool,
    commands: &[&str],
) -> common::tools::Outcome {
    let mut cmd = Command::new(qemu_io);
    cmd.args(["-f", "raw"]);
    if read_only {
        cmd.arg("-r");
    }
    cmd.arg(uri);
    for c in commands {
        cmd.args(["-c", c]);
    }
    run(cmd)
}

fn block_sizes_reported(volume_block_size: &str, expected_preferred: u64) {
    let Some(nbdinfo) = require_tool("nbdinfo") else {
        return;
    };
    let volume = Volume::new("info", 1, Backing::Disk);
    let master = Master::start(&volume.args("64M", &["--block-size", volume_block_size]));
    let export = nbdinfo_export(&nbdinfo, &master.uri());
    assert_eq!(export["export-name"], "info");
    assert_eq!(export["export-size"], 64 << 20);
    assert_eq!(export["block_size_minimum"], 1, "{export}");
    assert_eq!(
        export["block_size_preferred"], expected_preferred,
        "{export}"
    );
    let maximum = export["block_size_maximum"]
        .as_u64()
        .expect("block_size_maximum");
    assert!(
        maximum >= 1 << 20,
        "maximum payload {maximum} below 1 MiB: {export}"
    );
}

#[test]
fn nbdinfo_reports_name_size_and_4k_block_size() {
    block_sizes_reported("4K", 4096);
}

#[test]
fn nbdinfo_reports_64k_preferred_block_size() {
    block_sizes_reported("64K", 65536);
}

#[test]
fn nbdinfo_for_an_unknown_export_name_fails() {
    let Some(nbdinfo) = require_tool("nbdinfo") else {
        return;
    };
    let volume = Volume::new("known", 1, Backing::Disk);
    let master = Master::start(&volume.args("16M", &[]));
    let mut cmd = Command::new(nbdinfo);
    cmd.arg(format!("nbd://{}/unknown", master.addr));
    run(cmd).assert_failure();
}

fn nbdcopy_round_trip_is_byte_identical_and_persists_across_restart(replicas: usize) {
    let Some(nbdcopy) = require_tool("nbdcopy") else {
        return;
    };
    let scratch = common::temp_dir(Backing::Shm);
    let input = scratch.path().join("in.bin");
    let expected = random_bytes(0x5eed_0001, 128 << 20);
    std::fs::write(&input, &expected).expect("write input file");
    let volume = Volume::new("copy", replicas, Backing::Shm);
    let args = volume.args("128M", &[]);

    let master = Master::start(&args);
    let copy = |from: &Path, to: &str| {
        let mut cmd = Command::new(&nbdcopy);
        cmd.arg(from).arg(to);
        run(cmd).assert_success();
    };
    copy(&input, &master.uri());
    let out1 = scratch.path().join("out1.bin");
    copy(Path::new(&master.uri()), &out1.display().to_string());
    assert_same(
        "copied out",
        &expected,
        &std::fs::read(&out1).expect("read out1"),
    );
    master.stop_cleanly();
    // Every directory holds one part of each of the 32 chunks (4 MiB each).
    for dir in volume.dirs() {
        let parts = common::part_files(dir);
        assert_eq!(
            parts.len(),
            32,
            "part files in {}: {parts:?}",
            dir.display()
        );
    }

    let master = Master::start(&args);
    let out2 = scratch.path().join("out2.bin");
    copy(Path::new(&master.uri()), &out2.display().to_string());
    assert_same(
        "copied out after restart",
        &expected,
        &std::fs::read(&out2).expect("read out2"),
    );
}

fn qemu_io_unaligned_writes_read_back_with_neighbours_intact(replicas: usize) {
    let Some(qemu_io_path) = require_tool("qemu-io") else {
        return;
    };
    let volume = Volume::new("unaligned", replicas, Backing::Disk);
    // 4 KiB blocks and 64 KiB chunks: boundaries at 4096 and 65536, 131072, 196608, 262144.
    let master = Master::start(&volume.args("1M", &["--block-size", "4K", "--chunk-size", "64K"]));
    let writes = [
        "write -P 0xab 1000 3333",     // across the first block boundary
        "write -P 0xcd 65000 1000",    // across the first chunk boundary
        "write -P 0x11 126000 140000", // across three chunk boundaries, unaligned both ends
        "write -P 0xee 2000 10",       // inside the first write
        "write -P 0x77 1048000 576",   // the last bytes of the volume
    ];
    qemu_io(&qemu_io_path, &master.uri(), false, &writes).assert_success();
    let reads = [
        "read -P 0 0 1000",
        "read -P 0xab 1000 1000",
        "read -P 0xee 2000 10",
        "read -P 0xab 2010 2323",
        "read -P 0 4333 60667",
        "read -P 0xcd 65000 1000",
        "read -P 0 66000 60000",
        "read -P 0x11 126000 140000",
        "read -P 0 266000 4096",
        "read -P 0 1040000 8000",
        "read -P 0x77 1048000 576",
    ];
    // A second client process, so nothing can come from the first one's state.
    let out = qemu_io(&qemu_io_path, &master.uri(), true, &reads);
    out.assert_success();
    assert!(!out.stdout.contains("verification failed"), "{out}");
}

/// NBD itself leaves trimmed contents unspecified; QBD's device contract promises zeros.
fn qemu_io_write_zeroes_and_discard_read_back_as_zeros(replicas: usize) {
    let Some(qemu_io_path) = require_tool("qemu-io") else {
        return;
    };
    let volume = Volume::new("zeroes", replicas, Backing::Disk);
    let master = Master::start(&volume.args("1M", &["--block-size", "4K", "--chunk-size", "64K"]));
    let commands = [
        "write -P 0x99 0 1M",
        "write -z 1000 70000",   // unaligned, across the first chunk boundary
        "discard 196608 131072", // two whole chunks
    ];
    qemu_io(&qemu_io_path, &master.uri(), false, &commands).assert_success();
    let reads = [
        "read -P 0x99 0 1000",
        "read -P 0 1000 70000",
        "read -P 0x99 71000 125608",
        "read -P 0 196608 131072",
        "read -P 0x99 327680 720896",
    ];
    qemu_io(&qemu_io_path, &master.uri(), true, &reads).assert_success();
}

fn nbdsh_512_byte_write_inside_a_block_reads_back_with_neighbours_intact(replicas: usize) {
    let Some(nbdsh_path) = require_tool("nbdsh") else {
        return;
    };
    let volume = Volume::new("small", replicas, Backing::Disk);
    let master = Master::start(&volume.args("1M", &["--block-size", "4K"]));
    let script = |code: &str| {
        let mut cmd = nbdsh(&nbdsh_path);
        cmd.args(["-u", &master.uri(), "-c", code]);
        run(cmd).assert_success();
    };
    script(r#"h.pwrite(b"\x11" * 8192, 0)"#);
    // Sector 7 is the last 512 bytes of block 0: the server must read-modify-write.
    script(r#"h.pwrite(b"\x5a" * 512, 512 * 7)"#);
    script(concat!(
        r#"assert h.pread(512, 512 * 7) == b"\x5a" * 512, "the write""#,
        "\n",
        r#"assert h.pread(512 * 7, 0) == b"\x11" * (512 * 7), "before it, same block""#,
        "\n",
        r#"assert h.pread(4096, 4096) == b"\x11" * 4096, "the next block""#,
        "\n",
        r#"assert h.pread(4096, 8192) == bytes(4096), "never written""#,
    ));
}

fn fio_randwrite_with_crc32c_verify_passes(replicas: usize) {
    let Some(fio) = require_tool("fio") else {
        return;
    };
    let volume = Volume::new("fio", replicas, Backing::Shm);
    let master = Master::start(&volume.args("64M", &[]));
    let mut cmd = Command::new(fio);
    cmd.args([
        "--name=v",
        "--ioengine=nbd",
        &format!("--uri={}", master.uri()),
        "--rw=randwrite",
        "--bs=4k",
        "--iodepth=16",
        "--size=64M",
        "--verify=crc32c",
        "--do_verify=1",
        "--verify_fatal=1",
        "--verify_state_save=0", // no state file left in the working directory
    ]);
    let out = run(cmd);
    out.assert_success();
    assert!(
        out.stdout.contains("err= 0"),
        "fio reported an error: {out}"
    );
    assert!(
        !out.stderr.contains("verify"),
        "fio reported verify failures: {out}"
    );
}

#[test]
fn unix_socket_serves_the_export() {
    let Some(nbdinfo) = require_tool("nbdinfo") else {
        return;
    };
    let volume = Volume::new("unix", 1, Backing::Disk);
    let socket = volume.first_dir().join("qbd.sock");
    let socket_arg = socket.display().to_string();
    let master = Master::start(&volume.args("16M", &["--socket", &socket_arg]));
    assert_eq!(
        master.unix.as_deref(),
        Some(socket.as_path()),
        "ready line names the socket"
    );
    let export = nbdinfo_export(&nbdinfo, &master.unix_uri().expect("unix uri"));
    assert_eq!(export["export-name"], "unix");
    assert_eq!(export["export-size"], 16 << 20);
}

/// Creates a volume, stops its master, restarts with `changed` in place of `original`, and
/// checks the refusal; then checks the volume still opens with the original flags.
fn contradicting_restart_refused(
    original: &[&str],
    changed: &[&str],
    size: (&str, &str),
    mention: &str,
) {
    let volume = Volume::new("conflict", 1, Backing::Disk);
    let args = volume.args(size.0, original);
    Master::start(&args).stop_cleanly();
    let failure = match Master::try_start(&volume.args(size.1, changed)) {
        Ok(master) => panic!(
            "restart with {changed:?} size {} was accepted: {master:?}",
            size.1
        ),
        Err(failure) => failure,
    };
    let status = failure.status.expect("exits rather than hangs");
    assert!(!status.success(), "nonzero exit: {failure}");
    assert!(
        failure.stderr.to_lowercase().contains(mention),
        "stderr mentions {mention:?}: {failure}"
    );
    let master = Master::start(&args);
    assert_eq!(
        master.size,
        common::parse_size(size.0),
        "the volume kept its size"
    );
}

#[test]
fn restart_with_different_size_is_refused() {
    contradicting_restart_refused(&[], &[], ("16M", "32M"), "size");
}

#[test]
fn restart_with_different_block_size_is_refused() {
    let original = ["--block-size", "4K"];
    contradicting_restart_refused(&original, &["--block-size", "8K"], ("16M", "16M"), "block");
}

/// A volume holding 0x3c in its first 64 KiB, reopened with `--read-only`.
fn read_only_master(volume: &Volume) -> Master {
    let master = Master::start(&volume.args("16M", &[]));
    let mut client = raw::Client::connect(master.addr, &master.volume);
    client
        .write(0, &[0x3c; 65536])
        .expect("write before going read-only");
    client.disconnect();
    master.stop_cleanly();
    Master::start(&volume.args("16M", &["--read-only"]))
}

fn read_only_export_refuses_qemu_io_writes_and_serves_reads(replicas: usize) {
    let Some(qemu_io_path) = require_tool("qemu-io") else {
        return;
    };
    let volume = Volume::new("ro", replicas, Backing::Disk);
    let master = read_only_master(&volume);
    let write = ["write -P 0xff 0 4096"];
    let out = qemu_io(&qemu_io_path, &master.uri(), false, &write);
    out.assert_failure();
    let said = format!("{}{}", out.stdout, out.stderr).to_lowercase();
    assert!(
        said.contains("permission denied") || said.contains("not permitted"),
        "{out}"
    );
    let read = ["read -P 0x3c 0 65536", "read -P 0 65536 4096"];
    qemu_io(&qemu_io_path, &master.uri(), true, &read).assert_success();
}

#[test]
fn read_only_export_answers_raw_write_with_eperm() {
    let volume = Volume::new("ro", 1, Backing::Disk);
    let master = read_only_master(&volume);
    let mut client = raw::Client::connect(master.addr, &master.volume);
    assert!(
        client.transmission_flags & raw::TFLAG_READ_ONLY != 0,
        "export flags say read-only"
    );
    assert_eq!(client.write(0, &[0xff; 4096]), Err(raw::EPERM));
    assert_same(
        "data after refused write",
        &[0x3c; 4096],
        &client.read(0, 4096).expect("read"),
    );
}

/// The ready line promises that SIGTERM is handled from then on; repeated, since a server that
/// announces before installing its handler loses this race only sometimes.
#[test]
fn sigterm_right_after_the_ready_line_exits_zero() {
    let volume = Volume::new("term", 1, Backing::Disk);
    for _ in 0..50 {
        Master::start(&volume.args("16M", &[])).stop_cleanly();
    }
}

#[test]
fn sigterm_with_an_idle_connected_client_exits_zero() {
    let volume = Volume::new("term", 1, Backing::Disk);
    let master = Master::start(&volume.args("16M", &[]));
    let mut client = raw::Client::connect(master.addr, &master.volume);
    client.write(0, &[7; 4096]).expect("write");
    master.stop_cleanly();
    drop(client);
}

/// ext4 on the export, through nbdfuse and a loop device (the kernel here has no nbd module).
fn ext4_on_nbdfuse_loop_device_mounts_writes_and_fscks_clean(replicas: usize) {
    let tools = [
        "nbdfuse",
        "losetup",
        "mkfs.ext4",
        "fsck.ext4",
        "mount",
        "umount",
    ];
    if !require_privileged(&tools) {
        return;
    }
    let volume = Volume::new("fs", replicas, Backing::Shm);
    let master = Master::start(&volume.args("64M", &[]));
    let work = common::temp_dir(Backing::Disk);
    let (fuse_dir, mnt) = (work.path().join("fuse"), work.path().join("mnt"));
    std::fs::create_dir(&fuse_dir).expect("mkdir fuse");
    std::fs::create_dir(&mnt).expect("mkdir mnt");
    let mut stack = fs_stack::Stack::default(); // torn down in Drop, even on panic

    let image = stack.nbdfuse(&fuse_dir, &master.uri(), &work.path().join("nbdfuse.pid"));
    let device = stack.losetup(&image);
    fs_stack::cmd("mkfs.ext4", &["-q", "-F", &device]).assert_success();
    stack.mount(&device, &mnt, &[]);
    let content = random_bytes(0x5eed_0004, 3 << 20);
    std::fs::write(mnt.join("hello"), &content).expect("write file on ext4");
    stack.unmount().assert_success();
    fs_stack::cmd("fsck.ext4", &["-f", "-n", &device]).assert_success();
    stack.mount(&device, &mnt, &["-o", "ro"]);
    assert_same(
        "file on ext4",
        &content,
        &std::fs::read(mnt.join("hello")).expect("read file"),
    );
}

/// The nbdfuse → loop device → mount stack, torn down in reverse order when dropped.
mod fs_stack {
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use crate::common::tools::{Outcome, run_bounded};
    use crate::common::{READY_TIMEOUT, terminate, wait_until};

    const STEP_TIMEOUT: Duration = Duration::from_secs(60);

    pub fn cmd(program: &str, args: &[&str]) -> Outcome {
        let mut cmd = Command::new(program);
        cmd.args(args);
        run_bounded(cmd, STEP_TIMEOUT)
    }

    #[derive(Debug, Default)]
    pub struct Stack {
        nbdfuse: Option<(Child, PathBuf)>,
        loop_device: Option<String>,
        mounted: Option<PathBuf>,
    }

    impl Stack {
        /// Serves `uri` as the file `dir/disk`; returns its path once nbdfuse says it is ready.
        pub fn nbdfuse(&mut self, dir: &Path, uri: &str, pidfile: &Path) -> PathBuf {
            let image = dir.join("disk");
            let child = Command::new("nbdfuse")
                .arg("-P")
                .arg(pidfile)
                .arg(&image)
                .arg(uri)
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn nbdfuse");
            self.nbdfuse = Some((child, dir.to_owned()));
            assert!(
                wait_until(READY_TIMEOUT, || pidfile.exists()),
                "nbdfuse never wrote its pid file"
            );
            image
        }

        pub fn losetup(&mut self, image: &Path) -> String {
            let out = cmd("losetup", &["-f", "--show", &image.display().to_string()]);
            out.assert_success();
            let device = out.stdout.trim().to_owned();
            self.loop_device = Some(device.clone());
            device
        }

        pub fn mount(&mut self, device: &str, at: &Path, options: &[&str]) {
            let mut args = options.to_vec();
            let at_str = at.display().to_string();
            args.extend([device, at_str.as_str()]);
            cmd("mount", &args).assert_success();
            self.mounted = Some(at.to_owned());
        }

        pub fn unmount(&mut self) -> Outcome {
            let at = self.mounted.take().expect("mounted");
            cmd("umount", &[&at.display().to_string()])
        }
    }

    impl Drop for Stack {
        fn drop(&mut self) {
            if let Some(at) = self.mounted.take() {
                report(cmd("umount", &[&at.display().to_string()]));
            }
            if let Some(device) = self.loop_device.take() {
                report(cmd("losetup", &["-d", &device]));
            }
            if let Some((mut child, dir)) = self.nbdfuse.take() {
                report(cmd("umount", &[&dir.display().to_string()]));
                if let Err(e) = terminate(&mut child) {
                    eprintln!("nbdfuse teardown: {e}");
                }
            }
        }
    }

    fn report(out: Outcome) {
        if !out.success() {
            eprintln!("teardown step failed: {out}");
        }
    }
}
