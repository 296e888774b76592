//! The torn-row rule with real blocks: reconstruction through
//! `check_row`'s decode set restores the value the parity recorded, while
//! decoding a torn row naively returns data that was never written.

use qbd_core::ec::{Cover, EcCodec, EcError, PartMeta, PartSet, check_row};
use qbd_core::generation::Generation;

const K: usize = 4;
const M: usize = 2;
const LEN: usize = 4096;

/// The content of data part `part` written at generation `gen`.
fn block(part: usize, generation: u64) -> Vec<u8> {
    (0..LEN)
        .map(|j| {
            (part as u64 * 7919 + generation * 104_729 + j as u64 * 31).to_le_bytes()[0]
                ^ (j >> 3) as u8
        })
        .collect()
}

/// Parity computed from data at `gens`, with its meta.
fn parity(c: &EcCodec, gens: [u64; K]) -> Result<Vec<(Vec<u8>, PartMeta)>, EcError> {
    let data: Vec<Vec<u8>> = (0..K).map(|i| block(i, gens[i])).collect();
    let cover = Cover::new(&gens.map(Generation))?;
    Ok(c.encode(&data)?
        .into_iter()
        .map(|p| (p, PartMeta::Parity(cover)))
        .collect())
}

/// Runs the rule, decodes through the decode set, returns the shards.
fn restore(
    c: &EcCodec,
    row: &[Option<(Vec<u8>, PartMeta)>],
) -> Result<Vec<Option<Vec<u8>>>, EcError> {
    let metas: Vec<PartMeta> = row
        .iter()
        .map(|p| p.as_ref().map_or(PartMeta::Unavailable, |p| p.1))
        .collect();
    let verdict = check_row(K, M, &metas)?;
    let use_set = verdict.decode_set().unwrap_or(PartSet::EMPTY);
    let mut shards: Vec<Option<Vec<u8>>> = row
        .iter()
        .enumerate()
        .map(|(i, p)| {
            p.as_ref()
                .filter(|_| use_set.contains(i))
                .map(|p| p.0.clone())
        })
        .collect();
    c.reconstruct_data(&mut shards)?;
    Ok(shards)
}

fn data_part(i: usize, generation: u64) -> Option<(Vec<u8>, PartMeta)> {
    Some((block(i, generation), PartMeta::Data(Generation(generation))))
}

#[test]
fn lost_parity_update_is_kept_out_of_reconstruction() -> Result<(), EcError> {
    let c = EcCodec::new(K, M)?;
    // Row at [5, 3, 3, 7]; then part 0 got a write at 9 whose parity
    // updates were lost; part 1 is down.
    let p = parity(&c, [5, 3, 3, 7])?;
    let row = vec![
        data_part(0, 9),
        None,
        data_part(2, 3),
        data_part(3, 7),
        Some(p[0].clone()),
        Some(p[1].clone()),
    ];
    let shards = restore(&c, &row)?;
    assert_eq!(shards[1].as_deref(), Some(block(1, 3).as_slice()));

    // Naive decoding with every present part returns garbage for part 1.
    let mut naive: Vec<Option<Vec<u8>>> = row
        .iter()
        .map(|p| p.as_ref().map(|p| p.0.clone()))
        .collect();
    c.reconstruct_data(&mut naive)?;
    assert_ne!(naive[1].as_deref(), Some(block(1, 3).as_slice()));
    Ok(())
}

#[test]
fn newest_parity_restores_the_newest_write() -> Result<(), EcError> {
    let c = EcCodec::new(K, M)?;
    // Part 1 is down and missed a write at 8; parity 4 has it, parity 5
    // (not marked stale, say after a crash) does not.
    let new = parity(&c, [5, 8, 3, 7])?;
    let old = parity(&c, [5, 3, 3, 7])?;
    let row = vec![
        data_part(0, 5),
        None,
        data_part(2, 3),
        data_part(3, 7),
        Some(new[0].clone()),
        Some(old[1].clone()),
    ];
    let shards = restore(&c, &row)?;
    assert_eq!(shards[1].as_deref(), Some(block(1, 8).as_slice()));
    Ok(())
}

#[test]
fn below_k_consistent_parts_nothing_is_decoded() -> Result<(), EcError> {
    let c = EcCodec::new(K, M)?;
    let p = parity(&c, [5, 3, 3, 7])?;
    // Parts 0 and 2 hold writes the parity never saw; part 1 is down.
    let row = vec![
        data_part(0, 9),
        None,
        data_part(2, 11),
        data_part(3, 7),
        Some(p[0].clone()),
        Some(p[1].clone()),
    ];
    let err = restore(&c, &row).expect_err("not enough consistent parts");
    assert!(err.is_data_loss());
    Ok(())
}
