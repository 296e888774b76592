//! The node's errors: setup failures of the daemon, and how a failed
//! request is told to the master ([`ErrorCode`] in a `Response::Error`).

use qbd_core::CoreError;
use qbd_core::backend::BackendError;
use qbd_core::proto::msg::{ErrorCode, Response};

/// Errors that stop the node from starting or stopping cleanly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The operator gave a bad flag or file (cluster key, data directory).
    #[error("{0}")]
    Setup(String),
    /// The backend root could not be opened or synced.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl From<CoreError> for NodeError {
    fn from(e: CoreError) -> Self {
        NodeError::Backend(e.into())
    }
}

/// A failed request, as the node answers it.
#[derive(Debug)]
pub(crate) struct Refusal {
    code: ErrorCode,
    message: String,
}

impl Refusal {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }

    /// The request carried an epoch older than the node's.
    pub(crate) fn stale_epoch(what: &str, theirs: u64, ours: u64) -> Self {
        Refusal::new(
            ErrorCode::StaleEpoch,
            format!("{what} of epoch {theirs}, the volume is at epoch {ours}"),
        )
    }

    /// The request names a volume this node has not opened.
    pub(crate) fn not_open(volume: u16) -> Self {
        Refusal::new(ErrorCode::NotOpen, format!("volume {volume} is not open"))
    }

    /// A request that does not make sense (bad TOML, wrong payload).
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Refusal::new(ErrorCode::Invalid, message)
    }

    pub(crate) fn into_response(self) -> Response {
        Response::Error {
            code: self.code,
            message: self.message,
        }
    }
}

impl From<BackendError> for Refusal {
    fn from(e: BackendError) -> Self {
        Refusal::new(code_of(&e), e.to_string())
    }
}

impl From<CoreError> for Refusal {
    fn from(e: CoreError) -> Self {
        BackendError::from(e).into()
    }
}

/// The wire code of a backend error. Operator-side mistakes in the request
/// (ranges, payload sizes, conflicting creates) are `Invalid`; everything
/// the disk did is `Io` unless it has its own code.
pub(crate) fn code_of(e: &BackendError) -> ErrorCode {
    if e.is_no_space() {
        return ErrorCode::NoSpace;
    }
    match e {
        BackendError::PartMissing { .. } => ErrorCode::PartMissing,
        BackendError::PartCorrupt { .. } => ErrorCode::PartCorrupt,
        BackendError::NotOpen(_) => ErrorCode::NotOpen,
        BackendError::Fenced { .. } => ErrorCode::StaleEpoch,
        BackendError::Core(
            CoreError::InvalidSetting(_) | CoreError::Conflict(_) | CoreError::Malformed { .. },
        ) => ErrorCode::Invalid,
        BackendError::Core(_) | BackendError::Injected(_) => ErrorCode::Io,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qbd_core::backend::PartId;

    #[test]
    fn backend_errors_map_to_their_codes() {
        let part = PartId { chunk: 0, part: 0 };
        let missing = BackendError::PartMissing {
            part,
            backend: "x".into(),
        };
        assert_eq!(code_of(&missing), ErrorCode::PartMissing);
        assert_eq!(
            code_of(&BackendError::NotOpen("x".into())),
            ErrorCode::NotOpen
        );
        let full = CoreError::io("write", "/x", std::io::Error::from_raw_os_error(28));
        assert_eq!(code_of(&full.into()), ErrorCode::NoSpace);
        let eio = CoreError::io("write", "/x", std::io::Error::from_raw_os_error(5));
        assert_eq!(code_of(&eio.into()), ErrorCode::Io);
        let bad = CoreError::InvalidSetting("range".into());
        assert_eq!(code_of(&bad.into()), ErrorCode::Invalid);
    }
}
