//! Volumes over `qbd-node` backends, each test run once per transport:
//! TCP (in-process nodes on 127.0.0.1) and QBD-L2 (in-process nodes and
//! master each in a network namespace on a bridge, MTU 9000, MAC addresses
//! only; skipped without root unless `QBD_REQUIRE_PRIVILEGED=1`):
//! replicate:3, master restarts, mixing with a directory backend, a node
//! restart while the master serves, and an ec:2+1 volume (parity covers
//! as raw block operations) reopened after a node restart.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use qbd_core::backend::dir::DirBackend;
use qbd_core::backend::fault::{Action, FaultBackend, Gate, OpKind, Rule};
use qbd_core::backend::{Backend, PartId};
use qbd_core::meta::volume::RequestedShape;
use qbd_core::proto::ClusterKey;
use qbd_master::backend_node::NodeBackend;
use qbd_master::device::BlockDevice;
use qbd_master::volume::{OpenRequest, Volume, open_volume};
use qbd_netlab::{Lab, Ns};
use qbd_node::Node;
use qbd_node::l2::NodeService;
use qbd_transport_l2::engine::Mac;
use qbd_transport_l2::serve::{L2Server, ServeOptions};
use qbd_transport_l2::{L2Link, LinkOptions};
use qbd_transport_tcp::TcpOptions;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const KEY: ClusterKey = ClusterKey([3; 32]);

/// Which transport the cluster's nodes are reached through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Net {
    /// TCP on 127.0.0.1.
    Tcp,
    /// QBD-L2 over a bridge: the master and every node in a namespace of
    /// their own, with only a MAC address (needs root; skipped otherwise).
    L2,
}

/// One in-process node serving a temp root.
enum TestNode {
    Tcp {
        addr: SocketAddr,
        stop: Option<oneshot::Sender<()>>,
        task: Option<JoinHandle<()>>,
    },
    L2 {
        ns: Ns,
        server: Option<L2Server>,
    },
}

