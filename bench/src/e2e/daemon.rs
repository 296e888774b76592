//! A server process the bench started: waited for until ready, stopped
//! when dropped (SIGTERM, a bounded wait, then SIGKILL), also when the
//! bench unwinds from an error or an interrupt.
//!
//! Readiness is what the server says: the qbd daemons' ready line on
//! stdout (`qbd-node: ready ...`, `qbd-master: ready ...`), or for the
//! peers the pid file they write once they listen. Every wait is bounded
//! and ends early when the process exits. Children get a process group of
//! their own, so a terminal's Ctrl-C reaches only the bench, which stops
//! them in order (masters before their nodes).

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

/// How long a stopped server may take to exit before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// The poll interval of bounded waits for a condition (a file, an exit).
const POLL: Duration = Duration::from_millis(10);

/// How a server tells that it is ready.
#[derive(Debug, Clone, Copy)]
pub enum Ready<'a> {
    /// A stdout line starting with this prefix (returned).
    Line(&'a str),
    /// A non-empty pid file at this path.
    PidFile(&'a Path),
}

/// A running server, stopped when dropped.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    child: Option<Child>,
    stderr: Arc<Mutex<String>>,
    /// Signalled when its stderr reaches EOF.
    stderr_done: Option<mpsc::Receiver<()>>,
}

impl Daemon {
    /// Spawns `cmd` as `name` and waits up to `timeout` until `ready`;
    /// returns the ready line (empty for a pid file).
    pub fn start(
        name: &str,
        mut cmd: Command,
        ready: Ready<'_>,
        timeout: Duration,
    ) -> Result<(Daemon, String), String> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{name}: cannot start {:?}: {e}", cmd.get_program()))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let (done_tx, stderr_done) = mpsc::channel();
        if let Some(mut pipe) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    if let Ok(mut s) = sink.lock() {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
                let _ = done_tx.send(());
            });
        }
        let lines = stdout_lines(&mut child);
        let mut daemon = Daemon {
            name: name.to_owned(),
            child: Some(child),
            stderr,
            stderr_done: Some(stderr_done),
        };
        let line = match ready {
            Ready::Line(prefix) => daemon.wait_line(&lines, prefix, timeout),
            Ready::PidFile(path) => daemon.wait_pid_file(path, timeout).map(|()| String::new()),
        };
        match line {
            Ok(line) => Ok((daemon, line)),
            Err(why) => {
                daemon.stop();
                Err(format!("{name}: {why}; stderr:\n{}", daemon.stderr_text()))
            }
        }
    }

    fn wait_line(
        &mut self,
        lines: &mpsc::Receiver<Option<String>>,
        prefix: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(Some(line)) if line.starts_with(prefix) => return Ok(line),
                Ok(Some(_)) => {}
                Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err("exited before its ready line".into());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("no ready line within {} s", timeout.as_secs()));
                }
            }
        }
    }

    fn wait_pid_file(&mut self, path: &Path, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
                return Ok(());
            }
            if !self.running() {
                return Err("exited before writing its pid file".into());
            }
            crate::interrupt::check()?;
            std::thread::sleep(POLL);
        }
        Err(format!(
            "no pid file {} within {} s",
            path.display(),
            timeout.as_secs()
        ))
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends `signal` (SIGSTOP, SIGCONT, ...) to it; false if it is gone.
    pub fn signal(&self, signal: Signal) -> bool {
        self.child
            .as_ref()
            .is_some_and(|c| kill_process(Pid::from_child(c), signal).is_ok())
    }

    /// SIGKILL, and waits for it to be gone (no graceful stop).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What it wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// SIGTERM, up to [`STOP_TIMEOUT`] for it to exit, then SIGKILL; a
    /// warning (with its stderr's end) unless it exited by itself in time.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let _ = kill_process(Pid::from_child(&child), Signal::TERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(None) => std::thread::sleep(POLL),
                _ => {
                    // Its last words (a stats line) are read before returning.
                    if let Some(done) = self.stderr_done.take() {
                        let _ = done.recv_timeout(Duration::from_secs(2));
                    }
                    return;
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let text = self.stderr_text();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        eprintln!(
            "qbd-bench: warning: {} ignored SIGTERM for {} s, killed; stderr ends:\n{}",
            self.name,
            STOP_TIMEOUT.as_secs(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The child's stdout lines through a channel (`None` at EOF); a thread
/// keeps draining it so the server never blocks on a full pipe.
fn stdout_lines(child: &mut Child) -> mpsc::Receiver<Option<String>> {
    let (tx, rx) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        let _ = tx.send(Some(l));
                    }
                    Err(_) => break,
                }
            }
            let _ = tx.send(None);
        });
    }
    rx
}

/// The value of `key=` in a `prefix key=value ...` ready line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn ready_line_fields_are_found_by_key() {
        let line = "qbd-node: ready id=n0 backend=b tcp=127.0.0.1:4000 l2=eth0 mtu=9000";
        assert_eq!(field(line, "tcp"), Some("127.0.0.1:4000"));
        assert_eq!(field(line, "mtu"), Some("9000"));
        assert_eq!(field(line, "unix"), None);
        assert_eq!(field(line, "l"), None);
    }
}
