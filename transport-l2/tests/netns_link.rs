//! The master link ([`L2Link`], [`L2Transport`]) and the node server
//! ([`L2Server`]) between network namespaces, with a stub service in
//! place of a real node: discovery, the jumbo probe, the handshake (and a
//! wrong key refused at once), requests, a node restart mid-session, and
//! several transports to one node. Needs root; without it each test prints
//! `SKIPPED: ...` and passes, unless `QBD_REQUIRE_PRIVILEGED=1`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use qbd_core::backend::BoxFut;
use qbd_core::proto::msg::{Request, Response};
use qbd_core::proto::session::NodeHello;
use qbd_core::proto::{ClusterKey, ProtoError};
use qbd_core::transport::{Transport, TransportError};
use qbd_netlab::{Lab, Ns};
use qbd_transport_l2::engine::Mac;
use qbd_transport_l2::serve::{L2Server, ServeOptions, Service};
use qbd_transport_l2::{Found, L2Link, L2Transport, LinkOptions};
use uuid::Uuid;

const KEY: ClusterKey = ClusterKey([7; 32]);
const WAIT: Duration = Duration::from_secs(5);

/// Answers pings; counts what the server reports.
#[derive(Debug)]
struct Stub {
    backend: Uuid,
    calls: AtomicU64,
    rejected: AtomicU64,
    refused: AtomicU64,
}

impl Stub {
    fn new(backend: u128) -> Arc<Stub> {
        Arc::new(Stub {
            backend: Uuid::from_u128(backend),
            calls: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }
}

impl Service for Stub {
    fn hello(&self) -> NodeHello {
        NodeHello {
            backend: self.backend,
            name: "stub".into(),
        }
    }

    fn call(&self, req: Request) -> BoxFut<'static, Response> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            match req {
                Request::Ping => Response::Pong,
                _ => Response::Done,
            }
        })
    }

    fn rejected(&self, _peer: Mac, _why: &ProtoError) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    fn handshake_failed(&self, _peer: Mac, _why: &str) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }
}

fn serve(ns: &Ns, stub: &Arc<Stub>, rt: &tokio::runtime::Handle) -> L2Server {
    let service: Arc<dyn Service> = stub.clone();
    let rt = rt.clone();
    ns.run(move || L2Server::start(ServeOptions::new("eth0"), KEY, service, rt).expect("serve"))
}

fn link(ns: &Ns) -> Arc<L2Link> {
    ns.run(|| L2Link::open(LinkOptions::new("eth0")).expect("link"))
}

async fn find(link: &L2Link, mac: Mac) -> Found {
    let found = link.discover(&[mac], 1, WAIT, None).await;
    found
        .into_iter()
        .next()
        .expect("the node answers discovery")
}

