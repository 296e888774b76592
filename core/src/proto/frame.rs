//! The frame: a 32-byte header, the payload, a 16-byte MAC.
//!
//! | bytes  | field                                                |
//! |--------|------------------------------------------------------|
//! | 0..4   | magic `QBDN`                                         |
//! | 4      | version (1)                                          |
//! | 5      | kind ([`FrameKind`])                                 |
//! | 6..8   | opcode (u16 LE; the message type)                    |
//! | 8..10  | flags (u16 LE; bit 0 [`FLAG_DETACHED_TAIL`])         |
//! | 10..12 | covered (u16 LE; with `FLAG_DETACHED_TAIL`, else 0)  |
//! | 12..16 | payload length (u32 LE, ≤ `msg::MAX_PAYLOAD`)        |
//! | 16..24 | request id (u64 LE; a response carries its request's)|
//! | 24..32 | sequence number (u64 LE; per session and direction)  |
//!
//! then `payload length` bytes of payload, then the MAC: keyed BLAKE3 of
//! header and payload, truncated to 16 bytes, with the session's key for
//! that direction (handshake frames: see `session`).
//!
//! A frame with [`FLAG_DETACHED_TAIL`] has its MAC over the header and the
//! first `covered` payload bytes only. The rest of the payload (the tail)
//! is vouched for by checksums inside the covered bytes, which the message
//! decoder checks. Only `Response::VouchedBlocks` is sealed so (block data
//! behind the stored BLAKE3 checksums of its blocks: the node then hashes
//! nothing to answer a read); `session::Opener` refuses a detached tail on
//! any other message.

use super::ProtoError;

/// Frame magic.
pub const MAGIC: [u8; 4] = *b"QBDN";
/// Protocol version.
pub const VERSION: u8 = 1;
/// Header length.
pub const HEADER_LEN: usize = 32;
/// MAC length.
pub const MAC_LEN: usize = 16;
/// Flag: the MAC covers only the first `covered` payload bytes; the
/// tail is vouched for by checksums inside them.
pub const FLAG_DETACHED_TAIL: u16 = 1;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Handshake, client → node.
    ClientHello,
    /// Handshake, node → client.
    ServerHello,
    /// A request (payload: `msg::Request`).
    Request,
    /// A response (payload: `msg::Response`).
    Response,
    /// A kind this version does not know.
    Unknown(u8),
}

impl FrameKind {
    /// The wire byte.
    pub fn to_byte(self) -> u8 {
        match self {
            FrameKind::ClientHello => 1,
            FrameKind::ServerHello => 2,
            FrameKind::Request => 3,
            FrameKind::Response => 4,
            FrameKind::Unknown(b) => b,
        }
    }

    /// From the wire byte.
    pub fn from_byte(b: u8) -> Self {
        match b {
            1 => FrameKind::ClientHello,
            2 => FrameKind::ServerHello,
            3 => FrameKind::Request,
            4 => FrameKind::Response,
            other => FrameKind::Unknown(other),
        }
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Kind.
    pub kind: FrameKind,
    /// Opcode.
    pub opcode: u16,
    /// Flags.
    pub flags: u16,
    /// With [`FLAG_DETACHED_TAIL`]: payload bytes the MAC covers.
    pub covered: u16,
    /// Payload length.
    pub payload_len: u32,
    /// Request id.
    pub request_id: u64,
    /// Sequence number.
    pub seq: u64,
}

impl FrameHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
        b[5] = self.kind.to_byte();
        b[6..8].copy_from_slice(&self.opcode.to_le_bytes());
        b[8..10].copy_from_slice(&self.flags.to_le_bytes());
        b[10..12].copy_from_slice(&self.covered.to_le_bytes());
        b[12..16].copy_from_slice(&self.payload_len.to_le_bytes());
        b[16..24].copy_from_slice(&self.request_id.to_le_bytes());
        b[24..32].copy_from_slice(&self.seq.to_le_bytes());
        b
    }

    /// Decodes and checks magic, version and the payload bound. Does not
    /// authenticate: only `Session::open` does.
    pub fn decode(b: &[u8]) -> Result<Self, ProtoError> {
        let bad = |why: &str| Err(ProtoError::malformed("frame header", why));
        if b.len() < HEADER_LEN {
            return bad("truncated");
        }
        if b[0..4] != MAGIC {
            return bad("bad magic");
        }
        if b[4] != VERSION {
            return bad("unsupported version");
        }
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let payload_len = u32_at(12);
        if payload_len > super::msg::MAX_PAYLOAD {
            return bad("payload too long");
        }
        Ok(FrameHeader {
            kind: FrameKind::from_byte(b[5]),
            opcode: u16_at(6),
            flags: u16_at(8),
            covered: u16_at(10),
            payload_len,
            request_id: u64_at(16),
            seq: u64_at(24),
        })
    }

    /// Payload bytes the MAC covers: all of them, or `covered` with
    /// [`FLAG_DETACHED_TAIL`] (capped at the payload length).
    pub fn mac_covered(&self) -> usize {
        if self.detached() {
            (self.covered as usize).min(self.payload_len as usize)
        } else {
            self.payload_len as usize
        }
    }

    /// True when the frame has a detached tail.
    pub fn detached(&self) -> bool {
        self.flags & FLAG_DETACHED_TAIL != 0
    }

    /// Total frame length (header, payload, MAC).
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.payload_len as usize + MAC_LEN
    }
}
