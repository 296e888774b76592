//! Requests and responses of the node protocol (payloads of frames).
//!
//! Every request maps to one operation of [`crate::backend::Backend`]; a
//! node answers it by calling that operation on its own chunk store. The
//! encoding of each (byte by byte) is in `docs/node-protocol.md`; `opcode()`
//! is the frame header's opcode, `encode` writes the payload, `decode`
//! parses a payload for an opcode and rejects trailing bytes.
//!
//! Encoding (all integers little-endian): fixed-width integers; strings and
//! byte vectors as a u32 length then the bytes (at most [`MAX_PAYLOAD`]);
//! lists as a u32 count then the elements; `Option` as a 0/1 byte then the
//! value if 1; `bool` as a 0/1 byte; [`PartId`] as u64 chunk + u8 part;
//! [`Uuid`] as its 16 bytes. Decoding is canonical: any other byte value,
//! a truncated field, or trailing bytes is an error, so a payload that
//! decodes re-encodes to the same bytes. No length is trusted before the
//! remaining bytes have been checked to hold it.
//!
//! | opcode | request         | opcode | response  |
//! |--------|-----------------|--------|-----------|
//! | 0x01   | `Ping`          | 0x81   | `Pong`    |
//! | 0x02   | `VolumeNumber`  | 0x82   | `Done`    |
//! | 0x03   | `VolumeNumbers` | 0x83   | `Number`  |
//! | 0x04   | `CreateVolume`  | 0x84   | `Numbers` |
//! | 0x05   | `LoadMeta`      | 0x85   | `Meta`    |
//! | 0x06   | `SaveMeta`      | 0x86   | `Opened`  |
//! | 0x07   | `OpenVolume`    | 0x87   | `Blocks`  |
//! | 0x08   | `Read`          | 0x88   | `Written` |
//! | 0x09   | `Write`         | 0x89   | `Stale`   |
//! | 0x0a   | `Allocate`      | 0x8a   | `Error`   |
//! | 0x0b   | `Recreate`      |        |           |
//! | 0x0c   | `Sync`          |        |           |
//! | 0x0d   | `LoadStale`     |        |           |
//! | 0x0e   | `SetStale`      | 0x8b   | `RawBlock`|
//! | 0x0f   | `ReadRaw`       |        |           |
//! | 0x10   | `WriteRaw`      |        |           |
//! | 0x11   | `ListVolume`    | 0x8c   | `VolumeFiles` |
//! | 0x12   | `ListParts`     | 0x8d   | `PartList`    |
//! | 0x13   | `ScanParts`     | 0x8e   | `PartScans`   |
//! | 0x14   | `VouchedWrite`  | 0x8f   | `VouchedBlocks` |
//!
//! Nodes answer `Read` with `VouchedBlocks` ([`vouched`]): its block data
//! travels outside the frame MAC, vouched for by the stored checksums, and
//! it decodes into a checked `Blocks`, so receivers never see it. Masters
//! send data writes as `VouchedWrite` the same way: checksums under the
//! MAC, checked against the data when decoded.
//!
//! The last three serve `qbd verify` (read-only, not fenced, need no open
//! volume); their codecs live in [`verify`].
//!
//! Fenced by epoch at the node (`StaleEpoch` when older than the volume's
//! current epoch): `Write` through its generation's epoch, and `Allocate`,
//! `Recreate`, `SetStale` and `WriteRaw` through their `epoch` field (the
//! sender's epoch for the volume, encoded as a u64 right after `volume`).
//! `SaveMeta` is the epoch compare-and-set itself.

mod verify;
mod vouched;

pub use vouched::{MISMATCH, SUM_LEN, VouchedState};

use uuid::Uuid;

use super::ProtoError;
use crate::backend::PartId;
use crate::format::record::RECORD_SIZE;
use crate::verify::PartScan;

/// Largest payload a frame may carry (a 32 MiB write plus headers).
pub const MAX_PAYLOAD: u32 = (32 << 20) + 4096;

/// How a write's payload is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// `data` holds `count` whole blocks.
    Data,
    /// Zeros, space freed (TRIM).
    ZeroPunch,
    /// Zeros, space kept allocated.
    ZeroFill,
}

/// A request from a master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Liveness and bare round trip.
    Ping,
    /// `Backend::volume_number`.
    VolumeNumber {
        /// Volume name.
        name: String,
    },
    /// `Backend::volume_numbers`.
    VolumeNumbers,
    /// `Backend::create_volume`; `meta` is the `.meta` TOML.
    CreateVolume {
        /// `.meta` TOML text.
        meta: String,
    },
    /// `Backend::load_meta`.
    LoadMeta {
        /// Volume number.
        number: u16,
    },
    /// `Backend::save_meta`: the epoch compare-and-set. The node accepts
    /// only if the new epoch is >= its stored epoch, and then rejects writes
    /// of older epochs.
    SaveMeta {
        /// `.meta` TOML text.
        meta: String,
    },
    /// `Backend::open_volume`.
    OpenVolume {
        /// `.meta` TOML text.
        meta: String,
    },
    /// `Backend::read`.
    Read {
        /// Volume number.
        volume: u16,
        /// The sender's session epoch for the volume (refused unless it is
        /// the node's).
        epoch: u64,
        /// Part.
        part: PartId,
        /// First block.
        first: u32,
        /// Block count.
        count: u32,
    },
    /// `Backend::write` (or `heal` when `heal`).
    Write {
        /// Volume number.
        volume: u16,
        /// The sender's session epoch for the volume: the fence (never the
        /// generation's epoch, which is old by design for a heal).
        epoch: u64,
        /// Part.
        part: PartId,
        /// First block.
        first: u32,
        /// Block count.
        count: u32,
        /// Generation the blocks get.
        generation: u64,
        /// How to apply.
        mode: WriteMode,
        /// The heal operation (applies whatever the stored generation).
        heal: bool,
        /// Whole blocks for `WriteMode::Data`, else empty.
        data: Vec<u8>,
    },
    /// `Write` of data blocks as masters send it: each block's checksum
    /// (BLAKE3-128, what the node stores in its meta record) under the
    /// frame MAC, the data after them outside it. Decoding checks every
    /// block against its checksum (a mismatch is [`ProtoError::BadTail`]),
    /// so a decoded `VouchedWrite`'s `sums` are the data's: the node hashes
    /// each block once instead of twice (MAC, then the record's checksum).
    VouchedWrite {
        /// Volume number.
        volume: u16,
        /// The sender's session epoch for the volume (the fence).
        epoch: u64,
        /// Part.
        part: PartId,
        /// First block.
        first: u32,
        /// Block count (at least 1).
        count: u32,
        /// Generation the blocks get.
        generation: u64,
        /// The heal operation (applies whatever the stored generation).
        heal: bool,
        /// One checksum per block.
        sums: Vec<[u8; SUM_LEN]>,
        /// `count` whole blocks.
        data: Vec<u8>,
    },
    /// `Backend::allocate`.
    Allocate {
        /// Volume number.
        volume: u16,
        /// The sender's epoch for the volume (refused if older than the
        /// node's).
        epoch: u64,
        /// Part.
        part: PartId,
    },
    /// `Backend::recreate`.
    Recreate {
        /// Volume number.
        volume: u16,
        /// The sender's epoch for the volume (refused if older than the
        /// node's).
        epoch: u64,
        /// Part.
        part: PartId,
    },
    /// `Backend::sync`.
    Sync {
        /// Volume number.
        volume: u16,
        /// Parts, or all when `None`.
        parts: Option<Vec<PartId>>,
    },
    /// `Backend::load_stale`.
    LoadStale {
        /// Volume number.
        volume: u16,
    },
    /// `Backend::mark_stale` / `clear_stale`.
    SetStale {
        /// Volume number.
        volume: u16,
        /// The sender's epoch for the volume (refused if older than the
        /// node's).
        epoch: u64,
        /// The backend the map describes.
        of: Uuid,
        /// Set (`true`) or clear.
        stale: bool,
        /// Chunks.
        chunks: Vec<u64>,
    },
    /// `Backend::read_raw`: one block's stored data and record bytes,
    /// unchecked (EC parity covers live in the record).
    ReadRaw {
        /// Volume number.
        volume: u16,
        /// The sender's session epoch for the volume.
        epoch: u64,
        /// Part.
        part: PartId,
        /// Block in the part.
        block: u32,
    },
    /// `Backend::write_raw`: overwrites one block's data and/or record
    /// bytes as given (no generation rule; how a parity record is stored).
    WriteRaw {
        /// Volume number.
        volume: u16,
        /// The sender's epoch for the volume (refused if older than the
        /// node's).
        epoch: u64,
        /// Part.
        part: PartId,
        /// Block in the part.
        block: u32,
        /// The record bytes, if they are replaced (boxed: keeps every
        /// `Request` small).
        record: Option<Box<[u8; RECORD_SIZE]>>,
        /// The data bytes (one whole block), if they are replaced.
        data: Option<Vec<u8>>,
    },
    /// `Backend::list_volume`, first step: the volume directory's own
    /// files (allocation map, degraded maps, part directories, strays).
    ListVolume {
        /// Volume number.
        volume: u16,
    },
    /// `Backend::list_volume`, one page of a part directory.
    ListParts {
        /// Volume number.
        volume: u16,
        /// Part directory (0 = `a`).
        part: u8,
        /// First chunk of the page.
        from: u64,
        /// Most files in the page.
        max: u32,
    },
    /// `Backend::scan_parts`: deep-scan these parts of the volume `meta`
    /// describes (TOML), on the node.
    ScanParts {
        /// `.meta` TOML text.
        meta: String,
        /// The parts.
        parts: Vec<PartId>,
    },
}

