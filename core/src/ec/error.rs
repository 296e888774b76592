//! The erasure-coding error type.

/// Errors of the erasure-coding module. Each variant says whose fault it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EcError {
    /// Configuration: K or M outside 1..=16 / 1..=8, or a replicated policy
    /// where an EC one was expected.
    #[error("unsupported erasure-coding profile {k}+{m} (K in 1..=16, M in 1..=8)")]
    UnsupportedProfile {
        /// Data parts asked for.
        k: usize,
        /// Parity parts asked for.
        m: usize,
    },
    /// Configuration: blocks per chunk is not a positive multiple of K.
    #[error("blocks per chunk ({blocks}) must be a positive multiple of K={k}")]
    BlocksNotMultipleOfK {
        /// Blocks per chunk.
        blocks: u32,
        /// Data parts.
        k: usize,
    },
    /// Caller bug: the slice of shards does not have one entry per part.
    #[error("expected {expected} shards, got {got}")]
    WrongShardCount {
        /// Shards the profile needs.
        expected: usize,
        /// Shards given.
        got: usize,
    },
    /// Caller bug: a shard length the code cannot take (it must be a
    /// non-zero multiple of [`SHARD_ALIGN`](super::SHARD_ALIGN) bytes).
    #[error("shard length {len} is not a non-zero multiple of 64 bytes")]
    BadShardLen {
        /// The length given.
        len: usize,
    },
    /// Caller bug: shards of one call differ in length.
    #[error("shard {index} is {got} bytes, expected {expected}")]
    ShardLenMismatch {
        /// Index of the offending shard (part index).
        index: usize,
        /// Length of the first shard.
        expected: usize,
        /// Its length.
        got: usize,
    },
    /// Data loss: more parts of the row are missing than parity can
    /// restore. Not retryable with the same parts; maps to EIO.
    #[error("{missing} shards missing, parity restores at most {m}")]
    TooManyErasures {
        /// Missing shards.
        missing: usize,
        /// Parity parts.
        m: usize,
    },
    /// Caller bug: a byte or block range reaches outside the chunk.
    #[error("range {start}..{end} is outside the chunk (0..{limit})")]
    OutOfChunk {
        /// Start of the range.
        start: u64,
        /// End of the range (exclusive).
        end: u64,
        /// Chunk length in the same unit.
        limit: u64,
    },
    /// Caller bug: parity-cover lists of the wrong length.
    #[error("parity cover of {got} generations, expected K={k}")]
    BadCover {
        /// Generations given.
        got: usize,
        /// Data parts.
        k: usize,
    },
    /// Caller bug: a data part given parity meta, or the other way round.
    #[error("part {part}: data meta for a parity part or parity meta for a data part")]
    MisplacedMeta {
        /// The part index.
        part: usize,
    },
    /// Bug in this module or the coding library (should not happen once
    /// inputs are validated).
    #[error("erasure-coding library: {0}")]
    Library(String),
}

impl EcError {
    /// True when the error means data cannot be served from these parts
    /// (EIO), as opposed to a configuration or programming error.
    pub fn is_data_loss(&self) -> bool {
        matches!(self, EcError::TooManyErasures { .. })
    }
}

impl From<reed_solomon_simd::Error> for EcError {
    fn from(e: reed_solomon_simd::Error) -> Self {
        EcError::Library(e.to_string())
    }
}
