//! The fence: once any backend says another master holds the volume, this
//! master stops serving it (reads too) and says why, once.
//!
//! Every backend of an open volume sits in a [`super::slot::Slot`] that
//! shares the volume's one [`Fence`]. The slot
//! - refuses every data operation once the fence is down (nothing more
//!   reaches any backend: no read can return data another master may have
//!   overwritten, no write can land beside theirs);
//! - lowers the fence when a backend answers [`BackendError::Fenced`]
//!   (a node's epoch fence: a newer session epoch, or the same epoch taken
//!   by another master);
//! - lowers it when a normal `write` skips blocks as "not newer": this
//!   master issued that generation as the newest, so a stored one that is
//!   not older was written by another master. That is a fencing error,
//!   never a success (`DESIGN.md` §Consistency rules).
//!
//! Control operations that make no data decision (identity, volume list,
//! `.meta` loads, verify's listing and scans) pass whatever the fence says.

use std::sync::OnceLock;

use qbd_core::backend::{Backend, BackendError, BackendResult, PartId, WriteOutcome};

/// Whether the volume is fenced, and why (set once, never cleared).
#[derive(Debug, Default)]
pub struct Fence {
    why: OnceLock<(String, String)>,
}

impl Fence {
    /// The refusal this master got, if it was fenced.
    pub fn error(&self) -> Option<BackendError> {
        self.why.get().map(|(backend, why)| BackendError::Fenced {
            backend: backend.clone(),
            why: why.clone(),
        })
    }

    /// `Err` once fenced.
    pub fn check(&self) -> BackendResult<()> {
        self.error().map_or(Ok(()), Err)
    }

    /// Lowers the fence (logged the first time only).
    pub(super) fn lower(&self, backend: &str, why: &str) {
        if self.why.set((backend.to_owned(), why.to_owned())).is_ok() {
            eprintln!(
                "qbd-master: fenced: {backend} refused this master ({why}); another master holds \
                 the volume, so this one stops serving it: every read and write now fails (EIO)"
            );
        }
    }

    /// Lowers the fence if `r` is a fencing refusal; passes `r` on.
    pub(super) fn watch<T>(&self, r: BackendResult<T>) -> BackendResult<T> {
        if let Err(BackendError::Fenced { backend, why }) = &r {
            self.lower(backend, why);
        }
        r
    }

    /// A normal write's outcome: blocks skipped as "not newer" hold a
    /// generation this master did not issue, so another master wrote them:
    /// the fence goes down and the write fails.
    pub(super) fn judge_write(
        &self,
        backend: &dyn Backend,
        w: (PartId, u32),
        out: WriteOutcome,
    ) -> BackendResult<WriteOutcome> {
        if out.skipped == 0 {
            return Ok(out);
        }
        let (part, first) = w;
        let why = format!(
            "{} block(s) of chunk {} part {} from block {first} hold a generation this master \
             did not issue (skipped as not newer)",
            out.skipped, part.chunk, part.part
        );
        let backend = backend.describe();
        self.lower(&backend, &why);
        Err(BackendError::Fenced { backend, why })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_stays_down_with_the_first_reason() {
        let f = Fence::default();
        assert!(f.check().is_ok());
        f.lower("node:a", "epoch 3 < 4");
        f.lower("node:b", "other");
        match f.check() {
            Err(BackendError::Fenced { backend, why }) => {
                assert_eq!((backend.as_str(), why.as_str()), ("node:a", "epoch 3 < 4"));
            }
            other => panic!("{other:?}"),
        }
    }
}
