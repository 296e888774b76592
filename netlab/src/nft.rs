//! nftables in a namespace: named counters, and [`Loss`], random drop of
//! one EtherType's frames at an interface's ingress (this kernel has no
//! netem). Rules live in the netdev family, so they see every frame the
//! interface receives, IP or not.

use crate::Ns;

/// An nftables counter's values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl Ns {
    /// The named counter `name` of table `table` (family `family`, e.g.
    /// "netdev") in this namespace.
    pub fn nft_counter(&self, family: &str, table: &str, name: &str) -> Result<Counter, String> {
        let out = self.exec("nft", &["list", "counter", family, table, name])?;
        parse_counter(&out).ok_or_else(|| format!("no counter values in {out:?}"))
    }
}

/// Random drop of frames of one EtherType arriving on one interface, with
/// counters of the frames seen and dropped. Removed with its namespace.
#[derive(Debug, Clone)]
pub struct Loss {
    ns: Ns,
    table: String,
}

impl Loss {
    /// Drops about `percent` % of the frames of `ethertype` arriving on
    /// `iface` in `ns`: the rule is
    /// `ether type ET numgen random mod 100 < PERCENT counter drop`, in the
    /// netdev `ingress` hook of `iface`, in table `qbd_loss_<iface>` (one
    /// per interface). 100 % drops every such frame.
    pub fn install(ns: &Ns, iface: &str, ethertype: u16, percent: u8) -> Result<Loss, String> {
        if percent > 100 {
            return Err(format!("loss of {percent} %"));
        }
        let table = format!(
            "qbd_loss_{}",
            iface.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        );
        let rule = format!("ether type {ethertype:#06x}");
        // nft refuses `mod 100 < 100`: dropping everything needs no numgen.
        let chance = match percent {
            100 => String::new(),
            p => format!("numgen random mod 100 < {p} "),
        };
        ns.nft(&format!(
            "table netdev {table} {{
    counter seen {{ }}
    counter dropped {{ }}
    chain ingress {{
        type filter hook ingress device \"{iface}\" priority 0; policy accept;
        {rule} counter name \"seen\"
        {rule} {chance}counter name \"dropped\" drop
    }}
}}
"
        ))?;
        Ok(Loss {
            ns: ns.clone(),
            table,
        })
    }

    /// Frames of the EtherType that arrived (dropped or not).
    pub fn seen(&self) -> Result<Counter, String> {
        self.ns.nft_counter("netdev", &self.table, "seen")
    }

    /// Frames the rule dropped.
    pub fn dropped(&self) -> Result<Counter, String> {
        self.ns.nft_counter("netdev", &self.table, "dropped")
    }

    /// The namespace the rule lives in.
    pub fn ns(&self) -> &Ns {
        &self.ns
    }
}

/// Random duplication of frames of one EtherType leaving one interface
/// (a switch port, say): the rule is `ether type ET numgen random mod 100
/// < PERCENT counter dup to IFACE` in the netdev `egress` hook of `iface`
/// (Linux 5.16 and later), table `qbd_dup_<iface>`. The kernel's
/// recursion limit bounds copies of copies.
#[derive(Debug, Clone)]
pub struct Dup {
    ns: Ns,
    table: String,
}

impl Dup {
    /// Sends about `percent` % of the frames of `ethertype` leaving `iface` in `ns` twice.
    pub fn install(ns: &Ns, iface: &str, ethertype: u16, percent: u8) -> Result<Dup, String> {
        if percent == 0 || percent >= 100 {
            return Err(format!("duplication of {percent} % (1..=99)"));
        }
        let table = format!(
            "qbd_dup_{}",
            iface.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        );
        ns.nft(&format!(
            "table netdev {table} {{
    counter duplicated {{ }}
    chain egress {{
        type filter hook egress device \"{iface}\" priority 0; policy accept;
        ether type {ethertype:#06x} numgen random mod 100 < {percent} counter name \"duplicated\" dup to \"{iface}\"
    }}
}}
"
        ))?;
        Ok(Dup {
            ns: ns.clone(),
            table,
        })
    }

    /// Frames the rule sent twice.
    pub fn duplicated(&self) -> Result<Counter, String> {
        self.ns.nft_counter("netdev", &self.table, "duplicated")
    }
}

/// The `packets N bytes M` of `nft list counter` output.
fn parse_counter(text: &str) -> Option<Counter> {
    let mut words = text.split_whitespace();
    let mut value = |key: &str| {
        words.find(|w| *w == key)?;
        words.next()?.parse().ok()
    };
    let packets = value("packets")?;
    let bytes = value("bytes")?;
    Some(Counter { packets, bytes })
}

#[cfg(test)]
mod tests {
    use super::{Counter, parse_counter};

    #[test]
    fn counters_parse_from_nft_list_output() {
        let out = "table netdev t {\n\tcounter dropped {\n\t\tpackets 12 bytes 3456\n\t}\n}\n";
        assert_eq!(
            parse_counter(out),
            Some(Counter {
                packets: 12,
                bytes: 3456
            })
        );
        assert_eq!(parse_counter("table netdev t {\n}\n"), None);
    }
}
