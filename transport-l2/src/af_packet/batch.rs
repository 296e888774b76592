//! [`FrameBatch`]: whole Ethernet frames packed into one reusable buffer.
//!
//! Invariant: `ends` is non-decreasing and its last element equals
//! `data.len()`; frame `i` is `data[ends[i-1]..ends[i]]` (with `ends[-1]`
//! taken as 0). `sent <= ends.len()`. `clear` keeps both allocations, so a
//! batch that is reused reaches a steady state with no allocation.

/// Frames waiting to be sent, stored back to back in one buffer.
#[derive(Debug, Default, Clone)]
pub struct FrameBatch {
    data: Vec<u8>,
    ends: Vec<usize>,
    /// Leading frames already handed to the kernel.
    sent: usize,
}

impl FrameBatch {
    /// An empty batch with room for `frames` frames of `bytes` in total.
    pub fn with_capacity(frames: usize, bytes: usize) -> Self {
        Self {
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(frames),
            sent: 0,
        }
    }

    /// Appends a copy of `frame`.
    pub fn push(&mut self, frame: &[u8]) {
        self.data.extend_from_slice(frame);
        self.ends.push(self.data.len());
    }

    /// Appends a frame of `len` bytes built in place by `build` (which
    /// receives zeroed bytes), avoiding a staging copy.
    pub fn push_with(&mut self, len: usize, build: impl FnOnce(&mut [u8])) {
        let start = self.data.len();
        self.data.resize(start + len, 0);
        build(&mut self.data[start..]);
        self.ends.push(self.data.len());
    }

    /// Frames in the batch, sent or not.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when the batch holds no frame.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Frame `i`.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.data[start..end])
    }

    /// All frames, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.ends.len()).filter_map(|i| self.get(i))
    }

    /// Removes every frame, keeping the allocations.
    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
        self.sent = 0;
    }

    /// Frames not yet handed to the kernel.
    pub(crate) fn unsent(&self) -> impl Iterator<Item = &[u8]> {
        (self.sent..self.ends.len()).filter_map(|i| self.get(i))
    }

    /// Marks `n` more leading frames as sent; clears the batch once all are.
    pub(crate) fn advance(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.ends.len());
        if self.sent == self.ends.len() {
            self.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_order() {
        let mut b = FrameBatch::with_capacity(4, 64);
        b.push(b"first");
        b.push_with(3, |buf| buf.copy_from_slice(b"abc"));
        b.push(b"");
        assert_eq!(b.len(), 3);
        assert_eq!(
            b.iter().collect::<Vec<_>>(),
            vec![&b"first"[..], b"abc", b""]
        );
        assert_eq!(b.get(3), None);
    }

    #[test]
    fn advance_tracks_unsent_and_clears_when_done() {
        let mut b = FrameBatch::default();
        for f in [&b"a"[..], b"bb", b"ccc"] {
            b.push(f);
        }
        b.advance(1);
        assert_eq!(b.unsent().collect::<Vec<_>>(), vec![&b"bb"[..], b"ccc"]);
        b.advance(5);
        assert!(b.is_empty());
        assert_eq!(b.unsent().count(), 0);
    }
}
