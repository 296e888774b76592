//! The sans-IO L2 protocol engine (spec: `docs/l2-protocol.md`).
//!
//! It carries node-protocol messages — already sealed, with their own MAC —
//! between a master ([`Client`], one per node) and a node ([`Server`], one
//! per master session) in Ethernet frames. Messages are opaque bytes here:
//! authentication stays per message, in the node protocol.
//!
//! No sockets, clocks, threads or randomness: the driver passes `now`,
//! hands received frames in and takes frames to send out; epochs come from
//! [`Config`].
//!
//! # Calling contract (both engines)
//!
//! - **Inputs**: [`Client::send`] / [`Server::respond`] (a message to
//!   carry), `handle_frame(now, bytes)` (a received frame; anything, even
//!   garbage: it is checked and dropped if bad), `handle_timeout(now)` (call
//!   when `now` ≥ `poll_timeout()`; calling it early is harmless).
//! - **Outputs**, polled after every input until they return `None`:
//!   `poll_event()` (completed messages and failures), then
//!   `poll_transmit(now, buf)` (one frame per call into `buf`, which must
//!   hold [`Config::frame_capacity`] bytes), then `poll_timeout()` (when to
//!   call `handle_timeout` next; it may change after any input).
//! - **Order on a node**: drain `poll_event` and authenticate each request
//!   *before* the next `poll_transmit`: a request that fails its MAC must be
//!   [`Server::reject`]ed before its acknowledgement goes out, so that the
//!   master retransmits the genuine one.
//! - `now` never goes backwards.
//!
//! # Invariants
//!
//! - A request is delivered to the node at most once per session, however
//!   often it is retransmitted; a retransmission after the response was
//!   sent gets the stored response again.
//! - Every [`Client::send`] ends in exactly one [`ClientEvent::Delivered`]
//!   or [`ClientEvent::Failed`].
//! - At most [`Config::max_in_flight`] (≤ 64) messages are unfinished on the
//!   wire, so the node protocol's 64-frame replay window never sees a
//!   message too far behind the newest.

pub mod admission;
mod cc;
mod client;
mod config;
mod recv;
mod send;
mod server;
mod timer;
pub mod wire;

pub use client::{Client, ClientEvent, FailReason, MsgId};
pub use config::{Config, Stats};
pub use server::{ReqId, Server, ServerEvent};
pub use wire::{DEFAULT_ETHERTYPE, Mac};

/// Most fragment acknowledgements in one `Ack` frame.
const MAX_FRAG_ACKS: usize = 16;

/// Encodes the fragment acknowledgements of partly received messages
/// (`(seq, reassembly)`) into `buf`; returns the payload length.
fn encode_frag_acks<'a>(
    partial: impl Iterator<Item = (u64, &'a recv::Reassembly)>,
    buf: &mut [u8; MAX_FRAG_ACKS * wire::FRAG_ACK_LEN],
) -> usize {
    let mut acks = [wire::FragAck {
        seq: 0,
        base: 0,
        bits: 0,
    }; MAX_FRAG_ACKS];
    let mut n = 0;
    for ((seq, r), slot) in partial.zip(acks.iter_mut()) {
        let (base, bits) = r.frag_ack();
        *slot = wire::FragAck {
            seq: seq as u32,
            base,
            bits,
        };
        n += 1;
    }
    wire::FragAck::encode_all(&acks[..n], buf)
}

/// Encodes the frame `poll_transmit` sends, on either side: fragment `frag`
/// of a queued message under header `h`, or, without one, an `Ack` frame
/// carrying the fragment acknowledgements of `partial`.
fn encode_outgoing<'a>(
    mut h: wire::Header,
    frag: Option<&send::FragOut>,
    send: &send::SendQueue,
    partial: impl Iterator<Item = (u64, &'a recv::Reassembly)>,
    buf: &mut [u8],
) -> Option<usize> {
    let mut acks = [0u8; MAX_FRAG_ACKS * wire::FRAG_ACK_LEN];
    let payload = match frag {
        None => {
            let n = encode_frag_acks(partial, &mut acks);
            &acks[..n]
        }
        Some(f) => {
            h.seq = f.seq as u32;
            h.frag_index = f.index;
            h.frag_count = f.count;
            h.msg_len = f.msg_len;
            send.data(f.seq).get(f.range.clone()).unwrap_or(&[])
        }
    };
    wire::Frame { header: h, payload }.encode(buf).ok()
}

