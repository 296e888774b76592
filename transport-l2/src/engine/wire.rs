//! The QBD-L2 frame: an Ethernet header, a 42-byte QBD-L2 header, a payload
//! (spec: `docs/l2-protocol.md` §2).
//!
//! | bytes  | field                                                     |
//! |--------|-----------------------------------------------------------|
//! | 0..6   | destination MAC                                           |
//! | 6..12  | source MAC                                                |
//! | 12..14 | EtherType (big-endian, default `0x88B5`)                  |
//! | 14     | version (1)                                               |
//! | 15     | type ([`FrameType`])                                      |
//! | 16..18 | flags (u16 LE; bit 0: bundle, [`FLAG_BUNDLE`])            |
//! | 18..20 | payload length (u16 LE)                                   |
//! | 20..24 | client epoch (u32 LE, never 0)                            |
//! | 24..28 | server epoch (u32 LE; 0: not yet known by the client)     |
//! | 28..32 | message sequence number (u32 LE, low bits; 0 if not data) |
//! | 32..34 | fragment index (u16 LE)                                   |
//! | 34..36 | fragment count (u16 LE; 0 if not data)                    |
//! | 36..40 | message length (u32 LE; 0 if not data)                    |
//! | 40..44 | ack: cumulative (u32 LE, low bits)                        |
//! | 44..52 | ack: selective bitmap (u64 LE)                            |
//! | 52..56 | credit edge (u32 LE, low bits; node → master only)        |
//!
//! then `payload length` bytes, then zero padding up to the Ethernet
//! minimum of 60 bytes. Decoding checks the length: if it returns `Ok`, no
//! accessor panics, and encoding the result reproduces the input.

use thiserror::Error;

mod segment;
pub use segment::{FLAG_BUNDLE, SEGMENT_HEADER_LEN, Segment, Segments, segments};

/// Length of the Ethernet header (two MACs and the EtherType).
pub const ETH_HEADER_LEN: usize = 14;
/// Length of the QBD-L2 header that follows it.
pub const L2_HEADER_LEN: usize = 42;
/// Everything before the payload.
pub const HEADER_LEN: usize = ETH_HEADER_LEN + L2_HEADER_LEN;
/// Shortest Ethernet frame without FCS; shorter frames are zero-padded.
pub const MIN_FRAME_LEN: usize = 60;
/// The QBD-L2 version this code speaks.
pub const VERSION: u8 = 1;
/// The default EtherType (IEEE "local experimental 1").
pub const DEFAULT_ETHERTYPE: u16 = 0x88B5;

/// Parses an EtherType for the command line: `0x88B5` (hex) or decimal;
/// at least 0x0600 (below, the field is a length, not a type).
pub fn parse_ethertype(s: &str) -> Result<u16, String> {
    let t = s.trim();
    let v = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16),
        None => t.parse::<u16>(),
    }
    .map_err(|_| format!("{s:?} is not an EtherType (e.g. 0x88B5)"))?;
    if v < 0x0600 {
        return Err(format!("{s}: EtherTypes start at 0x0600"));
    }
    Ok(v)
}

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The broadcast address.
    pub const BROADCAST: Mac = Mac([0xff; 6]);
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl std::str::FromStr for Mac {
    type Err = String;

    /// `aa:bb:cc:dd:ee:ff` (or with `-`), case-insensitive.
    fn from_str(s: &str) -> Result<Mac, String> {
        let bad = || format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)");
        let mut m = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for b in &mut m {
            let p = parts.next().filter(|p| p.len() == 2).ok_or_else(bad)?;
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(m))
    }
}

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    /// A fragment of a request (master → node).
    Request,
    /// A fragment of a response (node → master).
    Response,
    /// Acknowledgement and credit only (either direction).
    Ack,
    /// Reserved: discovery and jumbo-frame probing (not implemented).
    Probe,
    /// "I do not know this session": a node that restarted answers a frame
    /// addressed to its previous epoch with its new one.
    Reset,
    /// A type this version does not know (ignored, counted).
    Unknown(u8),
}

impl FrameType {
    /// The wire byte.
    pub fn to_byte(self) -> u8 {
        match self {
            FrameType::Request => 1,
            FrameType::Response => 2,
            FrameType::Ack => 3,
            FrameType::Probe => 4,
            FrameType::Reset => 5,
            FrameType::Unknown(b) => b,
        }
    }

    /// From the wire byte.
    pub fn from_byte(b: u8) -> Self {
        match b {
            1 => FrameType::Request,
            2 => FrameType::Response,
            3 => FrameType::Ack,
            4 => FrameType::Probe,
            5 => FrameType::Reset,
            other => FrameType::Unknown(other),
        }
    }
}

