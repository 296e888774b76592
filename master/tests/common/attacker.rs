//! A host on the segment that speaks QBD-L2 by hand, to prove what a node does with untrusted
//! frames: an `AF_PACKET` socket opened in the attacker's namespace and a sans-IO engine
//! [`Client`] driven from the test thread (no poller, no tokio).
//!
//! With the real cluster key it is a genuine client: message 1 of its L2 session is the
//! node-protocol `ClientHello` and the node's answer the `ServerHello`; later messages are sealed
//! `Request` frames. Next to that it injects hand-built frames ([`Attacker::inject`]) at one
//! sequence number its engine has not used yet: messages the node must reject and forget
//! (`Server::reject`), so the same number can carry the next one, and finally a genuine message
//! sent through the engine, which therefore travels the same FIFO path after all of them.
//!
//! The message builders produce each class of rejection with certainty:
//! [`malformed_messages`] (random bytes that never start with the frame magic, at least a header
//! long: "bad magic"), [`wrong_key_pings`] (well-formed frames sealed under a session of another
//! cluster key: bad MAC), [`garbage_frames`] (Ethernet frames of the QBD EtherType that do not
//! decode as QBD-L2).

use std::time::{Duration, Instant};

use qbd_core::proto::ClusterKey;
use qbd_core::proto::frame::FrameKind;
use qbd_core::proto::msg::{Request, Response};
use qbd_core::proto::session::{self, ClientHandshake, NodeHello, Session};
use qbd_netlab::Ns;
use qbd_transport_l2::af_packet::PacketSocket;
use qbd_transport_l2::engine::wire::{Frame, FrameType, HEADER_LEN, Header, extend_seq};
use qbd_transport_l2::engine::{Client, ClientEvent, Config, Mac};

use super::data::Prng;
use super::l2::{ETHERTYPE, IFACE};

/// How long one genuine exchange may take (longer than the engine's 5 s deadline, so a lost
/// message shows as the engine's failure, not as this bound).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// The attacker's engine, socket and (after [`Attacker::handshake`]) node-protocol session.
#[derive(Debug)]
pub struct Attacker {
    sock: PacketSocket,
    client: Client,
    cfg: Config,
    node: Mac,
    session: Option<Session>,
    buf: Vec<u8>,
    /// The highest message number the engine has used.
    last_seq: u64,
    next_request_id: u64,
    /// A number whose acknowledgement by the node would break the contract, and whether one
    /// arrived.
    watched: Option<u64>,
    watched_acked: bool,
}

impl Attacker {
    /// An engine at `ns`'s `eth0` for the node at `node`, with client epoch `epoch`.
    pub fn open(ns: &Ns, node: [u8; 6], epoch: u32) -> Attacker {
        let sock = ns
            .run(|| PacketSocket::open(IFACE, ETHERTYPE))
            .unwrap_or_else(|e| panic!("AF_PACKET socket in {}: {e}", ns.name()));
        let cfg = Config {
            ethertype: ETHERTYPE,
            mtu: sock.mtu(),
            epoch,
            ..Config::default()
        };
        let client = Client::new(cfg.clone(), Mac(sock.mac()), Mac(node));
        Attacker {
            buf: vec![0u8; cfg.frame_capacity()],
            sock,
            client,
            cfg,
            node: Mac(node),
            session: None,
            last_seq: 0,
            next_request_id: 1,
            watched: None,
            watched_acked: false,
        }
    }

    /// This host's MAC.
    pub fn mac(&self) -> [u8; 6] {
        self.sock.mac()
    }

    /// The L2 session's client epoch.
    pub fn epoch(&self) -> u32 {
        self.cfg.epoch
    }

    /// The node-protocol handshake as message 1 of the L2 session; panics unless the node
    /// answers with a `ServerHello` that verifies under `key`.
    pub fn handshake(&mut self, key: &ClusterKey, nonce: [u8; 32]) -> NodeHello {
        let (hs, hello) = ClientHandshake::start(key, nonce, "attacker");
        let reply = self.exchange(hello);
        assert!(!reply.is_empty(), "the node refused a genuine ClientHello");
        let (session, node) = hs.finish(&reply).expect("the ServerHello verifies");
        self.session = Some(session);
        node
    }

