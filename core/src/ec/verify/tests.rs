//! Hand-made rows for the torn-row rule.

use super::*;

fn g(n: u64) -> Generation {
    Generation(n)
}

fn d(n: u64) -> PartMeta {
    PartMeta::Data(g(n))
}

fn p(gens: &[u64]) -> PartMeta {
    let gens: Vec<Generation> = gens.iter().map(|&n| g(n)).collect();
    PartMeta::Parity(Cover::new(&gens).expect("cover"))
}

const X: PartMeta = PartMeta::Unavailable;

fn set(parts: &[usize]) -> PartSet {
    parts.iter().copied().collect()
}

fn check(k: usize, m: usize, parts: &[PartMeta]) -> RowVerdict {
    check_row(k, m, parts).expect("well-formed row")
}

#[test]
fn never_written_row_is_consistent() {
    let empty = MetaRecord::EMPTY;
    let parts = [
        PartMeta::data(&empty),
        PartMeta::data(&empty),
        PartMeta::parity(&empty, 2),
    ];
    let v = check(2, 1, &parts);
    assert!(!v.is_torn());
    assert_eq!(v.consistent, set(&[0, 1, 2]));
    assert_eq!(v.version, Some(Cover::unwritten(2)));
}

#[test]
fn small_writes_leave_older_generations_legitimately() {
    let v = check(
        4,
        2,
        &[d(5), d(3), d(3), d(7), p(&[5, 3, 3, 7]), p(&[5, 3, 3, 7])],
    );
    assert!(!v.is_torn());
    assert_eq!(v.decode_set(), Some(set(&[0, 1, 2, 3, 4, 5])));
}

#[test]
fn lost_parity_update_with_all_data_present() {
    // Data part 0 was rewritten at 9; parity 4 never heard of it.
    let v = check(
        4,
        2,
        &[d(9), d(3), d(3), d(7), p(&[5, 3, 3, 7]), p(&[9, 3, 3, 7])],
    );
    assert!(v.is_torn());
    assert_eq!(v.version_generation(0), Some(g(9)));
    assert_eq!(v.inconsistent, set(&[4]));
    assert_eq!(v.tear(4), Some(Tear::ParityDisagrees));
    assert_eq!(v.tear(5), None);
    assert_eq!(v.readable_data(), set(&[0, 1, 2, 3]));
}

#[test]
fn degraded_row_decodes_at_the_parity_version() {
    let v = check(
        4,
        2,
        &[d(5), X, d(3), d(7), p(&[5, 8, 3, 7]), p(&[5, 8, 3, 7])],
    );
    assert!(!v.is_torn());
    assert_eq!(v.decode_set(), Some(set(&[0, 2, 3, 4, 5])));
    assert_eq!(v.version_generation(1), Some(g(8)));
    assert_eq!(v.readable_data(), set(&[0, 1, 2, 3]));
}

#[test]
fn newer_data_is_left_out_of_reconstruction() {
    // Part 1 is down; part 0 holds a write (9) whose parity update was lost.
    let parts = [d(9), X, d(3), d(7), p(&[5, 8, 3, 7]), p(&[5, 8, 3, 7])];
    let v = check(4, 2, &parts);
    assert!(v.is_torn());
    assert_eq!(v.decode_set(), Some(set(&[2, 3, 4, 5])));
    assert_eq!(
        v.tear(0),
        Some(Tear::DataNewer {
            data: g(9),
            covered: g(5)
        })
    );
    // With one parity part there are not K consistent parts left.
    let v = check(4, 1, &[d(9), X, d(3), d(7), p(&[5, 8, 3, 7])]);
    assert!(v.is_torn());
    assert_eq!(v.decode_set(), None);
    assert_eq!(v.readable_data(), set(&[0, 2, 3]));
}

#[test]
fn older_data_is_left_out_too() {
    // Parity covers a write (8) to part 0 that part 0 lost.
    let v = check(
        4,
        2,
        &[d(5), d(3), X, d(7), p(&[8, 3, 3, 7]), p(&[8, 3, 3, 7])],
    );
    assert_eq!(v.decode_set(), Some(set(&[1, 3, 4, 5])));
    assert_eq!(
        v.tear(0),
        Some(Tear::DataOlder {
            data: g(5),
            covered: g(8)
        })
    );
}

