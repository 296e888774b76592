//! `Probe` frames (QBD-L2 type 4): discovery and the jumbo-frame probe.
//! Sans-IO: encoding and decoding only (spec: `docs/l2-protocol.md` §9).
//!
//! Probes are not authenticated (like AoE's config query): an answer only
//! says "a node with this backend identity is at this MAC". The handshake
//! that follows authenticates the node and must find the same identity,
//! so a forged answer costs a failed handshake, never a wrong backend.
//!
//! Payload, after the 56-byte QBD-L2 header (whose session fields are 0,
//! except the client epoch of an MTU probe):
//!
//! | op | name      | body                                                      |
//! |----|-----------|-----------------------------------------------------------|
//! | 1  | Query     | nonce u64                                                  |
//! | 2  | Answer    | nonce u64, backend UUID (16), MTU u16, name (u16 len + UTF-8) |
//! | 3  | MtuPing   | nonce u64, size u16, zero padding to `size` − 42 bytes    |
//! | 4  | MtuPong   | nonce u64, size u16, zero padding to `size` − 42 bytes    |
//!
//! `size` is an Ethernet payload size (an MTU): the frame is `14 + size`
//! bytes, so a ping that arrives proves the path carries that MTU one way
//! and its pong proves it the other way.

use uuid::Uuid;

use crate::engine::wire::{Frame, FrameType, Header, L2_HEADER_LEN, Mac};

/// The Ethernet broadcast address.
pub const BROADCAST: Mac = Mac::BROADCAST;
/// The MTU every Ethernet path carries.
pub const BASE_MTU: usize = 1500;

/// A decoded probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Master → broadcast: "which nodes are here?"
    Query {
        /// Echoed in the answers.
        nonce: u64,
    },
    /// Node → master.
    Answer {
        /// The query's nonce.
        nonce: u64,
        /// The node's backend identity.
        backend: Uuid,
        /// The node's interface MTU.
        mtu: u16,
        /// The node's name.
        name: String,
    },
    /// Master → node: a frame of `size` bytes of Ethernet payload.
    MtuPing {
        /// Echoed in the pong.
        nonce: u64,
        /// Ethernet payload size of this frame.
        size: u16,
    },
    /// Node → master: the answer to a ping, of the same size.
    MtuPong {
        /// The ping's nonce.
        nonce: u64,
        /// Ethernet payload size of this frame.
        size: u16,
    },
}

/// Smallest MTU a ping may probe (the header plus the body).
const MIN_PROBE: usize = L2_HEADER_LEN + 11;

impl Probe {
    /// Encodes the probe into a whole frame from `src` to `dst`;
    /// `client_epoch` marks which session an MTU probe is for. `None` if a
    /// ping/pong size is out of range or `buf` is too short.
    pub fn encode(
        &self,
        ethertype: u16,
        dst: Mac,
        src: Mac,
        client_epoch: u32,
        buf: &mut [u8],
    ) -> Option<usize> {
        let mut body = Vec::with_capacity(64);
        let mut pad_to = 0;
        match self {
            Probe::Query { nonce } => {
                body.push(1);
                body.extend_from_slice(&nonce.to_le_bytes());
            }
            Probe::Answer {
                nonce,
                backend,
                mtu,
                name,
            } => {
                body.push(2);
                body.extend_from_slice(&nonce.to_le_bytes());
                body.extend_from_slice(backend.as_bytes());
                body.extend_from_slice(&mtu.to_le_bytes());
                let name = &name.as_bytes()[..name.len().min(255)];
                body.extend_from_slice(&(name.len() as u16).to_le_bytes());
                body.extend_from_slice(name);
            }
            Probe::MtuPing { nonce, size } | Probe::MtuPong { nonce, size } => {
                body.push(if matches!(self, Probe::MtuPing { .. }) {
                    3
                } else {
                    4
                });
                body.extend_from_slice(&nonce.to_le_bytes());
                body.extend_from_slice(&size.to_le_bytes());
                let size = usize::from(*size);
                if size < MIN_PROBE {
                    return None;
                }
                pad_to = size - L2_HEADER_LEN;
            }
        }
        if body.len() < pad_to {
            body.resize(pad_to, 0);
        }
        let header = Header {
            dst,
            src,
            ethertype,
            ty: FrameType::Probe,
            flags: 0,
            client_epoch,
            server_epoch: 0,
            seq: 0,
            frag_index: 0,
            frag_count: 0,
            msg_len: 0,
            ack_cum: 0,
            ack_bits: 0,
            credit: 0,
        };
        Frame {
            header,
            payload: &body,
        }
        .encode(buf)
        .ok()
    }

