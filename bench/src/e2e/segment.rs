//! An Ethernet segment of namespaces for one QBD target: the master's
//! namespace and one per node, each with an `eth0` on a bridge in a
//! namespace of its own (`qbd_netlab::Lab::switch`). QBD-L2 uses the
//! links as they are (MAC addresses only); TCP over the bridge gets IPv4
//! addresses from a /24 of 10.98.0.0/16 that exists only on this bridge.

use std::net::Ipv4Addr;

use qbd_netlab::{Lab, Ns};

/// The interface of every host on a segment.
pub const IFACE: &str = "eth0";

/// The namespaces of one segment.
#[derive(Debug)]
pub struct Segment {
    /// The master's (fio runs here too, NBD on its 127.0.0.1).
    pub master: Ns,
    /// One per node, in order.
    pub nodes: Vec<Ns>,
}

impl Segment {
    /// A bridge at `mtu` joining a master namespace and `nodes` node
    /// namespaces, all new, from `lab`.
    pub fn new(lab: &mut Lab, nodes: usize, mtu: u32) -> Segment {
        let master = lab.namespace();
        let nodes: Vec<Ns> = (0..nodes).map(|_| lab.namespace()).collect();
        let hosts: Vec<&Ns> = std::iter::once(&master).chain(&nodes).collect();
        lab.switch(&hosts, mtu);
        Segment { master, nodes }
    }

    /// Gives every host an address in 10.98.`subnet`.0/24 (master .1,
    /// node i .10+i); returns the nodes' addresses.
    pub fn address(&self, subnet: u8) -> Result<Vec<Ipv4Addr>, String> {
        let at = |host: u8| Ipv4Addr::new(10, 98, subnet, host);
        add(&self.master, at(1))?;
        let mut addrs = Vec::new();
        for (i, ns) in self.nodes.iter().enumerate() {
            let host = u8::try_from(10 + i).map_err(|_| "too many nodes on a segment")?;
            add(ns, at(host))?;
            addrs.push(at(host));
        }
        Ok(addrs)
    }
}

fn add(ns: &Ns, addr: Ipv4Addr) -> Result<(), String> {
    ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", IFACE])
        .map(|_| ())
        .map_err(|e| format!("addressing {IFACE} in {}: {e}", ns.name()))
}