impl TestNode {
    /// Serves `root` on `addr` (port 0 picks one).
    async fn start_tcp(root: &Path, addr: SocketAddr, name: &str) -> TestNode {
        let node = Arc::new(Node::open(root, name).unwrap());
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(qbd_node::serve(node, listener, KEY, async {
            let _ = stopped.await;
        }));
        TestNode::Tcp {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Serves `root` over QBD-L2 on `eth0` in `ns`.
    fn start_l2(root: &Path, ns: &Ns, name: &str) -> TestNode {
        let node = Arc::new(Node::open(root, name).unwrap());
        let rt = tokio::runtime::Handle::current();
        let server = ns.run(|| {
            let service = Arc::new(NodeService(node));
            L2Server::start(ServeOptions::new("eth0"), KEY, service, rt).unwrap()
        });
        TestNode::L2 {
            ns: ns.clone(),
            server: Some(server),
        }
    }

    /// Graceful shutdown; returns once the port (or interface) is free.
    async fn stop(&mut self) {
        match self {
            TestNode::Tcp { stop, task, .. } => {
                drop(stop.take());
                if let Some(t) = task.take() {
                    t.await.unwrap();
                }
            }
            TestNode::L2 { server, .. } => {
                if let Some(s) = server.take() {
                    s.stop();
                }
            }
        }
    }
}

struct Cluster {
    net: Net,
    roots: Vec<TempDir>,
    nodes: Vec<TestNode>,
    state: TempDir,
    /// L2: the master's link and the namespaces (deleted on drop).
    link: Option<Arc<L2Link>>,
    _lab: Option<Lab>,
}

impl Cluster {
    /// `n` nodes reached through `net`; `None` if `net` cannot run here
    /// (the lab printed why).
    async fn new(net: Net, n: usize) -> Option<Cluster> {
        let roots: Vec<TempDir> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut nodes = Vec::new();
        let (mut link, mut lab) = (None, None);
        match net {
            Net::Tcp => {
                for (i, r) in roots.iter().enumerate() {
                    let any = ([127, 0, 0, 1], 0).into();
                    nodes.push(TestNode::start_tcp(r.path(), any, &format!("n{i}")).await);
                }
            }
            Net::L2 => {
                let mut l = Lab::new("node_backend")?;
                let hosts: Vec<Ns> = (0..=n).map(|_| l.namespace()).collect();
                l.switch(&hosts.iter().collect::<Vec<_>>(), 9000);
                for (i, r) in roots.iter().enumerate() {
                    nodes.push(TestNode::start_l2(
                        r.path(),
                        &hosts[i + 1],
                        &format!("n{i}"),
                    ));
                }
                link = Some(hosts[0].run(|| L2Link::open(LinkOptions::new("eth0")).unwrap()));
                lab = Some(l);
            }
        }
        Some(Cluster {
            net,
            roots,
            nodes,
            state: tempfile::tempdir().unwrap(),
            link,
            _lab: lab,
        })
    }

    /// Fresh connections to the nodes, in the order `order`.
    async fn backends(&self, order: &[usize]) -> Vec<Arc<dyn Backend>> {
        let mut out: Vec<Arc<dyn Backend>> = Vec::new();
        for &i in order {
            let b = match (&self.nodes[i], &self.link) {
                (TestNode::Tcp { addr, .. }, _) => {
                    NodeBackend::connect_tcp(*addr, KEY, "test", opts())
                        .await
                        .unwrap()
                }
                (TestNode::L2 { ns, .. }, Some(link)) => {
                    let mac = Mac(ns.mac("eth0"));
                    let found = link.discover(&[mac], 1, Duration::from_secs(5), None).await;
                    let f = found.first().expect("the node answers discovery");
                    let t = link.connect(f, KEY, "test").await.unwrap();
                    let hello = t.node();
                    NodeBackend::new(t, hello)
                }
                (TestNode::L2 { .. }, None) => unreachable!("an L2 cluster has a link"),
            };
            out.push(Arc::new(b));
        }
        out
    }

    fn request(&self, size: Option<u64>, redundancy: Option<&str>) -> OpenRequest {
        OpenRequest {
            name: "nv".into(),
            shape: RequestedShape {
                size,
                block_size: None,
                chunk_size: Some(64 << 10),
                redundancy: redundancy.map(|r| r.parse().unwrap()),
            },
            read_only: false,
            state_dir: self.state.path().to_owned(),
        }
    }

    async fn open(&self, order: &[usize], create: bool) -> Volume {
        let req = if create {
            self.request(Some(4 << 20), Some("replicate:3"))
        } else {
            self.request(None, None)
        };
        open_volume(self.backends(order).await, &req).await.unwrap()
    }

    /// Stops node `i` and starts it again on the same root (and port, or
    /// interface: over L2 the new incarnation has a new epoch).
    async fn restart(&mut self, i: usize) {
        self.nodes[i].stop().await;
        let root = self.roots[i].path().to_owned();
        let name = format!("n{i}");
        self.nodes[i] = match (&self.nodes[i], self.net) {
            (TestNode::Tcp { addr, .. }, _) => TestNode::start_tcp(&root, *addr, &name).await,
            (TestNode::L2 { ns, .. }, _) => TestNode::start_l2(&root, &ns.clone(), &name),
        };
    }
}

/// Defines one test per transport from `async fn $name(net: Net)`.
macro_rules! both_transports {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tcp() {
                super::$name(Net::Tcp).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn l2() {
                super::$name(Net::L2).await;
            }
        }
    };
}

both_transports!(replicate_3_over_three_nodes_survives_a_master_restart);
both_transports!(nodes_and_a_directory_mix_in_one_volume);
both_transports!(a_restarted_node_is_readmitted_and_resynced);
both_transports!(ec_2_1_over_three_nodes_round_trips_and_reopens_after_a_node_restart);
both_transports!(a_master_taking_over_sees_the_chunks_allocated_until_its_epoch);
both_transports!(a_fenced_master_fails_no_backend_and_records_nothing);

fn opts() -> TcpOptions {
    TcpOptions {
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        reconnect_min: Duration::from_millis(10),
        reconnect_max: Duration::from_millis(100),
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed))
        .collect()
}

async fn replicate_3_over_three_nodes_survives_a_master_restart(net: Net) {
    let Some(c) = Cluster::new(net, 3).await else {
        return;
    };
    let a = pattern(1, 300 << 10);
    let b = pattern(2, 4096);
    {
        let v = c.open(&[0, 1, 2], true).await;
        v.write(12345, a.clone(), false).await.unwrap();
        v.write(3 << 20, b.clone(), true).await.unwrap();
        v.flush().await.unwrap();
        assert_eq!(v.read(12345, a.len() as u32).await.unwrap(), a);
        assert_eq!(v.meta().epoch, 1);
    }
    let v = c.open(&[2, 0, 1], false).await;
    assert_eq!(v.meta().epoch, 2, "each open takes a new epoch");
    assert_eq!(v.read(12345, a.len() as u32).await.unwrap(), a);
    assert_eq!(v.read(3 << 20, 4096).await.unwrap(), b);
    assert_eq!(v.read(2 << 20, 4096).await.unwrap(), vec![0; 4096]);
}

