//! The K+M Reed-Solomon codec: `reed-solomon-simd`'s high-rate code.
//!
//! Shards are byte strings of one length, a non-zero multiple of
//! [`SHARD_ALIGN`]: one block each, or the same run of part blocks from every
//! part, concatenated (the code works on each 64-byte column independently,
//! so encoding a run at once gives exactly the per-row parity, and a run
//! decodes in one call, paying the decoder's fixed cost once).
//!
//! Invariants (they are the on-disk format, see `docs/erasure-coding.md`):
//! - shard `i < K` is data part `i`; shard `K + j` is parity part `K + j` =
//!   the crate's recovery shard `j`;
//! - parity is always computed with the crate's *high-rate* encoder
//!   ([`HighRateEncoder`]), whatever K and M are, so a change of the crate's
//!   rate heuristic cannot change our parity; golden tests pin the bytes;
//! - for M = 1 the parity is the XOR of the data shards (the high-rate code
//!   with one recovery shard is plain XOR; the tests check it against the
//!   crate's decoder), so a single erasure is restored by XOR without the
//!   decoder's fixed cost.

use reed_solomon_simd::engine::DefaultEngine;
use reed_solomon_simd::rate::{HighRateDecoder, HighRateEncoder, RateDecoder, RateEncoder};

use super::EcError;
use crate::redundancy::{MAX_EC_DATA, MAX_EC_PARITY, Redundancy};

/// Shard lengths must be a multiple of this (the crate's SIMD layout unit:
/// 32 low bytes then 32 high bytes of 32 GF(2^16) elements).
pub const SHARD_ALIGN: usize = 64;

/// A K+M Reed-Solomon codec. Cheap to build and to copy; holds no buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EcCodec {
    k: usize,
    m: usize,
}

impl EcCodec {
    /// A codec for K data and M parity shards (K in 1..=16, M in 1..=8).
    pub fn new(k: usize, m: usize) -> Result<Self, EcError> {
        if !(1..=MAX_EC_DATA).contains(&k) || !(1..=MAX_EC_PARITY).contains(&m) {
            return Err(EcError::UnsupportedProfile { k, m });
        }
        Ok(EcCodec { k, m })
    }

    /// The codec of an `ec:K+M` policy; a replicated policy is an error.
    pub fn for_redundancy(r: Redundancy) -> Result<Self, EcError> {
        match r {
            Redundancy::Ec { k, m } => EcCodec::new(usize::from(k), usize::from(m)),
            Redundancy::Replicate(n) => Err(EcError::UnsupportedProfile {
                k: usize::from(n),
                m: 0,
            }),
        }
    }

    /// Data shards (K).
    pub fn data_shards(&self) -> usize {
        self.k
    }

    /// Parity shards (M).
    pub fn parity_shards(&self) -> usize {
        self.m
    }

    /// All shards (K + M).
    pub fn total_shards(&self) -> usize {
        self.k + self.m
    }

    /// Checks a shard length: a non-zero multiple of [`SHARD_ALIGN`].
    pub fn check_shard_len(len: usize) -> Result<(), EcError> {
        if len == 0 || !len.is_multiple_of(SHARD_ALIGN) {
            return Err(EcError::BadShardLen { len });
        }
        Ok(())
    }

    /// Computes the M parity shards of K data shards.
    pub fn encode<T: AsRef<[u8]>>(&self, data: &[T]) -> Result<Vec<Vec<u8>>, EcError> {
        let len = self.check_data(data)?;
        self.with_parity(data, len, |parity| parity.map(<[u8]>::to_vec).collect())
    }

    /// Computes the M parity shards into caller buffers (each the length of
    /// the data shards). The crate encodes into its own working space; this
    /// copies out of it, sparing the caller an allocation per shard.
    pub fn encode_into<T: AsRef<[u8]>, P: AsMut<[u8]>>(
        &self,
        data: &[T],
        parity: &mut [P],
    ) -> Result<(), EcError> {
        let len = self.check_data(data)?;
        if parity.len() != self.m {
            return Err(EcError::WrongShardCount {
                expected: self.m,
                got: parity.len(),
            });
        }
        for (j, p) in parity.iter_mut().enumerate() {
            check_len(self.k + j, len, p.as_mut().len())?;
        }
        self.with_parity(data, len, |fresh| {
            for (p, r) in parity.iter_mut().zip(fresh) {
                p.as_mut().copy_from_slice(r);
            }
        })
    }

