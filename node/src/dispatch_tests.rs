//! Fencing at the node: a node restarted with an older epoch's master still
//! running elsewhere, or a duplicate delayed write, can never roll a block
//! back. Driven through `Node::handle`, no sockets.

use qbd_core::backend::PartId;
use qbd_core::ec::{Cover, PartMeta};
use qbd_core::format::alloc::{AllocMap, BitmapKind};
use qbd_core::format::record::{MetaRecord, RECORD_SIZE, RecordPos};
use qbd_core::generation::Generation;
use qbd_core::meta::volume::VolumeMeta;
use qbd_core::proto::msg::{ErrorCode, Request, Response, WireBlockState, WriteMode};
use tempfile::TempDir;
use uuid::Uuid;

use crate::node::Node;

const BS: usize = 4096;
const VOL: u16 = 7;
const PART: PartId = PartId { chunk: 0, part: 0 };

fn meta(node: &Node, uuid: Uuid, epoch: u64) -> String {
    let m = VolumeMeta {
        format_version: 1,
        name: "fenced".into(),
        uuid,
        number: VOL,
        size: 8 << 20,
        block_size: BS as u32,
        chunk_size: 4 << 20,
        redundancy: "replicate:1".into(),
        read_only: false,
        append_only: false,
        epoch,
        master: format!("master-of-epoch-{epoch}"),
        placement: vec![node.id()],
    };
    toml::to_string(&m).expect("meta encodes")
}

fn write(block: u32, generation: Generation, fill: u8) -> Request {
    write_to(PART, block, generation, fill)
}

/// A write as the master of the generation's epoch sends it (its session
/// epoch is the generation's epoch).
fn write_to(part: PartId, block: u32, generation: Generation, fill: u8) -> Request {
    Request::Write {
        volume: VOL,
        epoch: generation.epoch(),
        part,
        first: block,
        count: 1,
        generation: generation.0,
        mode: WriteMode::Data,
        heal: false,
        data: vec![fill; BS],
    }
}

fn read(block: u32) -> Request {
    Request::Read {
        volume: VOL,
        epoch: 1,
        part: PART,
        first: block,
        count: 1,
    }
}

fn written(applied: u32, skipped: u32) -> Response {
    Response::Written { applied, skipped }
}

fn code(r: &Response) -> Option<ErrorCode> {
    match r {
        Response::Error { code, .. } => Some(*code),
        _ => None,
    }
}

/// A read answer as the master sees it: encoded, then decoded, which
/// checks the data of `VouchedBlocks` against the stored checksums.
async fn read_checked(node: &Node, req: Request) -> Response {
    let resp = node.handle(in_session(node, req).await).await;
    assert!(
        matches!(resp, Response::VouchedBlocks { .. }),
        "a node answers reads with VouchedBlocks: {resp:?}"
    );
    let mut payload = Vec::new();
    resp.encode(&mut payload);
    Response::decode(resp.opcode(), &payload).expect("the answer decodes")
}

async fn expect_block(node: &Node, block: u32, generation: Generation, fill: u8) {
    let Response::Blocks { states, data } = read_checked(node, read(block)).await else {
        panic!("read failed");
    };
    assert_eq!(states, vec![WireBlockState::Data(generation.0)]);
    assert!(data.iter().all(|&b| b == fill), "block {block} rolled back");
}

/// `req` (a read) as sent by the master holding the node's current epoch.
async fn in_session(node: &Node, mut req: Request) -> Request {
    let now = node.epoch(VOL).await.unwrap_or(0);
    if let Request::Read { epoch, .. } | Request::ReadRaw { epoch, .. } = &mut req {
        *epoch = now;
    }
    req
}

