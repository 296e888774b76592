//! Admission on the node's poller thread (`docs/l2-protocol.md` §7a):
//! what a frame of a session the node does not hold may cause.
//!
//! - An opening frame (message 1 whole in one frame) is checked as a
//!   `ClientHello` under the cluster key *before* anything is stored. A
//!   hello that fails gets one empty answer (a wrong key is reported at
//!   once) and leaves no state; one that verifies becomes a *pending*
//!   session (bounded apart from authenticated ones) and gets its
//!   `ServerHello` once. A copy of the hello resends that `ServerHello`
//!   once; nothing is retransmitted by timer to a pending peer.
//! - A data frame addressed to this incarnation gets one `Reset` with
//!   `FLAG_UNKNOWN_SESSION`: the master re-handshakes. One addressed to
//!   another incarnation gets a plain `Reset` (node restart, §6).
//! - Every answer to an unauthenticated sender spends the answer budget.
//! - A pending session becomes authenticated when a sealed request opens
//!   under its keys (`Sess::next_action`); only then may it evict an
//!   authenticated one (the least recently heard).

use std::time::Instant;

use qbd_core::proto::frame::{FrameHeader, FrameKind};
use qbd_core::proto::session;

use super::{Key, ServeHandler};
use crate::af_packet::FrameBatch;
use crate::engine::admission::{self, FLAG_UNKNOWN_SESSION, Unknown};
use crate::engine::wire::Frame;
use crate::engine::{Config, Server};
use crate::epoch::fresh_nonce;
use crate::probe::BASE_MTU;
use crate::serve::session::Sess;

impl ServeHandler {
    /// A decoded `frame` of no session held.
    pub(super) fn admit(&mut self, now: Instant, frame: &[u8], out: &mut FrameBatch) {
        let Ok(f) = Frame::decode(frame) else {
            self.malformed += 1;
            return;
        };
        let h = f.header;
        let ours = self.setup.engine.epoch;
        match admission::classify(&h, ours) {
            Unknown::Opening => self.open(now, frame, f.payload, out),
            Unknown::Forgotten => self.reset(now, &h, FLAG_UNKNOWN_SESSION, out),
            Unknown::Restarted => self.reset(now, &h, 0, out),
            Unknown::Drop => self.dropped += 1,
        }
    }

    /// If `frame` is a copy of the hello of the pending session `key`,
    /// answers it with the stored `ServerHello` (once) and returns true.
    pub(super) fn resend_hello(
        &mut self,
        now: Instant,
        key: Key,
        frame: &[u8],
        out: &mut FrameBatch,
    ) -> bool {
        let Some(sess) = self.sessions.get_mut(&key) else {
            return false;
        };
        let Ok(f) = Frame::decode(frame) else {
            return false;
        };
        let opening = admission::classify(&f.header, self.setup.engine.epoch) == Unknown::Opening;
        if sess.authenticated || !opening {
            return false;
        }
        let hello = sess.hello.clone();
        self.answer_once(now, key, frame, hello, out);
        true
    }

    /// Checks the hello in `payload` statelessly; keeps a pending session
    /// only if it verifies.
    fn open(&mut self, now: Instant, frame: &[u8], payload: &[u8], out: &mut FrameBatch) {
        let Some(key) = crate::engine::wire::session_of(frame) else {
            return;
        };
        let is_hello = FrameHeader::decode(payload).is_ok_and(|h| h.kind == FrameKind::ClientHello);
        let hello = self.setup.service.hello();
        let accepted = match is_hello {
            true => session::accept(&self.setup.key, fresh_nonce(), &hello, payload),
            false => Err(qbd_core::proto::ProtoError::Handshake(
                "message 1 is not a ClientHello".into(),
            )),
        };
        let (session, client, reply) = match accepted {
            Ok(x) => x,
            Err(e) => {
                self.setup.service.handshake_failed(key.0, &e.to_string());
                return self.answer_once(now, key, frame, Vec::new(), out);
            }
        };
        let server = Server::new(self.session_config(key), self.setup.local, key.0, key.1);
        let sess = Sess::pending(server, key.0, session, client, reply.clone());
        if let Some(old) = self.sessions.insert_pending(key, sess, now) {
            self.pending_evicted += 1;
            self.retire(&old, false);
        }
        self.answer_once(now, key, frame, reply, out);
    }

    /// Makes the pending session `key` authenticated.
    pub(super) fn promote(&mut self, key: Key) {
        if let Some(old) = self.sessions.promote(&key) {
            self.evicted += 1;
            self.retire(&old, true);
        }
    }

    /// The engine configuration of a session with `key`'s master.
    fn session_config(&self, key: Key) -> Config {
        let mtu = self.jumbo.get(&key.0).copied().unwrap_or(BASE_MTU);
        Config {
            mtu: mtu.min(self.setup.iface_mtu),
            ..self.setup.engine.clone()
        }
    }

    /// Answers the opening `frame` with `message`, once, within budget.
    fn answer_once(
        &mut self,
        now: Instant,
        key: Key,
        frame: &[u8],
        message: Vec<u8>,
        out: &mut FrameBatch,
    ) {
        if !self.budget.allow(now) {
            return;
        }
        let cfg = self.session_config(key);
        let mut buf = vec![0u8; cfg.frame_capacity()];
        if let Some(n) = admission::answer_once(&cfg, self.setup.local, frame, message, &mut buf) {
            self.unauth_answers += 1;
            out.push(&buf[..n]);
        }
    }

    /// One `Reset` with `flags` answering `h`, within budget.
    fn reset(
        &mut self,
        now: Instant,
        h: &crate::engine::wire::Header,
        flags: u16,
        out: &mut FrameBatch,
    ) {
        if !self.budget.allow(now) {
            return;
        }
        let mut buf = [0u8; 64];
        let (local, ours) = (self.setup.local, self.setup.engine.epoch);
        if let Some(n) = admission::reset_frame(h, local, ours, flags, &mut buf) {
            self.unauth_answers += 1;
            out.push(&buf[..n]);
        }
    }
}