/// Most duplicates one frame reports (flags bits 8..16).
const DUPLICATES_MAX: u32 = 255;

/// The flags that report `unreported` duplicates (as many as fit).
fn report_duplicates(unreported: u32) -> u16 {
    (unreported.min(DUPLICATES_MAX) as u16) << 8
}

/// The duplicates a received frame's flags report.
fn duplicates_reported(flags: u16) -> u32 {
    u32::from(flags >> 8)
}

/// Most segments in one bundle. Small on purpose: a whole window in one
/// frame makes the node answer all of it before the master sees any answer
/// (the two sides then work in turn; see `af_packet::SESSION_BATCH`).
const MAX_SEGMENTS: usize = 8;

/// The fragments of one data frame, into `out`: `first`, then, if
/// `cfg.bundle`, as many more as fit beside it as segments of a bundle.
fn gather(
    send: &mut send::SendQueue,
    now: std::time::Instant,
    first: send::FragOut,
    may_start: impl Fn(u64) -> bool,
    cfg: &Config,
    out: &mut Vec<send::FragOut>,
) {
    out.clear();
    let seg = wire::SEGMENT_HEADER_LEN;
    let max = cfg.max_payload();
    let mut used = seg + first.range.len();
    out.push(first);
    while cfg.bundle && used + seg < max && out.len() < MAX_SEGMENTS {
        let room = max - used - seg;
        let Some(f) = send.next_fragment_within(now, &may_start, room) else {
            break;
        };
        used += seg + f.range.len();
        out.push(f);
    }
}

/// The data frame that starts with `first` under header `h`: the fragments
/// that fit beside it gathered, encoded, and counted in `stats`. Shared by
/// both engines' `poll_transmit`.
#[allow(clippy::too_many_arguments)]
fn data_frame(
    send: &mut send::SendQueue,
    now: std::time::Instant,
    first: send::FragOut,
    may_start: impl Fn(u64) -> bool,
    cfg: &Config,
    h: wire::Header,
    buf: &mut [u8],
    stats: &mut Stats,
) -> Option<usize> {
    let mut frags = send.take_scratch();
    gather(send, now, first, may_start, cfg, &mut frags);
    let n = encode_data(h, &frags, send, buf);
    stats.bundles_sent += u64::from(frags.len() > 1);
    stats.fragments_sent += frags.len() as u64;
    send.put_scratch(frags);
    n
}

/// Encodes a data frame carrying `frags` under header `h`: a plain frame
/// for one fragment, a bundle for several.
fn encode_data(
    mut h: wire::Header,
    frags: &[send::FragOut],
    send: &send::SendQueue,
    buf: &mut [u8],
) -> Option<usize> {
    if let [only] = frags {
        return encode_outgoing(h, Some(only), send, std::iter::empty(), buf);
    }
    let mut at = wire::HEADER_LEN;
    for f in frags {
        let data = send.data(f.seq).get(f.range.clone())?;
        let len = u16::try_from(data.len()).ok()?;
        let seg = wire::Segment::encode_header(f.seq as u32, f.index, f.count, f.msg_len, len);
        buf.get_mut(at..at + seg.len())?.copy_from_slice(&seg);
        at += seg.len();
        buf.get_mut(at..at + data.len())?.copy_from_slice(data);
        at += data.len();
    }
    h.flags |= wire::FLAG_BUNDLE;
    let payload_len = u16::try_from(at - wire::HEADER_LEN).ok()?;
    wire::encode_header(&h, payload_len, buf).ok()?;
    Some(at)
}

/// Why a message cannot be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Longer than [`Config::max_message`] or than 65 535 fragments.
    #[error("message of {0} bytes is too long")]
    TooLong(usize),
}