/// A node with volume `VOL` created at epoch 0 and taken at epoch 1 by a
/// master, opened, chunk 0 allocated.
async fn node_with_volume() -> (TempDir, Node, Uuid) {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::open(dir.path(), "n1").expect("node");
    let uuid = Uuid::new_v4();
    let m = meta(&node, uuid, 0);
    let r = node.handle(Request::CreateVolume { meta: m.clone() }).await;
    assert_eq!(r, Response::Done);
    let r = node.handle(Request::OpenVolume { meta: m }).await;
    assert!(matches!(r, Response::Opened { .. }), "{r:?}");
    let r = node
        .handle(Request::SaveMeta {
            meta: meta(&node, uuid, 1),
        })
        .await;
    assert_eq!(r, Response::Done);
    let r = node
        .handle(Request::Allocate {
            volume: VOL,
            epoch: 1,
            part: PART,
        })
        .await;
    assert_eq!(r, Response::Done);
    (dir, node, uuid)
}

/// Master A at epoch 5 writes; master B takes epoch 6 and writes; A's late
/// writes and A's epoch are refused. Returns the node after that.
async fn two_masters() -> (TempDir, Node, Uuid) {
    let (dir, node, uuid) = node_with_volume().await;
    let save = |e| Request::SaveMeta {
        meta: meta(&node, uuid, e),
    };
    assert_eq!(node.handle(save(5)).await, Response::Done);
    assert_eq!(
        node.handle(write(0, Generation::new(5, 10), 0xA0)).await,
        written(1, 0)
    );
    assert_eq!(node.handle(save(6)).await, Response::Done);
    assert_eq!(
        node.handle(write(0, Generation::new(6, 1), 0xB0)).await,
        written(1, 0)
    );
    (dir, node, uuid)
}

#[tokio::test]
async fn an_older_epochs_master_cannot_write_or_take_the_epoch_back() {
    let (_dir, node, uuid) = two_masters().await;
    let late = node.handle(write(0, Generation::new(5, 11), 0xA1)).await;
    assert_eq!(code(&late), Some(ErrorCode::StaleEpoch), "{late:?}");
    let mut repair = write(0, Generation::new(5, 12), 0xA2);
    if let Request::Write { heal: r, .. } = &mut repair {
        *r = true;
    }
    assert_eq!(
        code(&node.handle(repair).await),
        Some(ErrorCode::StaleEpoch)
    );
    expect_block(&node, 0, Generation::new(6, 1), 0xB0).await;

    let back = node
        .handle(Request::SaveMeta {
            meta: meta(&node, uuid, 5),
        })
        .await;
    assert_eq!(code(&back), Some(ErrorCode::StaleEpoch), "{back:?}");
    assert_eq!(node.epoch(VOL).await, Some(6));
    let Response::Meta(Some(text)) = node.handle(Request::LoadMeta { number: VOL }).await else {
        panic!("no meta");
    };
    let stored: VolumeMeta = toml::from_str(&text).expect("meta parses");
    assert_eq!(
        stored.epoch, 6,
        "a refused SaveMeta must not reach the disk"
    );
    // Re-taking the same epoch is allowed (a master retrying its SaveMeta).
    let again = node
        .handle(Request::SaveMeta {
            meta: meta(&node, uuid, 6),
        })
        .await;
    assert_eq!(again, Response::Done);
}

fn set_stale(epoch: u64, of: Uuid, stale: bool, chunk: u64) -> Request {
    Request::SetStale {
        volume: VOL,
        epoch,
        of,
        stale,
        chunks: vec![chunk],
    }
}

/// Whether the degraded map of `of` has `chunk` set.
async fn stale_bit(node: &Node, uuid: Uuid, of: Uuid, chunk: u64) -> bool {
    let Response::Stale(maps) = node.handle(Request::LoadStale { volume: VOL }).await else {
        panic!("no stale maps");
    };
    maps.iter().find(|(id, _)| *id == of).is_some_and(|(_, b)| {
        AllocMap::decode_kind(b, BitmapKind::Stale, uuid)
            .expect("stale map decodes")
            .map
            .get(chunk)
    })
}

/// Whether the node's allocation map has `chunk` (re-opening is idempotent
/// and reports the current map).
async fn allocated(node: &Node, uuid: Uuid, chunk: u64) -> bool {
    let opened = node
        .handle(Request::OpenVolume {
            meta: meta(node, uuid, 6),
        })
        .await;
    let Response::Opened { alloc, .. } = opened else {
        panic!("open failed: {opened:?}");
    };
    AllocMap::decode(&alloc, uuid)
        .expect("alloc decodes")
        .map
        .get(chunk)
}

