//! Admission on the node: which frames of unknown sessions get state, and
//! how the session table keeps authenticated sessions safe from everyone
//! else (spec: `docs/l2-protocol.md` §7a).
//!
//! - [`classify`]: what a frame of a session the node does not hold is. Only
//!   an [`Unknown::Opening`] frame (message 1, whole in one plain `Request`
//!   frame) may lead to state, and only after the caller checked its
//!   `ClientHello` under the cluster key — statelessly, before anything is
//!   stored. A data frame addressed to this node's epoch is answered with
//!   one `Reset` carrying [`FLAG_UNKNOWN_SESSION`] ([`reset_frame`]): the
//!   master then re-handshakes.
//! - [`Table`]: two bounded maps. *Pending* sessions (hello verified, no
//!   sealed request opened yet) and *authenticated* ones (a sealed request
//!   opened under the session keys: the peer holds the cluster key and the
//!   session is live). A full pending map evicts its least recently heard
//!   pending entry; a full authenticated map evicts its least recently
//!   heard authenticated entry, and only when another session proves the
//!   key. No pending entry ever displaces an authenticated one.
//! - [`opening_frame`]: the frame a master's first message travels in
//!   (for tests and the torture harness).
//! - [`Budget`]: a token bucket for answers to unauthenticated senders
//!   (empty hello refusals, resets), each sent once and never kept for
//!   retransmission, so a forger gets at most one small frame per frame it
//!   sends, and no more than the budget overall.
//!
//! Sans-IO: `now` is an input; no clocks, no sockets.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::wire::{FLAG_BUNDLE, Frame, FrameType, Header, Mac, WireError};
use super::{Config, Server, ServerEvent};

/// `Reset` flag: the node (at the frame's server epoch, its current one)
/// has no session for (source MAC, client epoch); re-handshake.
pub const FLAG_UNKNOWN_SESSION: u16 = 0x0002;

/// What a frame of a session the node does not hold is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    /// Message 1 whole in one plain `Request` frame, to no other node
    /// epoch: a `ClientHello` to check before keeping anything.
    Opening,
    /// A data or ack frame of a session this incarnation forgot (evicted,
    /// idle): answer a `Reset` with [`FLAG_UNKNOWN_SESSION`].
    Forgotten,
    /// A frame for another incarnation of this node: answer a `Reset`.
    Restarted,
    /// Anything else: drop silently.
    Drop,
}

/// The whole Ethernet frame that opens a session: message 1 (`hello`,
/// a `ClientHello`) unfragmented in one plain `Request` frame to a node not
/// heard from yet (server epoch 0), the shape [`classify`] calls
/// [`Unknown::Opening`]. For tests and the torture harness, which send such
/// frames from hosts that hold no session.
pub fn opening_frame(
    ethertype: u16,
    dst: Mac,
    src: Mac,
    client_epoch: u32,
    hello: &[u8],
) -> Result<Vec<u8>, WireError> {
    let header = Header {
        dst,
        src,
        ethertype,
        ty: FrameType::Request,
        flags: 0,
        client_epoch,
        server_epoch: 0,
        seq: 1,
        frag_index: 0,
        frag_count: 1,
        msg_len: u32::try_from(hello.len()).map_err(|_| WireError::TooLong)?,
        ack_cum: 1,
        ack_bits: 0,
        credit: 0,
    };
    let frame = Frame {
        header,
        payload: hello,
    };
    let mut buf = vec![0u8; frame.encoded_len()];
    let len = frame.encode(&mut buf)?;
    buf.truncate(len);
    Ok(buf)
}

/// Classifies `h`, a frame for no session held, at node epoch `ours`.
pub fn classify(h: &Header, ours: u32) -> Unknown {
    let data = matches!(h.ty, FrameType::Request | FrameType::Ack);
    let opening = h.ty == FrameType::Request
        && h.flags & FLAG_BUNDLE == 0
        && h.seq == 1
        && (h.frag_index, h.frag_count) == (0, 1)
        && (h.server_epoch == 0 || h.server_epoch == ours);
    match h.server_epoch {
        _ if opening => Unknown::Opening,
        0 => Unknown::Drop,
        e if data && e == ours => Unknown::Forgotten,
        _ if data => Unknown::Restarted,
        _ => Unknown::Drop,
    }
}

/// Writes the one `Reset` that answers `h` (from the node at `local`,
/// epoch `ours`), with `flags`; returns its length.
pub fn reset_frame(h: &Header, local: Mac, ours: u32, flags: u16, buf: &mut [u8]) -> Option<usize> {
    let header = Header {
        dst: h.src,
        src: local,
        ty: FrameType::Reset,
        flags,
        server_epoch: ours,
        seq: 0,
        frag_index: 0,
        frag_count: 0,
        msg_len: 0,
        ack_cum: 0,
        ack_bits: 0,
        credit: 0,
        ..*h
    };
    Frame {
        header,
        payload: &[],
    }
    .encode(buf)
    .ok()
}

/// Writes the one frame that answers the opening `frame` with `message`
/// (a `ServerHello`, or empty for a refused hello): a throwaway engine
/// session builds it and is dropped, so nothing is kept or retransmitted.
pub fn answer_once(
    cfg: &Config,
    local: Mac,
    frame: &[u8],
    message: Vec<u8>,
    buf: &mut [u8],
) -> Option<usize> {
    let h = Frame::decode(frame).ok()?.header;
    let mut server = Server::new(cfg.clone(), local, h.src, h.client_epoch);
    let now = Instant::now();
    server.handle_frame(now, frame);
    let ServerEvent::Request { id, .. } = server.poll_event()?;
    server.respond(now, id, message).ok()?;
    server.poll_transmit(now, buf)
}