async fn nodes_and_a_directory_mix_in_one_volume(net: Net) {
    let Some(c) = Cluster::new(net, 2).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let open = |order: bool| {
        let c = &c;
        let dir = dir.path().to_owned();
        async move {
            let mut backends = c.backends(&[0, 1]).await;
            let d: Arc<dyn Backend> = Arc::new(DirBackend::open(&dir).unwrap());
            if order {
                backends.push(d);
            } else {
                backends.insert(0, d);
            }
            open_volume(backends, &c.request(Some(1 << 20), Some("replicate:2")))
                .await
                .unwrap()
        }
    };
    let data = pattern(9, 1 << 20);
    {
        let v = open(true).await;
        v.write(0, data.clone(), false).await.unwrap();
        v.flush().await.unwrap();
    }
    let v = open(false).await;
    assert_eq!(v.read(0, data.len() as u32).await.unwrap(), data);
}

async fn a_restarted_node_is_readmitted_and_resynced(net: Net) {
    let Some(mut c) = Cluster::new(net, 3).await else {
        return;
    };
    let v = c.open(&[0, 1, 2], true).await;
    let first = pattern(3, 256 << 10);
    v.write(0, first.clone(), false).await.unwrap();
    v.flush().await.unwrap();

    c.restart(1).await;
    // The write reaches nodes 0 and 2; node 1's session is gone, so it
    // fails and the volume carries on degraded.
    let second = pattern(4, 256 << 10);
    v.write(64 << 10, second.clone(), false).await.unwrap();
    v.flush().await.unwrap();

    // Maintenance reconnects, re-opens the volume on node 1 and resyncs
    // the chunks it missed.
    let mut schedule = Vec::new();
    let (mut resynced, until) = (0, Instant::now() + Duration::from_secs(10));
    loop {
        let n = v.maintain(&mut schedule, Instant::now()).await;
        resynced += n;
        if (resynced > 0 && n == 0) || Instant::now() > until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(resynced >= 4, "resynced {resynced} part(s)");
    let meta = v.meta().clone();
    drop(v);

    // Node 1 alone must now hold everything: stop the others, read its parts.
    c.nodes[0].stop().await;
    c.nodes[2].stop().await;
    let n1 = c.backends(&[1]).await.pop().unwrap();
    let slot = meta.placement.iter().position(|id| *id == n1.id()).unwrap();
    n1.open_volume(meta.clone()).await.unwrap();
    let mut expect = first[..64 << 10].to_vec();
    expect.extend_from_slice(&second);
    for (chunk, want) in expect.chunks(64 << 10).enumerate() {
        let part = ((slot + 3 - chunk % 3) % 3) as u8;
        let pid = PartId {
            chunk: chunk as u64,
            part,
        };
        let got = n1.read(pid, 0, 16).await.unwrap();
        assert_eq!(got.data, want, "chunk {chunk} on the restarted node");
    }
}

async fn ec_2_1_over_three_nodes_round_trips_and_reopens_after_a_node_restart(net: Net) {
    let Some(mut c) = Cluster::new(net, 3).await else {
        return;
    };
    let full = pattern(5, 256 << 10);
    let partial = pattern(6, 5000);
    {
        let backends = c.backends(&[0, 1, 2]).await;
        let v = open_volume(backends, &c.request(Some(4 << 20), Some("ec:2+1")))
            .await
            .unwrap();
        v.write(0, full.clone(), false).await.unwrap();
        v.write(300_001, partial.clone(), true).await.unwrap();
        v.flush().await.unwrap();
        assert_eq!(v.read(0, full.len() as u32).await.unwrap(), full);
    }
    // Parity covers travel as raw block operations: a restarted node must
    // still hold them, and the volume reads back after reopening in
    // another order.
    c.restart(2).await;
    let v = c.open(&[2, 1, 0], false).await;
    assert_eq!(v.read(0, full.len() as u32).await.unwrap(), full);
    assert_eq!(
        v.read(300_001, partial.len() as u32).await.unwrap(),
        partial
    );
    assert_eq!(v.read(2 << 20, 4096).await.unwrap(), vec![0; 4096]);
}

/// The torture harness's "second master" finding (`qbd-bench torture
/// --config r2-tcp --seed 11`): a master taking over read the allocation
/// maps before its epoch compare-and-set, so a chunk the previous master
/// allocated in between was missing from its map. It then read that
/// chunk's durable data as zeros, and skipped a TRIM of it as "never
/// written", so a later master read the trimmed block's old value back.
/// Here the new master's `SaveMeta` is held at a gate on the first node
/// while the old one allocates and writes two new chunks (FUA).
async fn a_master_taking_over_sees_the_chunks_allocated_until_its_epoch(net: Net) {
    const CHUNK: u64 = 64 << 10;
    let Some(c) = Cluster::new(net, 2).await else {
        return;
    };
    let old = open_volume(
        c.backends(&[0, 1]).await,
        &c.request(Some(1 << 20), Some("replicate:2")),
    )
    .await
    .unwrap();
    old.write(0, pattern(1, 4096), true).await.unwrap();

    let gate = Gate::new();
    let mut held: Vec<Arc<dyn Backend>> = Vec::new();
    for (i, b) in c.backends(&[0, 1]).await.into_iter().enumerate() {
        let f = FaultBackend::new(b, false);
        if i == 0 {
            f.add_rule(Rule {
                op: OpKind::SaveMeta,
                chunk: None,
                block: None,
                action: Action::Hold(gate.clone()),
                times: Some(1),
            });
        }
        held.push(Arc::new(f));
    }
    let states = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let fresh = |i: usize| OpenRequest {
        state_dir: states[i].path().to_owned(),
        ..c.request(None, None)
    };
    let req = fresh(0);
    let opening = tokio::spawn(async move { open_volume(held, &req).await });
    gate.wait_arrivals(1).await;
    // The new master has read the maps; the old one still holds the epoch.
    let late = pattern(7, 4096);
    old.write(5 * CHUNK, late.clone(), true).await.unwrap();
    old.write(6 * CHUNK, pattern(8, 4096), true).await.unwrap();
    gate.open();
    let new = opening.await.unwrap().unwrap();
    assert!(old.read(0, 4096).await.is_err(), "the old master is fenced");

    assert_eq!(
        new.read(5 * CHUNK, 4096).await.unwrap(),
        late,
        "a FUA write of the old master, acknowledged before the takeover, reads back"
    );
    new.trim(6 * CHUNK, 4096, true).await.unwrap();
    new.flush().await.unwrap();
    drop((new, old));

    let next = open_volume(c.backends(&[1, 0]).await, &fresh(1))
        .await
        .unwrap();
    assert_eq!(
        next.read(6 * CHUNK, 4096).await.unwrap(),
        vec![0; 4096],
        "a trimmed and flushed block reads zeros"
    );
    assert_eq!(next.read(5 * CHUNK, 4096).await.unwrap(), late);
}

/// The torture harness's fenced master logged `backend node n1 failed
/// (recording the degraded map: fenced by node n0 ...)` and failed its
/// write with "no redundancy left": a fencing refusal counted as a broken
/// backend and as evidence that a part missed a write. Here a new master
/// has taken the epoch on the first node only (its `SaveMeta` to the
/// second is held) when the old one writes: the first node refuses, the
/// second takes it. The write must fail as fenced — nothing failed,
/// nothing recorded — and so must a FLUSH.
async fn a_fenced_master_fails_no_backend_and_records_nothing(net: Net) {
    let Some(c) = Cluster::new(net, 2).await else {
        return;
    };
    let old = open_volume(
        c.backends(&[0, 1]).await,
        &c.request(Some(1 << 20), Some("replicate:2")),
    )
    .await
    .unwrap();
    old.write_at(0, pattern(1, 8192), true).await.unwrap();

    let gate = Gate::new();
    let mut held: Vec<Arc<dyn Backend>> = Vec::new();
    for (i, b) in c.backends(&[0, 1]).await.into_iter().enumerate() {
        let f = FaultBackend::new(b, false);
        if i == 1 {
            f.add_rule(Rule {
                op: OpKind::SaveMeta,
                chunk: None,
                block: None,
                action: Action::Hold(gate.clone()),
                times: Some(1),
            });
        }
        held.push(Arc::new(f));
    }
    let state = tempfile::tempdir().unwrap();
    let req = OpenRequest {
        state_dir: state.path().to_owned(),
        ..c.request(None, None)
    };
    let opening = tokio::spawn(async move { open_volume(held, &req).await });
    gate.wait_arrivals(1).await;

    let fenced = |r: Result<(), qbd_master::volume::VolumeError>, what: &str| match r {
        Err(qbd_master::volume::VolumeError::Backend(e)) if e.is_fenced() => {}
        other => panic!("{what} of a fenced master: {other:?}"),
    };
    fenced(old.write_at(0, pattern(2, 4096), false).await, "a write");
    fenced(old.flush_all().await, "a FLUSH");
    gate.open();
    let new = opening.await.unwrap().unwrap();
    assert_eq!(
        new.read_at(0, 8192).await.unwrap()[4096..],
        pattern(1, 8192)[4096..],
        "the block the fenced write did not cover is untouched"
    );
    // Nothing was recorded stale by the fenced master: the new one has
    // nothing to resync.
    let mut schedule = Vec::new();
    assert_eq!(new.maintain(&mut schedule, Instant::now()).await, 0);
}