#[tokio::test]
async fn an_older_epochs_master_cannot_recreate_allocate_or_clear_stale() {
    let (_dir, node, uuid) = two_masters().await;
    let of = Uuid::new_v4();
    let chunk1 = PartId { chunk: 1, part: 0 };
    // B (epoch 6) marks chunk 1 of `of` degraded.
    assert_eq!(node.handle(set_stale(6, of, true, 1)).await, Response::Done);
    assert!(stale_bit(&node, uuid, of, 1).await);

    // A (epoch 5) would empty B's part, allocate a chunk, clear the bit.
    let recreate = Request::Recreate {
        volume: VOL,
        epoch: 5,
        part: PART,
    };
    let r = node.handle(recreate).await;
    assert_eq!(code(&r), Some(ErrorCode::StaleEpoch), "{r:?}");
    expect_block(&node, 0, Generation::new(6, 1), 0xB0).await;

    let allocate = Request::Allocate {
        volume: VOL,
        epoch: 5,
        part: chunk1,
    };
    let r = node.handle(allocate).await;
    assert_eq!(code(&r), Some(ErrorCode::StaleEpoch), "{r:?}");
    assert!(
        !allocated(&node, uuid, 1).await,
        "a refused Allocate allocated"
    );
    let w = write_to(chunk1, 0, Generation::new(6, 2), 1);
    assert_eq!(code(&node.handle(w).await), Some(ErrorCode::PartMissing));

    let r = node.handle(set_stale(5, of, false, 1)).await;
    assert_eq!(code(&r), Some(ErrorCode::StaleEpoch), "{r:?}");
    assert!(
        stale_bit(&node, uuid, of, 1).await,
        "a refused clear cleared"
    );
    let r = node.handle(set_stale(5, of, true, 2)).await;
    assert_eq!(code(&r), Some(ErrorCode::StaleEpoch), "{r:?}");
    assert!(
        !stale_bit(&node, uuid, of, 2).await,
        "a refused mark marked"
    );

    // The current master (epoch 6) still can; the data stays until then.
    let allocate = Request::Allocate {
        volume: VOL,
        epoch: 6,
        part: chunk1,
    };
    assert_eq!(node.handle(allocate).await, Response::Done);
    assert!(allocated(&node, uuid, 1).await);
    assert_eq!(
        node.handle(set_stale(6, of, false, 1)).await,
        Response::Done
    );
    assert!(!stale_bit(&node, uuid, of, 1).await);
    let recreate = Request::Recreate {
        volume: VOL,
        epoch: 6,
        part: PART,
    };
    assert_eq!(node.handle(recreate).await, Response::Done);
    expect_unwritten(&node, 0).await;
}

#[tokio::test]
async fn a_restarted_node_remembers_the_epoch() {
    let (dir, node, uuid) = two_masters().await;
    drop(node);
    let node = Node::open(dir.path(), "n1").expect("node restarts");
    // A, still running elsewhere, reaches the restarted node first.
    let early = node.handle(write(0, Generation::new(5, 11), 0xA1)).await;
    assert_eq!(code(&early), Some(ErrorCode::NotOpen), "{early:?}");
    let back = node
        .handle(Request::SaveMeta {
            meta: meta(&node, uuid, 5),
        })
        .await;
    assert_eq!(code(&back), Some(ErrorCode::StaleEpoch), "{back:?}");
    assert_eq!(node.epoch(VOL).await, Some(6));
    // Whoever opens the volume (here A itself, with its old view), A's
    // writes stay refused and B's block stays.
    let opened = node
        .handle(Request::OpenVolume {
            meta: meta(&node, uuid, 5),
        })
        .await;
    let Response::Opened {
        alloc,
        corrupt_pages,
    } = opened
    else {
        panic!("open failed: {opened:?}");
    };
    assert!(corrupt_pages.is_empty());
    assert!(
        AllocMap::decode(&alloc, uuid)
            .expect("alloc decodes")
            .map
            .get(0)
    );
    let late = node.handle(write(0, Generation::new(5, 12), 0xA2)).await;
    assert_eq!(code(&late), Some(ErrorCode::StaleEpoch), "{late:?}");
    let recreate = Request::Recreate {
        volume: VOL,
        epoch: 5,
        part: PART,
    };
    let late = node.handle(recreate).await;
    assert_eq!(code(&late), Some(ErrorCode::StaleEpoch), "{late:?}");
    expect_block(&node, 0, Generation::new(6, 1), 0xB0).await;
}

