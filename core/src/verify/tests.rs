//! The pure comparisons of verify, without I/O: listings and scans built
//! by hand against a small volume (4 chunks of 4 blocks).

use uuid::Uuid;

use super::deep::{self, DeepResult};
use super::fast::{self, BackendListing, FastView, PartStatus};
use super::report::{ChunkState, PartProblem, Problem};
use super::{BlockMeta, FileCheck, PartFile, PartScan, RecordSummary, VolumeListing};
use crate::backend::PartId;
use crate::format::alloc::{AllocMap, BitmapKind};
use crate::format::layout::PartLayout;
use crate::format::record::flags;
use crate::meta::volume::VolumeMeta;
use crate::placement::BackendId;

const UUID: Uuid = Uuid::from_u128(0xabcd);
const CHUNKS: u64 = 4;
const BLOCK: u32 = 4096;

fn id(i: u128) -> BackendId {
    BackendId(Uuid::from_u128(i + 1))
}

/// A volume of 4 chunks of 4 blocks (16 KiB chunks) over `n` backends.
fn meta(redundancy: &str, n: u128) -> VolumeMeta {
    VolumeMeta {
        format_version: 1,
        name: "t".into(),
        uuid: UUID,
        number: 1,
        size: CHUNKS * 4 * u64::from(BLOCK),
        block_size: BLOCK,
        chunk_size: 4 * u64::from(BLOCK),
        redundancy: redundancy.into(),
        read_only: false,
        append_only: false,
        epoch: 1,
        master: "test".into(),
        placement: (0..n).map(id).collect(),
    }
}

fn alloc(chunks: &[u64]) -> Vec<u8> {
    let mut m = AllocMap::new(UUID, CHUNKS);
    for c in chunks {
        m.set(*c);
    }
    m.encode()
}

fn file_size(m: &VolumeMeta) -> u64 {
    let geo = m.geometry().unwrap_or_else(|e| panic!("{e}"));
    PartLayout::new(BLOCK, geo.blocks_per_part()).file_size
}

/// Every backend holding exactly its placed parts of `chunks`, all bits set.
fn healthy(m: &VolumeMeta, chunks: &[u64]) -> Vec<BackendListing> {
    let placement = m.placement().unwrap_or_else(|e| panic!("{e}"));
    let parts = m.redundancy().map(|r| r.parts()).unwrap_or(0);
    let size = file_size(m);
    m.placement
        .iter()
        .map(|b| {
            let mut l = VolumeListing {
                alloc: Some(alloc(chunks)),
                ..VolumeListing::default()
            };
            for &c in chunks {
                for p in (0..parts).filter(|&p| placement.backend(c, p) == *b) {
                    l.parts.push(PartFile {
                        part: PartId {
                            chunk: c,
                            part: p as u8,
                        },
                        size,
                    });
                }
            }
            BackendListing {
                id: *b,
                listing: Some(l),
            }
        })
        .collect()
}

fn check(m: &VolumeMeta, l: &[BackendListing]) -> FastView {
    fast::check(m, l).unwrap_or_else(|e| panic!("{e}"))
}

fn remove(l: &mut [BackendListing], part: PartId) -> BackendId {
    for b in l.iter_mut() {
        if let Some(list) = &mut b.listing
            && let Some(i) = list.parts.iter().position(|f| f.part == part)
        {
            list.parts.remove(i);
            return b.id;
        }
    }
    panic!("{part:?} not listed")
}

fn part(chunk: u64, part: u8) -> PartId {
    PartId { chunk, part }
}

#[test]
fn a_complete_layout_is_healthy() {
    let m = meta("replicate:3", 3);
    let v = check(&m, &healthy(&m, &[0, 1, 2, 3]));
    assert!(v.global.is_empty() && v.parts.is_empty() && v.strays.is_empty());
    let (counts, lost) = v.counts();
    assert_eq!((counts.in_use, counts.healthy), (4, 4));
    assert!(lost.is_empty());
}

#[test]
fn an_absent_part_of_an_allocated_chunk_is_missing_of_a_free_one_nothing() {
    let m = meta("replicate:3", 3);
    let mut l = healthy(&m, &[0, 1]);
    let b = remove(&mut l, part(1, 2));
    let v = check(&m, &l);
    let at = PartProblem {
        chunk: 1,
        part: 2,
        backend: b,
    };
    assert_eq!(v.parts, vec![Problem::PartMissing(at)]);
    assert_eq!(v.chunk_state(1, &[]), ChunkState::Degraded);
    assert!(!v.in_use(2), "chunk 2 never allocated, no file: not in use");
    assert_eq!(v.status(2, 0), PartStatus::Absent);
}

