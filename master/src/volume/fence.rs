//! The fence: once any backend says another master holds the volume, this
//! master stops serving it (reads too) and says why, once.
//!
//! Every backend of an open volume is wrapped in a [`Fenced`] that shares
//! one [`Fence`]. The wrapper
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

use std::sync::{Arc, OnceLock};

use qbd_core::backend::{
    Backend, BackendError, BackendResult, BlockWrite, BoxFut, PartId, PartRead, RawBlock,
    WriteOutcome,
};
use qbd_core::format::alloc::{AllocMap, DecodedAlloc};
use qbd_core::format::record::RECORD_SIZE;
use qbd_core::meta::volume::VolumeMeta;
use qbd_core::placement::BackendId;
use qbd_core::verify::{PartScan, VolumeListing};

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
    fn lower(&self, backend: &str, why: &str) {
        if self.why.set((backend.to_owned(), why.to_owned())).is_ok() {
            eprintln!(
                "qbd-master: fenced: {backend} refused this master ({why}); another master holds \
                 the volume, so this one stops serving it: every read and write now fails (EIO)"
            );
        }
    }

    /// Lowers the fence if `r` is a fencing refusal; passes `r` on.
    fn watch<T>(&self, r: BackendResult<T>) -> BackendResult<T> {
        if let Err(BackendError::Fenced { backend, why }) = &r {
            self.lower(backend, why);
        }
        r
    }
}

/// A backend behind the volume's fence.
#[derive(Debug)]
pub struct Fenced {
    inner: Arc<dyn Backend>,
    fence: Arc<Fence>,
}

impl Fenced {
    /// Wraps `inner` behind `fence`.
    pub fn wrap(inner: Arc<dyn Backend>, fence: &Arc<Fence>) -> Arc<dyn Backend> {
        Arc::new(Fenced {
            inner,
            fence: Arc::clone(fence),
        })
    }

    /// Runs a data operation: refused once fenced, watched for refusals.
    fn guarded<'a, T: Send + 'a>(
        &'a self,
        op: BoxFut<'a, BackendResult<T>>,
    ) -> BoxFut<'a, BackendResult<T>> {
        Box::pin(async move {
            self.fence.check()?;
            self.fence.watch(op.await)
        })
    }
}

impl Backend for Fenced {
    fn id(&self) -> BackendId {
        self.inner.id()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn volume_number(&self, name: &str) -> BoxFut<'_, BackendResult<Option<u16>>> {
        self.inner.volume_number(name)
    }

    fn volume_numbers(&self) -> BoxFut<'_, BackendResult<Vec<u16>>> {
        self.inner.volume_numbers()
    }

    fn create_volume(&self, meta: VolumeMeta) -> BoxFut<'_, BackendResult<()>> {
        self.guarded(self.inner.create_volume(meta))
    }

    fn load_meta(&self, number: u16) -> BoxFut<'_, BackendResult<Option<VolumeMeta>>> {
        self.inner.load_meta(number)
    }

    fn save_meta(&self, meta: VolumeMeta) -> BoxFut<'_, BackendResult<()>> {
        self.guarded(self.inner.save_meta(meta))
    }

    fn open_volume(&self, meta: VolumeMeta) -> BoxFut<'_, BackendResult<DecodedAlloc>> {
        self.guarded(self.inner.open_volume(meta))
    }

    fn read(&self, part: PartId, first: u32, count: u32) -> BoxFut<'_, BackendResult<PartRead>> {
        self.guarded(self.inner.read(part, first, count))
    }

    fn write(&self, w: BlockWrite) -> BoxFut<'_, BackendResult<WriteOutcome>> {
        let (part, first) = (w.part, w.first);
        let op = self.inner.write(w);
        Box::pin(async move {
            self.fence.check()?;
            let out = self.fence.watch(op.await)?;
            if out.skipped > 0 {
                let why = format!(
                    "{} block(s) of chunk {} part {} from block {first} hold a generation this \
                     master did not issue (skipped as not newer)",
                    out.skipped, part.chunk, part.part
                );
                let backend = self.inner.describe();
                self.fence.lower(&backend, &why);
                return Err(BackendError::Fenced { backend, why });
            }
            Ok(out)
        })
    }

    fn allocate(&self, part: PartId) -> BoxFut<'_, BackendResult<()>> {
        self.guarded(self.inner.allocate(part))
    }

    fn sync(&self, parts: Option<Vec<PartId>>) -> BoxFut<'_, BackendResult<()>> {
        self.guarded(self.inner.sync(parts))
    }

    fn heal(&self, w: BlockWrite) -> BoxFut<'_, BackendResult<WriteOutcome>> {
        self.guarded(self.inner.heal(w))
    }

    fn recreate(&self, part: PartId) -> BoxFut<'_, BackendResult<()>> {
        self.guarded(self.inner.recreate(part))
    }

    fn load_stale(&self) -> BoxFut<'_, BackendResult<Vec<(BackendId, AllocMap)>>> {
        self.guarded(self.inner.load_stale())
    }

    fn mark_stale(&self, of: BackendId, chunks: Vec<u64>) -> BoxFut<'_, BackendResult<()>> {
        self.guarded(self.inner.mark_stale(of, chunks))
    }

    fn clear_stale(&self, of: BackendId, chunks: Vec<u64>) -> BoxFut<'_, BackendResult<()>> {
        self.guarded(self.inner.clear_stale(of, chunks))
    }

    fn read_raw(&self, part: PartId, block: u32) -> BoxFut<'_, BackendResult<RawBlock>> {
        self.guarded(self.inner.read_raw(part, block))
    }

    fn write_raw(
        &self,
        part: PartId,
        block: u32,
        data: Option<Vec<u8>>,
        record: Option<[u8; RECORD_SIZE]>,
    ) -> BoxFut<'_, BackendResult<()>> {
        self.guarded(self.inner.write_raw(part, block, data, record))
    }

    fn list_volume(&self, number: u16) -> BoxFut<'_, BackendResult<VolumeListing>> {
        self.inner.list_volume(number)
    }

    fn scan_parts(
        &self,
        meta: VolumeMeta,
        parts: Vec<PartId>,
    ) -> BoxFut<'_, BackendResult<Vec<PartScan>>> {
        self.inner.scan_parts(meta, parts)
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