/// A session entry and when its peer was last heard.
#[derive(Debug)]
struct Entry<V> {
    value: V,
    seen: Instant,
}

/// Pending and authenticated sessions, bounded separately (module doc).
#[derive(Debug)]
pub struct Table<K, V> {
    authed: HashMap<K, Entry<V>>,
    pending: HashMap<K, Entry<V>>,
    max_authed: usize,
    max_pending: usize,
}

/// What [`Table::sweep`] removes.
#[derive(Debug, Clone, Copy)]
pub struct Ages {
    /// A pending session heard from no later than this ago is kept.
    pub pending: Duration,
    /// An authenticated session likewise (if it is not busy).
    pub authed: Duration,
}

impl<K: Copy + Eq + Hash, V> Table<K, V> {
    /// At most `max_authed` authenticated and `max_pending` pending
    /// sessions (each at least 1).
    pub fn new(max_authed: usize, max_pending: usize) -> Self {
        Table {
            authed: HashMap::new(),
            pending: HashMap::new(),
            max_authed: max_authed.max(1),
            max_pending: max_pending.max(1),
        }
    }

    /// The session `k`, either kind.
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.entry_mut(k).map(|e| &mut e.value)
    }

    /// Whether `k` is held (either kind).
    pub fn contains(&self, k: &K) -> bool {
        self.authed.contains_key(k) || self.pending.contains_key(k)
    }

    /// Whether `k` is an authenticated session.
    pub fn is_authenticated(&self, k: &K) -> bool {
        self.authed.contains_key(k)
    }

    /// Records that `k`'s peer was heard at `now`.
    pub fn touch(&mut self, k: &K, now: Instant) {
        if let Some(e) = self.entry_mut(k) {
            e.seen = now;
        }
    }

    /// Adds the pending session `k` (replacing one with that key); returns
    /// the pending session evicted to make room, if any.
    pub fn insert_pending(&mut self, k: K, value: V, now: Instant) -> Option<V> {
        let evicted = if self.pending.len() >= self.max_pending && !self.pending.contains_key(&k) {
            oldest(&self.pending).and_then(|o| self.pending.remove(&o))
        } else {
            None
        };
        self.pending.insert(k, Entry { value, seen: now });
        evicted.map(|e| e.value)
    }

    /// Makes the pending session `k` authenticated; returns the
    /// authenticated session evicted to make room, if any.
    pub fn promote(&mut self, k: &K) -> Option<V> {
        let e = self.pending.remove(k)?;
        let evicted = if self.authed.len() >= self.max_authed {
            oldest(&self.authed).and_then(|o| self.authed.remove(&o))
        } else {
            None
        };
        self.authed.insert(*k, e);
        evicted.map(|e| e.value)
    }

    /// Removes `k` (either kind).
    pub fn remove(&mut self, k: &K) -> Option<V> {
        let e = self.authed.remove(k).or_else(|| self.pending.remove(k))?;
        Some(e.value)
    }

    /// Removes the sessions not heard within `ages` whose `busy` is false.
    pub fn sweep(&mut self, now: Instant, ages: Ages, busy: impl Fn(&V) -> bool) -> Vec<V> {
        let stale = |map: &HashMap<K, Entry<V>>, age: Duration| -> Vec<K> {
            map.iter()
                .filter(|(_, e)| now.saturating_duration_since(e.seen) > age && !busy(&e.value))
                .map(|(k, _)| *k)
                .collect()
        };
        let (p, a) = (
            stale(&self.pending, ages.pending),
            stale(&self.authed, ages.authed),
        );
        let mut out: Vec<V> = Vec::new();
        out.extend(
            p.iter()
                .filter_map(|k| self.pending.remove(k))
                .map(|e| e.value),
        );
        out.extend(
            a.iter()
                .filter_map(|k| self.authed.remove(k))
                .map(|e| e.value),
        );
        out
    }

    /// Authenticated sessions held.
    pub fn authenticated(&self) -> usize {
        self.authed.len()
    }

    /// Pending sessions held.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Every session: (key, value, authenticated).
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V, bool)> {
        let a = self.authed.iter().map(|(k, e)| (k, &e.value, true));
        a.chain(self.pending.iter().map(|(k, e)| (k, &e.value, false)))
    }

    /// Every session's key.
    pub fn keys(&self) -> Vec<K> {
        self.authed
            .keys()
            .chain(self.pending.keys())
            .copied()
            .collect()
    }

    fn entry_mut(&mut self, k: &K) -> Option<&mut Entry<V>> {
        match self.authed.get_mut(k) {
            Some(e) => Some(e),
            None => self.pending.get_mut(k),
        }
    }
}

/// The least recently heard key of `map`.
fn oldest<K: Copy, V>(map: &HashMap<K, Entry<V>>) -> Option<K> {
    map.iter().min_by_key(|(_, e)| e.seen).map(|(k, _)| *k)
}

/// A token bucket: `burst` answers at once, refilled at `per_second`.
#[derive(Debug, Clone)]
pub struct Budget {
    tokens: f64,
    burst: f64,
    per_second: f64,
    at: Option<Instant>,
    /// Answers refused for want of tokens.
    pub refused: u64,
}

impl Budget {
    /// A full bucket.
    pub fn new(burst: u32, per_second: u32) -> Self {
        Budget {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_second: f64::from(per_second),
            at: None,
            refused: 0,
        }
    }

    /// Takes a token at `now` if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = self
            .at
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        self.at = Some(now);
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.refused += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests;
