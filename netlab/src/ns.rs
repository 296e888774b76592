//! [`Ns`]: one network namespace, and ways to act inside it.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;

use crate::cmd::{describe, must, output_result, run};
use crate::{NETNS_DIR, ip};

/// One network namespace (a name under `/run/netns`). Cloning it does not
/// copy the namespace: the [`Lab`](crate::Lab) that made it deletes it.
#[derive(Debug, Clone)]
pub struct Ns {
    name: String,
}

impl Ns {
    pub(crate) fn named(name: String) -> Ns {
        Ns { name }
    }

    /// The namespace's name (under `/run/netns`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on a new thread moved into this namespace and returns its
    /// result (a panic in `f` is resumed here).
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        std::thread::scope(|s| {
            let handle = s.spawn(|| {
                self.enter();
                f()
            });
            handle
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Starts `f` on a new thread moved into this namespace.
    pub fn spawn<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> JoinHandle<R> {
        let ns = self.clone();
        std::thread::spawn(move || {
            ns.enter();
            f()
        })
    }

    /// A command that runs `program` inside this namespace
    /// (`ip netns exec NAME program`); add arguments, environment and
    /// stdio as usual. `ip` replaces itself with `program`, so the child's
    /// pid is the program's: signals sent to it reach the program.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `program args...` inside this namespace and returns its stdout
    /// if it exits 0.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let mut cmd = self.command(program);
        cmd.args(args);
        run(cmd)
    }

    /// `ip -n NAME args...`.
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Loads an nftables script into this namespace (`nft -f -`).
    pub fn nft(&self, script: &str) -> Result<String, String> {
        let mut cmd = self.command("nft");
        cmd.args(["-f", "-"]);
        let what = describe(&cmd);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning `{what}`: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(|e| format!("writing to nft: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("waiting for nft: {e}"))?;
        output_result(&format!("{what} <<< {script}"), out)
    }

    /// The MAC address of `iface`, as `ip` reports it.
    pub fn mac(&self, iface: &str) -> [u8; 6] {
        let out = must(
            self.ip(&["-o", "link", "show", "dev", iface]),
            "reading MAC",
        );
        let text = out
            .split("link/ether ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next());
        parse_mac(text.unwrap_or_default()).unwrap_or_else(|| panic!("no MAC in {out:?}"))
    }

    /// Sets `iface`'s MTU.
    pub fn set_mtu(&self, iface: &str, mtu: u32) {
        must(
            self.ip(&["link", "set", "dev", iface, "mtu", &mtu.to_string()]),
            "setting MTU",
        );
    }

    pub(crate) fn link_up(&self, iface: &str) {
        must(
            self.ip(&["link", "set", "dev", iface, "up"]),
            "bringing link up",
        );
    }

    fn enter(&self) {
        let path = Path::new(NETNS_DIR).join(&self.name);
        let file = File::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap_or_else(|e| panic!("setns into {}: {e}", self.name));
    }

    pub(crate) fn delete(&self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: deleting namespace {}: {e}", self.name);
        }
    }
}

/// Ethernet MAC from "aa:bb:cc:dd:ee:ff".
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::parse_mac;

    #[test]
    fn macs_parse_exactly() {
        assert_eq!(
            parse_mac("02:aB:00:10:ff:7e"),
            Some([0x02, 0xab, 0x00, 0x10, 0xff, 0x7e])
        );
        for bad in [
            "",
            "02:ab:00:10:ff",
            "02:ab:00:10:ff:7e:01",
            "02:ab:00:10:ff:xx",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad:?}");
        }
    }
}
