//! `qbd verify --transport l2`: nodes found by discovery on a switched
//! Ethernet segment of network namespaces (no IP), as the master finds
//! them. A replicate:3 volume written through a master over L2 verifies
//! clean (fast and deep); with one node stopped and a part file deleted
//! on another, it reports exactly those — the stopped node as a placement
//! entry no one answered for, and, when the nodes are pinned by MAC, also
//! as the MAC that did not answer discovery. Needs root (skipped
//! otherwise, or failed under `QBD_REQUIRE_PRIVILEGED=1`).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::damage::{backend_id, delete, volume_dir};
use common::fixture::{CHUNK, SIZE, seeded};
use common::raw::Client;
use common::{Daemon, Outcome, bins, expect, run_bounded};
use qbd_netlab::{Lab, Ns};
use qbd_transport_l2::engine::Mac;
use tempfile::TempDir;

struct Segment {
    nodes: Vec<Option<Daemon>>,
    master_ns: Ns,
    node_ns: Vec<Ns>,
    data: Vec<TempDir>,
    state: TempDir,
    keys: TempDir,
    _lab: Lab,
}

impl Segment {
    fn new(nodes: usize) -> Option<Segment> {
        let mut lab = Lab::new("verify_l2")?;
        let master_ns = lab.namespace();
        let node_ns: Vec<Ns> = (0..nodes).map(|_| lab.namespace()).collect();
        let all: Vec<&Ns> = std::iter::once(&master_ns).chain(&node_ns).collect();
        lab.switch(&all, 1500);
        let tmp = || tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let keys = tmp();
        let mut cmd = std::process::Command::new(&bins().qbd);
        cmd.arg("keygen");
        let key = run_bounded(cmd, common::QBD_TIMEOUT);
        std::fs::write(keys.path().join("k"), &key.stdout).unwrap_or_else(|e| panic!("{e}"));
        let mut s = Segment {
            nodes: Vec::new(),
            data: (0..nodes).map(|_| tmp()).collect(),
            master_ns,
            node_ns,
            state: tmp(),
            keys,
            _lab: lab,
        };
        for i in 0..nodes {
            let mut cmd = s.node_ns[i].command(&bins().node);
            cmd.arg("--data")
                .arg(s.data[i].path())
                .args(["--iface", "eth0", "--id", &format!("n{i}"), "--cluster-key"])
                .arg(s.key());
            s.nodes.push(Some(Daemon::start(cmd, "qbd-node: ready ")));
        }
        Some(s)
    }

    fn key(&self) -> PathBuf {
        self.keys.path().join("k")
    }

    fn mac(&self, i: usize) -> String {
        Mac(self.node_ns[i].mac("eth0")).to_string()
    }

    fn write(&self) {
        let mut cmd = self.master_ns.command(&bins().master);
        cmd.args(["--transport", "l2", "--iface", "eth0", "--cluster-key"])
            .arg(self.key())
            .args(["--volume", "v", "--size", &SIZE.to_string()])
            .args([
                "--chunk-size",
                &CHUNK.to_string(),
                "--redundancy",
                "replicate:3",
            ])
            .arg("--state")
            .arg(self.state.path())
            .args(["--listen", "127.0.0.1:0"]);
        let master = Daemon::start(cmd, "qbd-master: ready ");
        let addr = master
            .field("tcp")
            .parse()
            .unwrap_or_else(|e| panic!("tcp=: {e}"));
        self.master_ns.run(|| {
            let mut c = Client::connect(addr, "v");
            assert_eq!(c.write(0, &seeded(5, SIZE as usize)), Ok(()));
            assert_eq!(c.flush(), Ok(()));
            c.disconnect();
        });
        master.stop();
    }

    fn verify(&self, pinned: bool, extra: &[&str]) -> Outcome {
        let mut cmd = self.master_ns.command(&bins().qbd);
        cmd.args([
            "verify",
            "--volume",
            "v",
            "--transport",
            "l2",
            "--iface",
            "eth0",
        ])
        .args(["--discover-timeout", "3", "--cluster-key"])
        .arg(self.key())
        .args(extra);
        if pinned {
            for i in 0..self.node_ns.len() {
                cmd.args(["--node", &self.mac(i)]);
            }
        }
        run_bounded(cmd, common::QBD_TIMEOUT)
    }
}

fn some_part(root: &Path) -> (u64, u8, PathBuf) {
    let vol = volume_dir(root);
    for part in 0..3u8 {
        let p = vol.join(char::from(b'a' + part).to_string()).join("1");
        if p.is_file() {
            return (1, part, p);
        }
    }
    panic!("{} holds no part of chunk 1", root.display());
}

#[test]
fn verify_finds_nodes_by_discovery_and_reports_the_missing() {
    let Some(mut s) = Segment::new(3) else { return };
    s.write();
    for pinned in [false, true] {
        let out = s.verify(pinned, &["--json", "--deep"]);
        assert_eq!(out.code, Some(0), "{out:#?}");
        assert_eq!(out.json()["state"], "HEALTHY");
    }
    let stopped_id = backend_id(s.data[2].path());
    let stopped_mac = s.mac(2);
    if let Some(n) = s.nodes[2].take() {
        n.stop();
    }
    let (chunk, part, path) = some_part(s.data[0].path());
    delete(&path);
    for pinned in [false, true] {
        let out = s.verify(pinned, &["--json"]);
        assert_eq!(out.code, Some(1), "{out:#?}");
        let mut want = BTreeSet::from([
            format!("backend_unreachable id:{stopped_id}"),
            format!("part_missing {chunk} {part}"),
        ]);
        if pinned {
            want.insert(format!("backend_unreachable l2:{stopped_mac}"));
        }
        assert_eq!(expect::problems(&out.json()), want, "{out:#?}");
    }
}
