//! Property tests of the K+M codec: any ≤ M erased (or corrupted and so
//! erased) shards decode to the original; more give `TooManyErasures`.
//! Seeded RNG loops: a failure prints its seed and pattern.

use qbd_core::ec::{EcCodec, EcError, SHARD_ALIGN};

/// splitmix64: small, seeded, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// `count` distinct indices of `0..n`.
    fn pick(&mut self, n: usize, count: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        for i in 0..count {
            let j = i + self.below(n - i);
            all.swap(i, j);
        }
        all.truncate(count);
        all
    }
}

/// A random codeword: K data shards then M parity shards.
fn codeword(c: &EcCodec, len: usize, rng: &mut Rng) -> Result<Vec<Vec<u8>>, EcError> {
    let data: Vec<Vec<u8>> = (0..c.data_shards()).map(|_| rng.bytes(len)).collect();
    let parity = c.encode(&data)?;
    Ok(data.into_iter().chain(parity).collect())
}

fn erase(full: &[Vec<u8>], missing: &[usize]) -> Vec<Option<Vec<u8>>> {
    (0..full.len())
        .map(|i| (!missing.contains(&i)).then(|| full[i].clone()))
        .collect()
}

fn assert_restores(c: &EcCodec, full: &[Vec<u8>], missing: &[usize]) -> Result<(), EcError> {
    let mut s = erase(full, missing);
    c.reconstruct(&mut s)?;
    for (i, shard) in s.iter().enumerate() {
        assert_eq!(
            shard.as_deref(),
            Some(full[i].as_slice()),
            "{}+{} shard {i} with {missing:?} erased",
            c.data_shards(),
            c.parity_shards()
        );
    }
    Ok(())
}

/// Every subset of `0..n` of size `1..=max`, in increasing order.
fn subsets(n: usize, max: usize) -> Vec<Vec<usize>> {
    (1u32..1 << n)
        .filter(|mask| mask.count_ones() as usize <= max)
        .map(|mask| (0..n).filter(|i| mask & (1 << i) != 0).collect())
        .collect()
}

#[test]
fn small_profiles_every_erasure_pattern_up_to_m() -> Result<(), EcError> {
    let mut rng = Rng(1);
    for (k, m) in [(1, 1), (2, 1), (2, 2), (4, 2), (3, 3), (8, 3), (6, 4)] {
        let c = EcCodec::new(k, m)?;
        for len in [64, 4096] {
            let full = codeword(&c, len, &mut rng)?;
            for missing in subsets(k + m, m) {
                assert_restores(&c, &full, &missing)?;
            }
        }
    }
    Ok(())
}

#[test]
fn big_profiles_sampled_erasure_patterns() -> Result<(), EcError> {
    let mut rng = Rng(2);
    for (k, m, samples) in [(16, 8, 120), (12, 4, 60), (10, 6, 60)] {
        let c = EcCodec::new(k, m)?;
        let full = codeword(&c, 4096, &mut rng)?;
        for _ in 0..samples {
            let count = 1 + rng.below(m);
            let missing = rng.pick(k + m, count);
            assert_restores(&c, &full, &missing)?;
        }
        // The worst case: the first M data shards, and the last M.
        assert_restores(&c, &full, &(0..m).collect::<Vec<_>>())?;
        assert_restores(&c, &full, &(k - m.min(k)..k).collect::<Vec<_>>())?;
    }
    Ok(())
}

#[test]
fn every_profile_restores_m_erasures() -> Result<(), EcError> {
    let mut rng = Rng(3);
    for k in 1..=16 {
        for m in 1..=8 {
            let c = EcCodec::new(k, m)?;
            let full = codeword(&c, SHARD_ALIGN * (1 + rng.below(4)), &mut rng)?;
            for _ in 0..2 {
                let missing = rng.pick(k + m, m);
                assert_restores(&c, &full, &missing)?;
            }
        }
    }
    Ok(())
}

#[test]
fn more_than_m_erasures_are_refused() -> Result<(), EcError> {
    let mut rng = Rng(4);
    for (k, m) in [(1, 1), (2, 1), (4, 2), (8, 3), (16, 8)] {
        let c = EcCodec::new(k, m)?;
        let full = codeword(&c, 128, &mut rng)?;
        for count in m + 1..=k + m {
            let missing = rng.pick(k + m, count);
            let mut s = erase(&full, &missing);
            let err = c.reconstruct(&mut s).expect_err("too many erasures");
            assert_eq!(err, EcError::TooManyErasures { missing: count, m });
            assert!(err.is_data_loss());
            assert_eq!(s, erase(&full, &missing), "shards untouched on error");
        }
    }
    Ok(())
}