#[tokio::test]
async fn duplicate_and_reordered_writes_are_skipped() {
    let (_dir, node, _uuid) = two_masters().await;
    let g2 = Generation::new(6, 2);
    assert_eq!(node.handle(write(1, g2, 0xC0)).await, written(1, 0));
    assert_eq!(
        node.handle(write(1, g2, 0xC1)).await,
        written(0, 1),
        "duplicate"
    );
    expect_block(&node, 1, g2, 0xC0).await;
    let g5 = Generation::new(6, 5);
    assert_eq!(node.handle(write(2, g5, 0xD5)).await, written(1, 0));
    let older = node.handle(write(2, Generation::new(6, 4), 0xD4)).await;
    assert_eq!(
        older,
        written(0, 1),
        "an older generation after a newer one"
    );
    expect_block(&node, 2, g5, 0xD5).await;
}

/// Writes as masters send them (`VouchedWrite`): the record stores the
/// checksum the request carried (the node does not hash the data again),
/// and the generation rule and the heal operation hold as for `Write`.
#[tokio::test]
async fn vouched_writes_store_their_checksums_under_the_generation_rule() {
    let (_dir, node, _uuid) = two_masters().await;
    let g2 = Generation::new(6, 2);
    let vouched = |block, g: Generation, fill| write(block, g, fill).vouched();
    assert!(matches!(vouched(1, g2, 1), Request::VouchedWrite { .. }));
    assert_eq!(node.handle(vouched(1, g2, 0xA1)).await, written(1, 0));
    // The read path checks the data against the stored checksum.
    expect_block(&node, 1, g2, 0xA1).await;
    let (record, data) = raw(&node, 1).await;
    assert_eq!(
        decoded(&record, 1).data_sum,
        qbd_core::format::checksum128(&[&data])
    );
    let older = vouched(1, Generation::new(6, 1), 0xA0);
    assert_eq!(node.handle(older).await, written(0, 1));
    let Request::VouchedWrite {
        volume,
        epoch,
        part,
        first,
        count,
        sums,
        data,
        ..
    } = vouched(1, Generation::new(6, 1), 0xAF)
    else {
        panic!("not vouched");
    };
    let repair = Request::VouchedWrite {
        volume,
        epoch,
        part,
        first,
        count,
        generation: Generation::new(6, 1).0,
        heal: true,
        sums,
        data,
    };
    assert_eq!(node.handle(repair).await, written(1, 0));
    expect_block(&node, 1, Generation::new(6, 1), 0xAF).await;
}

#[tokio::test]
async fn volumes_not_open_and_bad_requests_are_refused() {
    let (_dir, node, uuid) = node_with_volume().await;
    let other = Request::Read {
        volume: VOL + 1,
        epoch: 1,
        part: PART,
        first: 0,
        count: 1,
    };
    assert_eq!(code(&node.handle(other).await), Some(ErrorCode::NotOpen));
    let bad = node
        .handle(Request::SaveMeta {
            meta: "epoch = ".into(),
        })
        .await;
    assert_eq!(code(&bad), Some(ErrorCode::Invalid));
    let outside = Request::Read {
        volume: VOL,
        epoch: 1,
        part: PART,
        first: 1 << 20,
        count: 1,
    };
    assert_eq!(code(&node.handle(outside).await), Some(ErrorCode::Invalid));
    let unallocated = write_to(PartId { chunk: 1, part: 0 }, 0, Generation::new(1, 1), 1);
    assert_eq!(
        code(&node.handle(unallocated).await),
        Some(ErrorCode::PartMissing)
    );
    let other_shape = meta(&node, Uuid::new_v4(), 0);
    let reopen = node.handle(Request::OpenVolume { meta: other_shape }).await;
    assert_eq!(code(&reopen), Some(ErrorCode::Invalid), "{reopen:?}");
    let again = node
        .handle(Request::OpenVolume {
            meta: meta(&node, uuid, 0),
        })
        .await;
    assert!(
        matches!(again, Response::Opened { .. }),
        "re-open is idempotent"
    );
}