#[test]
fn disagreeing_parity_newest_usable_version_wins() {
    // Part 0 is down; parity 4 saw its write at 8, parity 5 did not.
    let v = check(
        4,
        2,
        &[X, d(3), d(3), d(7), p(&[8, 3, 3, 7]), p(&[5, 3, 3, 7])],
    );
    assert_eq!(v.version_generation(0), Some(g(8)));
    assert_eq!(v.decode_set(), Some(set(&[1, 2, 3, 4])));
    assert_eq!(v.tear(5), Some(Tear::ParityDisagrees));
    // Order of the parity parts does not matter.
    let v = check(
        4,
        2,
        &[X, d(3), d(3), d(7), p(&[5, 3, 3, 7]), p(&[8, 3, 3, 7])],
    );
    assert_eq!(v.version_generation(0), Some(g(8)));
    assert_eq!(v.decode_set(), Some(set(&[1, 2, 3, 5])));
}

#[test]
fn usable_version_beats_newer_unusable_one() {
    // Parity 4 is newer but data part 3 disagrees with it: only 3 members.
    let v = check(
        4,
        2,
        &[X, d(3), d(3), d(6), p(&[9, 3, 3, 7]), p(&[5, 3, 3, 6])],
    );
    assert_eq!(v.decode_set(), Some(set(&[1, 2, 3, 5])));
    assert_eq!(v.version_generation(0), Some(g(5)));
    assert_eq!(v.inconsistent, set(&[4]));
}

#[test]
fn too_many_erasures_is_not_a_tear() {
    let v = check(4, 2, &[X, X, X, d(7), p(&[5, 8, 3, 7]), p(&[5, 8, 3, 7])]);
    assert!(!v.is_torn());
    assert_eq!(v.decode_set(), None);
    assert_eq!(v.readable_data(), set(&[3]));
}

#[test]
fn no_parity_decides_nothing() {
    let v = check(2, 1, &[d(4), X, X]);
    assert_eq!(v.version, None);
    assert!(!v.is_torn());
    assert_eq!(v.decode_set(), None);
    assert_eq!(v.consistent, set(&[0]));
    assert_eq!(v.readable_data(), set(&[0]));
}

#[test]
fn all_data_without_parity_is_its_own_version() {
    let v = check(2, 1, &[d(4), d(6), X]);
    assert_eq!(v.decode_set(), Some(set(&[0, 1])));
    assert!(!v.is_torn());
}

#[test]
fn malformed_rows_are_caller_errors() {
    assert_eq!(
        check_row(2, 1, &[d(1), d(1)]),
        Err(EcError::WrongShardCount {
            expected: 3,
            got: 2
        })
    );
    assert_eq!(
        check_row(2, 1, &[d(1), p(&[1, 1]), p(&[1, 1])]),
        Err(EcError::MisplacedMeta { part: 1 })
    );
    assert_eq!(
        check_row(2, 1, &[d(1), d(1), d(1)]),
        Err(EcError::MisplacedMeta { part: 2 })
    );
    assert_eq!(
        check_row(2, 1, &[d(1), d(1), p(&[1, 1, 1])]),
        Err(EcError::BadCover { got: 3, k: 2 })
    );
    assert!(check_row(0, 1, &[]).is_err());
    assert!(Cover::new(&[]).is_err());
    assert!(Cover::new(&[g(1); 17]).is_err());
}

#[test]
fn records_map_to_part_meta() {
    let cover = Cover::new(&[g(4), g(0), g(9)]).expect("cover");
    let rec = cover.parity_record(b"parity bytes", g(9));
    assert_eq!(PartMeta::parity(&rec, 3), PartMeta::Parity(cover));
    assert_eq!(cover.newest(), g(9));
    // Wrong K, or parity meta in a data part, is unusable.
    assert_eq!(PartMeta::parity(&rec, 4), PartMeta::Unavailable);
    assert_eq!(PartMeta::data(&rec), PartMeta::Unavailable);
    // A data record in a parity part is unusable.
    let data = MetaRecord::for_data(b"data", g(3));
    assert_eq!(PartMeta::parity(&data, 3), PartMeta::Unavailable);
    assert_eq!(PartMeta::data(&data), PartMeta::Data(g(3)));
    assert_eq!(
        PartMeta::data(&MetaRecord::for_zero(g(5))),
        PartMeta::Data(g(5))
    );
}
