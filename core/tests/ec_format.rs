//! Golden parity: the codec's parity bytes are the on-disk format of parity
//! parts, so they must never change. A failure here after a dependency
//! update means the new `reed-solomon-simd` computes a different code:
//! existing volumes would no longer decode. Do not update the constants;
//! pin the old version instead (see docs/erasure-coding.md).

use qbd_core::ec::{EcCodec, EcError};

/// Deterministic data: byte `j` of data shard `i`.
fn data(k: usize, len: usize) -> Vec<Vec<u8>> {
    (0..k)
        .map(|i| {
            (0..len)
                .map(|j| ((i * 37 + j * 11 + (j >> 8)) % 251) as u8)
                .collect()
        })
        .collect()
}

fn parity_hash(k: usize, m: usize, len: usize) -> Result<String, EcError> {
    let parity = EcCodec::new(k, m)?.encode(&data(k, len))?;
    let mut h = blake3::Hasher::new();
    for p in &parity {
        h.update(p);
    }
    Ok(h.finalize().to_hex()[..32].to_string())
}

#[test]
fn parity_bytes_are_pinned() -> Result<(), EcError> {
    // BLAKE3 of the M parity shards of `data(k, 4096)`, first 16 bytes.
    // 2+3, 1+8 and 3+5 are profiles where the crate's default rate would
    // pick its low-rate code: we always use the high-rate one.
    let golden = [
        (1, 1, "7168c2a95a4183e5cc11b859ab1c8864"),
        (2, 1, "57b97852503a00dabf21025896e2ad88"),
        (4, 2, "aef2a0b1fd2b153cdcf03188720f1c4d"),
        (8, 3, "49e3a8baf21a9ecc0430ca46f2c435d0"),
        (16, 8, "321ee45649cdbe8088499740c9fb50bc"),
        (2, 3, "638756fd4392c36f27ecea3eb55dba6d"),
        (1, 8, "6404dfe895d3bb3da2f96800823de197"),
        (3, 5, "964691382ae3c3dfb407079ff6cb4a52"),
    ];
    for (k, m, want) in golden {
        assert_eq!(parity_hash(k, m, 4096)?, want, "{k}+{m}");
    }
    Ok(())
}

#[test]
fn small_parity_literal() -> Result<(), EcError> {
    let d: Vec<Vec<u8>> = vec![(0..64).collect(), (64..128).collect()];
    let p = EcCodec::new(2, 2)?.encode(&d)?;
    let hex: Vec<String> = p
        .iter()
        .map(|s| s.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    // 2+2, data shard 0 = bytes 0..64, shard 1 = bytes 64..128.
    assert_eq!(
        hex,
        [
            "47464544434241404f4e4d4c4b4a494857565554535251505f5e5d5c5b5a5958\
             93929190979695949b9a99989f9e9d9c83828180878685848b8a89888f8e8d8c",
            "07060504030201000f0e0d0c0b0a090817161514131211101f1e1d1c1b1a1918\
             d3d2d1d0d7d6d5d4dbdad9d8dfdedddcc3c2c1c0c7c6c5c4cbcac9c8cfcecdcc",
        ]
    );
    Ok(())
}

#[test]
fn every_simd_engine_computes_the_same_code() -> Result<(), EcError> {
    use reed_solomon_simd::engine::NoSimd;
    use reed_solomon_simd::rate::{HighRateEncoder, RateEncoder};
    for k in 1..=16 {
        for m in 1..=8 {
            let d = data(k, 256);
            let ours = EcCodec::new(k, m)?.encode(&d)?;
            let mut enc = HighRateEncoder::new(k, m, 256, NoSimd::new(), None)?;
            for s in &d {
                enc.add_original_shard(s)?;
            }
            let plain: Vec<Vec<u8>> = enc.encode()?.recovery_iter().map(<[u8]>::to_vec).collect();
            assert_eq!(ours, plain, "{k}+{m}");
        }
    }
    Ok(())
}

#[test]
fn zero_data_has_zero_parity() -> Result<(), EcError> {
    // So a never-written row (holes everywhere) is a valid codeword.
    for (k, m) in [(1, 1), (2, 1), (4, 2), (8, 3), (16, 8), (3, 5)] {
        let parity = EcCodec::new(k, m)?.encode(&vec![vec![0u8; 4096]; k])?;
        assert!(parity.iter().flatten().all(|&b| b == 0), "{k}+{m}");
    }
    Ok(())
}