    /// Runs the high-rate encoder on checked data and hands its parity
    /// shards, in order, to `f`.
    fn with_parity<T: AsRef<[u8]>, R>(
        &self,
        data: &[T],
        len: usize,
        f: impl FnOnce(&mut dyn Iterator<Item = &[u8]>) -> R,
    ) -> Result<R, EcError> {
        let mut enc = HighRateEncoder::new(self.k, self.m, len, DefaultEngine::new(), None)?;
        for d in data {
            enc.add_original_shard(d)?;
        }
        let result = enc.encode()?;
        Ok(f(&mut result.recovery_iter()))
    }

    /// Fills every missing (`None`) shard, data and parity, from the present
    /// ones. `shards` has K + M entries in part order. A shard known to be
    /// bad (checksum mismatch, stale, torn row) must be passed as `None`:
    /// the code only corrects erasures, never detects errors.
    pub fn reconstruct(&self, shards: &mut [Option<Vec<u8>>]) -> Result<(), EcError> {
        self.restore(shards, true)
    }

    /// Like [`reconstruct`](Self::reconstruct) but fills only the data
    /// shards; missing parity stays `None` (a degraded read needs no parity).
    pub fn reconstruct_data(&self, shards: &mut [Option<Vec<u8>>]) -> Result<(), EcError> {
        self.restore(shards, false)
    }

    fn restore(&self, shards: &mut [Option<Vec<u8>>], parity_too: bool) -> Result<(), EcError> {
        let len = self.check_present(shards)?;
        let missing = shards.iter().filter(|s| s.is_none()).count();
        if missing > self.m {
            return Err(EcError::TooManyErasures { missing, m: self.m });
        }
        if shards[..self.k].iter().any(Option::is_none) {
            if self.m == 1 {
                xor_restore(shards, len);
            } else {
                self.decode_data(shards, len)?;
            }
        }
        if parity_too && shards[self.k..].iter().any(Option::is_none) {
            let (data, parity) = shards.split_at_mut(self.k);
            let data: Vec<&[u8]> = data.iter().flatten().map(Vec::as_slice).collect();
            let fresh = self.encode(&data)?;
            for (slot, p) in parity.iter_mut().zip(fresh) {
                slot.get_or_insert(p);
            }
        }
        Ok(())
    }

    /// Restores the missing data shards with the crate's decoder.
    fn decode_data(&self, shards: &mut [Option<Vec<u8>>], len: usize) -> Result<(), EcError> {
        let mut dec = HighRateDecoder::new(self.k, self.m, len, DefaultEngine::new(), None)?;
        for (i, s) in shards.iter().enumerate() {
            match s {
                Some(s) if i < self.k => dec.add_original_shard(i, s)?,
                Some(s) => dec.add_recovery_shard(i - self.k, s)?,
                None => {}
            }
        }
        let result = dec.decode()?;
        for (i, slot) in shards[..self.k].iter_mut().enumerate() {
            if slot.is_none() {
                let restored = result
                    .restored_original(i)
                    .ok_or_else(|| EcError::Library(format!("data shard {i} not restored")))?;
                *slot = Some(restored.to_vec());
            }
        }
        Ok(())
    }

    /// Validates K data shards; returns their common length.
    fn check_data<T: AsRef<[u8]>>(&self, data: &[T]) -> Result<usize, EcError> {
        if data.len() != self.k {
            return Err(EcError::WrongShardCount {
                expected: self.k,
                got: data.len(),
            });
        }
        let len = data[0].as_ref().len();
        Self::check_shard_len(len)?;
        for (i, d) in data.iter().enumerate() {
            check_len(i, len, d.as_ref().len())?;
        }
        Ok(len)
    }

    /// Validates K + M optional shards; returns the common length of the
    /// present ones (any valid length when none is present).
    fn check_present(&self, shards: &[Option<Vec<u8>>]) -> Result<usize, EcError> {
        if shards.len() != self.total_shards() {
            return Err(EcError::WrongShardCount {
                expected: self.total_shards(),
                got: shards.len(),
            });
        }
        let Some(len) = shards.iter().flatten().map(Vec::len).next() else {
            return Err(EcError::TooManyErasures {
                missing: shards.len(),
                m: self.m,
            });
        };
        Self::check_shard_len(len)?;
        for (i, s) in shards.iter().enumerate() {
            if let Some(s) = s {
                check_len(i, len, s.len())?;
            }
        }
        Ok(len)
    }
}