/// What the node found for one block (mirrors `BlockState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireBlockState {
    /// Never written.
    Unwritten,
    /// Verified data at this generation.
    Data(u64),
    /// Zeros at this generation.
    Zero(u64),
    /// Failed its checks; the data bytes are zeros.
    Corrupt(String),
}

/// Why a request failed (the node's error reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// `PartMissing`.
    PartMissing,
    /// `PartCorrupt`.
    PartCorrupt,
    /// The volume is not open on this node.
    NotOpen,
    /// An older epoch than the node's: the sender is not the current master.
    StaleEpoch,
    /// Out of space.
    NoSpace,
    /// A malformed or out-of-range request.
    Invalid,
    /// Any other I/O or meta error.
    Io,
    /// A code this version does not know.
    Unknown(u16),
}

/// A node's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// To `Ping`.
    Pong,
    /// Success without a value.
    Done,
    /// To `VolumeNumber`.
    Number(Option<u16>),
    /// To `VolumeNumbers`.
    Numbers(Vec<u16>),
    /// To `LoadMeta`: the `.meta` TOML if present.
    Meta(Option<String>),
    /// To `OpenVolume`: the encoded allocation map file and its corrupt pages.
    Opened {
        /// The `.alloc` file bytes (see `format::alloc`).
        alloc: Vec<u8>,
        /// Corrupt page numbers.
        corrupt_pages: Vec<u64>,
    },
    /// To `Read`.
    Blocks {
        /// One state per block.
        states: Vec<WireBlockState>,
        /// `count × block_size` bytes.
        data: Vec<u8>,
    },
    /// To `Read`, as nodes send it: each block's data with the checksum its
    /// meta record stores, unchecked by the node. Decoding checks every
    /// block and yields `Blocks`; see [`vouched`].
    VouchedBlocks {
        /// What each block's record claims.
        states: Vec<VouchedState>,
        /// `count × block_size` bytes; zeros where no data is claimed.
        data: Vec<u8>,
    },
    /// To `Write`.
    Written {
        /// Blocks applied.
        applied: u32,
        /// Blocks skipped (stored generation not older).
        skipped: u32,
    },
    /// To `LoadStale`: (backend, encoded stale map file).
    Stale(Vec<(Uuid, Vec<u8>)>),
    /// To `ReadRaw`: the block's bytes as stored.
    RawBlock {
        /// The record bytes (boxed: keeps every `Response` small).
        record: Box<[u8; RECORD_SIZE]>,
        /// The data bytes (one block).
        data: Vec<u8>,
    },
    /// To `ListVolume`.
    VolumeFiles {
        /// The `.alloc` file bytes, if present.
        alloc: Option<Vec<u8>>,
        /// Degraded maps held: (backend described, file bytes).
        stale: Vec<(Uuid, Vec<u8>)>,
        /// Part directories present (0 = `a`).
        part_dirs: Vec<u8>,
        /// Other entries: (path relative to the volume directory, size).
        strays: Vec<(String, u64)>,
    },
    /// To `ListParts`.
    PartList {
        /// (chunk, size) of each part file, sorted by chunk.
        files: Vec<(u64, u64)>,
        /// Other entries of the directory (page starting at chunk 0 only).
        strays: Vec<(String, u64)>,
        /// Where the next page starts, if there is one.
        next: Option<u64>,
    },
    /// To `ScanParts`: one scan per part asked, in order.
    PartScans(Vec<PartScan>),
    /// Any request that failed.
    Error {
        /// Why.
        code: ErrorCode,
        /// For logs.
        message: String,
    },
}

/// Request opcodes (frame header `opcode` of a `Request` frame).
pub mod op {
    /// `Request::Ping`.
    pub const PING: u16 = 0x01;
    /// `Request::VolumeNumber`.
    pub const VOLUME_NUMBER: u16 = 0x02;
    /// `Request::VolumeNumbers`.
    pub const VOLUME_NUMBERS: u16 = 0x03;
    /// `Request::CreateVolume`.
    pub const CREATE_VOLUME: u16 = 0x04;
    /// `Request::LoadMeta`.
    pub const LOAD_META: u16 = 0x05;
    /// `Request::SaveMeta`.
    pub const SAVE_META: u16 = 0x06;
    /// `Request::OpenVolume`.
    pub const OPEN_VOLUME: u16 = 0x07;
    /// `Request::Read`.
    pub const READ: u16 = 0x08;
    /// `Request::Write`.
    pub const WRITE: u16 = 0x09;
    /// `Request::Allocate`.
    pub const ALLOCATE: u16 = 0x0a;
    /// `Request::Recreate`.
    pub const RECREATE: u16 = 0x0b;
    /// `Request::Sync`.
    pub const SYNC: u16 = 0x0c;
    /// `Request::LoadStale`.
    pub const LOAD_STALE: u16 = 0x0d;
    /// `Request::SetStale`.
    pub const SET_STALE: u16 = 0x0e;
    /// `Request::ReadRaw`.
    pub const READ_RAW: u16 = 0x0f;
    /// `Request::WriteRaw`.
    pub const WRITE_RAW: u16 = 0x10;
    /// `Request::ListVolume`.
    pub const LIST_VOLUME: u16 = 0x11;
    /// `Request::ListParts`.
    pub const LIST_PARTS: u16 = 0x12;
    /// `Request::ScanParts`.
    pub const SCAN_PARTS: u16 = 0x13;
    /// `Request::VouchedWrite`.
    pub const WRITE_VOUCHED: u16 = 0x14;

