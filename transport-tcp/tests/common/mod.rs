//! A tiny in-test node built from the session API: accepts connections,
//! opens request frames and answers them according to a [`Behaviour`].
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use qbd_core::proto::ClusterKey;
use qbd_core::proto::frame::FrameKind;
use qbd_core::proto::msg::{Request, Response};
use qbd_core::proto::session::{NodeHello, Session, accept};
use qbd_transport_tcp::frame_io::{fresh_nonce, read_frame};
use qbd_transport_tcp::{TcpOptions, TcpTransport};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;

/// How the fake node answers.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// Answers each request at once, except `VolumeNumber { name: "hold" }`,
    /// which it never answers.
    Echo,
    /// Collects this many requests, then answers them in reverse order.
    Reverse(usize),
    /// Never answers.
    Silent,
}

/// The answer the fake node gives: `Pong`, `Number(name as u16)`, else `Done`.
pub fn answer(req: &Request) -> Response {
    match req {
        Request::Ping => Response::Pong,
        Request::VolumeNumber { name } => Response::Number(name.parse().ok()),
        _ => Response::Done,
    }
}

/// A running fake node; dropping it closes the listener and every connection.
#[derive(Debug)]
pub struct FakeNode {
    pub addr: SocketAddr,
    pub hello: NodeHello,
    task: JoinHandle<()>,
}

pub fn key() -> ClusterKey {
    ClusterKey([7; 32])
}

pub fn opts(request_ms: u64) -> TcpOptions {
    TcpOptions {
        request_timeout: Duration::from_millis(request_ms),
        connect_timeout: Duration::from_secs(2),
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
    }
}

impl FakeNode {
    /// Listens on `addr` (port 0 picks one) as backend `backend`.
    pub async fn start(addr: SocketAddr, backend: Uuid, behaviour: Behaviour) -> FakeNode {
        let listener = TcpListener::bind(addr).await.unwrap();
        let hello = NodeHello {
            backend,
            name: "fake".into(),
        };
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(serve(listener, hello.clone(), behaviour));
        FakeNode { addr, hello, task }
    }

    /// A node on 127.0.0.1 with a fresh identity.
    pub async fn local(behaviour: Behaviour) -> FakeNode {
        FakeNode::start(([127, 0, 0, 1], 0).into(), Uuid::new_v4(), behaviour).await
    }

    pub async fn client(&self, request_ms: u64) -> Arc<TcpTransport> {
        TcpTransport::connect(self.addr, key(), "test-master", opts(request_ms))
            .await
            .unwrap()
    }
}

impl FakeNode {
    /// Stops the node and waits until its port is free again.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, hello: NodeHello, behaviour: Behaviour) {
    // Dropping the set (when this task is aborted) aborts every connection.
    let mut conns = JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        conns.spawn(connection(stream, hello.clone(), behaviour));
    }
}

async fn connection(stream: TcpStream, hello: NodeHello, behaviour: Behaviour) {
    stream.set_nodelay(true).unwrap();
    let (mut read, mut write) = stream.into_split();
    let mut buf = Vec::new();
    if read_frame(&mut read, &mut buf).await.is_err() {
        return;
    }
    let Ok((mut session, _name, server_hello)) = accept(&key(), fresh_nonce(), &hello, &buf) else {
        return;
    };
    write.write_all(&server_hello).await.unwrap();
    let mut held = Vec::new();
    while read_frame(&mut read, &mut buf).await.is_ok() {
        let Ok((header, payload)) = session.open(&buf) else {
            return;
        };
        let req = Request::decode(header.opcode, payload).unwrap();
        let id = header.request_id;
        match behaviour {
            Behaviour::Silent => {}
            Behaviour::Echo
                if req
                    == (Request::VolumeNumber {
                        name: "hold".into(),
                    }) => {}
            Behaviour::Echo => reply(&mut session, &mut write, &[(id, answer(&req))]).await,
            Behaviour::Reverse(n) => {
                held.push((id, answer(&req)));
                if held.len() == n {
                    held.reverse();
                    reply(&mut session, &mut write, &held).await;
                    held.clear();
                }
            }
        }
    }
}

/// Seals all answers into one buffer and writes it.
async fn reply(session: &mut Session, write: &mut OwnedWriteHalf, answers: &[(u64, Response)]) {
    let mut out = Vec::new();
    for (id, resp) in answers {
        let mut payload = Vec::new();
        resp.encode(&mut payload);
        session.seal(FrameKind::Response, resp.opcode(), *id, &payload, &mut out);
    }
    let _ = write.write_all(&out).await;
}
