//! [`Lab`]: the namespaces of one test, and the links between them.

use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::cmd::must;
use crate::{Ns, PREFIX, ip, sweep_stale};

/// A set of namespaces owned by one test; dropping it deletes them all.
#[derive(Debug)]
pub struct Lab {
    test: String,
    namespaces: Vec<Ns>,
}

impl Lab {
    /// A lab for `test`, or `None` (after printing `SKIPPED: ...`) when
    /// namespaces cannot be created here and privilege is not required
    /// (`QBD_REQUIRE_PRIVILEGED=1` turns the skip into a panic).
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
                lab.namespaces.retain(|n| n.name() != ns.name());
                ns.delete();
                Some(lab)
            }
            Err(reason) => skip(
                test,
                &format!("cannot create a network namespace: {reason}"),
            ),
        }
    }

    /// A new namespace: IPv6 off, loopback up, no other link.
    pub fn namespace(&mut self) -> Ns {
        self.try_namespace()
            .unwrap_or_else(|e| panic!("{}: creating namespace: {e}", self.test))
    }

    /// A veth pair `a_if` (in `a`) ↔ `b_if` (in `b`), both at `mtu`, up.
    pub fn veth(&mut self, a: &Ns, a_if: &str, b: &Ns, b_if: &str, mtu: u32) {
        let mtu = mtu.to_string();
        #[rustfmt::skip]
        let args = [
            "link", "add", a_if, "netns", a.name(), "mtu", &mtu, "type", "veth",
            "peer", "name", b_if, "netns", b.name(), "mtu", &mtu,
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
        let ns = Ns::named(format!("{PREFIX}{}-{n}", std::process::id()));
        ip(&["netns", "add", ns.name()])?;
        self.namespaces.push(ns.clone());
        ns.run(disable_ipv6)?;
        ns.ip(&["link", "set", "dev", "lo", "up"])?;
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

/// Runs in a fresh namespace: no IPv6 (no link-local addresses, no
/// router solicitations), so links carry only what tests send.
fn disable_ipv6() -> Result<(), String> {
    for conf in ["default", "all"] {
        let path = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
        if std::path::Path::new(&path).exists() {
            std::fs::write(&path, "1").map_err(|e| format!("{path}: {e}"))?;
        }
    }
    Ok(())
}