/// A decoded header (Ethernet and QBD-L2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Destination MAC.
    pub dst: Mac,
    /// Source MAC.
    pub src: Mac,
    /// EtherType.
    pub ethertype: u16,
    /// Frame type.
    pub ty: FrameType,
    /// Flags: [`FLAG_BUNDLE`]; other bits 0, carried, not interpreted.
    pub flags: u16,
    /// The master's session epoch.
    pub client_epoch: u32,
    /// The node's epoch (0: the master has not heard from the node yet).
    pub server_epoch: u32,
    /// Message sequence number, low 32 bits.
    pub seq: u32,
    /// Fragment index.
    pub frag_index: u16,
    /// Fragment count.
    pub frag_count: u16,
    /// Length of the whole message.
    pub msg_len: u32,
    /// Every message below this sequence number is complete (low 32 bits).
    pub ack_cum: u32,
    /// Bit `i`: message `ack_cum + 1 + i` is complete.
    pub ack_bits: u64,
    /// Node → master: the master may send messages below this number.
    pub credit: u32,
}

/// A decoded frame borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The header.
    pub header: Header,
    /// The payload.
    pub payload: &'a [u8],
}

/// Why bytes are not a QBD-L2 frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WireError {
    /// Shorter than its header or than its payload length says.
    #[error("truncated frame")]
    Truncated,
    /// Bytes after the payload that are not Ethernet padding.
    #[error("trailing bytes after the payload")]
    Trailing,
    /// Another version of QBD-L2.
    #[error("unsupported QBD-L2 version {0}")]
    Version(u8),
    /// The buffer to encode into is too short, or the payload over 65 535.
    #[error("frame does not fit")]
    TooLong,
}

impl Frame<'_> {
    /// Encoded length (with padding).
    pub fn encoded_len(&self) -> usize {
        (HEADER_LEN + self.payload.len()).max(MIN_FRAME_LEN)
    }

    /// Writes the frame into `buf`; returns its length.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let payload_len = u16::try_from(self.payload.len()).map_err(|_| WireError::TooLong)?;
        let len = self.encoded_len();
        let buf = buf.get_mut(..len).ok_or(WireError::TooLong)?;
        encode_header(&self.header, payload_len, buf)?;
        let end = HEADER_LEN + self.payload.len();
        buf[HEADER_LEN..end].copy_from_slice(self.payload);
        buf[end..].fill(0);
        Ok(len)
    }

    /// Parses a frame. Does not check addresses, EtherType or epochs (the
    /// engines do) and authenticates nothing (the node protocol does, per
    /// message).
    pub fn decode(b: &[u8]) -> Result<Frame<'_>, WireError> {
        let h = b.get(..HEADER_LEN).ok_or(WireError::Truncated)?;
        if b.len() < MIN_FRAME_LEN {
            return Err(WireError::Truncated);
        }
        if h[14] != VERSION {
            return Err(WireError::Version(h[14]));
        }
        let payload_len = usize::from(u16_at(h, 18));
        let end = HEADER_LEN + payload_len;
        let payload = b.get(HEADER_LEN..end).ok_or(WireError::Truncated)?;
        let padding = &b[end..];
        let padded_ok = b.len() == MIN_FRAME_LEN && padding.iter().all(|&x| x == 0);
        if !padding.is_empty() && !padded_ok {
            return Err(WireError::Trailing);
        }
        let header = Header {
            dst: mac_at(h, 0),
            src: mac_at(h, 6),
            ethertype: u16::from_be_bytes([h[12], h[13]]),
            ty: FrameType::from_byte(h[15]),
            flags: u16_at(h, 16),
            client_epoch: u32_at(h, 20),
            server_epoch: u32_at(h, 24),
            seq: u32_at(h, 28),
            frag_index: u16_at(h, 32),
            frag_count: u16_at(h, 34),
            msg_len: u32_at(h, 36),
            ack_cum: u32_at(h, 40),
            ack_bits: u64_at(h, 44),
            credit: u32_at(h, 52),
        };
        Ok(Frame { header, payload })
    }
}

