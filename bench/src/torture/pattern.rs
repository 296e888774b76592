//! What the harness writes: every 4 KiB block carries its own identity, so
//! a read tells which write it came from (or that it is zeros, or neither).
//!
//! Layout of a written block (little endian): `MAGIC` (8 bytes), the
//! volume block number (8), the write's value id (8), then filler from a
//! generator seeded by (block, value): a block moved to another offset, a
//! torn block and a flipped bit are all told apart from a real value.

use super::rng::Rng;

/// Bytes per block the harness reasons about.
pub const BLOCK: usize = 4096;
/// The first 8 bytes of every written block.
const MAGIC: u64 = 0x5142_445f_544f_5254; // "QBD_TORT"
/// Value id 0 is "zeros": never written, trimmed, or zeroed.
pub const ZERO: u64 = 0;

/// The content of `block` for value `value` (zeros for [`ZERO`]).
pub fn fill(buf: &mut [u8], block: u64, value: u64) {
    if value == ZERO {
        buf.fill(0);
        return;
    }
    buf[0..8].copy_from_slice(&MAGIC.to_le_bytes());
    buf[8..16].copy_from_slice(&block.to_le_bytes());
    buf[16..24].copy_from_slice(&value.to_le_bytes());
    let mut rng = Rng::new(block.rotate_left(32) ^ value);
    for word in buf[24..].chunks_mut(8) {
        let bytes = rng.next_u64().to_le_bytes();
        word.copy_from_slice(&bytes[..word.len()]);
    }
}

/// What a block read back holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A value the harness wrote to this block (or [`ZERO`]).
    Value(u64),
    /// Bytes no write of the harness put here.
    Garbage,
}

/// Decodes one block read from `block`.
pub fn decode(buf: &[u8], block: u64) -> Seen {
    if buf.iter().all(|&b| b == 0) {
        return Seen::Value(ZERO);
    }
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&buf[i..i + 8]);
        u64::from_le_bytes(w)
    };
    if buf.len() != BLOCK || word(0) != MAGIC || word(8) != block {
        return Seen::Garbage;
    }
    let value = word(16);
    let mut want = vec![0u8; BLOCK];
    fill(&mut want, block, value);
    if want == buf {
        Seen::Value(value)
    } else {
        Seen::Garbage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_block_decodes_to_its_value_and_a_flip_does_not() {
        let mut buf = vec![0u8; BLOCK];
        fill(&mut buf, 9, 1234);
        assert_eq!(decode(&buf, 9), Seen::Value(1234));
        assert_eq!(decode(&buf, 10), Seen::Garbage, "moved to another block");
        buf[2000] ^= 1;
        assert_eq!(decode(&buf, 9), Seen::Garbage, "one flipped bit");
        assert_eq!(decode(&vec![0u8; BLOCK], 3), Seen::Value(ZERO));
    }
}
