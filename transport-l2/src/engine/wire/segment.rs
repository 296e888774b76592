//! Bundles: several data segments in one frame (spec:
//! `docs/l2-protocol.md` §2, "Bundles").
//!
//! A `Request` or `Response` frame with [`FLAG_BUNDLE`] set carries 0 in
//! its own sequence and fragment fields; its payload is two or more
//! segments, each a 16-byte segment header followed by its bytes:
//!
//! | bytes  | field |
//! |--------|-------|
//! | 0..4   | message sequence number (u32, low bits) |
//! | 4..6   | fragment index (u16) |
//! | 6..8   | fragment count (u16, ≥ 1) |
//! | 8..12  | message length (u32) |
//! | 12..14 | segment length (u16): bytes after this header |
//! | 14..16 | reserved (0) |
//!
//! A segment means exactly what a frame with those header fields and that
//! payload would. Small messages (requests, acknowledgements of writes,
//! 4 KiB responses at MTU 9000) share frames, and every frame costs a
//! kernel round of its own on each side.

use super::{Header, u16_at, u32_at};

/// `flags` bit: the payload is a list of segments.
pub const FLAG_BUNDLE: u16 = 0x0001;
/// Length of a segment header.
pub const SEGMENT_HEADER_LEN: usize = 16;

/// One data segment of a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Message sequence number, low 32 bits.
    pub seq: u32,
    /// Fragment index.
    pub frag_index: u16,
    /// Fragment count.
    pub frag_count: u16,
    /// Length of the whole message.
    pub msg_len: u32,
    /// The fragment's bytes.
    pub data: &'a [u8],
}

impl Segment<'_> {
    /// The frame header this segment stands for: `frame`'s, with the
    /// segment's sequence and fragment fields.
    pub fn header(&self, frame: &Header) -> Header {
        Header {
            flags: frame.flags & !FLAG_BUNDLE,
            seq: self.seq,
            frag_index: self.frag_index,
            frag_count: self.frag_count,
            msg_len: self.msg_len,
            ..*frame
        }
    }

    /// The segment header of fragment `index` of `count` of message `seq`
    /// (`msg_len` bytes long) carrying `data_len` bytes.
    pub fn encode_header(
        seq: u32,
        index: u16,
        count: u16,
        msg_len: u32,
        data_len: u16,
    ) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        out[0..4].copy_from_slice(&seq.to_le_bytes());
        out[4..6].copy_from_slice(&index.to_le_bytes());
        out[6..8].copy_from_slice(&count.to_le_bytes());
        out[8..12].copy_from_slice(&msg_len.to_le_bytes());
        out[12..14].copy_from_slice(&data_len.to_le_bytes());
        out
    }
}

/// The segments of a bundle's payload, or `None` if the payload is not
/// whole segments (a short header, a length past the end, a fragment count
/// of 0, a reserved field not 0): such a frame is dropped whole.
pub fn segments(payload: &[u8]) -> Option<Segments<'_>> {
    let mut rest = payload;
    let mut count = 0usize;
    while !rest.is_empty() {
        let (_, tail) = split_segment(rest)?;
        rest = tail;
        count += 1;
    }
    (count > 0).then_some(Segments { rest: payload })
}

/// Iterator over the segments of a checked bundle payload.
#[derive(Debug, Clone)]
pub struct Segments<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Segments<'a> {
    type Item = Segment<'a>;

    fn next(&mut self) -> Option<Segment<'a>> {
        let (seg, tail) = split_segment(self.rest)?;
        self.rest = tail;
        Some(seg)
    }
}

fn split_segment(b: &[u8]) -> Option<(Segment<'_>, &[u8])> {
    let h = b.get(..SEGMENT_HEADER_LEN)?;
    let len = usize::from(u16_at(h, 12));
    let frag_count = u16_at(h, 6);
    if frag_count == 0 || u16_at(h, 14) != 0 {
        return None;
    }
    let data = b.get(SEGMENT_HEADER_LEN..SEGMENT_HEADER_LEN + len)?;
    let seg = Segment {
        seq: u32_at(h, 0),
        frag_index: u16_at(h, 4),
        frag_count,
        msg_len: u32_at(h, 8),
        data,
    };
    Some((seg, &b[SEGMENT_HEADER_LEN + len..]))
}
