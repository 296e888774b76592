//! Placement slots whose backend can be swapped while the volume serves
//! (`qbd repair --replace` through the master).
//!
//! Every slot of an open volume is a [`Slot`]: a [`Backend`] that forwards
//! each call to the backend the slot holds *now*. The volume's code keeps
//! indexing `backends[slot]` as before; only [`Slots::swap`] changes what a
//! slot reaches. Invariants:
//! - the slot index never changes, only the backend object (and with it the
//!   identity `id()` reports);
//! - a call picks the backend once, when it is made: an operation in flight
//!   during a swap finishes on the backend it started on. Callers that must
//!   not straddle a swap (every data operation) hold range locks the swap
//!   excludes (`Volume::replace_serving` holds the whole volume's).
//!
//! The slot is also where the volume's fence ([`super::fence`]) stands:
//! every data operation is refused once it is down.
//!
//! Cost on the data path: one uncontended read lock, one `Arc` clone and
//! one boxed future per backend call.

use std::ops::Deref;
use std::sync::{Arc, PoisonError, RwLock};

use qbd_core::backend::{
    Backend, BackendResult, BlockWrite, BoxFut, PartId, PartRead, RawBlock, WriteOutcome,
};
use qbd_core::format::alloc::{AllocMap, DecodedAlloc};
use qbd_core::format::record::RECORD_SIZE;
use qbd_core::meta::volume::VolumeMeta;
use qbd_core::placement::BackendId;
use qbd_core::verify::{PartScan, VolumeListing};

use super::fence::Fence;

/// One placement slot: the backend it holds now, behind the volume's fence.
#[derive(Debug)]
pub struct Slot {
    current: RwLock<Arc<dyn Backend>>,
    fence: Arc<Fence>,
}

impl Slot {
    /// The backend this slot holds now.
    pub fn current(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn replace(&self, b: Arc<dyn Backend>) -> Arc<dyn Backend> {
        let mut g = self.current.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *g, b)
    }
}

/// The volume's slots, by placement index: a slice of backends for the
/// code that reads them, swappable one by one.
#[derive(Debug)]
pub struct Slots {
    /// The same objects as `slots`, as the volume's code uses them.
    backends: Vec<Arc<dyn Backend>>,
    slots: Vec<Arc<Slot>>,
}

impl Slots {
    /// Each backend in a slot of its own, in order, all behind `fence`.
    pub fn new(backends: Vec<Arc<dyn Backend>>, fence: &Arc<Fence>) -> Self {
        let slots: Vec<Arc<Slot>> = backends
            .into_iter()
            .map(|b| {
                Arc::new(Slot {
                    current: RwLock::new(b),
                    fence: Arc::clone(fence),
                })
            })
            .collect();
        let backends = slots
            .iter()
            .map(|s| Arc::clone(s) as Arc<dyn Backend>)
            .collect();
        Slots { backends, slots }
    }

    /// Puts `b` in slot `slot`; returns what it held (`None` if there is
    /// no such slot).
    pub fn swap(&self, slot: usize, b: Arc<dyn Backend>) -> Option<Arc<dyn Backend>> {
        self.slots.get(slot).map(|s| s.replace(b))
    }
}

impl Deref for Slots {
    type Target = [Arc<dyn Backend>];

    fn deref(&self) -> &Self::Target {
        &self.backends
    }
}

/// Forwards one call to the slot's current backend (control operations:
/// identity, volume list, `.meta` loads, verify's listing and scans).
macro_rules! forward {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {{
        let b = $self.current();
        Box::pin(async move { b.$method($($arg),*).await })
    }};
}

/// Forwards one data operation behind the fence: refused once it is down,
/// watched for a backend's fencing refusal.
macro_rules! guarded {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {{
        let (b, fence) = ($self.current(), &$self.fence);
        Box::pin(async move {
            fence.check()?;
            fence.watch(b.$method($($arg),*).await)
        })
    }};
}

impl Backend for Slot {
    fn id(&self) -> BackendId {
        self.current().id()
    }

    fn describe(&self) -> String {
        self.current().describe()
    }