async fn ping(t: &L2Transport) -> Result<Response, TransportError> {
    t.call(Request::Ping).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_jumbo_probe_handshake_and_requests() {
    let Some(mut lab) = Lab::new("discovery_jumbo_probe_handshake_and_requests") else {
        return;
    };
    let (m, n1, n2) = (lab.namespace(), lab.namespace(), lab.namespace());
    lab.switch(&[&m, &n1, &n2], 9000);
    n2.set_mtu("eth0", 1500);
    let rt = tokio::runtime::Handle::current();
    let (s1, s2) = (Stub::new(1), Stub::new(2));
    let (_a, _b) = (serve(&n1, &s1, &rt), serve(&n2, &s2, &rt));
    let link = link(&m);

    let all = link.discover(&[], 2, WAIT, None).await;
    let mut backends: Vec<Uuid> = all.iter().map(|f| f.backend).collect();
    backends.sort();
    assert_eq!(backends, vec![s1.backend, s2.backend]);
    let jumbo = all.iter().find(|f| f.backend == s1.backend).expect("n1");
    let small = all.iter().find(|f| f.backend == s2.backend).expect("n2");
    assert_eq!((jumbo.mtu, small.mtu), (9000, 1500));
    assert_eq!(jumbo.mac, Mac(n1.mac("eth0")));

    let t1 = link.connect(jumbo, KEY, "test").await.expect("connect n1");
    let t2 = link.connect(small, KEY, "test").await.expect("connect n2");
    assert_eq!((t1.mtu(), t2.mtu()), (9000, 1500));
    assert_eq!(t1.node().backend, s1.backend);
    let futures = t1.submit((0..100).map(|_| Request::Ping).collect());
    for f in futures {
        assert_eq!(f.await.expect("pong"), Response::Pong);
    }
    assert_eq!(ping(&t2).await.expect("pong"), Response::Pong);
    assert_eq!(s1.calls.load(Ordering::Relaxed), 100);
    assert_eq!(s1.rejected.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused_at_once_and_counted() {
    let Some(mut lab) = Lab::new("a_wrong_key_is_refused_at_once_and_counted") else {
        return;
    };
    let (m, n) = lab.pair(1500);
    let stub = Stub::new(3);
    let _server = serve(&n, &stub, &tokio::runtime::Handle::current());
    let link = link(&m);
    let found = find(&link, Mac(n.mac("eth0"))).await;
    let started = Instant::now();
    let err = link
        .connect(&found, ClusterKey([8; 32]), "intruder")
        .await
        .expect_err("a wrong key must be refused");
    assert!(
        matches!(&err, TransportError::Protocol(ProtoError::Handshake(m)) if m.contains("cluster key")),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "refused by the node's answer, not by the 5 s deadline"
    );
    assert_eq!(stub.refused.load(Ordering::Relaxed), 1);
    assert_eq!(stub.calls.load(Ordering::Relaxed), 0);
    // The right key still gets in.
    let t = link.connect(&found, KEY, "test").await.expect("connect");
    assert_eq!(ping(&t).await.expect("pong"), Response::Pong);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_gets_a_new_session_and_must_be_the_same_backend() {
    let Some(mut lab) = Lab::new("a_restarted_node_gets_a_new_session") else {
        return;
    };
    let (m, n) = lab.pair(9000);
    let rt = tokio::runtime::Handle::current();
    let stub = Stub::new(4);
    let server = serve(&n, &stub, &rt);
    let link = link(&m);
    let found = find(&link, Mac(n.mac("eth0"))).await;
    let t = link.connect(&found, KEY, "test").await.expect("connect");
    assert_eq!(ping(&t).await.expect("pong"), Response::Pong);

    // Same identity, new incarnation (new epoch): the first request after
    // the restart fails (the old session is gone) or is carried by a new
    // handshake; within a few requests every one succeeds again.
    server.stop();
    drop(server);
    let _server = serve(&n, &stub, &rt);
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.push(ping(&t).await);
    }
    assert_eq!(
        outcomes.last().cloned().expect("three").expect("pong"),
        Response::Pong,
        "{outcomes:?}"
    );
    assert!(t.mtu() == 9000);

    // Another backend behind the same MAC is refused.
    drop(_server);
    let impostor = Stub::new(5);
    let _impostor = serve(&n, &impostor, &rt);
    let mut last = Ok(Response::Pong);
    for _ in 0..3 {
        last = ping(&t).await;
    }
    let err = last.expect_err("an impostor must not be accepted");
    assert!(err.to_string().contains("expected"), "{err}");
    assert_eq!(impostor.calls.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_transports_to_one_node_are_independent() {
    let Some(mut lab) = Lab::new("several_transports_to_one_node") else {
        return;
    };
    let (m, n) = lab.pair(1500);
    let stub = Stub::new(6);
    let _server = serve(&n, &stub, &tokio::runtime::Handle::current());
    let link = link(&m);
    let found = find(&link, Mac(n.mac("eth0"))).await;
    let a = link.connect(&found, KEY, "a").await.expect("a");
    let b = link.connect(&found, KEY, "b").await.expect("b");
    assert_eq!(ping(&a).await.expect("a pong"), Response::Pong);
    assert_eq!(ping(&b).await.expect("b pong"), Response::Pong);
    drop(a);
    assert_eq!(ping(&b).await.expect("b still works"), Response::Pong);
    let stats = link.stats();
    assert!(stats.engine.frames_sent >= 4 || stats.poller.socket.tx_frames >= 4);
}

/// Keeps `depth` pings in flight until `total` completed, then reports
/// how many came back as pongs.
#[derive(Debug)]
struct PingLoop {
    depth: u64,
    total: u64,
    issued: u64,
    pongs: u64,
    completed: u64,
    report: std::sync::mpsc::Sender<u64>,
}

impl qbd_transport_l2::ClosedLoop for PingLoop {
    fn step(
        &mut self,
        _now: Instant,
        completed: &mut Vec<(u64, Result<Response, TransportError>)>,
    ) -> Vec<(u64, Request)> {
        for (_, r) in completed.drain(..) {
            self.completed += 1;
            if matches!(r, Ok(Response::Pong)) {
                self.pongs += 1;
            }
        }
        if self.completed == self.total {
            let _ = self.report.send(self.pongs);
            return Vec::new();
        }
        let room = self.depth - (self.issued - self.completed);
        let n = room.min(self.total - self.issued);
        let first = self.issued;
        self.issued += n;
        (first..first + n).map(|id| (id, Request::Ping)).collect()
    }

    fn done(&self) -> bool {
        self.completed == self.total
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_loop_runs_on_the_polling_thread() {
    let Some(mut lab) = Lab::new("a_closed_loop_runs_on_the_polling_thread") else {
        return;
    };
    let (m, n) = lab.pair(9000);
    let stub = Stub::new(7);
    let _server = serve(&n, &stub, &tokio::runtime::Handle::current());
    let link = link(&m);
    let found = find(&link, Mac(n.mac("eth0"))).await;
    let t = link.connect(&found, KEY, "loop").await.expect("connect");
    let (tx, rx) = std::sync::mpsc::channel();
    t.run_closed_loop(Box::new(PingLoop {
        depth: 8,
        total: 2000,
        issued: 0,
        pongs: 0,
        completed: 0,
        report: tx,
    }));
    let pongs = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)))
        .await
        .expect("join")
        .expect("the loop reports");
    assert_eq!(pongs, 2000);
    assert_eq!(stub.calls.load(Ordering::Relaxed), 2000);
    // The transport still serves tasks afterwards.
    assert_eq!(ping(&t).await.expect("pong"), Response::Pong);
}
