//! Round trips: a ping, the node's identity, 64 requests in flight answered
//! in reverse order, and a wrong cluster key.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Behaviour, FakeNode, answer, opts};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use qbd_core::proto::ClusterKey;
use qbd_core::proto::msg::{Request, Response};
use qbd_core::transport::Transport;
use qbd_transport_tcp::TcpTransport;

#[tokio::test]
async fn ping_round_trip_and_node_identity() {
    let node = FakeNode::local(Behaviour::Echo).await;
    let t = node.client(5000).await;
    assert_eq!(t.node(), node.hello);
    assert_eq!(t.describe(), format!("tcp:{}", node.addr));
    assert_eq!(t.call(Request::Ping).await, Ok(Response::Pong));
    let n = Request::VolumeNumber { name: "42".into() };
    assert_eq!(t.call(n).await, Ok(Response::Number(Some(42))));
}

#[tokio::test]
async fn sixty_four_in_flight_complete_out_of_order() {
    let node = FakeNode::local(Behaviour::Reverse(64)).await;
    let t = node.client(5000).await;
    let batch: Vec<Request> = (0..64u16)
        .map(|i| Request::VolumeNumber {
            name: i.to_string(),
        })
        .collect();
    let expected: Vec<Response> = batch.iter().map(answer).collect();
    let mut pending: FuturesUnordered<_> = t
        .submit(batch)
        .into_iter()
        .enumerate()
        .map(|(i, p)| async move { (i, p.await) })
        .collect();
    let mut order = Vec::new();
    while let Some((i, got)) = pending.next().await {
        assert_eq!(got.as_ref(), Ok(&expected[i]), "request {i}");
        order.push(i);
    }
    assert_eq!(order.len(), 64);
    assert_eq!(order[0], 63, "the node answered the last request first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_batches_from_many_tasks() {
    let node = FakeNode::local(Behaviour::Echo).await;
    let t = node.client(5000).await;
    let mut tasks = Vec::new();
    for task in 0..8u16 {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..50u16 {
                let n = task * 1000 + round;
                let batch = vec![
                    Request::VolumeNumber {
                        name: n.to_string(),
                    },
                    Request::Ping,
                ];
                let replies = futures_util::future::join_all(t.submit(batch)).await;
                assert_eq!(replies[0], Ok(Response::Number(Some(n))));
                assert_eq!(replies[1], Ok(Response::Pong));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn large_payloads_pass_in_both_directions() {
    let node = FakeNode::local(Behaviour::Echo).await;
    let t = node.client(10_000).await;
    let write = Request::Write {
        volume: 1,
        epoch: 1,
        part: qbd_core::backend::PartId { chunk: 3, part: 1 },
        first: 0,
        count: 1024,
        generation: 9,
        mode: qbd_core::proto::msg::WriteMode::Data,
        heal: false,
        data: vec![0xa5; 4 << 20],
    };
    let replies =
        futures_util::future::join_all(t.submit(vec![write.clone(), write, Request::Ping])).await;
    assert_eq!(
        replies,
        vec![Ok(Response::Done), Ok(Response::Done), Ok(Response::Pong)]
    );
}

#[tokio::test]
async fn wrong_cluster_key_fails_the_handshake() {
    let node = FakeNode::local(Behaviour::Echo).await;
    let wrong = ClusterKey([8; 32]);
    let r = TcpTransport::connect(node.addr, wrong, "intruder", opts(1000)).await;
    assert!(r.is_err(), "{r:?}");
}
