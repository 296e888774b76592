//! Incoming messages: reassembly of fragments and the set of complete
//! messages that acknowledgements report.
//!
//! A message of `len` bytes in `count` fragments is cut into fragments of
//! `ceil(len / count)` bytes, the last one shorter: the receiver derives
//! every fragment's offset and exact length from (`len`, `count`, index)
//! and refuses a fragment that does not match.

use std::collections::BTreeSet;

use super::wire::Header;

/// What inserting a fragment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Insert {
    /// New fragment; the message is not complete yet.
    Partial,
    /// New fragment; the message is complete.
    Complete,
    /// Already had it.
    Duplicate,
    /// Index, length or totals inconsistent with the message.
    Invalid,
}

/// A message being reassembled.
#[derive(Debug)]
pub(crate) struct Reassembly {
    buf: Vec<u8>,
    count: u16,
    frag_size: usize,
    have: Vec<bool>,
    received: u16,
}

impl Reassembly {
    /// Starts a message from the totals of its first fragment's header.
    pub(crate) fn new(h: &Header, max_len: usize) -> Option<Self> {
        let len = usize::try_from(h.msg_len).ok()?;
        let count = h.frag_count;
        if count == 0 || len > max_len || (len == 0 && count != 1) {
            return None;
        }
        let frag_size = len.div_ceil(usize::from(count));
        // Every fragment must carry at least one byte (but a 0-byte message).
        if len > 0 && (usize::from(count) - 1) * frag_size >= len {
            return None;
        }
        Some(Reassembly {
            buf: vec![0; len],
            count,
            frag_size,
            have: vec![false; usize::from(count)],
            received: 0,
        })
    }

    /// Adds one fragment.
    pub(crate) fn insert(&mut self, h: &Header, payload: &[u8]) -> Insert {
        if h.frag_count != self.count || h.msg_len as usize != self.buf.len() {
            return Insert::Invalid;
        }
        let i = usize::from(h.frag_index);
        let start = i.saturating_mul(self.frag_size);
        let end = start.saturating_add(self.frag_size).min(self.buf.len());
        let (Some(have), Some(dst)) = (self.have.get_mut(i), self.buf.get_mut(start..end)) else {
            return Insert::Invalid;
        };
        if dst.len() != payload.len() {
            return Insert::Invalid;
        }
        if *have {
            return Insert::Duplicate;
        }
        dst.copy_from_slice(payload);
        *have = true;
        self.received += 1;
        if self.received == self.count {
            Insert::Complete
        } else {
            Insert::Partial
        }
    }

    /// This message's fragment acknowledgement: the first missing
    /// fragment, and which of the 64 from there on are received.
    pub(crate) fn frag_ack(&self) -> (u16, u64) {
        let base = self.have.iter().position(|h| !h).unwrap_or(self.have.len());
        let mut bits = 0u64;
        for (i, _) in self
            .have
            .iter()
            .skip(base)
            .take(64)
            .enumerate()
            .filter(|(_, h)| **h)
        {
            bits |= 1 << i;
        }
        (u16::try_from(base).unwrap_or(u16::MAX), bits)
    }

    /// The whole message (once complete).
    pub(crate) fn into_message(self) -> Vec<u8> {
        self.buf
    }
}

/// The complete messages of one direction: every number below `cum`, and
/// those in `above`.
#[derive(Debug, Clone, Default)]
pub(crate) struct AckSet {
    cum: u64,
    above: BTreeSet<u64>,
}

impl AckSet {
    /// Starts with every number below `cum` complete.
    pub(crate) fn new(cum: u64) -> Self {
        AckSet {
            cum,
            above: BTreeSet::new(),
        }
    }

    /// The first incomplete number.
    pub(crate) fn cum(&self) -> u64 {
        self.cum
    }

    /// Records `seq` complete.
    pub(crate) fn insert(&mut self, seq: u64) {
        if seq >= self.cum {
            self.above.insert(seq);
            self.normalize();
        }
    }

    /// Un-records `seq` (a message its recipient refused).
    pub(crate) fn remove(&mut self, seq: u64) {
        if seq < self.cum {
            self.above.extend(seq + 1..self.cum);
            self.cum = seq;
        } else {
            self.above.remove(&seq);
        }
    }

    /// Everything below `floor` is complete (the peer gave up on it or has
    /// it).
    pub(crate) fn advance_to(&mut self, floor: u64) {
        if floor > self.cum {
            self.cum = floor;
            self.above = self.above.split_off(&floor);
            self.normalize();
        }
    }

    /// The acknowledgement fields: cumulative (low 32 bits) and the bitmap
    /// of `cum + 1 ..= cum + 64`.
    pub(crate) fn encode(&self) -> (u32, u64) {
        let mut bits = 0u64;
        for &s in self.above.range(self.cum + 1..self.cum + 65) {
            bits |= 1 << (s - self.cum - 1);
        }
        (self.cum as u32, bits)
    }

    fn normalize(&mut self) {
        while self.above.remove(&self.cum) {
            self.cum += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::wire::{FrameType, Mac};

    fn hdr(index: u16, count: u16, len: u32) -> Header {
        Header {
            dst: Mac::default(),
            src: Mac::default(),
            ethertype: 0,
            ty: FrameType::Request,
            flags: 0,
            client_epoch: 1,
            server_epoch: 1,
            seq: 1,
            frag_index: index,
            frag_count: count,
            msg_len: len,
            ack_cum: 0,
            ack_bits: 0,
            credit: 0,
        }
    }

    #[test]
    fn reassembles_out_of_order_and_rejects_bad_fragments() {
        let mut r = Reassembly::new(&hdr(0, 3, 10), 100).expect("valid");
        assert_eq!(r.insert(&hdr(2, 3, 10), &[9, 9]), Insert::Partial);
        assert_eq!(r.insert(&hdr(2, 3, 10), &[9, 9]), Insert::Duplicate);
        assert_eq!(r.insert(&hdr(1, 3, 10), &[5; 3]), Insert::Invalid);
        assert_eq!(r.insert(&hdr(3, 3, 10), &[5; 4]), Insert::Invalid);
        assert_eq!(r.insert(&hdr(1, 3, 11), &[5; 4]), Insert::Invalid);
        assert_eq!(r.insert(&hdr(1, 3, 10), &[5; 4]), Insert::Partial);
        assert_eq!(r.insert(&hdr(0, 3, 10), &[1; 4]), Insert::Complete);
        assert_eq!(r.into_message(), vec![1, 1, 1, 1, 5, 5, 5, 5, 9, 9]);
        assert!(Reassembly::new(&hdr(0, 0, 10), 100).is_none());
        assert!(Reassembly::new(&hdr(0, 11, 10), 100).is_none());
        assert!(Reassembly::new(&hdr(0, 4, 101), 100).is_none());
        assert!(Reassembly::new(&hdr(0, 1, 0), 100).is_some());
    }

    #[test]
    fn ack_set_cumulative_and_bits() {
        let mut a = AckSet::new(1);
        a.insert(3);
        a.insert(5);
        assert_eq!(a.encode(), (1, 0b1010));
        a.insert(1);
        assert_eq!(a.encode(), (2, 0b101));
        a.insert(2);
        assert_eq!(a.encode(), (4, 0b1));
        a.remove(2);
        assert_eq!(a.encode(), (2, 0b101));
        a.advance_to(10);
        assert_eq!(a.encode(), (10, 0));
    }
}
