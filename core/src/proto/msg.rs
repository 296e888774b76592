//! Requests and responses of the node protocol (payloads of frames).
//!
//! Every request maps to one operation of [`crate::backend::Backend`]; a
//! node answers it by calling that operation on its own chunk store. The
//! encoding of each (byte by byte) is in `docs/node-protocol.md`; `opcode()`
//! is the frame header's opcode, `encode` writes the payload, `decode`
//! parses a payload for an opcode and rejects trailing bytes.

use uuid::Uuid;

use super::ProtoError;
use crate::backend::PartId;

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
        /// Part.
        part: PartId,
        /// First block.
        first: u32,
        /// Block count.
        count: u32,
    },
    /// `Backend::write` (or `repair` when `repair`).
    Write {
        /// Volume number.
        volume: u16,
        /// Part.
        part: PartId,
        /// First block.
        first: u32,
        /// Block count.
        count: u32,
        /// Generation (its epoch part is checked against the node's epoch).
        generation: u64,
        /// How to apply.
        mode: WriteMode,
        /// The repair operation (applies whatever the stored generation).
        repair: bool,
        /// Whole blocks for `WriteMode::Data`, else empty.
        data: Vec<u8>,
    },
    /// `Backend::allocate`.
    Allocate {
        /// Volume number.
        volume: u16,
        /// Part.
        part: PartId,
    },
    /// `Backend::recreate`.
    Recreate {
        /// Volume number.
        volume: u16,
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
        /// The backend the map describes.
        of: Uuid,
        /// Set (`true`) or clear.
        stale: bool,
        /// Chunks.
        chunks: Vec<u64>,
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
    /// To `Write`.
    Written {
        /// Blocks applied.
        applied: u32,
        /// Blocks skipped (stored generation not older).
        skipped: u32,
    },
    /// To `LoadStale`: (backend, encoded stale map file).
    Stale(Vec<(Uuid, Vec<u8>)>),
    /// Any request that failed.
    Error {
        /// Why.
        code: ErrorCode,
        /// For logs.
        message: String,
    },
}

impl Request {
    /// The frame opcode of this request.
    pub fn opcode(&self) -> u16 {
        unimplemented!("codec: see docs/node-protocol.md")
    }

    /// Appends the payload encoding to `out`.
    pub fn encode(&self, _out: &mut Vec<u8>) {
        unimplemented!("codec: see docs/node-protocol.md")
    }

    /// Decodes the payload of a request frame with `opcode`.
    pub fn decode(_opcode: u16, _payload: &[u8]) -> Result<Self, ProtoError> {
        unimplemented!("codec: see docs/node-protocol.md")
    }
}

impl Response {
    /// The frame opcode of this response.
    pub fn opcode(&self) -> u16 {
        unimplemented!("codec: see docs/node-protocol.md")
    }

    /// Appends the payload encoding to `out`.
    pub fn encode(&self, _out: &mut Vec<u8>) {
        unimplemented!("codec: see docs/node-protocol.md")
    }

    /// Decodes the payload of a response frame with `opcode`.
    pub fn decode(_opcode: u16, _payload: &[u8]) -> Result<Self, ProtoError> {
        unimplemented!("codec: see docs/node-protocol.md")
    }
}
