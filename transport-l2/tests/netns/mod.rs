//! Network-namespace test harness: throwaway namespaces, veth pairs and a
//! bridge "switch", all created by the test and deleted in `Drop` (so also
//! when the test panics).
//!
//! - Names are `qbdt-<pid>-<n>`: unique per process, and a namespace left
//!   behind by a crashed run (its pid dead) is swept by the next run.
//! - Links carry only MAC addresses: IPv6 is disabled in every namespace
//!   before links appear, and no IP address is ever configured.
//! - [`Ns::run`] moves a *fresh* thread into the namespace (setns on
//!   `/run/netns/NAME`); the test runner's threads never move. Sockets
//!   opened there stay in that namespace and can be used from any thread.
//! - Without root (CAP_NET_ADMIN + CAP_SYS_ADMIN) [`Lab::new`] prints
//!   `SKIPPED: <reason>` and returns `None`, unless
//!   `QBD_REQUIRE_PRIVILEGED=1`, in which case it panics.
//!
//! Every traffic-generating test runs only inside namespaces created here.

#![allow(dead_code)] // each test file uses a different subset

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

const PREFIX: &str = "qbdt-";
pub const NETNS_DIR: &str = "/run/netns";

/// A set of namespaces owned by one test; dropping it deletes them all.
#[derive(Debug)]
pub struct Lab {
    test: String,
    namespaces: Vec<Ns>,
}

/// One network namespace (a name under `/run/netns`).
#[derive(Debug, Clone)]
pub struct Ns {
    name: String,
}

impl Lab {
    /// A lab for `test`, or `None` (after printing `SKIPPED: ...`) when
    /// namespaces cannot be created here and privilege is not required.
    pub fn new(test: &str) -> Option<Lab> {
        if let Err(reason) = privilege_check() {
            return skip(test, &reason);
        }
        static SWEEP: Once = Once::new();
        SWEEP.call_once(sweep_stale);
        let mut lab = Lab {
            test: test.to_owned(),
            namespaces: Vec::new(),
        };
        // A probe namespace proves we really can (capabilities alone do not:
        // a container may still forbid it); it is deleted at once.
        match lab.try_namespace() {
            Ok(ns) => {
                lab.namespaces.retain(|n| n.name != ns.name);
                ns.delete();
                Some(lab)
            }
            Err(reason) => skip(
                test,
                &format!("cannot create a network namespace: {reason}"),
            ),
        }
    }

    /// A new empty namespace (IPv6 off, loopback down).
    pub fn namespace(&mut self) -> Ns {
        self.try_namespace()
            .unwrap_or_else(|e| panic!("{}: creating namespace: {e}", self.test))
    }

    /// A veth pair `a_if` (in `a`) ↔ `b_if` (in `b`), both at `mtu`, up.
    pub fn veth(&mut self, a: &Ns, a_if: &str, b: &Ns, b_if: &str, mtu: u32) {
        let mtu = mtu.to_string();
        #[rustfmt::skip]
        let args = [
            "link", "add", a_if, "netns", &a.name, "mtu", &mtu, "type", "veth",
            "peer", "name", b_if, "netns", &b.name, "mtu", &mtu,
        ];
        must(ip(&args), "creating veth pair");
        a.link_up(a_if);
        b.link_up(b_if);
    }

    /// Two namespaces joined by one veth pair (`eth0` on both sides).
    pub fn pair(&mut self, mtu: u32) -> (Ns, Ns) {
        let (a, b) = (self.namespace(), self.namespace());
        self.veth(&a, "eth0", &b, "eth0", mtu);
        (a, b)
    }

    /// A bridge `br0` in its own namespace acting as a switch, with one
    /// port per entry of `hosts`: port `pN` ↔ `eth0` in `hosts[N]` (which
    /// must not have an `eth0` yet).
    /// Returns the switch's namespace.
    pub fn switch(&mut self, hosts: &[&Ns], mtu: u32) -> Ns {
        let sw = self.namespace();
        #[rustfmt::skip]
        let bridge = ["link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"];
        must(sw.ip(&bridge), "creating bridge");
        for (i, host) in hosts.iter().enumerate() {
            let port = format!("p{i}");
            self.veth(&sw, &port, host, "eth0", mtu);
            must(
                sw.ip(&["link", "set", &port, "master", "br0"]),
                "enslaving port",
            );
        }
        sw.link_up("br0");
        sw
    }

    fn try_namespace(&mut self) -> Result<Ns, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let ns = Ns {
            name: format!("{PREFIX}{}-{n}", std::process::id()),
        };
        ip(&["netns", "add", &ns.name])?;
        self.namespaces.push(ns.clone());
        ns.run(disable_ipv6)?;
        Ok(ns)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.drain(..).rev() {
            ns.delete();
        }
    }
}

impl Ns {
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

    /// `ip -n NAME args...`.
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Loads an nftables script into this namespace (`nft -f -`).
    pub fn nft(&self, script: &str) -> Result<String, String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning nft: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(|e| format!("writing to nft: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("waiting for nft: {e}"))?;
        output_result("nft", out)
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

    fn link_up(&self, iface: &str) {
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

    fn delete(&self) {
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

fn skip<T>(test: &str, reason: &str) -> Option<T> {
    if std::env::var("QBD_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1") {
        panic!("{test}: QBD_REQUIRE_PRIVILEGED=1 but {reason}");
    }
    println!("SKIPPED: {test}: {reason}");
    None
}

/// Root-equivalent network privileges, from the effective capability set.
fn privilege_check() -> Result<(), String> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_NET_RAW: u32 = 13;
    const CAP_SYS_ADMIN: u32 = 21;
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("/proc/self/status: {e}"))?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .ok_or("no CapEff in /proc/self/status")?;
    let caps = u64::from_str_radix(hex.trim(), 16).map_err(|e| format!("CapEff {hex:?}: {e}"))?;
    for (cap, name) in [
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_NET_RAW, "CAP_NET_RAW"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    ] {
        if caps & (1 << cap) == 0 {
            return Err(format!("needs {name} (run as root)"));
        }
    }
    ip(&["-V"])
        .map(|_| ())
        .map_err(|e| format!("iproute2 `ip` unusable: {e}"))
}

/// Deletes `qbdt-<pid>-*` namespaces whose process is gone (crashed runs).
/// [`Lab::new`] runs it once per process.
pub fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    let own = std::process::id().to_string();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        let stale =
            pid != own && pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists();
        if stale && ip(&["netns", "del", &name]).is_ok() {
            eprintln!("swept stale namespace {name}");
        }
    }
}

/// Runs in a fresh namespace: no IPv6 (no link-local addresses, no
/// router solicitations), so links carry only what tests send.
fn disable_ipv6() -> Result<(), String> {
    for conf in ["default", "all"] {
        let path = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
        if Path::new(&path).exists() {
            std::fs::write(&path, "1").map_err(|e| format!("{path}: {e}"))?;
        }
    }
    Ok(())
}

/// `ip args...` in the root namespace.
pub fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    output_result(&format!("ip {}", args.join(" ")), out)
}

fn output_result(what: &str, out: std::process::Output) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{what}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must<T>(result: Result<T, String>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
}