/// Writes `h` with `payload_len` into the first [`HEADER_LEN`] bytes of
/// `buf` (the payload is the caller's: [`Frame::encode`], or a bundle's
/// segments).
pub fn encode_header(h: &Header, payload_len: u16, buf: &mut [u8]) -> Result<(), WireError> {
    let buf = buf.get_mut(..HEADER_LEN).ok_or(WireError::TooLong)?;
    buf[0..6].copy_from_slice(&h.dst.0);
    buf[6..12].copy_from_slice(&h.src.0);
    buf[12..14].copy_from_slice(&h.ethertype.to_be_bytes());
    buf[14] = VERSION;
    buf[15] = h.ty.to_byte();
    buf[16..18].copy_from_slice(&h.flags.to_le_bytes());
    buf[18..20].copy_from_slice(&payload_len.to_le_bytes());
    buf[20..24].copy_from_slice(&h.client_epoch.to_le_bytes());
    buf[24..28].copy_from_slice(&h.server_epoch.to_le_bytes());
    buf[28..32].copy_from_slice(&h.seq.to_le_bytes());
    buf[32..34].copy_from_slice(&h.frag_index.to_le_bytes());
    buf[34..36].copy_from_slice(&h.frag_count.to_le_bytes());
    buf[36..40].copy_from_slice(&h.msg_len.to_le_bytes());
    buf[40..44].copy_from_slice(&h.ack_cum.to_le_bytes());
    buf[44..52].copy_from_slice(&h.ack_bits.to_le_bytes());
    buf[52..56].copy_from_slice(&h.credit.to_le_bytes());
    Ok(())
}

/// Length of one fragment acknowledgement in an `Ack` frame's payload.
pub const FRAG_ACK_LEN: usize = 16;

/// Fragment-level acknowledgement of a partly received message, carried
/// in `Ack` payloads (16 bytes each: seq u32, base u16, reserved u16 = 0,
/// bits u64): every fragment below `base` is received, and fragment
/// `base + i` is if bit `i` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragAck {
    /// Message number, low 32 bits.
    pub seq: u32,
    /// First fragment not received.
    pub base: u16,
    /// Fragments `base + 1 ..` received (bit 0 is `base`, always clear).
    pub bits: u64,
}

impl FragAck {
    /// Writes `acks` into `buf` as far as they fit; returns the length.
    pub fn encode_all(acks: &[FragAck], buf: &mut [u8]) -> usize {
        let mut n = 0;
        for (a, out) in acks.iter().zip(buf.chunks_exact_mut(FRAG_ACK_LEN)) {
            out[0..4].copy_from_slice(&a.seq.to_le_bytes());
            out[4..6].copy_from_slice(&a.base.to_le_bytes());
            out[6..8].fill(0);
            out[8..16].copy_from_slice(&a.bits.to_le_bytes());
            n += FRAG_ACK_LEN;
        }
        n
    }

    /// Parses an `Ack` payload; `None` if it is not whole entries.
    pub fn decode_all(payload: &[u8]) -> Option<impl Iterator<Item = FragAck> + '_> {
        if !payload.len().is_multiple_of(FRAG_ACK_LEN) {
            return None;
        }
        Some(payload.chunks_exact(FRAG_ACK_LEN).map(|e| FragAck {
            seq: u32_at(e, 0),
            base: u16_at(e, 4),
            bits: u64_at(e, 8),
        }))
    }
}

/// The frame's (source MAC, client epoch) without a full decode: how a node
/// routes a frame to the [`super::Server`] of its session.
pub fn session_of(b: &[u8]) -> Option<(Mac, u32)> {
    let h = b.get(..HEADER_LEN)?;
    Some((mac_at(h, 6), u32_at(h, 20)))
}

// Callers pass slices at least as long as the constant offsets they read
// (a checked header, or a 16-byte fragment ack), so these cannot panic.
fn mac_at(h: &[u8], i: usize) -> Mac {
    let mut m = [0u8; 6];
    m.copy_from_slice(&h[i..i + 6]);
    Mac(m)
}

fn u16_at(h: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([h[i], h[i + 1]])
}

fn u32_at(h: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]])
}

fn u64_at(h: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&h[i..i + 8]);
    u64::from_le_bytes(a)
}

/// Extends the low 32 bits `low` of a sequence number to the 64-bit value
/// nearest to `reference` (as QUIC decodes packet numbers). Engines keep
/// 64-bit numbers; the wire carries 32 bits, so a session never wraps in
/// practice and comparisons stay plain integer comparisons.
pub fn extend_seq(reference: u64, low: u32) -> u64 {
    let candidate = (reference & !0xffff_ffff) | u64::from(low);
    let half = 1u64 << 31;
    if candidate + half < reference && candidate < u64::MAX - (1 << 32) {
        candidate + (1 << 32)
    } else if candidate > reference + half && candidate >= 1 << 32 {
        candidate - (1 << 32)
    } else {
        candidate
    }
}

#[cfg(test)]
mod tests;
