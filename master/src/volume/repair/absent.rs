//! A stand-in for a backend of the placement table that could not be
//! reached when a tool opened the volume: its slot is failed from the
//! start, and every operation on it fails as an I/O error would.

use qbd_core::CoreError;
use qbd_core::backend::{
    Backend, BackendError, BackendResult, BlockWrite, BoxFut, PartId, PartRead, RawBlock,
    WriteOutcome,
};
use qbd_core::format::alloc::{AllocMap, DecodedAlloc};
use qbd_core::format::record::RECORD_SIZE;
use qbd_core::meta::volume::VolumeMeta;
use qbd_core::placement::BackendId;

/// An unreachable backend, known only by its identity.
#[derive(Debug)]
pub struct Absent {
    id: BackendId,
}

impl Absent {
    /// The stand-in for backend `id`.
    pub fn new(id: BackendId) -> Self {
        Absent { id }
    }

    fn err<T: Send + 'static>(&self) -> BoxFut<'_, BackendResult<T>> {
        let e = BackendError::Core(CoreError::io(
            "reach",
            self.describe(),
            std::io::Error::new(std::io::ErrorKind::NotConnected, "backend not reachable"),
        ));
        Box::pin(async move { Err(e) })
    }
}

impl Backend for Absent {
    fn id(&self) -> BackendId {
        self.id
    }

    fn describe(&self) -> String {
        format!("unreachable backend {}", self.id)
    }

    fn volume_number(&self, _: &str) -> BoxFut<'_, BackendResult<Option<u16>>> {
        self.err()
    }

    fn volume_numbers(&self) -> BoxFut<'_, BackendResult<Vec<u16>>> {
        self.err()
    }

    fn create_volume(&self, _: VolumeMeta) -> BoxFut<'_, BackendResult<()>> {
        self.err()
    }

    fn load_meta(&self, _: u16) -> BoxFut<'_, BackendResult<Option<VolumeMeta>>> {
        self.err()
    }

    fn save_meta(&self, _: VolumeMeta) -> BoxFut<'_, BackendResult<()>> {
        self.err()
    }

    fn open_volume(&self, _: VolumeMeta) -> BoxFut<'_, BackendResult<DecodedAlloc>> {
        self.err()
    }

    fn read(&self, _: PartId, _: u32, _: u32) -> BoxFut<'_, BackendResult<PartRead>> {
        self.err()
    }

    fn write(&self, _: BlockWrite) -> BoxFut<'_, BackendResult<WriteOutcome>> {
        self.err()
    }

    fn allocate(&self, _: PartId) -> BoxFut<'_, BackendResult<()>> {
        self.err()
    }

    fn sync(&self, _: Option<Vec<PartId>>) -> BoxFut<'_, BackendResult<()>> {
        self.err()
    }

    fn heal(&self, _: BlockWrite) -> BoxFut<'_, BackendResult<WriteOutcome>> {
        self.err()
    }

    fn recreate(&self, _: PartId) -> BoxFut<'_, BackendResult<()>> {
        self.err()
    }

    fn load_stale(&self) -> BoxFut<'_, BackendResult<Vec<(BackendId, AllocMap)>>> {
        self.err()
    }

    fn mark_stale(&self, _: BackendId, _: Vec<u64>) -> BoxFut<'_, BackendResult<()>> {
        self.err()
    }

    fn clear_stale(&self, _: BackendId, _: Vec<u64>) -> BoxFut<'_, BackendResult<()>> {
        self.err()
    }

    fn read_raw(&self, _: PartId, _: u32) -> BoxFut<'_, BackendResult<RawBlock>> {
        self.err()
    }

    fn write_raw(
        &self,
        _: PartId,
        _: u32,
        _: Option<Vec<u8>>,
        _: Option<[u8; RECORD_SIZE]>,
    ) -> BoxFut<'_, BackendResult<()>> {
        self.err()
    }
}