    fn volume_number(&self, name: &str) -> BoxFut<'_, BackendResult<Option<u16>>> {
        let name = name.to_owned();
        forward!(self.volume_number(&name))
    }

    fn volume_numbers(&self) -> BoxFut<'_, BackendResult<Vec<u16>>> {
        forward!(self.volume_numbers())
    }

    fn create_volume(&self, meta: VolumeMeta) -> BoxFut<'_, BackendResult<()>> {
        guarded!(self.create_volume(meta))
    }

    fn load_meta(&self, number: u16) -> BoxFut<'_, BackendResult<Option<VolumeMeta>>> {
        forward!(self.load_meta(number))
    }

    fn save_meta(&self, meta: VolumeMeta) -> BoxFut<'_, BackendResult<()>> {
        guarded!(self.save_meta(meta))
    }

    fn open_volume(&self, meta: VolumeMeta) -> BoxFut<'_, BackendResult<DecodedAlloc>> {
        guarded!(self.open_volume(meta))
    }

    fn read(&self, part: PartId, first: u32, count: u32) -> BoxFut<'_, BackendResult<PartRead>> {
        guarded!(self.read(part, first, count))
    }

    fn write(&self, w: BlockWrite) -> BoxFut<'_, BackendResult<WriteOutcome>> {
        let (b, fence) = (self.current(), &self.fence);
        Box::pin(async move {
            fence.check()?;
            let at = (w.part, w.first);
            let out = fence.watch(b.write(w).await)?;
            fence.judge_write(b.as_ref(), at, out)
        })
    }

    fn allocate(&self, part: PartId) -> BoxFut<'_, BackendResult<()>> {
        guarded!(self.allocate(part))
    }

    fn sync(&self, parts: Option<Vec<PartId>>) -> BoxFut<'_, BackendResult<()>> {
        guarded!(self.sync(parts))
    }

    fn heal(&self, w: BlockWrite) -> BoxFut<'_, BackendResult<WriteOutcome>> {
        guarded!(self.heal(w))
    }

    fn recreate(&self, part: PartId) -> BoxFut<'_, BackendResult<()>> {
        guarded!(self.recreate(part))
    }

    fn load_stale(&self) -> BoxFut<'_, BackendResult<Vec<(BackendId, AllocMap)>>> {
        guarded!(self.load_stale())
    }

    fn mark_stale(&self, of: BackendId, chunks: Vec<u64>) -> BoxFut<'_, BackendResult<()>> {
        guarded!(self.mark_stale(of, chunks))
    }

    fn clear_stale(&self, of: BackendId, chunks: Vec<u64>) -> BoxFut<'_, BackendResult<()>> {
        guarded!(self.clear_stale(of, chunks))
    }

    fn read_raw(&self, part: PartId, block: u32) -> BoxFut<'_, BackendResult<RawBlock>> {
        guarded!(self.read_raw(part, block))
    }

    fn write_raw(
        &self,
        part: PartId,
        block: u32,
        data: Option<Vec<u8>>,
        record: Option<[u8; RECORD_SIZE]>,
    ) -> BoxFut<'_, BackendResult<()>> {
        guarded!(self.write_raw(part, block, data, record))
    }

    fn list_volume(&self, number: u16) -> BoxFut<'_, BackendResult<VolumeListing>> {
        forward!(self.list_volume(number))
    }

    fn scan_parts(
        &self,
        meta: VolumeMeta,
        parts: Vec<PartId>,
    ) -> BoxFut<'_, BackendResult<Vec<PartScan>>> {
        forward!(self.scan_parts(meta, parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::repair::absent::Absent;

    fn id(n: u128) -> BackendId {
        BackendId(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn a_swap_changes_what_the_slot_reaches_not_its_index() {
        let slots = Slots::new(
            vec![Arc::new(Absent::new(id(1))), Arc::new(Absent::new(id(2)))],
            &Arc::new(Fence::default()),
        );
        let before = Arc::clone(&slots[1]);
        let old = slots.swap(1, Arc::new(Absent::new(id(3))));
        assert_eq!(old.map(|b| b.id()), Some(id(2)));
        assert_eq!((slots[0].id(), slots[1].id()), (id(1), id(3)));
        assert_eq!(before.id(), id(3), "a handle taken before sees the swap");
        assert!(slots.swap(2, Arc::new(Absent::new(id(4)))).is_none());
    }

    #[tokio::test]
    async fn once_fenced_a_slot_refuses_data_operations_but_still_names_its_backend() {
        let fence = Arc::new(Fence::default());
        let slots = Slots::new(vec![Arc::new(Absent::new(id(1)))], &fence);
        let part = PartId { chunk: 0, part: 0 };
        let before = slots[0].read(part, 0, 1).await;
        assert!(
            before.is_err_and(|e| !e.is_fenced()),
            "the absent backend's own error"
        );
        fence.lower("node:x", "epoch 3 < 4");
        let after = slots[0].read(part, 0, 1).await;
        assert!(after.is_err_and(|e| e.is_fenced()), "refused by the fence");
        assert!(slots[0].sync(None).await.is_err_and(|e| e.is_fenced()));
        assert_eq!(slots[0].id(), id(1));
    }
}
