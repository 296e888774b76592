//! Against the real node (`qbd_node::serve`): identity, ping, a pipelined
//! batch, and a node error reply passed through as a response.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use qbd_core::proto::ClusterKey;
use qbd_core::proto::msg::{Request, Response};
use qbd_core::transport::Transport;
use qbd_transport_tcp::{TcpOptions, TcpTransport};
use tokio::net::TcpListener;

#[tokio::test]
async fn ping_and_a_pipelined_batch_against_qbd_node() {
    let root = tempfile::tempdir().unwrap();
    let node = Arc::new(qbd_node::Node::open(root.path(), "real").unwrap());
    let hello = node.hello();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let key = ClusterKey([5; 32]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(qbd_node::serve(node, listener, key.clone(), async {
        let _ = stopped.await;
    }));

    let t = TcpTransport::connect(addr, key, "test", TcpOptions::default())
        .await
        .unwrap();
    assert_eq!(t.node(), hello);
    assert_eq!(t.call(Request::Ping).await, Ok(Response::Pong));
    let mut batch = vec![Request::Ping; 32];
    batch.push(Request::VolumeNumbers);
    batch.push(Request::LoadMeta { number: 9 });
    let replies = futures_util::future::join_all(t.submit(batch)).await;
    assert!(replies[..32].iter().all(|r| *r == Ok(Response::Pong)));
    assert_eq!(replies[32], Ok(Response::Numbers(vec![])));
    assert_eq!(replies[33], Ok(Response::Meta(None)));

    drop(t);
    drop(stop);
    server.await.unwrap();
}
