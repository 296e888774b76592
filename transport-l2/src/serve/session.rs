//! One master session on the node: the engine [`Server`] and the
//! node-protocol state on top (hello, then open).

use std::time::Instant;

use qbd_core::proto::frame::{FrameHeader, FrameKind};
use qbd_core::proto::msg::{ErrorCode, Request, Response};
use qbd_core::proto::session::{self, Opener, Sealer};
use qbd_core::proto::{ClusterKey, ProtoError};

use super::Service;
use crate::af_packet::FrameBatch;
use crate::engine::{Mac, ReqId, Server, ServerEvent};
use crate::epoch::fresh_nonce;

enum Proto {
    /// Waiting for the `ClientHello` (message 1).
    Hello,
    Open {
        opener: Opener,
        sealer: Sealer,
    },
}

/// What a delivered message asks the handler to do.
pub(super) enum Action {
    /// Nothing more (answered or rejected here).
    None,
    /// Run this authenticated request; answer `id` with request id `rid`.
    Run { id: ReqId, rid: u64, req: Request },
}

/// One session.
pub(super) struct Sess {
    pub(super) server: Server,
    proto: Proto,
    pub(super) peer: Mac,
    pub(super) last_seen: Instant,
    scratch: Vec<u8>,
    /// One frame being built (sized to the MTU once).
    frame: Vec<u8>,
}

impl Sess {
    pub(super) fn new(server: Server, peer: Mac, now: Instant) -> Self {
        Sess {
            server,
            proto: Proto::Hello,
            peer,
            last_seen: now,
            scratch: Vec::new(),
            frame: Vec::new(),
        }
    }

    /// Takes the next delivered message and authenticates it; returns
    /// `None` once none is left.
    pub(super) fn next_action(
        &mut self,
        now: Instant,
        key: &ClusterKey,
        service: &dyn Service,
    ) -> Option<Action> {
        let ServerEvent::Request { id, message } = self.server.poll_event()?;
        Some(match &mut self.proto {
            Proto::Hello => {
                self.hello(now, id, &message, key, service);
                Action::None
            }
            Proto::Open { opener, .. } => match opener.open_request(&message) {
                Err(e) => {
                    self.server.reject(id);
                    service.rejected(self.peer, &e);
                    Action::None
                }
                Ok((h, decoded)) => match decoded {
                    Ok(req) => Action::Run {
                        id,
                        rid: h.request_id,
                        req,
                    },
                    Err(e) => {
                        service.rejected(self.peer, &e);
                        let resp = Response::Error {
                            code: ErrorCode::Invalid,
                            message: format!("undecodable request: {e}"),
                        };
                        self.answer(now, id, h.request_id, &resp);
                        Action::None
                    }
                },
            },
        })
    }

    fn hello(
        &mut self,
        now: Instant,
        id: ReqId,
        message: &[u8],
        key: &ClusterKey,
        service: &dyn Service,
    ) {
        let is_hello = FrameHeader::decode(message).is_ok_and(|h| h.kind == FrameKind::ClientHello);
        let accepted = if is_hello {
            session::accept(key, fresh_nonce(), &service.hello(), message)
        } else {
            Err(ProtoError::Handshake(
                "message 1 is not a ClientHello".into(),
            ))
        };
        match accepted {
            Ok((session, client, reply)) => {
                eprintln!(
                    "qbd-node: l2: session with {client:?} at {} established",
                    self.peer
                );
                let (sealer, opener) = session.split();
                self.proto = Proto::Open { opener, sealer };
                self.respond(now, id, reply);
            }
            Err(e) => {
                service.handshake_failed(self.peer, &e.to_string());
                // An empty answer tells the master at once (unauthenticated:
                // a forged one only costs a failed handshake).
                self.respond(now, id, Vec::new());
            }
        }
    }

    /// Seals `resp` and hands it to the engine as the answer to `id`.
    pub(super) fn answer(&mut self, now: Instant, id: ReqId, rid: u64, resp: &Response) {
        let Proto::Open { sealer, .. } = &mut self.proto else {
            return;
        };
        let mut sealed = Vec::with_capacity(resp.detached_tail() + 512);
        sealer.seal_message(rid, resp, &mut self.scratch, &mut sealed);
        self.respond(now, id, sealed);
    }

    fn respond(&mut self, now: Instant, id: ReqId, message: Vec<u8>) {
        if let Err(e) = self.server.respond(now, id, message) {
            // Responses are bounded by the protocol; this is a bug, and the
            // master's deadline will report the request.
            eprintln!("qbd-node: l2: cannot answer {}: {e}", self.peer);
        }
    }

    /// Bytes one frame of this session may take.
    pub(super) fn server_frame_capacity(&self) -> usize {
        self.server.config().frame_capacity()
    }

    /// Moves the engine's due frames into `out`.
    pub(super) fn transmit(&mut self, now: Instant, cap: usize, out: &mut FrameBatch) {
        if self.frame.len() < cap {
            self.frame.resize(cap, 0);
        }
        while let Some(n) = self.server.poll_transmit(now, &mut self.frame) {
            out.push(&self.frame[..n]);
        }
    }
}
