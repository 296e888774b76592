//! The core crate's error type.

use std::path::PathBuf;

/// Errors of the core crate. Each variant says whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The operator gave a bad value (flag, size, policy).
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
    /// The stored volume disagrees with what the operator asked for.
    #[error("volume conflict: {0}")]
    Conflict(String),
    /// A file on disk is malformed, truncated, foreign or fails its checksum.
    #[error("corrupt {what} at {path}: {why}")]
    Corrupt {
        /// What kind of file.
        what: &'static str,
        /// Where it is.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A byte string does not decode (used by the pure codecs).
    #[error("malformed {what}: {why}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// What is wrong.
        why: String,
    },
    /// An operating-system I/O error, with the path involved.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another master holds the volume.
    #[error("volume is locked by another master: {0}")]
    Locked(PathBuf),
}

impl CoreError {
    /// Shorthand for a decode error.
    pub fn malformed(what: &'static str, why: impl Into<String>) -> Self {
        CoreError::Malformed {
            what,
            why: why.into(),
        }
    }

    /// Shorthand for an I/O error at a path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CoreError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True when the error is "no space left on device".
    pub fn is_no_space(&self) -> bool {
        matches!(self, CoreError::Io { source, .. } if source.raw_os_error() == Some(28))
    }
}

/// Result alias of the core crate.
pub type CoreResult<T> = Result<T, CoreError>;