#[test]
fn wrong_sizes_are_reported_with_both_sizes() {
    let m = meta("replicate:2", 2);
    let mut l = healthy(&m, &[0]);
    let list = l[0].listing.as_mut().unwrap_or_else(|| panic!("listing"));
    list.parts[0].size = 4096;
    let at_part = list.parts[0].part;
    let v = check(&m, &l);
    assert_eq!(
        v.parts,
        vec![Problem::PartWrongSize {
            at: PartProblem {
                chunk: 0,
                part: at_part.part,
                backend: l[0].id,
            },
            size: 4096,
            expected: file_size(&m),
        }]
    );
}

#[test]
fn a_part_marked_in_a_degraded_map_is_stale() {
    let m = meta("replicate:3", 3);
    let mut l = healthy(&m, &[0, 1]);
    let placement = m.placement().unwrap_or_else(|e| panic!("{e}"));
    let of = placement.backend(1, 0);
    let mut map = AllocMap::with_kind(BitmapKind::Stale, UUID, CHUNKS, 0);
    map.set(1);
    let holder = l.iter().position(|b| b.id != of).unwrap_or(0);
    if let Some(list) = &mut l[holder].listing {
        list.stale.push((of, map.encode()));
    }
    let v = check(&m, &l);
    assert_eq!(
        v.parts,
        vec![Problem::PartStale {
            at: PartProblem {
                chunk: 1,
                part: 0,
                backend: of,
            },
            marked_by: vec![l[holder].id],
        }]
    );
    assert_eq!(v.status(1, 0), PartStatus::Stale);
}

#[test]
fn an_unreachable_backend_degrades_and_too_many_make_chunks_unavailable() {
    let m = meta("replicate:2", 3);
    let mut l = healthy(&m, &[0, 1, 2, 3]);
    let gone = l.remove(0).id;
    let v = check(&m, &l);
    assert_eq!(
        v.global,
        vec![Problem::BackendUnreachable {
            backend: Some(gone),
            address: None,
            why: "no reachable backend has this identity: its parts were not checked".into(),
        }]
    );
    assert!(
        v.parts.is_empty(),
        "unreachable parts are not listed one by one"
    );
    let (counts, lost) = v.counts();
    assert_eq!(counts.lost, 0);
    assert!(counts.degraded > 0);
    assert!(lost.is_empty());
    // Only one backend left: chunks whose two parts lived on the missing
    // one and a now-missing file are unavailable, not lost.
    let mut l = healthy(&m, &[0]);
    let placement = m.placement().unwrap_or_else(|e| panic!("{e}"));
    let (b0, b1) = (placement.backend(0, 0), placement.backend(0, 1));
    l.retain(|b| b.id != b0);
    remove(&mut l, part(0, 1));
    assert_eq!(l.iter().filter(|b| b.id == b1).count(), 1);
    let v = check(&m, &l);
    assert_eq!(v.chunk_state(0, &[]), ChunkState::Unavailable);
}

#[test]
fn too_few_good_parts_is_a_lost_chunk() {
    let m = meta("ec:2+1", 3);
    let mut l = healthy(&m, &[0, 1]);
    remove(&mut l, part(1, 0));
    remove(&mut l, part(1, 2));
    let v = check(&m, &l);
    let (counts, lost) = v.counts();
    assert_eq!(counts.lost, 1);
    assert_eq!(
        lost,
        vec![Problem::ChunkLost {
            chunk: 1,
            good: 1,
            needed: 2
        }]
    );
}