#[tokio::test]
async fn every_request_kind_reaches_the_store() {
    let (_dir, node, _uuid) = node_with_volume().await;
    assert_eq!(node.handle(Request::Ping).await, Response::Pong);
    let name = Request::VolumeNumber {
        name: "fenced".into(),
    };
    assert_eq!(node.handle(name).await, Response::Number(Some(VOL)));
    assert_eq!(
        node.handle(Request::VolumeNumbers).await,
        Response::Numbers(vec![VOL])
    );
    let g = Generation::new(1, 1);
    let zero = Request::Write {
        volume: VOL,
        epoch: 1,
        part: PART,
        first: 3,
        count: 2,
        generation: g.0,
        mode: WriteMode::ZeroPunch,
        heal: false,
        data: Vec::new(),
    };
    assert_eq!(node.handle(zero).await, written(2, 0));
    let req = Request::Read {
        volume: VOL,
        epoch: 1,
        part: PART,
        first: 3,
        count: 2,
    };
    let r = read_checked(&node, req).await;
    let Response::Blocks { states, data } = r else {
        panic!("read failed")
    };
    assert_eq!(states, vec![WireBlockState::Zero(g.0); 2]);
    assert_eq!(data.len(), 2 * BS);
    let sync = Request::Sync {
        volume: VOL,
        parts: None,
    };
    assert_eq!(node.handle(sync).await, Response::Done);
    let of = Uuid::new_v4();
    let mark = Request::SetStale {
        volume: VOL,
        epoch: 1,
        of,
        stale: true,
        chunks: vec![1],
    };
    assert_eq!(node.handle(mark).await, Response::Done);
    let Response::Stale(maps) = node.handle(Request::LoadStale { volume: VOL }).await else {
        panic!("no stale maps");
    };
    assert_eq!(maps.len(), 1);
    assert_eq!(maps[0].0, of);
    let recreate = Request::Recreate {
        volume: VOL,
        epoch: 1,
        part: PART,
    };
    assert_eq!(node.handle(recreate).await, Response::Done);
    expect_unwritten(&node, 3).await;
    node.sync_all().await.expect("sync all");
}

async fn expect_unwritten(node: &Node, block: u32) {
    let Response::Blocks { states, .. } = read_checked(node, read(block)).await else {
        panic!("read failed");
    };
    assert_eq!(states, vec![WireBlockState::Unwritten]);
}

fn read_raw(block: u32) -> Request {
    Request::ReadRaw {
        volume: VOL,
        epoch: 1,
        part: PART,
        block,
    }
}

/// A `WriteRaw` of `PART`'s `block` at `epoch`.
fn write_raw(
    epoch: u64,
    block: u32,
    record: Option<[u8; RECORD_SIZE]>,
    data: Option<Vec<u8>>,
) -> Request {
    Request::WriteRaw {
        volume: VOL,
        epoch,
        part: PART,
        block,
        record: record.map(Box::new),
        data,
    }
}

/// The raw bytes of `PART`'s `block`.
async fn raw(node: &Node, block: u32) -> ([u8; RECORD_SIZE], Vec<u8>) {
    match node.handle(in_session(node, read_raw(block)).await).await {
        Response::RawBlock { record, data } => (*record, data),
        other => panic!("raw read failed: {other:?}"),
    }
}

/// `block`'s record at `PART` decoded.
fn decoded(record: &[u8; RECORD_SIZE], block: u32) -> MetaRecord {
    let pos = RecordPos {
        chunk: PART.chunk,
        part: PART.part,
        block,
    };
    MetaRecord::decode(record, pos).expect("record decodes")
}