fn check_len(index: usize, expected: usize, got: usize) -> Result<(), EcError> {
    if got != expected {
        return Err(EcError::ShardLenMismatch {
            index,
            expected,
            got,
        });
    }
    Ok(())
}

/// M = 1: the parity is the XOR of the data, so the one missing shard is
/// the XOR of all the others. The caller checked exactly one is missing.
fn xor_restore(shards: &mut [Option<Vec<u8>>], len: usize) {
    let mut acc = vec![0u8; len];
    for s in shards.iter().flatten() {
        for (a, b) in acc.iter_mut().zip(s) {
            *a ^= b;
        }
    }
    if let Some(slot) = shards.iter_mut().find(|s| s.is_none()) {
        *slot = Some(acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards(k: usize, len: usize) -> Vec<Vec<u8>> {
        (0..k)
            .map(|i| (0..len).map(|j| (i * 131 + j * 7) as u8).collect())
            .collect()
    }

    #[test]
    fn profile_limits() {
        assert!(EcCodec::new(1, 1).is_ok());
        assert!(EcCodec::new(16, 8).is_ok());
        for (k, m) in [(0, 1), (1, 0), (17, 1), (4, 9)] {
            assert_eq!(
                EcCodec::new(k, m),
                Err(EcError::UnsupportedProfile { k, m })
            );
        }
        assert!(EcCodec::for_redundancy(Redundancy::Replicate(3)).is_err());
        let c = EcCodec::for_redundancy(Redundancy::Ec { k: 4, m: 2 }).expect("4+2");
        assert_eq!(
            (c.data_shards(), c.parity_shards(), c.total_shards()),
            (4, 2, 6)
        );
    }

    #[test]
    fn shard_length_rules() -> Result<(), EcError> {
        let c = EcCodec::new(2, 1)?;
        for len in [0, 2, 63, 100] {
            let d = shards(2, len);
            assert_eq!(c.encode(&d), Err(EcError::BadShardLen { len }));
        }
        let mut d = shards(2, 128);
        d[1].truncate(64);
        assert_eq!(
            c.encode(&d),
            Err(EcError::ShardLenMismatch {
                index: 1,
                expected: 128,
                got: 64
            })
        );
        assert_eq!(
            c.encode(&shards(3, 64)),
            Err(EcError::WrongShardCount {
                expected: 2,
                got: 3
            })
        );
        let mut out = vec![vec![0u8; 32]];
        assert!(c.encode_into(&shards(2, 64), &mut out).is_err());
        Ok(())
    }

    #[test]
    fn single_parity_is_xor() -> Result<(), EcError> {
        let c = EcCodec::new(3, 1)?;
        let d = shards(3, 256);
        let p = c.encode(&d)?;
        let x: Vec<u8> = (0..256).map(|j| d[0][j] ^ d[1][j] ^ d[2][j]).collect();
        assert_eq!(p, vec![x]);
        Ok(())
    }

    #[test]
    fn reconstructs_data_and_parity() -> Result<(), EcError> {
        let c = EcCodec::new(4, 2)?;
        let d = shards(4, 4096);
        let p = c.encode(&d)?;
        let full: Vec<Option<Vec<u8>>> = d.iter().chain(&p).cloned().map(Some).collect();
        let mut s = full.clone();
        s[1] = None;
        s[5] = None;
        c.reconstruct(&mut s)?;
        assert_eq!(s, full);
        let mut s = full.clone();
        s[0] = None;
        s[4] = None;
        c.reconstruct_data(&mut s)?;
        assert_eq!(s[0], full[0]);
        assert_eq!(s[4], None);
        let mut s = full.clone();
        s[0] = None;
        s[1] = None;
        s[2] = None;
        assert_eq!(
            c.reconstruct(&mut s),
            Err(EcError::TooManyErasures { missing: 3, m: 2 })
        );
        let mut none = vec![None; 6];
        assert!(c.reconstruct(&mut none).is_err_and(|e| e.is_data_loss()));
        Ok(())
    }
}
