//! Codec timings, for docs/erasure-coding.md. Not a pass/fail test:
//! `cargo test -p qbd-core --release --test ec_timing -- --ignored --nocapture`
//! (medians of 5 rounds; the machine's load shows in them).

use std::time::{Duration, Instant};

use qbd_core::ec::{EcCodec, EcError};

fn shards(n: usize, len: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            (0..len)
                .map(|j| (i * 131 + j * 7 + (j >> 9)) as u8)
                .collect()
        })
        .collect()
}

/// Median over 5 rounds of the mean time of `run`, each call given a fresh
/// input from `setup` (not timed).
fn per_call<S>(
    iters: u32,
    mut setup: impl FnMut() -> S,
    mut run: impl FnMut(S) -> Result<(), EcError>,
) -> Result<Duration, EcError> {
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let inputs: Vec<S> = (0..iters).map(|_| setup()).collect();
        let t = Instant::now();
        for input in inputs {
            run(input)?;
        }
        rounds.push(t.elapsed() / iters);
    }
    rounds.sort();
    Ok(rounds[2])
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[test]
#[ignore = "timing: run by hand with --ignored --nocapture"]
fn codec_timings() -> Result<(), EcError> {
    println!("profile shard_bytes encode_GB/s(data) encode_us reconstruct_1_us reconstruct_M_us");
    for (k, m) in [(2, 1), (4, 2), (8, 3), (16, 8)] {
        let c = EcCodec::new(k, m)?;
        for len in [4096, 65536, (4 << 20) / k] {
            let data = shards(k, len);
            let iters = ((64 << 20) / (k * len)).clamp(3, 200) as u32;
            let enc = per_call(iters, || (), |()| c.encode(&data).map(drop))?;
            let gbs = (k * len) as f64 / enc.as_secs_f64() / 1e9;
            let full: Vec<Option<Vec<u8>>> = data
                .iter()
                .cloned()
                .chain(c.encode(&data)?)
                .map(Some)
                .collect();
            let lose = |n: usize| {
                let erased = || {
                    let mut s = full.clone();
                    s.iter_mut().take(n).for_each(|slot| *slot = None);
                    s
                };
                per_call(iters.min(20), erased, |mut s| c.reconstruct_data(&mut s))
            };
            let one = lose(1)?;
            let all = lose(m.min(k))?;
            println!(
                "{k}+{m} {len} {gbs:.1} {:.1} {:.1} {:.1}",
                us(enc),
                us(one),
                us(all)
            );
        }
    }
    Ok(())
}