/// The step EC parity takes over a node: a normal write of the parity
/// bytes, then its parity record (the cover) through `WriteRaw`; `ReadRaw`
/// returns it, and the normal read still verifies the block.
#[tokio::test]
async fn raw_records_carry_parity_covers_through_the_node() {
    let (_dir, node, _uuid) = two_masters().await;
    let g = Generation::new(6, 7);
    assert_eq!(node.handle(write(3, g, 0x3c)).await, written(1, 0));
    let (record, data) = raw(&node, 3).await;
    assert_eq!(data, vec![0x3c; BS]);
    assert_eq!(decoded(&record, 3).generation, g);
    assert_eq!(
        PartMeta::parity(&decoded(&record, 3), 4),
        PartMeta::Unavailable
    );

    let cover = Cover::new(&[g, Generation::new(6, 1), Generation::NONE, g]).expect("cover");
    let pos = RecordPos {
        chunk: PART.chunk,
        part: PART.part,
        block: 3,
    };
    let parity = cover.parity_record(&data, g).encode(pos);
    let r = node.handle(write_raw(6, 3, Some(parity), None)).await;
    assert_eq!(r, Response::Done);
    let (record, data) = raw(&node, 3).await;
    assert_eq!(record, parity);
    assert_eq!(
        data,
        vec![0x3c; BS],
        "a record-only raw write keeps the data"
    );
    assert_eq!(
        PartMeta::parity(&decoded(&record, 3), 4),
        PartMeta::Parity(cover)
    );
    expect_block(&node, 3, g, 0x3c).await;

    // Data and record together (crash simulation, tests); a never-written
    // block reads raw as zeros.
    let unclaimed = write_raw(7, 4, Some([0xee; RECORD_SIZE]), Some(vec![0x44; BS]));
    let r = node.handle(unclaimed).await;
    assert_eq!(
        code(&r),
        Some(ErrorCode::StaleEpoch),
        "an epoch never claimed by SaveMeta is refused: {r:?}"
    );
    let r = node
        .handle(write_raw(
            6,
            4,
            Some([0xee; RECORD_SIZE]),
            Some(vec![0x44; BS]),
        ))
        .await;
    assert_eq!(r, Response::Done, "the session's epoch is accepted");
    assert_eq!(raw(&node, 4).await, ([0xee; RECORD_SIZE], vec![0x44; BS]));
    assert_eq!(raw(&node, 5).await, ([0; RECORD_SIZE], vec![0; BS]));
    assert_eq!(
        node.epoch(VOL).await,
        Some(6),
        "only SaveMeta moves the epoch"
    );
}

#[tokio::test]
async fn an_older_epochs_master_cannot_overwrite_a_parity_record() {
    let (_dir, node, _uuid) = two_masters().await;
    let before = raw(&node, 0).await;
    let forged = write_raw(5, 0, Some([0xab; RECORD_SIZE]), Some(vec![0xcd; BS]));
    let r = node.handle(forged).await;
    assert_eq!(code(&r), Some(ErrorCode::StaleEpoch), "{r:?}");
    let r = node
        .handle(write_raw(5, 0, Some([0; RECORD_SIZE]), None))
        .await;
    assert_eq!(code(&r), Some(ErrorCode::StaleEpoch), "{r:?}");
    assert_eq!(
        raw(&node, 0).await,
        before,
        "a refused raw write changed the block"
    );
    expect_block(&node, 0, Generation::new(6, 1), 0xB0).await;
}

