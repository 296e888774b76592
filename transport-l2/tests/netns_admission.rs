//! Admission on a node between network namespaces (`docs/l2-protocol.md`
//! §7a), with the in-process [`L2Server`] and a stub service: 2,000 forged
//! session-opening frames from random source MACs leave an authenticated
//! master's session working within a second, cause no retransmission and
//! no eviction; and a master whose session the node forgot (idle sweep)
//! re-handshakes and its requests continue. Needs root; without it each
//! test prints `SKIPPED: ...` and passes, unless `QBD_REQUIRE_PRIVILEGED=1`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use qbd_core::backend::BoxFut;
use qbd_core::proto::msg::{Request, Response};
use qbd_core::proto::session::{ClientHandshake, NodeHello};
use qbd_core::proto::{ClusterKey, ProtoError};
use qbd_core::transport::{Transport, TransportError};
use qbd_netlab::{Lab, Ns};
use qbd_transport_l2::af_packet::PacketSocket;
use qbd_transport_l2::engine::admission::opening_frame;
use qbd_transport_l2::engine::{DEFAULT_ETHERTYPE, Mac};
use qbd_transport_l2::serve::{L2Server, ServeOptions, Service};
use qbd_transport_l2::{L2Link, L2Transport, LinkOptions};
use uuid::Uuid;

const KEY: ClusterKey = ClusterKey([7; 32]);
const WAIT: Duration = Duration::from_secs(5);
const FORGED: usize = 2000;

#[derive(Debug)]
struct Stub;

impl Service for Stub {
    fn hello(&self) -> NodeHello {
        NodeHello {
            backend: Uuid::from_u128(9),
            name: "stub".into(),
        }
    }
    fn call(&self, _req: Request) -> BoxFut<'static, Response> {
        Box::pin(async { Response::Pong })
    }
    fn rejected(&self, _peer: Mac, _why: &ProtoError) {}
    fn handshake_failed(&self, _peer: Mac, _why: &str) {}
}

fn serve(ns: &Ns, opts: ServeOptions) -> L2Server {
    let rt = tokio::runtime::Handle::current();
    ns.run(move || L2Server::start(opts, KEY, Arc::new(Stub), rt).expect("serve"))
}

async fn connect(m: &Ns, node: &Ns) -> (Arc<L2Link>, Arc<L2Transport>) {
    let link = m.run(|| L2Link::open(LinkOptions::new("eth0")).expect("link"));
    let mac = Mac(node.mac("eth0"));
    let found = link.discover(&[mac], 1, WAIT, None).await;
    let found = found.first().expect("the node answers discovery");
    let t = link.connect(found, KEY, "test").await.expect("connect");
    (link, t)
}

async fn wait_for_sessions(server: &L2Server, n: usize) {
    let t0 = Instant::now();
    while server.stats().sessions != n {
        assert!(
            t0.elapsed() < WAIT,
            "never {n} sessions: {:?}",
            server.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ping(t: &L2Transport) -> Result<Response, TransportError> {
    t.call(Request::Ping).await
}

/// A small xorshift generator (seeded: a failure replays).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Session-opening frames to `node` from random unicast MACs with random
/// client epochs: a third carry `ClientHello`s under the real key (replays
/// of a captured hello: they verify and fill the pending table), a third
/// hellos under another key, a third random bytes.
fn forged_openings(node: Mac, n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed);
    let (_, genuine) = ClientHandshake::start(&KEY, [1; 32], "replayed");
    let (_, wrong) = ClientHandshake::start(&ClusterKey([8; 32]), [2; 32], "forger");
    (0..n)
        .map(|i| {
            let r = rng.next();
            let mut src = r.to_le_bytes();
            src[0] = (src[0] & 0xfc) | 0x02; // unicast, locally administered
            let random: Vec<u8> = (0..48).map(|_| rng.next() as u8).collect();
            let payload = match i % 3 {
                0 => genuine.clone(),
                1 => wrong.clone(),
                _ => random,
            };
            let src = Mac([src[0], src[1], src[2], src[3], src[4], src[5]]);
            let epoch = (r >> 32) as u32 | 1;
            opening_frame(DEFAULT_ETHERTYPE, node, src, epoch, &payload).expect("encodes")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_session_openings_never_disturb_an_authenticated_session() {
    let Some(mut lab) = Lab::new("forged_session_openings_never_disturb") else {
        return;
    };
    let (m, n, a) = (lab.namespace(), lab.namespace(), lab.namespace());
    lab.switch(&[&m, &n, &a], 1500);
    let server = serve(&n, ServeOptions::new("eth0"));
    let (_link, t) = connect(&m, &n).await;
    assert_eq!(ping(&t).await.expect("pong"), Response::Pong);

    let frames = forged_openings(server.mac(), FORGED, 0x5eed_ad17);
    let mut sock = a.run(|| PacketSocket::open("eth0", DEFAULT_ETHERTYPE).expect("socket"));
    for (i, batch) in frames.chunks(32).enumerate() {
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        sock.send_batch(&refs).expect("send forged frames");
        if i % 16 == 0 {
            let t0 = Instant::now();
            assert_eq!(
                ping(&t).await.expect("pong during the flood"),
                Response::Pong
            );
            assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        }
    }
    let t0 = Instant::now();
    assert_eq!(
        ping(&t).await.expect("pong after the flood"),
        Response::Pong
    );
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());

    // Let any retransmission timer of a forged session fire (RTO ≥ 300 µs,
    // backing off), then read the counters.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ping(&t).await.expect("pong"), Response::Pong);
    server.stop();
    let s = server.stats();
    println!("{s:?}");
    assert_eq!(
        (s.sessions, s.evicted),
        (1, 0),
        "the master's session stays"
    );
    assert!(s.pending <= 64, "pending bounded: {}", s.pending);
    assert!(
        s.pending_evicted > 0,
        "replayed hellos filled the pending table"
    );
    assert_eq!(s.unauth_retransmissions, 0);
    assert!(
        s.engine.retransmissions < 50,
        "no retransmission storm: {}",
        s.engine.retransmissions
    );
    assert!(
        s.unauth_answers <= FORGED as u64,
        "at most one answer per forged frame: {}",
        s.unauth_answers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_whose_session_the_node_forgot_handshakes_again() {
    let Some(mut lab) = Lab::new("a_master_whose_session_the_node_forgot") else {
        return;
    };
    let (m, n) = lab.pair(1500);
    let mut opts = ServeOptions::new("eth0");
    opts.idle = Duration::from_millis(100);
    let server = serve(&n, opts);
    let (_link, t) = connect(&m, &n).await;
    assert_eq!(ping(&t).await.expect("pong"), Response::Pong);

    // Counters lag a few milliseconds: first see the session, then (the
    // sweep runs every second) see it forgotten.
    wait_for_sessions(&server, 1).await;
    wait_for_sessions(&server, 0).await;
    // The node answers the next request with a Reset (unknown session):
    // it fails at once, cleanly, and the one after opens a new session.
    let t0 = Instant::now();
    let first = ping(&t).await;
    assert!(
        matches!(
            first,
            Ok(Response::Pong) | Err(TransportError::Disconnected(_))
        ),
        "{first:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(
        ping(&t).await.expect("pong on the new session"),
        Response::Pong
    );
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    for _ in 0..10 {
        assert_eq!(ping(&t).await.expect("pong"), Response::Pong);
    }
    wait_for_sessions(&server, 1).await;
    let s = server.stats();
    assert!(s.unauth_answers >= 2, "a reset and a ServerHello: {s:?}");
}