    /// `Response::Pong`.
    pub const PONG: u16 = 0x81;
    /// `Response::Done`.
    pub const DONE: u16 = 0x82;
    /// `Response::Number`.
    pub const NUMBER: u16 = 0x83;
    /// `Response::Numbers`.
    pub const NUMBERS: u16 = 0x84;
    /// `Response::Meta`.
    pub const META: u16 = 0x85;
    /// `Response::Opened`.
    pub const OPENED: u16 = 0x86;
    /// `Response::Blocks`.
    pub const BLOCKS: u16 = 0x87;
    /// `Response::Written`.
    pub const WRITTEN: u16 = 0x88;
    /// `Response::Stale`.
    pub const STALE: u16 = 0x89;
    /// `Response::Error`.
    pub const ERROR: u16 = 0x8a;
    /// `Response::RawBlock`.
    pub const RAW_BLOCK: u16 = 0x8b;
    /// `Response::VolumeFiles`.
    pub const VOLUME_FILES: u16 = 0x8c;
    /// `Response::PartList`.
    pub const PART_LIST: u16 = 0x8d;
    /// `Response::PartScans`.
    pub const PART_SCANS: u16 = 0x8e;
    /// `Response::VouchedBlocks`.
    pub const BLOCKS_VOUCHED: u16 = 0x8f;
}

/// Bytes of a `Write` payload before the data bytes (volume, part, first,
/// count, generation, mode, heal, data length): the data of a
/// `WriteMode::Data` write starts at this offset and runs to the end.
pub const WRITE_DATA_OFFSET: usize = 2 + 8 + 9 + 4 + 4 + 8 + 1 + 1 + 4;

impl WriteMode {
    /// The wire byte.
    pub fn to_byte(self) -> u8 {
        match self {
            WriteMode::Data => 0,
            WriteMode::ZeroPunch => 1,
            WriteMode::ZeroFill => 2,
        }
    }

    /// From the wire byte (`None` for an unknown mode).
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(WriteMode::Data),
            1 => Some(WriteMode::ZeroPunch),
            2 => Some(WriteMode::ZeroFill),
            _ => None,
        }
    }
}

impl ErrorCode {
    /// The wire code.
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::PartMissing => 1,
            ErrorCode::PartCorrupt => 2,
            ErrorCode::NotOpen => 3,
            ErrorCode::StaleEpoch => 4,
            ErrorCode::NoSpace => 5,
            ErrorCode::Invalid => 6,
            ErrorCode::Io => 7,
            ErrorCode::Unknown(c) => c,
        }
    }

    /// From the wire code (unknown codes are kept as `Unknown`).
    pub fn from_u16(c: u16) -> Self {
        match c {
            1 => ErrorCode::PartMissing,
            2 => ErrorCode::PartCorrupt,
            3 => ErrorCode::NotOpen,
            4 => ErrorCode::StaleEpoch,
            5 => ErrorCode::NoSpace,
            6 => ErrorCode::Invalid,
            7 => ErrorCode::Io,
            other => ErrorCode::Unknown(other),
        }
    }
}

// Block state tags.
const STATE_UNWRITTEN: u8 = 0;
const STATE_DATA: u8 = 1;
const STATE_ZERO: u8 = 2;
const STATE_CORRUPT: u8 = 3;

// ---- writing ----

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bool(out: &mut Vec<u8>, v: bool) {
    out.push(u8::from(v));
}

/// A length or count. Lengths above `MAX_PAYLOAD` cannot be sent (the
/// frame would be refused); the caller bounds what it encodes.
fn put_len(out: &mut Vec<u8>, n: usize) {
    debug_assert!(n <= MAX_PAYLOAD as usize, "length {n} over MAX_PAYLOAD");
    put_u32(out, n as u32);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len());
    out.extend_from_slice(b);
}

fn put_part(out: &mut Vec<u8>, p: PartId) {
    put_u64(out, p.chunk);
    out.push(p.part);
}

// ---- reading ----

/// A cursor over a payload; every accessor checks the remaining length.
struct Reader<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(what: &'static str, b: &'a [u8]) -> Self {
        Reader { b, what }
    }

    fn err(&self, why: impl Into<String>) -> ProtoError {
        ProtoError::malformed(self.what, why)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if self.b.len() < n {
            return Err(self.err(format!(
                "truncated: {n} bytes needed, {} left",
                self.b.len()
            )));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtoError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, ProtoError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, ProtoError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, ProtoError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn bool(&mut self) -> Result<bool, ProtoError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.err(format!("boolean byte {b}"))),
        }
    }

    fn uuid(&mut self) -> Result<Uuid, ProtoError> {
        Ok(Uuid::from_bytes(self.array()?))
    }

    fn part(&mut self) -> Result<PartId, ProtoError> {
        let chunk = self.u64()?;
        let part = self.u8()?;
        Ok(PartId { chunk, part })
    }

    /// A u32 count of elements each at least `min_size` bytes long, checked
    /// against the remaining bytes (so it can size an allocation).
    fn count(&mut self, min_size: usize) -> Result<usize, ProtoError> {
        let n = self.u32()?;
        if n > MAX_PAYLOAD {
            return Err(self.err(format!("length {n} over the maximum")));
        }
        let n = n as usize;
        if n.saturating_mul(min_size) > self.b.len() {
            return Err(self.err(format!(
                "truncated: {n} elements announced, {} bytes left",
                self.b.len()
            )));
        }
        Ok(n)
    }

    fn bytes(&mut self) -> Result<&'a [u8], ProtoError> {
        let n = self.count(1)?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, ProtoError> {
        let b = self.bytes()?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(self.err("string is not UTF-8")),
        }
    }

    fn option(&mut self) -> Result<bool, ProtoError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.err(format!("option byte {b}"))),
        }
    }

    fn finish<T>(self, v: T) -> Result<T, ProtoError> {
        if self.b.is_empty() {
            Ok(v)
        } else {
            Err(self.err(format!("{} trailing bytes", self.b.len())))
        }
    }
}