#[tokio::test]
async fn raw_requests_outside_the_volume_or_a_block_are_refused() {
    let (_dir, node, _uuid) = node_with_volume().await;
    let short = write_raw(1, 1, None, Some(vec![1; BS - 1]));
    assert_eq!(code(&node.handle(short).await), Some(ErrorCode::Invalid));
    let long = write_raw(1, 1, Some([0; RECORD_SIZE]), Some(vec![1; BS + 1]));
    assert_eq!(code(&node.handle(long).await), Some(ErrorCode::Invalid));
    assert_eq!(
        raw(&node, 1).await,
        ([0; RECORD_SIZE], vec![0; BS]),
        "nothing written"
    );
    let outside = write_raw(1, 1 << 20, Some([0; RECORD_SIZE]), None);
    assert_eq!(code(&node.handle(outside).await), Some(ErrorCode::Invalid));
    assert_eq!(
        code(
            &node
                .handle(in_session(&node, read_raw(1 << 20)).await)
                .await
        ),
        Some(ErrorCode::Invalid)
    );
    let unallocated = Request::WriteRaw {
        volume: VOL,
        epoch: 1,
        part: PartId { chunk: 1, part: 0 },
        block: 0,
        record: Some(Box::new([0; RECORD_SIZE])),
        data: None,
    };
    assert_eq!(
        code(&node.handle(unallocated).await),
        Some(ErrorCode::PartMissing)
    );
    let other = Request::ReadRaw {
        volume: VOL + 1,
        epoch: 1,
        part: PART,
        block: 0,
    };
    assert_eq!(code(&node.handle(other).await), Some(ErrorCode::NotOpen));
}

// ---- verify's requests: listing and scanning, read-only ----

fn list_parts(from: u64, max: u32) -> Request {
    Request::ListParts {
        volume: VOL,
        part: 0,
        from,
        max,
    }
}

#[tokio::test]
async fn verify_lists_the_volume_by_pages() {
    let (dir, node, _uuid) = node_with_volume().await;
    for chunk in 1..=3 {
        let part = PartId { chunk, part: 0 };
        let r = node
            .handle(Request::Allocate {
                volume: VOL,
                epoch: 1,
                part,
            })
            .await;
        assert_eq!(r, Response::Done);
    }
    let stray = dir.path().join("7/a/.9.new");
    std::fs::write(&stray, b"x").expect("stray file");
    let Response::VolumeFiles {
        alloc,
        stale,
        part_dirs,
        strays,
    } = node.handle(Request::ListVolume { volume: VOL }).await
    else {
        panic!("ListVolume");
    };
    assert!(alloc.is_some_and(|a| !a.is_empty()));
    assert!(stale.is_empty());
    assert_eq!(part_dirs, vec![0]);
    assert!(strays.is_empty(), "{strays:?}");
    let size = std::fs::metadata(dir.path().join("7/a/0"))
        .expect("part file")
        .len();
    let first = node.handle(list_parts(0, 2)).await;
    assert_eq!(
        first,
        Response::PartList {
            files: vec![(0, size), (1, size)],
            strays: vec![("a/.9.new".into(), 1)],
            next: Some(2),
        }
    );
    let second = node.handle(list_parts(2, 2)).await;
    assert_eq!(
        second,
        Response::PartList {
            files: vec![(2, size), (3, size)],
            strays: vec![],
            next: None,
        }
    );
    assert_eq!(
        code(&node.handle(list_parts(0, 0)).await),
        Some(ErrorCode::Invalid)
    );
    let absent = node.handle(Request::ListVolume { volume: 99 }).await;
    assert_eq!(code(&absent), Some(ErrorCode::Io));
}

