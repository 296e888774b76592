//! Deadlines: a node that never answers yields `Timeout`, never a hang.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Behaviour, FakeNode};
use qbd_core::proto::msg::{Request, Response};
use qbd_core::transport::{Transport, TransportError};

#[tokio::test]
async fn silent_node_times_out_within_the_deadline() {
    let node = FakeNode::local(Behaviour::Silent).await;
    let t = node.client(200).await;
    let started = Instant::now();
    let replies = futures_util::future::join_all(t.submit(vec![Request::Ping; 3])).await;
    let took = started.elapsed();
    for r in replies {
        assert_eq!(r, Err(TransportError::Timeout(200)));
    }
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(
        t.is_connected(),
        "a timeout alone does not drop the connection"
    );
}

#[tokio::test]
async fn one_held_request_times_out_while_others_complete() {
    let node = FakeNode::local(Behaviour::Echo).await;
    let t = node.client(300).await;
    let hold = Request::VolumeNumber {
        name: "hold".into(),
    };
    let mut p = t.submit(vec![hold, Request::Ping]);
    let ping = p.pop().unwrap();
    let held = p.pop().unwrap();
    assert_eq!(ping.await, Ok(Response::Pong));
    assert_eq!(held.await, Err(TransportError::Timeout(300)));
    assert_eq!(t.call(Request::Ping).await, Ok(Response::Pong));
}