    /// A genuine `Ping`, answered by a `Pong` that verifies; returns the sealed request bytes.
    pub fn ping(&mut self) -> Vec<u8> {
        let session = self.session.as_mut().expect("handshake first");
        let mut payload = Vec::new();
        Request::Ping.encode(&mut payload);
        let mut sealed = Vec::new();
        let id = self.next_request_id;
        self.next_request_id += 1;
        session.seal(
            FrameKind::Request,
            Request::Ping.opcode(),
            id,
            &payload,
            &mut sealed,
        );
        let reply = self.exchange(sealed.clone());
        let session = self.session.as_mut().expect("handshake first");
        let (h, body) = session.open(&reply).expect("the Pong verifies");
        assert_eq!((h.kind, h.request_id), (FrameKind::Response, id));
        assert_eq!(Response::decode(h.opcode, body), Ok(Response::Pong));
        sealed
    }

    /// The number the engine's next message will carry: unused so far.
    pub fn next_seq(&self) -> u64 {
        self.last_seq + 1
    }

    /// Sends each of `messages` as a one-fragment `Request` frame at sequence number `seq`
    /// (the session's epochs, acknowledging every response received), then the raw `frames`,
    /// in this order, in batches. Any acknowledgement of `seq` by the node from here until the
    /// engine itself sends `seq` breaks the node's contract (a rejected message must not be
    /// acknowledged) and is recorded for [`Attacker::rejected_seq_was_acked`].
    pub fn inject(&mut self, seq: u64, messages: &[Vec<u8>], frames: &[Vec<u8>]) {
        let server_epoch = self
            .client
            .server_epoch()
            .expect("the node's epoch is known");
        assert_eq!(
            self.client.unfinished(),
            0,
            "inject while the engine is idle"
        );
        let mut out: Vec<Vec<u8>> = messages
            .iter()
            .map(|m| self.request_frame(seq, server_epoch, m))
            .collect();
        out.extend(frames.iter().cloned());
        self.watched = Some(seq);
        for batch in out.chunks(16) {
            let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
            let sent = self.sock.send_batch(&refs).expect("send injected frames");
            assert_eq!(sent, batch.len(), "every injected frame was sent");
            self.pump(); // keep taking the node's frames while injecting
        }
    }

    /// Whether the node acknowledged the injected sequence number before the engine sent a
    /// genuine message with it.
    pub fn rejected_seq_was_acked(&self) -> bool {
        self.watched_acked
    }

    /// Frames and counters of the attacker's engine, for messages.
    pub fn engine_stats(&self) -> String {
        format!("{:?}", self.client.stats())
    }

    fn request_frame(&self, seq: u64, server_epoch: u32, message: &[u8]) -> Vec<u8> {
        let header = Header {
            dst: self.node,
            src: Mac(self.sock.mac()),
            ethertype: ETHERTYPE,
            ty: FrameType::Request,
            flags: 0,
            client_epoch: self.cfg.epoch,
            server_epoch,
            seq: seq as u32,
            frag_index: 0,
            frag_count: 1,
            msg_len: message.len() as u32,
            // Nothing is unfinished, so the engine's floor is `seq` itself.
            ack_cum: seq as u32,
            ack_bits: 0,
            credit: 0,
        };
        let frame = Frame {
            header,
            payload: message,
        };
        let mut buf = vec![0u8; frame.encoded_len()];
        let n = frame
            .encode(&mut buf)
            .expect("an injected message fits one frame");
        buf.truncate(n);
        buf
    }

    /// Sends `message` through the engine and drives it until its outcome; panics unless it is
    /// delivered.
    fn exchange(&mut self, message: Vec<u8>) -> Vec<u8> {
        let id = self
            .client
            .send(Instant::now(), message)
            .expect("message fits");
        assert_eq!(
            id.0,
            self.last_seq + 1,
            "the engine numbers messages in order"
        );
        self.last_seq = id.0;
        let deadline = Instant::now() + EXCHANGE_TIMEOUT;
        while Instant::now() < deadline {
            // Only one message is ever outstanding: its outcome is the only possible event.
            if let Some(event) = self.pump().into_iter().next() {
                match event {
                    ClientEvent::Delivered { id: got, response } if got == id => return response,
                    ClientEvent::Failed { id: got, why } if got == id => {
                        panic!("message {} failed: {why:?} ({})", id.0, self.engine_stats())
                    }
                    other => panic!("unexpected engine event {other:?}"),
                }
            }
        }
        panic!(
            "no outcome for message {} within {EXCHANGE_TIMEOUT:?} ({})",
            id.0,
            self.engine_stats()
        );
    }