impl Request {
    /// The frame opcode of this request.
    pub fn opcode(&self) -> u16 {
        match self {
            Request::Ping => op::PING,
            Request::VolumeNumber { .. } => op::VOLUME_NUMBER,
            Request::VolumeNumbers => op::VOLUME_NUMBERS,
            Request::CreateVolume { .. } => op::CREATE_VOLUME,
            Request::LoadMeta { .. } => op::LOAD_META,
            Request::SaveMeta { .. } => op::SAVE_META,
            Request::OpenVolume { .. } => op::OPEN_VOLUME,
            Request::Read { .. } => op::READ,
            Request::Write { .. } => op::WRITE,
            Request::VouchedWrite { .. } => op::WRITE_VOUCHED,
            Request::Allocate { .. } => op::ALLOCATE,
            Request::Recreate { .. } => op::RECREATE,
            Request::Sync { .. } => op::SYNC,
            Request::LoadStale { .. } => op::LOAD_STALE,
            Request::SetStale { .. } => op::SET_STALE,
            Request::ReadRaw { .. } => op::READ_RAW,
            Request::WriteRaw { .. } => op::WRITE_RAW,
            Request::ListVolume { .. } => op::LIST_VOLUME,
            Request::ListParts { .. } => op::LIST_PARTS,
            Request::ScanParts { .. } => op::SCAN_PARTS,
        }
    }

    /// Appends the payload encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Request::Ping | Request::VolumeNumbers => {}
            Request::VolumeNumber { name } => put_bytes(out, name.as_bytes()),
            Request::CreateVolume { meta }
            | Request::SaveMeta { meta }
            | Request::OpenVolume { meta } => put_bytes(out, meta.as_bytes()),
            Request::LoadMeta { number } => put_u16(out, *number),
            Request::Read {
                volume,
                epoch,
                part,
                first,
                count,
            } => {
                put_u16(out, *volume);
                put_u64(out, *epoch);
                put_part(out, *part);
                put_u32(out, *first);
                put_u32(out, *count);
            }
            Request::Write {
                volume,
                epoch,
                part,
                first,
                count,
                generation,
                mode,
                heal,
                data,
            } => {
                out.reserve(WRITE_DATA_OFFSET + data.len());
                put_u16(out, *volume);
                put_u64(out, *epoch);
                put_part(out, *part);
                put_u32(out, *first);
                put_u32(out, *count);
                put_u64(out, *generation);
                out.push(mode.to_byte());
                put_bool(out, *heal);
                put_bytes(out, data);
            }
            Request::VouchedWrite { .. } => vouched::encode_write(self, out),
            Request::Allocate {
                volume,
                epoch,
                part,
            }
            | Request::Recreate {
                volume,
                epoch,
                part,
            } => {
                put_u16(out, *volume);
                put_u64(out, *epoch);
                put_part(out, *part);
            }
            Request::Sync { volume, parts } => {
                put_u16(out, *volume);
                match parts {
                    None => out.push(0),
                    Some(parts) => {
                        out.push(1);
                        put_len(out, parts.len());
                        for p in parts {
                            put_part(out, *p);
                        }
                    }
                }
            }
            Request::LoadStale { volume } => put_u16(out, *volume),
            Request::SetStale {
                volume,
                epoch,
                of,
                stale,
                chunks,
            } => {
                put_u16(out, *volume);
                put_u64(out, *epoch);
                out.extend_from_slice(of.as_bytes());
                put_bool(out, *stale);
                put_len(out, chunks.len());
                for c in chunks {
                    put_u64(out, *c);
                }
            }
            Request::ReadRaw {
                volume,
                epoch,
                part,
                block,
            } => {
                put_u16(out, *volume);
                put_u64(out, *epoch);
                put_part(out, *part);
                put_u32(out, *block);
            }
            Request::ListVolume { .. } | Request::ListParts { .. } | Request::ScanParts { .. } => {
                verify::encode_request(self, out)
            }
            Request::WriteRaw {
                volume,
                epoch,
                part,
                block,
                record,
                data,
            } => {
                out.reserve(
                    2 + 8 + 9 + 4 + 1 + RECORD_SIZE + 1 + 4 + data.as_ref().map_or(0, Vec::len),
                );
                put_u16(out, *volume);
                put_u64(out, *epoch);
                put_part(out, *part);
                put_u32(out, *block);
                match record {
                    None => out.push(0),
                    Some(rec) => {
                        out.push(1);
                        out.extend_from_slice(&rec[..]);
                    }
                }
                match data {
                    None => out.push(0),
                    Some(d) => {
                        out.push(1);
                        put_bytes(out, d);
                    }
                }
            }
        }
    }

    /// Bytes at the end of the encoding that need not be under the frame
    /// MAC because checksums inside the rest vouch for them (the data of
    /// `VouchedWrite`); 0 for every other request.
    pub fn detached_tail(&self) -> usize {
        match self {
            Request::VouchedWrite { data, .. } => data.len(),
            _ => 0,
        }
    }

    /// Decodes the payload of a request frame with `opcode`, all of it
    /// authenticated by the frame MAC.
    pub fn decode(opcode: u16, payload: &[u8]) -> Result<Self, ProtoError> {
        Self::decode_covered(opcode, payload, payload.len())
    }

    /// Decodes a payload of which the frame MAC covered only the first
    /// `covered` bytes: only `VouchedWrite` may have such a tail, only its
    /// data may lie in it, and data that does not match its checksums is
    /// [`ProtoError::BadTail`].
    pub fn decode_covered(opcode: u16, payload: &[u8], covered: usize) -> Result<Self, ProtoError> {
        let mut r = Reader::new("request", payload);
        if covered < payload.len() && opcode != op::WRITE_VOUCHED {
            return Err(r.err(format!(
                "opcode {opcode:#06x} with {} bytes outside the MAC",
                payload.len() - covered
            )));
        }
        let req = match opcode {
            op::PING => Request::Ping,
            op::VOLUME_NUMBER => Request::VolumeNumber { name: r.string()? },
            op::VOLUME_NUMBERS => Request::VolumeNumbers,
            op::CREATE_VOLUME => Request::CreateVolume { meta: r.string()? },
            op::LOAD_META => Request::LoadMeta { number: r.u16()? },
            op::SAVE_META => Request::SaveMeta { meta: r.string()? },
            op::OPEN_VOLUME => Request::OpenVolume { meta: r.string()? },
            op::READ => Request::Read {
                volume: r.u16()?,
                epoch: r.u64()?,
                part: r.part()?,
                first: r.u32()?,
                count: r.u32()?,
            },
            op::WRITE => {
                let volume = r.u16()?;
                let epoch = r.u64()?;
                let part = r.part()?;
                let first = r.u32()?;
                let count = r.u32()?;
                let generation = r.u64()?;
                let mode_byte = r.u8()?;
                let mode = WriteMode::from_byte(mode_byte)
                    .ok_or_else(|| r.err(format!("write mode {mode_byte}")))?;
                let heal = r.bool()?;
                let data = r.bytes()?;
                if mode != WriteMode::Data && !data.is_empty() {
                    return Err(r.err("data bytes in a zeroing write"));
                }
                Request::Write {
                    volume,
                    epoch,
                    part,
                    first,
                    count,
                    generation,
                    mode,
                    heal,
                    data: data.to_vec(),
                }
            }
            op::WRITE_VOUCHED => vouched::decode_write(&mut r, payload.len(), covered)?,
            op::ALLOCATE => Request::Allocate {
                volume: r.u16()?,
                epoch: r.u64()?,
                part: r.part()?,
            },
            op::RECREATE => Request::Recreate {
                volume: r.u16()?,
                epoch: r.u64()?,
                part: r.part()?,
            },
            op::SYNC => {
                let volume = r.u16()?;
                let parts = if r.option()? {
                    let n = r.count(9)?;
                    let mut v = Vec::with_capacity(n);
                    for _ in 0..n {
                        v.push(r.part()?);
                    }
                    Some(v)
                } else {
                    None
                };
                Request::Sync { volume, parts }
            }
            op::LOAD_STALE => Request::LoadStale { volume: r.u16()? },
            op::SET_STALE => {
                let volume = r.u16()?;
                let epoch = r.u64()?;
                let of = r.uuid()?;
                let stale = r.bool()?;
                let n = r.count(8)?;
                let mut chunks = Vec::with_capacity(n);
                for _ in 0..n {
                    chunks.push(r.u64()?);
                }
                Request::SetStale {
                    volume,
                    epoch,
                    of,
                    stale,
                    chunks,
                }
            }
            op::READ_RAW => Request::ReadRaw {
                volume: r.u16()?,
                epoch: r.u64()?,
                part: r.part()?,
                block: r.u32()?,
            },
            op::LIST_VOLUME | op::LIST_PARTS | op::SCAN_PARTS => {
                verify::decode_request(opcode, &mut r)?
            }
            op::WRITE_RAW => Request::WriteRaw {
                volume: r.u16()?,
                epoch: r.u64()?,
                part: r.part()?,
                block: r.u32()?,
                record: if r.option()? {
                    Some(Box::new(r.array()?))
                } else {
                    None
                },
                data: if r.option()? {
                    Some(r.bytes()?.to_vec())
                } else {
                    None
                },
            },
            other => return Err(r.err(format!("unknown opcode {other:#06x}"))),
        };
        r.finish(req)
    }
}

