//! `serve` over real TCP sockets in-process: an honest master's session,
//! and garbage, forged and replayed frames that each close only their own
//! connection (counted in `Node::stats`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use qbd_core::backend::PartId;
use qbd_core::generation::Generation;
use qbd_core::meta::volume::VolumeMeta;
use qbd_core::proto::ClusterKey;
use qbd_core::proto::frame::{FrameHeader, FrameKind, HEADER_LEN};
use qbd_core::proto::msg::{Request, Response, WireBlockState, WriteMode};
use qbd_core::proto::session::{ClientHandshake, NodeHello, Session};
use qbd_node::{Node, StatsSnapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const KEY: ClusterKey = ClusterKey([0x5a; 32]);
const BS: usize = 4096;
const PART: PartId = PartId { chunk: 0, part: 0 };
const PATIENCE: Duration = Duration::from_secs(10);

/// A node served on 127.0.0.1:0 until `stop` is sent.
struct Served {
    _dir: tempfile::TempDir,
    node: Arc<Node>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

async fn start() -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Arc::new(Node::open(dir.path(), "test-node").expect("node"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(qbd_node::serve(Arc::clone(&node), listener, KEY, stopped));
    Served {
        _dir: dir,
        node,
        addr,
        stop: Some(stop),
        task,
    }
}

/// A master's side of one connection, by hand.
struct Client {
    stream: TcpStream,
    session: Session,
    next_id: u64,
}

fn nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    n[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    n[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    n
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut hdr = [0u8; HEADER_LEN];
    stream.read_exact(&mut hdr).await?;
    let h = FrameHeader::decode(&hdr).map_err(std::io::Error::other)?;
    let mut frame = vec![0u8; h.frame_len()];
    frame[..HEADER_LEN].copy_from_slice(&hdr);
    stream.read_exact(&mut frame[HEADER_LEN..]).await?;
    Ok(frame)
}

impl Client {
    async fn connect(addr: SocketAddr, key: &ClusterKey) -> (Client, NodeHello) {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let (hs, hello) = ClientHandshake::start(key, nonce(), "test-master");
        stream.write_all(&hello).await.expect("send hello");
        let reply = read_frame(&mut stream).await.expect("server hello");
        let (session, node) = hs.finish(&reply).expect("handshake");
        let client = Client {
            stream,
            session,
            next_id: 1,
        };
        (client, node)
    }

    /// A sealed request frame and its id.
    fn seal(&mut self, req: &Request) -> (u64, Vec<u8>) {
        let id = self.next_id;
        self.next_id += 1;
        let mut payload = Vec::new();
        req.encode(&mut payload);
        let mut frame = Vec::new();
        self.session
            .seal(FrameKind::Request, req.opcode(), id, &payload, &mut frame);
        (id, frame)
    }

    async fn send(&mut self, frame: &[u8]) {
        self.stream.write_all(frame).await.expect("send");
    }

    async fn receive(&mut self) -> (u64, Response) {
        let frame = tokio::time::timeout(PATIENCE, read_frame(&mut self.stream))
            .await
            .expect("an answer in time")
            .expect("an answer");
        let (hdr, resp) = self.session.open_response(&frame).expect("answer verifies");
        assert_eq!(hdr.kind, FrameKind::Response);
        let resp = resp.expect("answer decodes");
        (hdr.request_id, resp)
    }

    async fn call(&mut self, req: Request) -> Response {
        let (id, frame) = self.seal(&req);
        self.send(&frame).await;
        let (got, resp) = self.receive().await;
        assert_eq!(got, id, "answer to another request");
        resp
    }

    /// Waits until the node closes the connection (EOF or reset).
    async fn expect_closed(&mut self) {
        expect_eof(&mut self.stream).await;
    }
}

/// Reads until the node closes the connection (EOF or reset).
async fn expect_eof(raw: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    let closed = async {
        loop {
            match raw.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(PATIENCE, closed)
        .await
        .expect("the node closes the connection");
}

fn meta(node: &Node, epoch: u64) -> String {
    let m = VolumeMeta {
        format_version: 1,
        name: "tcp".into(),
        uuid: uuid::Uuid::from_u128(0x7c9),
        number: 3,
        size: 8 << 20,
        block_size: BS as u32,
        chunk_size: 4 << 20,
        redundancy: "replicate:1".into(),
        read_only: false,
        append_only: false,
        epoch,
        master: "test-master".into(),
        placement: vec![node.id()],
    };
    toml::to_string(&m).expect("meta encodes")
}

fn write_req(block: u32, generation: Generation) -> Request {
    Request::Write {
        volume: 3,
        epoch: 1,
        part: PART,
        first: block,
        count: 1,
        generation: generation.0,
        mode: WriteMode::Data,
        heal: false,
        data: vec![block as u8 + 1; BS],
    }
}

#[tokio::test]
async fn an_honest_master_pings_creates_writes_and_reads() {
    let served = start().await;
    let node = &served.node;
    let (mut c, hello) = Client::connect(served.addr, &KEY).await;
    assert_eq!(hello.name, "test-node");
    assert_eq!(hello.backend, node.id().0);
    assert_eq!(c.call(Request::Ping).await, Response::Pong);

    let create = Request::CreateVolume {
        meta: meta(node, 0),
    };
    assert_eq!(c.call(create).await, Response::Done);
    let open = c
        .call(Request::OpenVolume {
            meta: meta(node, 0),
        })
        .await;
    assert!(matches!(open, Response::Opened { .. }), "{open:?}");
    let save = Request::SaveMeta {
        meta: meta(node, 1),
    };
    assert_eq!(c.call(save).await, Response::Done);
    let alloc = Request::Allocate {
        volume: 3,
        epoch: 1,
        part: PART,
    };
    assert_eq!(c.call(alloc).await, Response::Done);

    // Pipelined: eight writes in one burst, answered in any order.
    let mut ids = Vec::new();
    let mut burst = Vec::new();
    for b in 0..8u32 {
        let (id, frame) = c.seal(&write_req(b, Generation::new(1, u64::from(b) + 1)));
        ids.push(id);
        burst.extend_from_slice(&frame);
    }
    c.send(&burst).await;
    let mut answered = Vec::new();
    for _ in 0..8 {
        let (id, resp) = c.receive().await;
        assert_eq!(
            resp,
            Response::Written {
                applied: 1,
                skipped: 0
            }
        );
        answered.push(id);
    }
    answered.sort_unstable();
    assert_eq!(answered, ids);

    let read = Request::Read {
        volume: 3,
        epoch: 1,
        part: PART,
        first: 5,
        count: 1,
    };
    let Response::Blocks { states, data } = c.call(read).await else {
        panic!("read failed");
    };
    assert_eq!(states, vec![WireBlockState::Data(Generation::new(1, 6).0)]);
    assert!(data.iter().all(|&b| b == 6));
    let sync = Request::Sync {
        volume: 3,
        parts: None,
    };
    assert_eq!(c.call(sync).await, Response::Done);
    assert_eq!(node.stats().snapshot().requests, 15);
}

#[tokio::test]
async fn bad_frames_close_only_their_connection() {
    let served = start().await;
    let stats = || served.node.stats().snapshot();
    let (mut honest, _) = Client::connect(served.addr, &KEY).await;
    assert_eq!(honest.call(Request::Ping).await, Response::Pong);

    // Garbage instead of a hello.
    let mut raw = TcpStream::connect(served.addr).await.expect("connect");
    raw.write_all(&[0xEE; 64]).await.expect("send");
    expect_eof(&mut raw).await;
    assert_eq!(stats().handshake_failed, 1);

    // A hello MACed with another key.
    let mut raw = TcpStream::connect(served.addr).await.expect("connect");
    let (_, hello) = ClientHandshake::start(&ClusterKey([1; 32]), nonce(), "intruder");
    raw.write_all(&hello).await.expect("send");
    expect_eof(&mut raw).await;
    assert_eq!(stats().handshake_failed, 2);

    // Garbage after the handshake.
    let (mut c, _) = Client::connect(served.addr, &KEY).await;
    c.send(&[0xEE; 64]).await;
    c.expect_closed().await;
    assert_eq!(stats().malformed, 1);

    // A forged MAC.
    let (mut c, _) = Client::connect(served.addr, &KEY).await;
    let (_, mut frame) = c.seal(&Request::Ping);
    let last = frame.len() - 1;
    frame[last] ^= 1;
    c.send(&frame).await;
    c.expect_closed().await;
    assert_eq!(stats().bad_mac, 1);

    // A replayed frame: the first copy is answered, the second closes.
    let (mut c, _) = Client::connect(served.addr, &KEY).await;
    let (id, frame) = c.seal(&Request::Ping);
    c.send(&frame).await;
    c.send(&frame).await;
    assert_eq!(c.receive().await, (id, Response::Pong));
    c.expect_closed().await;
    assert_eq!(stats().replay, 1);

    // The honest connection never noticed.
    assert_eq!(honest.call(Request::Ping).await, Response::Pong);
    let s = stats();
    let refused = (s.handshake_failed, s.malformed, s.bad_mac, s.replay);
    assert_eq!(refused, (2, 1, 1, 1), "{s:?}");
    assert_eq!(s.connections, 6);
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_stops_accepting() {
    let mut served = start().await;
    let (mut c, _) = Client::connect(served.addr, &KEY).await;
    assert_eq!(c.call(Request::Ping).await, Response::Pong);
    if let Some(stop) = served.stop.take() {
        let _ = stop.send(());
    }
    c.expect_closed().await;
    drop(c);
    tokio::time::timeout(PATIENCE, &mut served.task)
        .await
        .expect("serve returns although a connection was idle")
        .expect("serve does not panic");
    assert!(TcpStream::connect(served.addr).await.is_err());
    let expected = StatsSnapshot {
        connections: 1,
        requests: 1,
        ..StatsSnapshot::default()
    };
    assert_eq!(served.node.stats().snapshot(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_every_request_it_accepted() {
    let mut served = start().await;
    let node = Arc::clone(&served.node);
    let (mut c, _) = Client::connect(served.addr, &KEY).await;
    // Created at epoch 1, as a master that took it (the session epoch the
    // requests below carry).
    let create = Request::CreateVolume {
        meta: meta(&node, 1),
    };
    assert_eq!(c.call(create).await, Response::Done);
    let open = c
        .call(Request::OpenVolume {
            meta: meta(&node, 1),
        })
        .await;
    assert!(matches!(open, Response::Opened { .. }), "{open:?}");
    let alloc = Request::Allocate {
        volume: 3,
        epoch: 1,
        part: PART,
    };
    assert_eq!(c.call(alloc).await, Response::Done);
    let before = node.stats().snapshot().requests;

    let mut burst = Vec::new();
    for i in 0..64u32 {
        let (_, frame) = c.seal(&write_req(i % 16, Generation::new(1, u64::from(i) + 1)));
        burst.extend_from_slice(&frame);
    }
    c.send(&burst).await;
    if let Some(stop) = served.stop.take() {
        let _ = stop.send(());
    }
    let mut answers = 0u64;
    while let Ok(Ok(frame)) = tokio::time::timeout(PATIENCE, read_frame(&mut c.stream)).await {
        let (_, resp) = c.session.open_response(&frame).expect("answer verifies");
        let resp = resp.expect("answer decodes");
        assert!(matches!(resp, Response::Written { .. }), "{resp:?}");
        answers += 1;
    }
    drop(c);
    tokio::time::timeout(PATIENCE, &mut served.task)
        .await
        .expect("serve returns")
        .expect("serve does not panic");
    let handled = node.stats().snapshot().requests - before;
    assert_eq!(answers, handled, "every accepted request is answered");
    node.sync_all().await.expect("sync after shutdown");
}