    /// One round: received frames into the engine, due timers, events out, frames out. Waits a
    /// little when there was nothing to do (the socket does not block).
    fn pump(&mut self) -> Vec<ClientEvent> {
        let now = Instant::now();
        let (client, node) = (&mut self.client, self.node);
        let (watched, acked) = (self.watched, &mut self.watched_acked);
        let received = self
            .sock
            .recv_batch(|f| {
                if let Some(seq) = watched {
                    *acked |= acknowledges(f, node, seq);
                }
                client.handle_frame(now, f);
            })
            .expect("receive");
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client.handle_timeout(now);
        }
        let events: Vec<ClientEvent> = std::iter::from_fn(|| self.client.poll_event()).collect();
        let mut frames = Vec::new();
        while let Some(n) = self.client.poll_transmit(now, &mut self.buf) {
            frames.push(self.buf[..n].to_vec());
        }
        if frames.iter().any(|f| sends(f, self.watched)) {
            self.watched = None; // the engine's own message at that number is on its way
        }
        if !frames.is_empty() {
            let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            self.sock.send_batch(&refs).expect("send");
        }
        if received == 0 && events.is_empty() && frames.is_empty() {
            std::thread::sleep(Duration::from_micros(100));
        }
        events
    }
}

/// Whether `frame` (from `node`) acknowledges message `seq`.
fn acknowledges(frame: &[u8], node: Mac, seq: u64) -> bool {
    let Ok(f) = Frame::decode(frame) else {
        return false;
    };
    let h = f.header;
    if h.src != node {
        return false;
    }
    let cum = extend_seq(seq, h.ack_cum);
    cum > seq || (seq > cum && seq - cum - 1 < 64 && h.ack_bits & (1 << (seq - cum - 1)) != 0)
}

/// Whether `frame` is a request frame carrying message `seq`.
fn sends(frame: &[u8], seq: Option<u64>) -> bool {
    let (Some(seq), Ok(f)) = (seq, Frame::decode(frame)) else {
        return false;
    };
    f.header.ty == FrameType::Request && u64::from(f.header.seq) == seq & 0xffff_ffff
}

/// `n` messages of random bytes, 32 to 160 long, whose first byte is never the `Q` of the frame
/// magic `QBDN`: each fails the node protocol's header check ("bad magic") with certainty.
pub fn malformed_messages(seed: u64, n: usize) -> Vec<Vec<u8>> {
    let mut rng = Prng::new(seed);
    (0..n)
        .map(|_| {
            let len = 32 + (rng.next_u64() % 129) as usize;
            let mut m = vec![0u8; len];
            rng.fill(&mut m);
            if m[0] == b'Q' {
                m[0] = b'q';
            }
            m
        })
        .collect()
}

/// `n` well-formed `Ping` frames sealed under a session derived from `wrong_key` (a local
/// handshake with itself): they decode and have the right length, and fail the MAC.
pub fn wrong_key_pings(wrong_key: &ClusterKey, n: usize) -> Vec<Vec<u8>> {
    let (hs, hello) = ClientHandshake::start(wrong_key, [0x5a; 32], "forger");
    let me = NodeHello {
        backend: uuid::Uuid::from_bytes([0x77; 16]),
        name: "forged-node".to_owned(),
    };
    let (_, _, reply) = session::accept(wrong_key, [0xa5; 32], &me, &hello).expect("same key");
    let (mut session, _) = hs.finish(&reply).expect("same key");
    let mut payload = Vec::new();
    Request::Ping.encode(&mut payload);
    (0..n)
        .map(|i| {
            let mut sealed = Vec::new();
            let (op, id) = (Request::Ping.opcode(), 1000 + i as u64);
            session.seal(FrameKind::Request, op, id, &payload, &mut sealed);
            sealed
        })
        .collect()
}

/// Ethernet frames from `src` to `dst` of the QBD EtherType, with `epoch` where a client epoch
/// goes, that do not decode as QBD-L2, in four kinds (cycled to make `n`): another version, a
/// payload length beyond the frame, bytes after the payload that are not padding, and a frame
/// shorter than the header.
pub fn garbage_frames(dst: [u8; 6], src: [u8; 6], epoch: u32, n: usize) -> Vec<Vec<u8>> {
    let mut valid = vec![0u8; HEADER_LEN];
    valid[..6].copy_from_slice(&dst);
    valid[6..12].copy_from_slice(&src);
    valid[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    valid[14] = 1; // version
    valid[15] = 1; // Request
    valid[20..24].copy_from_slice(&epoch.to_le_bytes());
    (0..n)
        .map(|i| {
            let mut f = valid.clone();
            f.resize(100, 0);
            match i % 4 {
                0 => f[14] = 9,                                         // version
                1 => f[18..20].copy_from_slice(&1000u16.to_le_bytes()), // truncated
                2 => f[99] = 0xee,                                      // trailing
                _ => f.truncate(HEADER_LEN - 10),                       // short
            }
            assert!(Frame::decode(&f).is_err(), "garbage frame {i} decodes");
            f
        })
        .collect()
}