#[test]
fn corrupted_shards_marked_missing_decode() -> Result<(), EcError> {
    let mut rng = Rng(5);
    for (k, m) in [(2, 1), (4, 2), (8, 3), (16, 8)] {
        let c = EcCodec::new(k, m)?;
        let full = codeword(&c, 4096, &mut rng)?;
        for _ in 0..10 {
            let count = 1 + rng.below(m);
            let bad = rng.pick(k + m, count);
            let mut s: Vec<Option<Vec<u8>>> = full.iter().cloned().map(Some).collect();
            for &i in &bad {
                if let Some(shard) = s[i].as_mut() {
                    shard[rng.below(4096)] ^= 1 << rng.below(8);
                }
                // As a failed checksum would: the corrupt shard is erased.
                s[i] = None;
            }
            c.reconstruct(&mut s)?;
            let restored: Vec<Vec<u8>> = s.into_iter().flatten().collect();
            assert_eq!(restored, full, "{k}+{m} corrupt {bad:?}");
        }
    }
    Ok(())
}

#[test]
fn unmarked_corruption_is_not_detected_by_the_code() -> Result<(), EcError> {
    // Why every shard needs its checksum: the code corrects erasures only.
    let mut rng = Rng(6);
    let c = EcCodec::new(4, 2)?;
    let full = codeword(&c, 256, &mut rng)?;
    let mut s = erase(&full, &[0]);
    if let Some(shard) = s[1].as_mut() {
        shard[7] ^= 0x40;
    }
    c.reconstruct(&mut s)?;
    assert_ne!(s[0].as_deref(), Some(full[0].as_slice()));
    Ok(())
}

#[test]
fn a_run_of_rows_encodes_and_decodes_as_one_shard_per_part() -> Result<(), EcError> {
    let mut rng = Rng(7);
    let (k, m, rows, block) = (4, 2, 8, 4096);
    let c = EcCodec::new(k, m)?;
    let blocks: Vec<Vec<Vec<u8>>> = (0..rows)
        .map(|_| (0..k).map(|_| rng.bytes(block)).collect())
        .collect();
    // Per row, then the same rows concatenated per part.
    let per_row: Vec<Vec<Vec<u8>>> = blocks
        .iter()
        .map(|r| c.encode(r))
        .collect::<Result<_, _>>()?;
    let runs: Vec<Vec<u8>> = (0..k)
        .map(|i| blocks.iter().flat_map(|r| r[i].clone()).collect())
        .collect();
    let run_parity = c.encode(&runs)?;
    for j in 0..m {
        let cat: Vec<u8> = per_row.iter().flat_map(|p| p[j].clone()).collect();
        assert_eq!(run_parity[j], cat, "parity part {j}");
    }
    let full: Vec<Vec<u8>> = runs.into_iter().chain(run_parity).collect();
    assert_restores(&c, &full, &[1, 3])?;
    Ok(())
}

#[test]
fn encode_into_matches_encode() -> Result<(), EcError> {
    let mut rng = Rng(8);
    let c = EcCodec::new(8, 3)?;
    let data: Vec<Vec<u8>> = (0..8).map(|_| rng.bytes(1024)).collect();
    let slices: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let mut out = vec![[0u8; 1024]; 3];
    c.encode_into(&slices, &mut out)?;
    let want = c.encode(&slices)?;
    for (o, w) in out.iter().zip(&want) {
        assert_eq!(&o[..], &w[..]);
    }
    Ok(())
}

#[test]
fn single_parity_xor_path_matches_the_library_decoder() -> Result<(), EcError> {
    use reed_solomon_simd::engine::DefaultEngine;
    use reed_solomon_simd::rate::{HighRateDecoder, RateDecoder};
    let mut rng = Rng(9);
    for k in 1..=16 {
        let c = EcCodec::new(k, 1)?;
        let full = codeword(&c, 192, &mut rng)?;
        let lost = rng.below(k);
        let mut dec = HighRateDecoder::new(k, 1, 192, DefaultEngine::new(), None)?;
        for (i, s) in full.iter().enumerate().filter(|(i, _)| *i != lost) {
            if i < k {
                dec.add_original_shard(i, s)?;
            } else {
                dec.add_recovery_shard(0, s)?;
            }
        }
        let lib = dec.decode()?.restored_original(lost).map(<[u8]>::to_vec);
        let mut s = erase(&full, &[lost]);
        c.reconstruct(&mut s)?;
        assert_eq!(lib.as_deref(), Some(full[lost].as_slice()));
        assert_eq!(s[lost], lib);
    }
    Ok(())
}
