//! Node restarts: requests in flight fail with `Disconnected`, later
//! requests reconnect (a new session); a different node behind the same
//! address is refused.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Behaviour, FakeNode};
use qbd_core::proto::msg::{Request, Response};
use qbd_core::transport::{Transport, TransportError};
use qbd_transport_tcp::TcpTransport;
use uuid::Uuid;

/// Pings until one succeeds (reconnect backoff may refuse the first tries).
async fn ping_until_ok(t: &TcpTransport) -> Result<Response, TransportError> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let r = t.call(Request::Ping).await;
        if r.is_ok() || Instant::now() > until {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn restart_fails_in_flight_then_reconnects() {
    let node = FakeNode::local(Behaviour::Echo).await;
    let (addr, backend) = (node.addr, node.hello.backend);
    let t = node.client(5000).await;
    assert_eq!(t.call(Request::Ping).await, Ok(Response::Pong));
    let held = t.call(Request::VolumeNumber {
        name: "hold".into(),
    });
    let held = tokio::spawn(held);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let started = Instant::now();
    node.stop().await;
    let r = held.await.unwrap();
    assert!(matches!(r, Err(TransportError::Disconnected(_))), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "failed promptly"
    );

    // While the node is down: a prompt error, not a hang.
    let r = t.call(Request::Ping).await;
    assert!(matches!(r, Err(TransportError::Disconnected(_))), "{r:?}");

    let _node = FakeNode::start(addr, backend, Behaviour::Echo).await;
    assert_eq!(ping_until_ok(&t).await, Ok(Response::Pong));
    assert!(t.is_connected());
    let n = Request::VolumeNumber { name: "7".into() };
    assert_eq!(t.call(n).await, Ok(Response::Number(Some(7))));
}

#[tokio::test]
async fn restart_between_requests_reconnects_on_the_next_one() {
    let node = FakeNode::local(Behaviour::Echo).await;
    let (addr, backend) = (node.addr, node.hello.backend);
    let t = node.client(5000).await;
    assert_eq!(t.call(Request::Ping).await, Ok(Response::Pong));
    node.stop().await;
    let _node = FakeNode::start(addr, backend, Behaviour::Echo).await;
    assert_eq!(ping_until_ok(&t).await, Ok(Response::Pong));
}

#[tokio::test]
async fn another_backend_on_the_same_address_is_refused() {
    let node = FakeNode::local(Behaviour::Echo).await;
    let addr = node.addr;
    let t = node.client(5000).await;
    node.stop().await;
    let _impostor = FakeNode::start(addr, Uuid::new_v4(), Behaviour::Echo).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = t.call(Request::Ping).await;
    assert!(matches!(r, Err(TransportError::Protocol(_))), "{r:?}");
    assert!(!t.is_connected());
}