impl Response {
    /// The frame opcode of this response.
    pub fn opcode(&self) -> u16 {
        match self {
            Response::Pong => op::PONG,
            Response::Done => op::DONE,
            Response::Number(_) => op::NUMBER,
            Response::Numbers(_) => op::NUMBERS,
            Response::Meta(_) => op::META,
            Response::Opened { .. } => op::OPENED,
            Response::Blocks { .. } => op::BLOCKS,
            Response::VouchedBlocks { .. } => op::BLOCKS_VOUCHED,
            Response::Written { .. } => op::WRITTEN,
            Response::Stale(_) => op::STALE,
            Response::Error { .. } => op::ERROR,
            Response::RawBlock { .. } => op::RAW_BLOCK,
            Response::VolumeFiles { .. } => op::VOLUME_FILES,
            Response::PartList { .. } => op::PART_LIST,
            Response::PartScans(_) => op::PART_SCANS,
        }
    }

    /// Appends the payload encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Response::Pong | Response::Done => {}
            Response::Number(n) => match n {
                None => out.push(0),
                Some(n) => {
                    out.push(1);
                    put_u16(out, *n);
                }
            },
            Response::Numbers(ns) => {
                put_len(out, ns.len());
                for n in ns {
                    put_u16(out, *n);
                }
            }
            Response::Meta(m) => match m {
                None => out.push(0),
                Some(m) => {
                    out.push(1);
                    put_bytes(out, m.as_bytes());
                }
            },
            Response::Opened {
                alloc,
                corrupt_pages,
            } => {
                put_bytes(out, alloc);
                put_len(out, corrupt_pages.len());
                for p in corrupt_pages {
                    put_u64(out, *p);
                }
            }
            Response::Blocks { states, data } => {
                out.reserve(4 + 9 * states.len() + 4 + data.len());
                put_len(out, states.len());
                for s in states {
                    match s {
                        WireBlockState::Unwritten => out.push(STATE_UNWRITTEN),
                        WireBlockState::Data(g) => {
                            out.push(STATE_DATA);
                            put_u64(out, *g);
                        }
                        WireBlockState::Zero(g) => {
                            out.push(STATE_ZERO);
                            put_u64(out, *g);
                        }
                        WireBlockState::Corrupt(why) => {
                            out.push(STATE_CORRUPT);
                            put_bytes(out, why.as_bytes());
                        }
                    }
                }
                put_bytes(out, data);
            }
            Response::VouchedBlocks { states, data } => vouched::encode(states, data, out),
            Response::Written { applied, skipped } => {
                put_u32(out, *applied);
                put_u32(out, *skipped);
            }
            Response::Stale(maps) => {
                put_len(out, maps.len());
                for (id, map) in maps {
                    out.extend_from_slice(id.as_bytes());
                    put_bytes(out, map);
                }
            }
            Response::Error { code, message } => {
                put_u16(out, code.to_u16());
                put_bytes(out, message.as_bytes());
            }
            Response::VolumeFiles { .. } | Response::PartList { .. } | Response::PartScans(_) => {
                verify::encode_response(self, out);
            }
            Response::RawBlock { record, data } => {
                out.reserve(RECORD_SIZE + 4 + data.len());
                out.extend_from_slice(&record[..]);
                put_bytes(out, data);
            }
        }
    }

    /// Bytes at the end of the encoding that need not be under the frame
    /// MAC because checksums inside the rest vouch for them (the data of
    /// `VouchedBlocks`); 0 for every other response.
    pub fn detached_tail(&self) -> usize {
        match self {
            Response::VouchedBlocks { data, .. } => data.len(),
            _ => 0,
        }
    }

    /// Decodes the payload of a response frame with `opcode`, all of it
    /// authenticated by the frame MAC.
    pub fn decode(opcode: u16, payload: &[u8]) -> Result<Self, ProtoError> {
        Self::decode_covered(opcode, payload, payload.len())
    }

    /// Decodes a payload of which the frame MAC covered only the first
    /// `covered` bytes: only `VouchedBlocks` may have such a tail, and
    /// only its data may lie in it.
    pub fn decode_covered(opcode: u16, payload: &[u8], covered: usize) -> Result<Self, ProtoError> {
        let mut r = Reader::new("response", payload);
        if covered < payload.len() && opcode != op::BLOCKS_VOUCHED {
            return Err(r.err(format!(
                "opcode {opcode:#06x} with {} bytes outside the MAC",
                payload.len() - covered
            )));
        }
        let resp = match opcode {
            op::BLOCKS_VOUCHED => vouched::decode(&mut r, payload.len(), covered)?,
            op::PONG => Response::Pong,
            op::DONE => Response::Done,
            op::NUMBER => Response::Number(if r.option()? { Some(r.u16()?) } else { None }),
            op::NUMBERS => {
                let n = r.count(2)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(r.u16()?);
                }
                Response::Numbers(v)
            }
            op::META => Response::Meta(if r.option()? { Some(r.string()?) } else { None }),
            op::OPENED => {
                let alloc = r.bytes()?.to_vec();
                let n = r.count(8)?;
                let mut corrupt_pages = Vec::with_capacity(n);
                for _ in 0..n {
                    corrupt_pages.push(r.u64()?);
                }
                Response::Opened {
                    alloc,
                    corrupt_pages,
                }
            }
            op::BLOCKS => {
                let n = r.count(1)?;
                let mut states = Vec::with_capacity(n);
                for _ in 0..n {
                    let s = match r.u8()? {
                        STATE_UNWRITTEN => WireBlockState::Unwritten,
                        STATE_DATA => WireBlockState::Data(r.u64()?),
                        STATE_ZERO => WireBlockState::Zero(r.u64()?),
                        STATE_CORRUPT => WireBlockState::Corrupt(r.string()?),
                        t => return Err(r.err(format!("block state tag {t}"))),
                    };
                    states.push(s);
                }
                let data = r.bytes()?.to_vec();
                Response::Blocks { states, data }
            }
            op::WRITTEN => Response::Written {
                applied: r.u32()?,
                skipped: r.u32()?,
            },
            op::STALE => {
                let n = r.count(16 + 4)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let id = r.uuid()?;
                    let map = r.bytes()?.to_vec();
                    v.push((id, map));
                }
                Response::Stale(v)
            }
            op::ERROR => Response::Error {
                code: ErrorCode::from_u16(r.u16()?),
                message: r.string()?,
            },
            op::VOLUME_FILES | op::PART_LIST | op::PART_SCANS => {
                verify::decode_response(opcode, &mut r)?
            }
            op::RAW_BLOCK => Response::RawBlock {
                record: Box::new(r.array()?),
                data: r.bytes()?.to_vec(),
            },
            other => return Err(r.err(format!("unknown opcode {other:#06x}"))),
        };
        r.finish(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses spaced hex ("01 02 0a").
    fn h(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        assert!(s.len().is_multiple_of(2), "odd hex");
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).expect("hex"))
            .collect()
    }

    fn uuid() -> Uuid {
        Uuid::from_bytes(core::array::from_fn(|i| i as u8))
    }

    const UUID_HEX: &str = "00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f";

    /// One golden vector (or more) per request variant.
    fn golden_requests() -> Vec<(Request, Vec<u8>)> {
        let rec = record_hex();
        let p = PartId {
            chunk: 0x0102_0304_0506_0708,
            part: 2,
        };
        vec![
            (Request::Ping, vec![]),
            (
                Request::VolumeNumber { name: "vol".into() },
                h("03000000 76 6f 6c"),
            ),
            (Request::VolumeNumbers, vec![]),
            (
                Request::CreateVolume { meta: "a=1".into() },
                h("03000000 61 3d 31"),
            ),
            (Request::LoadMeta { number: 0x1234 }, h("34 12")),
            (Request::SaveMeta { meta: "e".into() }, h("01000000 65")),
            (Request::OpenVolume { meta: "".into() }, h("00000000")),
            (
                Request::Read {
                    volume: 7,
                    epoch: 3,
                    part: p,
                    first: 0x10,
                    count: 2,
                },
                h("0700 0300000000000000 0807060504030201 02 10000000 02000000"),
            ),
            (
                Request::Write {
                    volume: 7,
                    epoch: 1,
                    part: PartId { chunk: 1, part: 0 },
                    first: 3,
                    count: 1,
                    generation: (1 << 40) + 5,
                    mode: WriteMode::Data,
                    heal: false,
                    data: vec![0xaa, 0xbb],
                },
                h(
                    "0700 0100000000000000 0100000000000000 00 03000000 01000000 0500000000010000 00 00 02000000 aa bb",
                ),
            ),
            (
                Request::Write {
                    volume: 1,
                    epoch: 2,
                    part: PartId { chunk: 2, part: 1 },
                    first: 0,
                    count: 8,
                    generation: 9,
                    mode: WriteMode::ZeroPunch,
                    heal: true,
                    data: vec![],
                },
                h("0100 0200000000000000 0200000000000000 01 00000000 08000000 0900000000000000 01 01 00000000"),
            ),
            (
                Request::Write {
                    volume: 1,
                    epoch: 2,
                    part: PartId { chunk: 2, part: 1 },
                    first: 0,
                    count: 8,
                    generation: 9,
                    mode: WriteMode::ZeroFill,
                    heal: false,
                    data: vec![],
                },
                h("0100 0200000000000000 0200000000000000 01 00000000 08000000 0900000000000000 02 00 00000000"),
            ),
            (
                Request::Allocate {
                    volume: 1,
                    epoch: 0x0102_0304_0506,
                    part: PartId { chunk: 2, part: 1 },
                },
                h("0100 0605040302010000 0200000000000000 01"),
            ),
            (
                Request::Recreate {
                    volume: 0xfffe,
                    epoch: u64::MAX,
                    part: PartId {
                        chunk: u64::MAX,
                        part: 0xff,
                    },
                },
                h("feff ffffffffffffffff ffffffffffffffff ff"),
            ),
            (
                // The example of docs/node-protocol.md §5.
                Request::Recreate {
                    volume: 3,
                    epoch: 6,
                    part: PartId { chunk: 1, part: 0 },
                },
                h("0300 0600000000000000 0100000000000000 00"),
            ),
            (
                Request::Sync {
                    volume: 1,
                    parts: None,
                },
                h("0100 00"),
            ),
            (
                Request::Sync {
                    volume: 1,
                    parts: Some(vec![PartId { chunk: 5, part: 0 }, p]),
                },
                h("0100 01 02000000 0500000000000000 00 0807060504030201 02"),
            ),
            (Request::LoadStale { volume: 9 }, h("0900")),
            (
                Request::SetStale {
                    volume: 2,
                    epoch: 9,
                    of: uuid(),
                    stale: true,
                    chunks: vec![1, 0x100],
                },
                h(&format!(
                    "0200 0900000000000000 {UUID_HEX} 01 02000000 0100000000000000 0001000000000000"
                )),
            ),
            (
                Request::SetStale {
                    volume: 2,
                    epoch: 1 << 23,
                    of: uuid(),
                    stale: false,
                    chunks: vec![],
                },
                h(&format!("0200 0000800000000000 {UUID_HEX} 00 00000000")),
            ),
            (
                Request::ReadRaw {
                    volume: 7,
                    epoch: 5,
                    part: p,
                    block: 0x0102_0304,
                },
                h("0700 0500000000000000 0807060504030201 02 04030201"),
            ),
            (
                // The example of docs/node-protocol.md §5.
                Request::WriteRaw {
                    volume: 3,
                    epoch: 6,
                    part: PartId { chunk: 1, part: 4 },
                    block: 2,
                    record: Some(Box::new(record())),
                    data: None,
                },
                h(&format!(
                    "0300 0600000000000000 0100000000000000 04 02000000 01 {rec} 00"
                )),
            ),
            (
                Request::WriteRaw {
                    volume: 1,
                    epoch: u64::MAX,
                    part: p,
                    block: 0,
                    record: None,
                    data: Some(vec![0xaa, 0xbb]),
                },
                h("0100 ffffffffffffffff 0807060504030201 02 00000000 00 01 02000000 aabb"),
            ),
            (
                Request::WriteRaw {
                    volume: 1,
                    epoch: 1,
                    part: p,
                    block: 9,
                    record: Some(Box::new(record())),
                    data: Some(vec![]),
                },
                h(&format!(
                    "0100 0100000000000000 0807060504030201 02 09000000 01 {rec} 01 00000000"
                )),
            ),
            (
                Request::WriteRaw {
                    volume: 1,
                    epoch: 1,
                    part: p,
                    block: 9,
                    record: None,
                    data: None,
                },
                h("0100 0100000000000000 0807060504030201 02 09000000 00 00"),
            ),
        ]
        .into_iter()
        .chain(verify::golden_requests())
        .collect()
    }

    /// A recognisable record: bytes 0, 1, 2, ... (mod 256).
    fn record() -> [u8; RECORD_SIZE] {
        core::array::from_fn(|i| i as u8)
    }

    /// `record()` as spaced hex.
    fn record_hex() -> String {
        record().iter().map(|b| format!("{b:02x} ")).collect()
    }

    /// One golden vector (or more) per response variant.
    fn golden_responses() -> Vec<(Response, Vec<u8>)> {
        let rec = record_hex();
        vec![
            (Response::Pong, vec![]),
            (Response::Done, vec![]),
            (Response::Number(None), h("00")),
            (Response::Number(Some(0x0102)), h("01 0201")),
            (Response::Numbers(vec![]), h("00000000")),
            (Response::Numbers(vec![1, 0x300]), h("02000000 0100 0003")),
            (Response::Meta(None), h("00")),
            (Response::Meta(Some("x".into())), h("01 01000000 78")),
            (
                Response::Opened {
                    alloc: vec![1, 2, 3],
                    corrupt_pages: vec![4],
                },
                h("03000000 010203 01000000 0400000000000000"),
            ),
            (
                Response::Blocks {
                    states: vec![
                        WireBlockState::Unwritten,
                        WireBlockState::Data(5),
                        WireBlockState::Zero(6),
                        WireBlockState::Corrupt("bad".into()),
                    ],
                    data: vec![0xcc; 3],
                },
                h("04000000 00 01 0500000000000000 02 0600000000000000 \
                   03 03000000 626164 03000000 cccccc"),
            ),
            (
                Response::Written {
                    applied: 3,
                    skipped: 1,
                },
                h("03000000 01000000"),
            ),
            (
                Response::Stale(vec![(uuid(), vec![9, 8])]),
                h(&format!("01000000 {UUID_HEX} 02000000 0908")),
            ),
            (
                Response::Error {
                    code: ErrorCode::StaleEpoch,
                    message: "old".into(),
                },
                h("0400 03000000 6f6c64"),
            ),
            (
                Response::Error {
                    code: ErrorCode::Unknown(0x1234),
                    message: "".into(),
                },
                h("3412 00000000"),
            ),
            (
                Response::RawBlock {
                    record: Box::new(record()),
                    data: vec![0xcc; 3],
                },
                h(&format!("{rec} 03000000 cccccc")),
            ),
        ]
        .into_iter()
        .chain(verify::golden_responses())
        .collect()
    }

    fn enc_req(r: &Request) -> Vec<u8> {
        let mut v = Vec::new();
        r.encode(&mut v);
        v
    }

    fn enc_resp(r: &Response) -> Vec<u8> {
        let mut v = Vec::new();
        r.encode(&mut v);
        v
    }

    #[test]
    fn every_variant_has_a_golden_vector() {
        let reqs: std::collections::BTreeSet<u16> =
            golden_requests().iter().map(|(r, _)| r.opcode()).collect();
        assert_eq!(reqs, (0x01..=0x13).collect());
        let resps: std::collections::BTreeSet<u16> =
            golden_responses().iter().map(|(r, _)| r.opcode()).collect();
        assert_eq!(resps, (0x81..=0x8e).collect());
    }

    #[test]
    fn requests_golden_both_ways() {
        for (req, bytes) in golden_requests() {
            assert_eq!(enc_req(&req), bytes, "encode {req:?}");
            assert_eq!(Request::decode(req.opcode(), &bytes), Ok(req.clone()));
        }
    }

    #[test]
    fn responses_golden_both_ways() {
        for (resp, bytes) in golden_responses() {
            assert_eq!(enc_resp(&resp), bytes, "encode {resp:?}");
            assert_eq!(Response::decode(resp.opcode(), &bytes), Ok(resp.clone()));
        }
    }

    #[test]
    fn encode_appends() {
        let mut v = vec![0xee];
        Request::LoadMeta { number: 1 }.encode(&mut v);
        assert_eq!(v, h("ee 0100"));
    }

    #[test]
    fn write_data_is_the_last_field() {
        let req = Request::Write {
            volume: 1,
            epoch: 1,
            part: PartId { chunk: 0, part: 0 },
            first: 0,
            count: 1,
            generation: 1,
            mode: WriteMode::Data,
            heal: false,
            data: vec![7; 4096],
        };
        let b = enc_req(&req);
        assert_eq!(b.len(), WRITE_DATA_OFFSET + 4096);
        assert_eq!(&b[WRITE_DATA_OFFSET..], &[7; 4096][..]);
    }

    #[test]
    fn round_trips() {
        let big = Request::Write {
            volume: 3,
            epoch: 1,
            part: PartId { chunk: 77, part: 5 },
            first: 100,
            count: 64,
            generation: u64::MAX,
            mode: WriteMode::Data,
            heal: true,
            data: (0..64 * 4096).map(|i| i as u8).collect(),
        };
        let b = enc_req(&big);
        assert_eq!(Request::decode(big.opcode(), &b), Ok(big));
        let resp = Response::Blocks {
            states: (0..300)
                .map(|i| match i % 4 {
                    0 => WireBlockState::Unwritten,
                    1 => WireBlockState::Data(i),
                    2 => WireBlockState::Zero(i << 40),
                    _ => WireBlockState::Corrupt(format!("block {i}: checksum")),
                })
                .collect(),
            data: vec![0x5a; 300 * 512],
        };
        let b = enc_resp(&resp);
        assert_eq!(Response::decode(resp.opcode(), &b), Ok(resp));
        for code in 0..=20u16 {
            assert_eq!(ErrorCode::from_u16(code).to_u16(), code);
        }
        for m in [WriteMode::Data, WriteMode::ZeroPunch, WriteMode::ZeroFill] {
            assert_eq!(WriteMode::from_byte(m.to_byte()), Some(m));
        }
    }

    #[test]
    fn raw_blocks_round_trip_at_the_largest_block_size() {
        let data: Vec<u8> = (0..64 << 10).map(|i: u32| (i * 7) as u8).collect();
        let rec: [u8; RECORD_SIZE] = core::array::from_fn(|i| 0xff - i as u8);
        let req = Request::WriteRaw {
            volume: 9,
            epoch: 1 << 23,
            part: PartId { chunk: 3, part: 5 },
            block: 15,
            record: Some(Box::new(rec)),
            data: Some(data.clone()),
        };
        let b = enc_req(&req);
        assert_eq!(
            b.len(),
            2 + 8 + 9 + 4 + 1 + RECORD_SIZE + 1 + 4 + data.len()
        );
        assert_eq!(
            &b[b.len() - data.len()..],
            &data[..],
            "data is the last field"
        );
        assert_eq!(Request::decode(req.opcode(), &b), Ok(req));
        let resp = Response::RawBlock {
            record: Box::new(rec),
            data,
        };
        let b = enc_resp(&resp);
        assert_eq!(Response::decode(resp.opcode(), &b), Ok(resp));
    }

    #[test]
    fn every_truncation_and_a_trailing_byte_rejected() {
        for (req, bytes) in golden_requests() {
            for n in 0..bytes.len() {
                assert!(
                    Request::decode(req.opcode(), &bytes[..n]).is_err(),
                    "{req:?} prefix {n}"
                );
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(Request::decode(req.opcode(), &long).is_err(), "{req:?}");
        }
        for (resp, bytes) in golden_responses() {
            for n in 0..bytes.len() {
                assert!(
                    Response::decode(resp.opcode(), &bytes[..n]).is_err(),
                    "{resp:?} prefix {n}"
                );
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(Response::decode(resp.opcode(), &long).is_err(), "{resp:?}");
        }
    }

    #[test]
    fn unknown_opcodes_rejected() {
        for opc in [0u16, 0x11, 0x80, 0x8c, 0xffff] {
            assert!(Request::decode(opc, &[]).is_err(), "{opc}");
            assert!(Response::decode(opc, &[]).is_err(), "{opc}");
        }
        // Requests and responses do not share opcodes.
        assert!(Request::decode(op::PONG, &[]).is_err());
        assert!(Response::decode(op::PING, &[]).is_err());
    }

    #[test]
    fn non_canonical_and_hostile_fields_rejected() {
        let bad_req = [
            (op::VOLUME_NUMBER, h("02000000 ff fe")), // not UTF-8
            (op::VOLUME_NUMBER, h("ffffffff")),       // over MAX_PAYLOAD
            (op::VOLUME_NUMBER, h("00000100 41")),    // 16 MiB announced
            (op::SYNC, h("0100 02")),                 // option byte 2
            (op::SYNC, h("0100 01 ffffff0f")),        // huge count, no bytes
            (
                op::SET_STALE,
                h(&format!("0200 0100000000000000 {UUID_HEX} 02 00000000")),
            ), // bool 2
            (
                op::SET_STALE,
                h(&format!(
                    "0200 0100000000000000 {UUID_HEX} 01 02000000 0100000000000000"
                )),
            ), // two chunks announced, one sent
            (op::SET_STALE, h(&format!("0200 {UUID_HEX} 01 00000000"))), // no epoch
            (op::ALLOCATE, h("0100 0200000000000000 01")), // no epoch
            (op::RECREATE, h("0100 01000000000000 0200000000000000 01")), // 7-byte epoch
            (
                op::WRITE,
                h("0100 0200000000000000 01 00000000 08000000 0900000000000000 03 00 00000000"),
            ), // mode 3
            (
                op::WRITE,
                h("0100 0200000000000000 01 00000000 08000000 0900000000000000 01 00 01000000 00"),
            ), // data in a zeroing write
            (
                op::WRITE_RAW,
                h("0100 0100000000000000 0807060504030201 02 09000000 02 00"),
            ), // record option byte 2
            (
                op::WRITE_RAW,
                h("0100 0100000000000000 0807060504030201 02 09000000 00 01"),
            ), // data announced, no length
            (
                op::WRITE_RAW,
                h("0100 0100000000000000 0807060504030201 02 09000000 01 00 00"),
            ), // a 2-byte record
            (op::WRITE_RAW, h("0100 0807060504030201 02 09000000 00 00")), // no epoch
            (op::READ_RAW, h("0100 0807060504030201 02 0900")), // 2-byte block
        ];
        for (opc, b) in bad_req {
            assert!(Request::decode(opc, &b).is_err(), "{opc:#x} {b:02x?}");
        }
        let bad_resp = [
            (op::NUMBER, h("02 0100")),
            (op::META, h("01 01000000 ff")),
            (op::BLOCKS, h("01000000 04 00000000")), // state tag 4
            (op::BLOCKS, h("ffffff00 00")),          // count beyond the bytes
            (op::STALE, h("02000000 00")),
            (op::NUMBERS, h("03000000 0100 0200")),
            (op::RAW_BLOCK, h("00000000")), // a 4-byte record
            (op::RAW_BLOCK, vec![0; RECORD_SIZE + 3]), // data length cut
        ];
        for (opc, b) in bad_resp {
            assert!(Response::decode(opc, &b).is_err(), "{opc:#x} {b:02x?}");
        }
    }

    /// xorshift64*: deterministic pseudo-random bytes for the fuzz tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Decodes `b` as a request and a response for `opc`; whatever decodes
    /// must re-encode to exactly `b`.
    fn check_both(opc: u16, b: &[u8]) -> usize {
        let mut ok = 0;
        if let Ok(r) = Request::decode(opc, b) {
            assert_eq!(r.opcode(), opc);
            assert_eq!(enc_req(&r), b, "{r:?}");
            ok += 1;
        }
        if let Ok(r) = Response::decode(opc, b) {
            assert_eq!(r.opcode(), opc);
            assert_eq!(enc_resp(&r), b, "{r:?}");
            ok += 1;
        }
        ok
    }

    #[test]
    fn fuzz_random_bytes_never_panic_and_reencode() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut decoded = 0;
        for _ in 0..20_000 {
            let opc = match rng.below(4) {
                0 => 1 + rng.below(16) as u16,
                1 => 0x81 + rng.below(11) as u16,
                2 => rng.next() as u16,
                _ => rng.below(0x90) as u16,
            };
            let len = rng.below(48) as usize;
            // Small values make lengths and tags plausible more often.
            let b: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.below(2) == 0 {
                        rng.below(4) as u8
                    } else {
                        rng.next() as u8
                    }
                })
                .collect();
            decoded += check_both(opc, &b);
        }
        assert!(decoded > 100, "only {decoded} random payloads decoded");
    }

    #[test]
    fn fuzz_mutated_golden_never_panic_and_reencode() {
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        let mut seeds: Vec<(u16, Vec<u8>)> = golden_requests()
            .into_iter()
            .map(|(r, b)| (r.opcode(), b))
            .collect();
        seeds.extend(golden_responses().into_iter().map(|(r, b)| (r.opcode(), b)));
        for _ in 0..20_000 {
            let (opc, base) = &seeds[rng.below(seeds.len() as u64) as usize];
            let mut b = base.clone();
            for _ in 0..1 + rng.below(3) {
                match rng.below(4) {
                    0 | 1 if !b.is_empty() => {
                        let i = rng.below(b.len() as u64) as usize;
                        b[i] ^= 1 << rng.below(8);
                    }
                    2 if !b.is_empty() => {
                        let i = rng.below(b.len() as u64) as usize;
                        b.remove(i);
                    }
                    _ => {
                        let i = rng.below(b.len() as u64 + 1) as usize;
                        b.insert(i, rng.next() as u8);
                    }
                }
            }
            check_both(*opc, &b);
        }
    }
}