    /// Decodes a probe frame's payload; `None` if it is not a valid probe.
    pub fn decode(payload: &[u8]) -> Option<Probe> {
        let (&op, rest) = payload.split_first()?;
        let nonce = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        let rest = &rest[8..];
        match op {
            1 => Some(Probe::Query { nonce }),
            2 => {
                let backend = Uuid::from_bytes(rest.get(..16)?.try_into().ok()?);
                let mtu = u16::from_le_bytes(rest.get(16..18)?.try_into().ok()?);
                let len = usize::from(u16::from_le_bytes(rest.get(18..20)?.try_into().ok()?));
                let name = std::str::from_utf8(rest.get(20..20 + len)?).ok()?;
                Some(Probe::Answer {
                    nonce,
                    backend,
                    mtu,
                    name: name.to_owned(),
                })
            }
            3 | 4 => {
                let size = u16::from_le_bytes(rest.get(..2)?.try_into().ok()?);
                // The frame must really be as large as it claims.
                if payload.len() + L2_HEADER_LEN != usize::from(size) {
                    return None;
                }
                Some(if op == 3 {
                    Probe::MtuPing { nonce, size }
                } else {
                    Probe::MtuPong { nonce, size }
                })
            }
            _ => None,
        }
    }
}

/// The probe in a whole frame, with its header, if it is one.
pub fn parse(frame: &[u8]) -> Option<(Header, Probe)> {
    let f = Frame::decode(frame).ok()?;
    if f.header.ty != FrameType::Probe {
        return None;
    }
    Some((f.header, Probe::decode(f.payload)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(p: Probe) {
        let mut buf = vec![0u8; 9100];
        let n = p
            .encode(0x88b5, BROADCAST, Mac([2, 0, 0, 0, 0, 1]), 7, &mut buf)
            .expect("encodes");
        let (h, back) = parse(&buf[..n]).expect("parses");
        assert_eq!(back, p);
        assert_eq!(h.client_epoch, 7);
        if let Probe::MtuPing { size, .. } | Probe::MtuPong { size, .. } = p {
            assert_eq!(n, 14 + usize::from(size));
        }
    }

    #[test]
    fn probes_round_trip() {
        round_trip(Probe::Query { nonce: 42 });
        round_trip(Probe::Answer {
            nonce: 9,
            backend: Uuid::from_u128(0x1234),
            mtu: 9000,
            name: "node-a".into(),
        });
        round_trip(Probe::MtuPing {
            nonce: 1,
            size: 9000,
        });
        round_trip(Probe::MtuPong {
            nonce: 1,
            size: 1500,
        });
    }

    #[test]
    fn truncated_or_lying_probes_are_refused() {
        let mut buf = vec![0u8; 9100];
        let ping = Probe::MtuPing {
            nonce: 1,
            size: 9000,
        };
        let n = ping
            .encode(0x88b5, BROADCAST, Mac([2; 6]), 1, &mut buf)
            .expect("encodes");
        let f = Frame::decode(&buf[..n]).expect("frame");
        // A ping cut short (e.g. by a smaller MTU on the way) is no proof.
        assert_eq!(Probe::decode(&f.payload[..1500]), None);
        for cut in 0..20 {
            let answer = Probe::Answer {
                nonce: 3,
                backend: Uuid::from_u128(5),
                mtu: 1500,
                name: "n".into(),
            };
            let m = answer
                .encode(0x88b5, BROADCAST, Mac([2; 6]), 0, &mut buf)
                .expect("encodes");
            let f = Frame::decode(&buf[..m]).expect("frame");
            assert_eq!(Probe::decode(&f.payload[..cut]), None, "cut at {cut}");
        }
        assert_eq!(Probe::decode(&[9, 0, 0, 0, 0, 0, 0, 0, 0]), None);
    }
}
