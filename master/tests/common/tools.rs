//! Client tools: discovery (skip or fail when missing) and bounded runs.
//!
//! A missing tool prints `SKIPPED: <tool> not installed` and the test returns early, unless
//! `QBD_REQUIRE_TOOLS=1` (set by `.ci/run`), which turns the skip into a failure. Tests that need
//! root and kernel facilities do the same under `QBD_REQUIRE_PRIVILEGED=1`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::kill;

/// The default bound on one client-tool run.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// The path of `name`, or None after printing why the test is skipped.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    if let Some(path) = find_tool(name) {
        return Some(path);
    }
    skip(&format!("{name} not installed"), "QBD_REQUIRE_TOOLS");
    None
}

/// True when running as root with every tool in `tools`; otherwise prints why the test is
/// skipped (or panics under `QBD_REQUIRE_PRIVILEGED=1`) and returns false.
pub fn require_privileged(tools: &[&str]) -> bool {
    if !is_root() {
        skip("not running as root", "QBD_REQUIRE_PRIVILEGED");
        return false;
    }
    match tools.iter().find(|t| find_tool(t).is_none()) {
        Some(missing) => {
            skip(
                &format!("{missing} not installed"),
                "QBD_REQUIRE_PRIVILEGED",
            );
            false
        }
        None => true,
    }
}

fn skip(reason: &str, require_var: &str) {
    if std::env::var(require_var).is_ok_and(|v| v == "1") {
        panic!("{reason}, and {require_var}=1");
    }
    println!("SKIPPED: {reason}");
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    // The sbin directories are searched too: losetup and mkfs.ext4 live there.
    let extra = ["/usr/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn is_root() -> bool {
    // The effective uid is the second field of the `Uid:` line.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"));
    uid.and_then(|fields| fields.split_whitespace().nth(1)) == Some("0")
}

/// `nbdsh` as a command: python3-libnbd is installed for /usr/bin/python3, and another python3
/// comes first in PATH on these machines.
pub fn nbdsh(path: &Path) -> Command {
    let mut cmd = Command::new(path);
    let old = std::env::var("PATH").unwrap_or_default();
    cmd.env("PATH", format!("/usr/bin:{old}"));
    cmd
}

/// What a tool run produced.
#[derive(Debug)]
pub struct Outcome {
    /// None if the run was killed for exceeding its time bound.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub what: String,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Panics with the command, status and output unless the run exited 0.
    pub fn assert_success(&self) -> &Outcome {
        assert!(self.success(), "{self}");
        self
    }

    /// Panics unless the run finished with a nonzero status.
    pub fn assert_failure(&self) -> &Outcome {
        assert!(
            self.status.is_some_and(|s| !s.success()),
            "expected a failure: {self}"
        );
        self
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = match self.status {
            Some(s) => format!("{s}"),
            None => "killed after its time bound".to_owned(),
        };
        write!(
            f,
            "`{}`: {status}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to completion (killing it after `TOOL_TIMEOUT`) and captures its output.
pub fn run(cmd: Command) -> Outcome {
    run_bounded(cmd, TOOL_TIMEOUT)
}

/// Runs `cmd` to completion, killing it after `timeout`, and captures its output.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Outcome {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let status = match super::wait_bounded(&mut child, timeout) {
        Ok(Some(status)) => Some(status),
        _ => {
            kill(&child, "KILL");
            let _ = child.wait();
            None
        }
    };
    let text =
        |rx: mpsc::Receiver<String>| rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
    Outcome {
        status,
        stdout: text(stdout),
        stderr: text(stderr),
        what,
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    rx
}

/// `fio` (a command, possibly wrapped, e.g. in `ip netns exec`) with its nbd engine on `uri`:
/// 4 KiB random writes at queue depth 16 over 64 MiB, each block checked with crc32c afterwards
/// (as in `clients.rs` and `nodes_e2e.rs`), plus `extra`.
pub fn fio_randwrite_verify(mut fio: Command, uri: &str, extra: &[&str]) -> Command {
    fio.args([
        "--name=v",
        "--ioengine=nbd",
        &format!("--uri={uri}"),
        "--rw=randwrite",
        "--bs=4k",
        "--iodepth=16",
        "--size=64M",
        "--verify=crc32c",
        "--do_verify=1",
        "--verify_fatal=1",
        "--verify_state_save=0", // no state file left in the working directory
    ]);
    fio.args(extra);
    fio
}

/// Panics unless fio exited 0 with no error and no verify failure.
pub fn assert_fio_passed(out: &Outcome) {
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
