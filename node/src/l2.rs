//! Serving over raw Ethernet: the node as a [`Service`] of an
//! [`L2Server`] (`qbd_transport_l2::serve`), which runs the sessions, the
//! node protocol's authentication and the probes on its polling thread.

use std::sync::Arc;

use qbd_core::backend::BoxFut;
use qbd_core::proto::ProtoError;
use qbd_core::proto::msg::{Request, Response};
use qbd_core::proto::session::NodeHello;
use qbd_transport_l2::engine::Mac;
use qbd_transport_l2::serve::Service;

use crate::node::Node;
use crate::stats::bump;

/// [`Node`] as an L2 service.
#[derive(Debug)]
pub struct NodeService(pub Arc<Node>);

impl Service for NodeService {
    fn hello(&self) -> NodeHello {
        self.0.hello()
    }

    fn call(&self, req: Request) -> BoxFut<'static, Response> {
        let node = Arc::clone(&self.0);
        Box::pin(async move {
            let resp = node.handle(req).await;
            bump(&node.stats().requests);
            resp
        })
    }

    fn rejected(&self, peer: Mac, why: &ProtoError) {
        self.0.stats().count_violation(why);
        eprintln!("qbd-node: l2: {peer}: message rejected: {why}");
    }

    fn handshake_failed(&self, peer: Mac, why: &str) {
        bump(&self.0.stats().handshake_failed);
        eprintln!("qbd-node: l2: {peer}: handshake refused: {why}");
    }
}