#[test]
fn misplaced_and_out_of_range_files_are_strays() {
    let m = meta("replicate:2", 3);
    let mut l = healthy(&m, &[0]);
    let placement = m.placement().unwrap_or_else(|e| panic!("{e}"));
    let elsewhere = l
        .iter()
        .position(|b| b.id != placement.backend(0, 0) && b.id != placement.backend(0, 1))
        .unwrap_or(0);
    let size = file_size(&m);
    if let Some(list) = &mut l[elsewhere].listing {
        list.parts.push(PartFile {
            part: part(0, 0),
            size,
        });
        list.parts.push(PartFile {
            part: part(CHUNKS, 0),
            size,
        });
        list.strays.push(super::StrayFile {
            path: "a/.3.new".into(),
            size: 1,
        });
    }
    let v = check(&m, &l);
    let paths: Vec<String> = v
        .strays
        .iter()
        .filter_map(|p| match p {
            Problem::Stray { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(paths, vec!["a/.3.new", "a/0", "a/4"]);
    assert!(v.parts.is_empty());
}

#[test]
fn missing_and_corrupt_allocation_maps() {
    let m = meta("replicate:2", 2);
    let mut l = healthy(&m, &[0]);
    if let Some(list) = &mut l[0].listing {
        list.alloc = None;
    }
    if let Some(list) = &mut l[1].listing {
        list.alloc = Some(vec![1, 2, 3]);
    }
    let v = check(&m, &l);
    assert!(
        matches!(v.global[0], Problem::AllocMissing { .. }),
        "{:?}",
        v.global
    );
    assert!(
        matches!(v.global[1], Problem::AllocCorrupt { .. }),
        "{:?}",
        v.global
    );
    assert!(v.in_use(0), "the part files still make chunk 0 in use");
}

// ---- deep ----

fn valid(generation: u64) -> BlockMeta {
    BlockMeta::Valid(RecordSummary {
        flags: flags::WRITTEN,
        generation,
        covered: vec![],
    })
}

fn parity(generation: u64, covered: &[u64]) -> BlockMeta {
    BlockMeta::Valid(RecordSummary {
        flags: flags::WRITTEN | flags::PARITY,
        generation,
        covered: covered.to_vec(),
    })
}

fn scans(
    v: &FastView,
    blocks: impl Fn(PartId) -> Vec<BlockMeta>,
) -> std::collections::HashMap<PartId, PartScan> {
    let mut out = std::collections::HashMap::new();
    for c in 0..CHUNKS {
        for p in 0..v.shape.parts {
            let id = part(c, p as u8);
            if v.status(c, p) == PartStatus::Good {
                out.insert(
                    id,
                    PartScan {
                        part: id,
                        file: FileCheck::Ok,
                        blocks: blocks(id),
                    },
                );
            }
        }
    }
    out
}

fn deep_of(v: &FastView, blocks: impl Fn(PartId) -> Vec<BlockMeta>) -> DeepResult {
    deep::check(v, &scans(v, blocks))
}

#[test]
fn replicas_agreeing_are_clean() {
    let m = meta("replicate:3", 3);
    let v = check(&m, &healthy(&m, &[0, 1]));
    let d = deep_of(&v, |_| {
        vec![valid(5), valid(6), BlockMeta::Unwritten, valid(7)]
    });
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    assert_eq!(d.counts.healthy, 2);
    assert_eq!(d.blocks_checked, 2 * 3 * 4);
}

#[test]
fn an_older_copy_is_stale_a_bad_one_corrupt_none_good_lost() {
    let m = meta("replicate:3", 3);
    let v = check(&m, &healthy(&m, &[0]));
    let d = deep_of(&v, |p| match p.part {
        0 => vec![
            valid(5),
            valid(9),
            BlockMeta::BadRecord,
            BlockMeta::BadRecord,
        ],
        1 => vec![valid(4), valid(9), valid(3), BlockMeta::BadRecord],
        _ => vec![
            valid(5),
            BlockMeta::BadData(RecordSummary {
                flags: flags::WRITTEN,
                generation: 9,
                covered: vec![],
            }),
            valid(3),
            BlockMeta::BadRecord,
        ],
    });
    let kinds: Vec<String> = d.problems.iter().map(|p| format!("{p:?}")).collect();
    let b = |p: usize| v.shape.backend(0, p);
    assert_eq!(
        d.problems,
        vec![
            Problem::CorruptBlocks {
                at: PartProblem {
                    chunk: 0,
                    part: 0,
                    backend: b(0)
                },
                count: 2,
                first: 2
            },
            Problem::CorruptBlocks {
                at: PartProblem {
                    chunk: 0,
                    part: 1,
                    backend: b(1)
                },
                count: 1,
                first: 3
            },
            Problem::StaleBlocks {
                at: PartProblem {
                    chunk: 0,
                    part: 1,
                    backend: b(1)
                },
                count: 1,
                first: 0
            },
            Problem::CorruptBlocks {
                at: PartProblem {
                    chunk: 0,
                    part: 2,
                    backend: b(2)
                },
                count: 2,
                first: 1
            },
            Problem::BlocksLost {
                chunk: 0,
                count: 1,
                first: 3
            },
        ],
        "{kinds:#?}"
    );
    assert_eq!(d.counts.lost, 1);
}

#[test]
fn ec_rows_consistent_torn_and_lost() {
    // ec:2+1, 4 blocks per chunk → 2 rows per part.
    let m = meta("ec:2+1", 3);
    let v = check(&m, &healthy(&m, &[0, 1, 2]));
    let d = deep_of(&v, |p| match (p.chunk, p.part) {
        // Chunk 0: consistent rows (row 1 never written).
        (0, 0) => vec![valid(5), BlockMeta::Unwritten],
        (0, 1) => vec![valid(6), BlockMeta::Unwritten],
        (0, _) => vec![parity(6, &[5, 6]), BlockMeta::Unwritten],
        // Chunk 1: row 0's parity covers an older data generation: torn.
        (1, 0) => vec![valid(5), valid(1)],
        (1, 1) => vec![valid(8), valid(1)],
        (1, _) => vec![parity(6, &[5, 6]), parity(1, &[1, 1])],
        // Chunk 2: a corrupt data block is rebuilt from the rest; two
        // unusable blocks of one row are lost.
        (_, 0) => vec![BlockMeta::BadRecord, BlockMeta::BadRecord],
        (_, 1) => vec![valid(2), BlockMeta::BadRecord],
        (_, _) => vec![parity(2, &[1, 2]), parity(3, &[3, 3])],
    });
    let b = |c: u64, p: usize| v.shape.backend(c, p);
    assert_eq!(
        d.problems,
        vec![
            Problem::TornRows {
                at: PartProblem {
                    chunk: 1,
                    part: 2,
                    backend: b(1, 2)
                },
                count: 1,
                first: 0
            },
            Problem::CorruptBlocks {
                at: PartProblem {
                    chunk: 2,
                    part: 0,
                    backend: b(2, 0)
                },
                count: 2,
                first: 0
            },
            Problem::CorruptBlocks {
                at: PartProblem {
                    chunk: 2,
                    part: 1,
                    backend: b(2, 1)
                },
                count: 1,
                first: 1
            },
            Problem::BlocksLost {
                chunk: 2,
                count: 1,
                first: 1
            },
        ]
    );
    assert_eq!(
        (d.counts.healthy, d.counts.degraded, d.counts.lost),
        (1, 1, 1)
    );
}

#[test]
fn a_bad_header_takes_the_part_out() {
    let m = meta("replicate:2", 2);
    let v = check(&m, &healthy(&m, &[0]));
    let mut s = scans(&v, |_| vec![valid(1); 4]);
    if let Some(x) = s.get_mut(&part(0, 1)) {
        x.file = FileCheck::BadHeader("bad magic".into());
        x.blocks.clear();
    }
    let d = deep::check(&v, &s);
    assert_eq!(
        d.problems,
        vec![Problem::PartBadHeader {
            at: PartProblem {
                chunk: 0,
                part: 1,
                backend: v.shape.backend(0, 1)
            },
            why: "bad magic".into()
        }]
    );
    assert_eq!(d.counts.degraded, 1);
}

#[test]
fn ec_data_behind_an_agreed_cover_is_the_torn_part() {
    // ec:2+1: data part 1 missed the write the parity covers.
    let m = meta("ec:2+1", 3);
    let v = check(&m, &healthy(&m, &[0, 1]));
    let d = deep_of(&v, |p| match (p.chunk, p.part) {
        (0, 0) => vec![valid(5), valid(1)],
        (0, 1) => vec![valid(2), valid(1)],
        (0, _) => vec![parity(6, &[5, 6]), parity(1, &[1, 1])],
        // Chunk 1: the data is newer than the cover (the parity update
        // was lost): the parity part is the torn one.
        (_, 0) => vec![valid(5), valid(1)],
        (_, 1) => vec![valid(8), valid(1)],
        (_, _) => vec![parity(6, &[5, 6]), parity(1, &[1, 1])],
    });
    let b = |c: u64, p: usize| v.shape.backend(c, p);
    assert_eq!(
        d.problems,
        vec![
            Problem::TornRows {
                at: PartProblem {
                    chunk: 0,
                    part: 1,
                    backend: b(0, 1)
                },
                count: 1,
                first: 0
            },
            Problem::TornRows {
                at: PartProblem {
                    chunk: 1,
                    part: 2,
                    backend: b(1, 2)
                },
                count: 1,
                first: 0
            },
        ]
    );
}
