//! Errors of the volume layer.

use qbd_core::CoreError;
use qbd_core::backend::BackendError;
use qbd_core::ec::EcError;

use crate::device::DeviceError;

/// Why a volume could not be opened or an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The operator's flags or backends are wrong (exit 2-style errors).
    #[error("{0}")]
    Setup(String),
    /// A backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Core error (meta files, settings).
    #[error(transparent)]
    Core(#[from] CoreError),
    /// No replica could serve a block.
    #[error("no good copy of chunk {chunk} block {block}: {why}")]
    Unreadable {
        /// Chunk.
        chunk: u64,
        /// Block in chunk.
        block: u32,
        /// Last reason.
        why: String,
    },
    /// Not one copy could be written, synced or recorded.
    #[error("no redundancy left: {0}")]
    NoCopy(String),
    /// Erasure coding: too many parts of a row lost (data loss: EIO), or a
    /// caller bug in the codec's inputs.
    #[error("erasure coding: {0}")]
    Ec(#[from] EcError),
    /// A backend holds something the master never wrote (a newer generation
    /// than issued): a bug, or another master writing.
    #[error("inconsistent backend state: {0}")]
    Inconsistent(String),
    /// The master's journal (`--state`) cannot be written or read: the
    /// master's disk, not a backend (EC writes fail until a restart).
    #[error("journal: {0}")]
    Journal(String),
    /// The epoch's generation counter is used up.
    #[error("generation counter exhausted: restart the master to take a new epoch")]
    GenerationsExhausted,
}

impl VolumeError {
    /// A fault of one part file (missing, unusable), not of its backend.
    pub fn is_part_fault(&self) -> bool {
        matches!(
            self,
            VolumeError::Backend(
                BackendError::PartMissing { .. } | BackendError::PartCorrupt { .. }
            )
        )
    }
}

impl From<VolumeError> for DeviceError {
    fn from(e: VolumeError) -> Self {
        match &e {
            VolumeError::Backend(b) if b.is_no_space() => DeviceError::NoSpace(e.to_string()),
            VolumeError::Core(c) if c.is_no_space() => DeviceError::NoSpace(e.to_string()),
            _ => DeviceError::Io(e.to_string()),
        }
    }
}