#[tokio::test]
async fn verify_scans_parts_on_the_node_without_the_data() {
    use qbd_core::verify::{BlockMeta, FileCheck};
    let (dir, node, uuid) = node_with_volume().await;
    let g = Generation::new(1, 3);
    assert_eq!(node.handle(write(0, g, 0x5a)).await, written(1, 0));
    assert_eq!(
        node.handle(Request::Sync {
            volume: VOL,
            parts: None
        })
        .await,
        Response::Done
    );
    let other = PartId { chunk: 1, part: 0 };
    let scan = |parts: Vec<PartId>| Request::ScanParts {
        meta: meta(&node, uuid, 0),
        parts,
    };
    let Response::PartScans(scans) = node.handle(scan(vec![PART, other])).await else {
        panic!("ScanParts");
    };
    assert_eq!(scans.len(), 2);
    assert_eq!(scans[0].file, FileCheck::Ok);
    assert_eq!(scans[0].blocks.len(), 1024);
    assert!(matches!(&scans[0].blocks[0], BlockMeta::Valid(s) if s.generation == g.0));
    assert!(
        scans[0].blocks[1..]
            .iter()
            .all(|b| *b == BlockMeta::Unwritten)
    );
    assert_eq!(scans[1].file, FileCheck::Missing);

    // A flipped data byte: the record no longer matches.
    let path = dir.path().join("7/a/0");
    let mut bytes = std::fs::read(&path).expect("part");
    let h = qbd_core::format::header::PartHeader::decode(&bytes).expect("header");
    bytes[h.data_offset as usize + 7] ^= 1;
    std::fs::write(&path, &bytes).expect("rewrite part");
    let Response::PartScans(scans) = node.handle(scan(vec![PART])).await else {
        panic!("ScanParts");
    };
    assert!(matches!(&scans[0].blocks[0], BlockMeta::BadData(s) if s.generation == g.0));

    let too_many: Vec<PartId> = (0..5000).map(|chunk| PartId { chunk, part: 0 }).collect();
    assert_eq!(
        code(&node.handle(scan(too_many)).await),
        Some(ErrorCode::Invalid)
    );
    let bad_meta = Request::ScanParts {
        meta: "not toml".into(),
        parts: vec![PART],
    };
    assert_eq!(code(&node.handle(bad_meta).await), Some(ErrorCode::Invalid));
}

/// A heal copies a block at its source's generation, from an earlier epoch
/// by design: the node fences it by the session epoch the request carries,
/// never by the generation's epoch (issue 14: journal replay, reconcile and
/// read repair were refused after every restart).
#[tokio::test]
async fn a_heal_at_an_old_generation_is_fenced_by_the_session_epoch() {
    let (_dir, node, _uuid) = two_masters().await;
    let mut heal = write(0, Generation::new(5, 10), 0xA0);
    if let Request::Write { epoch, heal: h, .. } = &mut heal {
        (*epoch, *h) = (6, true);
    }
    assert_eq!(node.handle(heal).await, written(1, 0));
    expect_block(&node, 0, Generation::new(5, 10), 0xA0).await;
    let mut stale = write(1, Generation::new(6, 2), 0xC0);
    if let Request::Write { epoch, heal: h, .. } = &mut stale {
        (*epoch, *h) = (5, true);
    }
    let r = node.handle(stale).await;
    assert_eq!(code(&r), Some(ErrorCode::StaleEpoch), "{r:?}");
}

/// Reads are fenced too: a master that lost the volume must not serve
/// what the new one may have overwritten.
#[tokio::test]
async fn an_older_epochs_master_cannot_read() {
    let (_dir, node, _uuid) = two_masters().await;
    let mut old = read(0);
    if let Request::Read { epoch, .. } = &mut old {
        *epoch = 5;
    }
    let r = node.handle(old).await;
    assert_eq!(code(&r), Some(ErrorCode::StaleEpoch), "{r:?}");
}

/// The compare-and-set: the same epoch only from the master holding it.
#[tokio::test]
async fn two_masters_cannot_share_an_epoch() {
    let (_dir, node, uuid) = node_with_volume().await;
    let with_master = |epoch: u64, master: &str| {
        let text = meta(&node, uuid, epoch);
        let mut m: VolumeMeta = toml::from_str(&text).expect("meta");
        m.master = master.into();
        Request::SaveMeta {
            meta: toml::to_string(&m).expect("meta encodes"),
        }
    };
    assert_eq!(node.handle(with_master(2, "m1")).await, Response::Done);
    assert_eq!(
        node.handle(with_master(2, "m1")).await,
        Response::Done,
        "the holder may save its own epoch again"
    );
    let r = node.handle(with_master(2, "m2")).await;
    assert_eq!(code(&r), Some(ErrorCode::StaleEpoch), "{r:?}");
    assert_eq!(node.handle(with_master(3, "m2")).await, Response::Done);
    let r = node.handle(with_master(3, "m1")).await;
    assert_eq!(code(&r), Some(ErrorCode::StaleEpoch), "{r:?}");
}
