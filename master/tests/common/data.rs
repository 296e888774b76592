//! Seeded test data and comparisons that name the first differing byte.

/// SplitMix64: a tiny, seedable generator, so a failing test replays the same bytes.
#[derive(Debug, Clone)]
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let tail = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        tail.copy_from_slice(&last[..tail.len()]);
    }
}

/// `len` bytes from a generator seeded with `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    Prng::new(seed).fill(&mut buf);
    buf
}

/// Panics unless `got == expected`, naming the first differing offset and the lengths.
pub fn assert_same(what: &str, expected: &[u8], got: &[u8]) {
    if expected == got {
        return;
    }
    let first = expected.iter().zip(got).position(|(a, b)| a != b);
    match first {
        Some(i) => panic!(
            "{what}: first difference at byte {i} (expected {:#04x}, got {:#04x}); lengths {} and {}",
            expected[i],
            got[i],
            expected.len(),
            got.len()
        ),
        None => panic!(
            "{what}: lengths differ: expected {}, got {}",
            expected.len(),
            got.len()
        ),
    }
}
