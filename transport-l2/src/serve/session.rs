//! One master session on the node: the engine [`Server`] and the
//! node-protocol session on top. Message 1 (the hello) never reaches this
//! engine: the handler checks it before any state exists
//! (`handler/admit.rs`), so a session starts with its keys and is
//! *pending* until a sealed request opens under them.

use std::time::Instant;

use qbd_core::proto::msg::{ErrorCode, Request, Response};
use qbd_core::proto::session::{Opener, Sealer, Session};

use super::Service;
use crate::af_packet::FrameBatch;
use crate::engine::{Mac, ReqId, Server, ServerEvent};

/// What a delivered message asks the handler to do.
pub(super) enum Action {
    /// Nothing more (answered or rejected here).
    None,
    /// Run this authenticated request; answer `id` with request id `rid`.
    Run { id: ReqId, rid: u64, req: Request },
}

/// One session: born pending (its `ClientHello` verified statelessly, the
/// `ServerHello` sent once), authenticated once a sealed request opens.
pub(super) struct Sess {
    pub(super) server: Server,
    opener: Opener,
    sealer: Sealer,
    pub(super) peer: Mac,
    /// The name the master gave in its hello.
    client: String,
    /// The `ServerHello` bytes, resent (once per copy) when the master
    /// sends its hello again; dropped once authenticated.
    pub(super) hello: Vec<u8>,
    /// A sealed request opened under the session keys.
    pub(super) authenticated: bool,
    scratch: Vec<u8>,
    /// One frame being built (sized to the MTU once).
    frame: Vec<u8>,
}

impl Sess {
    /// A pending session over `server` with the keys of `session`.
    pub(super) fn pending(
        server: Server,
        peer: Mac,
        session: Session,
        client: String,
        hello: Vec<u8>,
    ) -> Self {
        let (sealer, opener) = session.split();
        Sess {
            server,
            opener,
            sealer,
            peer,
            client,
            hello,
            authenticated: false,
            scratch: Vec::new(),
            frame: Vec::new(),
        }
    }

    /// Takes the next delivered message and authenticates it; returns
    /// `None` once none is left.
    pub(super) fn next_action(&mut self, now: Instant, service: &dyn Service) -> Option<Action> {
        let ServerEvent::Request { id, message } = self.server.poll_event()?;
        let (h, decoded) = match self.opener.open_request(&message) {
            Err(e) => {
                self.server.reject(id);
                service.rejected(self.peer, &e);
                return Some(Action::None);
            }
            Ok(opened) => opened,
        };
        self.authenticate();
        Some(match decoded {
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
        })
    }

    fn authenticate(&mut self) {
        if !self.authenticated {
            self.authenticated = true;
            self.hello = Vec::new();
            eprintln!(
                "qbd-node: l2: session with {:?} at {} established",
                self.client, self.peer
            );
        }
    }

    /// Seals `resp` and hands it to the engine as the answer to `id`.
    pub(super) fn answer(&mut self, now: Instant, id: ReqId, rid: u64, resp: &Response) {
        let mut sealed = Vec::with_capacity(resp.detached_tail() + 512);
        self.sealer
            .seal_message(rid, resp, &mut self.scratch, &mut sealed);
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
