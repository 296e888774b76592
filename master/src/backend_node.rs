//! [`NodeBackend`]: a `qbd-node` reached through a [`Transport`], seen by
//! the volume layer as one more [`Backend`].
//!
//! Each `Backend` operation is one request (`docs/node-protocol.md`); the
//! node answers it by running the same operation on its own chunk store.
//! `.meta` travels as its TOML text; the allocation and degraded maps as
//! their file bytes, decoded (and checked against the volume UUID) here.
//!
//! Errors: the node's error codes map onto the matching `BackendError`
//! (`PartMissing`, `PartCorrupt`, `NotOpen`; a stale epoch is `Fenced`:
//! another master holds the volume; out of space keeps `is_no_space()`); a transport
//! failure (timeout, lost connection, a frame that does not verify) is an
//! I/O error of this backend, so the volume marks it failed and its
//! maintenance readmits it (re-opening the volume) when it answers again.
//! Nothing is retried here.
//!
//! Raw block operations (`read_raw`, `write_raw`: how EC parity records and
//! their covers are stored) are the `ReadRaw` and `WriteRaw` requests, one
//! block each; a raw reply must hold exactly one block of data.
//!
//! Epochs: every request that reads or changes the volume's data (`Read`,
//! `Write`, `ReadRaw`, `WriteRaw`, `Allocate`, `Recreate`, `SetStale`)
//! carries this master's session epoch for the volume, so the node refuses
//! it once another master has taken the volume (`StaleEpoch`, mapped to
//! [`BackendError::Fenced`]: the volume stops serving). The fence is never
//! the epoch inside a block's generation: a heal writes old generations by
//! design (`docs/heal.md`). The session epoch is the highest one this
//! backend has successfully saved (`save_meta`, the epoch compare-and-set)
//! or, before any, opened the volume with; a node's epoch only grows, so
//! the highest accepted is the last.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use qbd_core::CoreError;
use qbd_core::backend::{
    Backend, BackendError, BackendResult, BlockState, BlockWrite, BoxFut, PartId, PartRead,
    RawBlock, WriteData, WriteOutcome,
};
use qbd_core::format::alloc::{AllocMap, BitmapKind, DecodedAlloc};
use qbd_core::format::record::RECORD_SIZE;
use qbd_core::generation::Generation;
use qbd_core::meta::volume::VolumeMeta;
use qbd_core::placement::BackendId;
use qbd_core::proto::ClusterKey;
use qbd_core::proto::msg::{ErrorCode, Request, Response, WireBlockState, WriteMode};
use qbd_core::proto::session::NodeHello;
use qbd_core::transport::{Transport, TransportError};
use qbd_core::verify::{PartFile, PartScan, StrayFile, VolumeListing};
use qbd_transport_tcp::{TcpOptions, TcpTransport};
use uuid::Uuid;

/// A node as a backend.
#[derive(Debug)]
pub struct NodeBackend {
    transport: Arc<dyn Transport>,
    id: BackendId,
    name: String,
    /// The volume opened on it (set by `open_volume`).
    open: Mutex<Option<Opened>>,
    /// The epoch sent with the fenced requests: the highest of the last
    /// successful `save_meta` and the `open_volume` meta.
    epoch: AtomicU64,
}

/// What the data operations need of the open volume.
#[derive(Debug, Clone, Copy)]
struct Opened {
    number: u16,
    uuid: Uuid,
    chunks: u64,
    block_size: u32,
}

impl NodeBackend {
    /// A backend over `transport`, whose handshake introduced `node`.
    pub fn new(transport: Arc<dyn Transport>, node: NodeHello) -> Self {
        NodeBackend {
            transport,
            id: BackendId(node.backend),
            name: node.name,
            open: Mutex::new(None),
            epoch: AtomicU64::new(0),
        }
    }

    /// Connects to the node at `addr` over TCP (handshake with `key`,
    /// introducing this master as `master`).
    pub async fn connect_tcp(
        addr: SocketAddr,
        key: ClusterKey,
        master: &str,
        opts: TcpOptions,
    ) -> Result<Self, TransportError> {
        let t = TcpTransport::connect(addr, key, master, opts).await?;
        let node = t.node();
        Ok(NodeBackend::new(t, node))
    }

    fn opened(&self) -> BackendResult<Opened> {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.ok_or_else(|| BackendError::NotOpen(self.describe()))
    }

    /// The epoch the fenced requests carry.
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Remembers that the node accepted `epoch` (never lowers it).
    fn note_epoch(&self, epoch: u64) {
        self.epoch.fetch_max(epoch, Ordering::AcqRel);
    }

    /// Sends one request; maps transport failures and the node's error
    /// replies (`part` names the part for part errors).
    async fn ask(&self, req: Request, part: Option<PartId>) -> BackendResult<Response> {
        match self.transport.call(req).await {
            Ok(Response::Error { code, message }) => Err(self.node_error(code, message, part)),
            Ok(resp) => Ok(resp),
            Err(e) => Err(self.transport_error(&e)),
        }
    }

    /// Sends a request whose success answer is `Done`.
    async fn done(&self, req: Request, part: Option<PartId>) -> BackendResult<()> {
        let what = request_name(&req);
        match self.ask(req, part).await? {
            Response::Done => Ok(()),
            other => Err(self.unexpected(what, &other)),
        }
    }

    fn node_error(&self, code: ErrorCode, message: String, part: Option<PartId>) -> BackendError {
        let backend = self.describe();
        match (code, part) {
            (ErrorCode::PartMissing, Some(part)) => BackendError::PartMissing { part, backend },
            (ErrorCode::PartCorrupt, Some(part)) => BackendError::PartCorrupt {
                part,
                backend,
                why: message,
            },
            (ErrorCode::NotOpen, _) => BackendError::NotOpen(backend),
            (ErrorCode::StaleEpoch, _) => BackendError::Fenced {
                backend,
                why: message,
            },
            // Only the errno keeps `is_no_space()` true; the message is lost.
            (ErrorCode::NoSpace, _) => self.io(io::Error::from_raw_os_error(28)),
            (ErrorCode::Invalid, _) => {
                self.io(io::Error::new(io::ErrorKind::InvalidInput, message))
            }
            (code, _) => self.io(io::Error::other(format!("{message} ({code:?})"))),
        }
    }

    fn transport_error(&self, e: &TransportError) -> BackendError {
        let kind = match e {
            TransportError::Timeout(_) => io::ErrorKind::TimedOut,
            TransportError::Disconnected(_) => io::ErrorKind::NotConnected,
            TransportError::Protocol(_) => io::ErrorKind::InvalidData,
        };
        self.io(io::Error::new(kind, e.to_string()))
    }

    /// An I/O-style error of this backend: "request to node n1 (tcp:..): why".
    fn io(&self, source: io::Error) -> BackendError {
        CoreError::Io {
            op: "request to",
            path: PathBuf::from(self.describe()),
            source,
        }
        .into()
    }

    /// Sends an epoch-fenced request about one part of the open volume and
    /// expects `Done`.
    async fn part_request(
        &self,
        part: PartId,
        make: impl FnOnce(u16, u64, PartId) -> Request,
    ) -> BackendResult<()> {
        let volume = self.opened()?.number;
        self.done(make(volume, self.epoch(), part), Some(part))
            .await
    }

    fn unexpected(&self, to: &str, got: &Response) -> BackendError {
        CoreError::malformed(
            "node response",
            format!(
                "{} answered {} to {to}",
                self.describe(),
                response_name(got)
            ),
        )
        .into()
    }

    fn read_reply(&self, o: Opened, count: u32, resp: Response) -> BackendResult<PartRead> {
        let Response::Blocks { states, data } = resp else {
            return Err(self.unexpected("Read", &resp));
        };
        let want = u64::from(count) * u64::from(o.block_size);
        if states.len() != count as usize || data.len() as u64 != want {
            let why = format!(
                "{} answered {} block states and {} bytes for {count} blocks",
                self.describe(),
                states.len(),
                data.len()
            );
            return Err(CoreError::malformed("node response", why).into());
        }
        let blocks = states.into_iter().map(block_state).collect();
        Ok(PartRead { data, blocks })
    }

    async fn send_write(&self, w: BlockWrite, heal: bool) -> BackendResult<WriteOutcome> {
        let o = self.opened()?;
        let (mode, data) = match w.data {
            WriteData::Bytes(b) => (WriteMode::Data, b),
            WriteData::Zero { punch: true } => (WriteMode::ZeroPunch, Vec::new()),
            WriteData::Zero { punch: false } => (WriteMode::ZeroFill, Vec::new()),
        };
        let req = Request::Write {
            volume: o.number,
            epoch: self.epoch(),
            part: w.part,
            first: w.first,
            count: w.count,
            generation: w.generation.0,
            mode,
            heal,
            data,
        }
        .vouched();
        match self.ask(req, Some(w.part)).await? {
            Response::Written { applied, skipped } => Ok(WriteOutcome { applied, skipped }),
            other => Err(self.unexpected("Write", &other)),
        }
    }

    async fn set_stale(&self, of: BackendId, chunks: Vec<u64>, stale: bool) -> BackendResult<()> {
        let volume = self.opened()?.number;
        let req = Request::SetStale {
            volume,
            epoch: self.epoch(),
            of: of.0,
            stale,
            chunks,
        };
        self.done(req, None).await
    }

    /// Decodes one degraded map; an unreadable one counts as every chunk
    /// stale (as a directory backend does: more resync, never a stale read).
    fn stale_map(&self, o: Opened, of: Uuid, bytes: &[u8]) -> AllocMap {
        match AllocMap::decode_kind(bytes, BitmapKind::Stale, o.uuid) {
            Ok(d) => d.map,
            Err(e) => {
                eprintln!(
                    "qbd-master: degraded map of {of} on {} unreadable ({e}): every chunk counts as stale",
                    self.describe()
                );
                let mut all = AllocMap::with_kind(BitmapKind::Stale, o.uuid, o.chunks, 0);
                (0..o.chunks).for_each(|c| {
                    all.set(c);
                });
                all
            }
        }
    }
}

impl Backend for NodeBackend {
    fn id(&self) -> BackendId {
        self.id
    }

    fn describe(&self) -> String {
        format!("node {} ({})", self.name, self.transport.describe())
    }

    fn volume_number(&self, name: &str) -> BoxFut<'_, BackendResult<Option<u16>>> {
        let req = Request::VolumeNumber { name: name.into() };
        Box::pin(async move {
            match self.ask(req, None).await? {
                Response::Number(n) => Ok(n),
                other => Err(self.unexpected("VolumeNumber", &other)),
            }
        })
    }

    fn volume_numbers(&self) -> BoxFut<'_, BackendResult<Vec<u16>>> {
        Box::pin(async move {
            match self.ask(Request::VolumeNumbers, None).await? {
                Response::Numbers(n) => Ok(n),
                other => Err(self.unexpected("VolumeNumbers", &other)),
            }
        })
    }

    fn create_volume(&self, meta: VolumeMeta) -> BoxFut<'_, BackendResult<()>> {
        Box::pin(async move {
            let meta = meta_text(&meta)?;
            self.done(Request::CreateVolume { meta }, None).await
        })
    }

    fn load_meta(&self, number: u16) -> BoxFut<'_, BackendResult<Option<VolumeMeta>>> {
        Box::pin(async move {
            match self.ask(Request::LoadMeta { number }, None).await? {
                Response::Meta(None) => Ok(None),
                Response::Meta(Some(text)) => parse_meta(&text, &self.describe()).map(Some),
                other => Err(self.unexpected("LoadMeta", &other)),
            }
        })
    }

    fn save_meta(&self, meta: VolumeMeta) -> BoxFut<'_, BackendResult<()>> {
        Box::pin(async move {
            let epoch = meta.epoch;
            let meta = meta_text(&meta)?;
            self.done(Request::SaveMeta { meta }, None).await?;
            self.note_epoch(epoch);
            Ok(())
        })
    }

    fn open_volume(&self, meta: VolumeMeta) -> BoxFut<'_, BackendResult<DecodedAlloc>> {
        Box::pin(async move {
            let opened = Opened {
                number: meta.number,
                uuid: meta.uuid,
                chunks: meta.geometry()?.chunk_count(),
                block_size: meta.block_size,
            };
            let text = meta_text(&meta)?;
            let (alloc, corrupt) = match self.ask(Request::OpenVolume { meta: text }, None).await? {
                Response::Opened {
                    alloc,
                    corrupt_pages,
                } => (alloc, corrupt_pages),
                other => return Err(self.unexpected("OpenVolume", &other)),
            };
            let mut decoded = AllocMap::decode(&alloc, meta.uuid)?;
            decoded.corrupt_pages.extend(corrupt);
            decoded.corrupt_pages.sort_unstable();
            decoded.corrupt_pages.dedup();
            *self.open.lock().unwrap_or_else(PoisonError::into_inner) = Some(opened);
            self.note_epoch(meta.epoch);
            Ok(decoded)
        })
    }

    fn read(&self, part: PartId, first: u32, count: u32) -> BoxFut<'_, BackendResult<PartRead>> {
        Box::pin(async move {
            let o = self.opened()?;
            let req = Request::Read {
                volume: o.number,
                epoch: self.epoch(),
                part,
                first,
                count,
            };
            let resp = self.ask(req, Some(part)).await?;
            self.read_reply(o, count, resp)
        })
    }

    fn write(&self, w: BlockWrite) -> BoxFut<'_, BackendResult<WriteOutcome>> {
        Box::pin(self.send_write(w, false))
    }

    fn allocate(&self, part: PartId) -> BoxFut<'_, BackendResult<()>> {
        Box::pin(
            self.part_request(part, |volume, epoch, part| Request::Allocate {
                volume,
                epoch,
                part,
            }),
        )
    }

    fn sync(&self, parts: Option<Vec<PartId>>) -> BoxFut<'_, BackendResult<()>> {
        Box::pin(async move {
            let volume = self.opened()?.number;
            let first = parts.as_ref().and_then(|p| p.first().copied());
            self.done(Request::Sync { volume, parts }, first).await
        })
    }

    fn heal(&self, w: BlockWrite) -> BoxFut<'_, BackendResult<WriteOutcome>> {
        Box::pin(self.send_write(w, true))
    }

    fn recreate(&self, part: PartId) -> BoxFut<'_, BackendResult<()>> {
        Box::pin(
            self.part_request(part, |volume, epoch, part| Request::Recreate {
                volume,
                epoch,
                part,
            }),
        )
    }

    fn load_stale(&self) -> BoxFut<'_, BackendResult<Vec<(BackendId, AllocMap)>>> {
        Box::pin(async move {
            let o = self.opened()?;
            match self
                .ask(Request::LoadStale { volume: o.number }, None)
                .await?
            {
                Response::Stale(maps) => Ok(maps
                    .into_iter()
                    .map(|(of, bytes)| (BackendId(of), self.stale_map(o, of, &bytes)))
                    .collect()),
                other => Err(self.unexpected("LoadStale", &other)),
            }
        })
    }

    fn mark_stale(&self, of: BackendId, chunks: Vec<u64>) -> BoxFut<'_, BackendResult<()>> {
        Box::pin(self.set_stale(of, chunks, true))
    }

    fn list_volume(&self, number: u16) -> BoxFut<'_, BackendResult<VolumeListing>> {
        Box::pin(self.list_volume_paged(number))
    }

    fn scan_parts(
        &self,
        meta: VolumeMeta,
        parts: Vec<PartId>,
    ) -> BoxFut<'_, BackendResult<Vec<PartScan>>> {
        Box::pin(self.scan_batches(meta, parts))
    }

    fn clear_stale(&self, of: BackendId, chunks: Vec<u64>) -> BoxFut<'_, BackendResult<()>> {
        Box::pin(self.set_stale(of, chunks, false))
    }

    fn read_raw(&self, part: PartId, block: u32) -> BoxFut<'_, BackendResult<RawBlock>> {
        Box::pin(async move {
            let o = self.opened()?;
            let req = Request::ReadRaw {
                volume: o.number,
                epoch: self.epoch(),
                part,
                block,
            };
            let resp = self.ask(req, Some(part)).await?;
            self.raw_reply(o, resp)
        })
    }

    fn write_raw(
        &self,
        part: PartId,
        block: u32,
        data: Option<Vec<u8>>,
        record: Option<[u8; RECORD_SIZE]>,
    ) -> BoxFut<'_, BackendResult<()>> {
        Box::pin(
            self.part_request(part, move |volume, epoch, part| Request::WriteRaw {
                volume,
                epoch,
                part,
                block,
                record: record.map(Box::new),
                data,
            }),
        )
    }
}

impl NodeBackend {
    fn raw_reply(&self, o: Opened, resp: Response) -> BackendResult<RawBlock> {
        let Response::RawBlock { record, data } = resp else {
            return Err(self.unexpected("ReadRaw", &resp));
        };
        if data.len() as u64 != u64::from(o.block_size) {
            let why = format!(
                "{} answered {} raw bytes for a block of {}",
                self.describe(),
                data.len(),
                o.block_size
            );
            return Err(CoreError::malformed("node response", why).into());
        }
        Ok(RawBlock {
            data,
            record: *record,
        })
    }
}

fn block_state(s: WireBlockState) -> BlockState {
    match s {
        WireBlockState::Unwritten => BlockState::Unwritten,
        WireBlockState::Data(g) => BlockState::Data(Generation(g)),
        WireBlockState::Zero(g) => BlockState::Zero(Generation(g)),
        WireBlockState::Corrupt(why) => BlockState::Corrupt(why),
    }
}

fn meta_text(meta: &VolumeMeta) -> BackendResult<String> {
    toml::to_string(meta).map_err(|e| CoreError::malformed("volume meta", e.to_string()).into())
}

fn parse_meta(text: &str, from: &str) -> BackendResult<VolumeMeta> {
    toml::from_str(text)
        .map_err(|e| CoreError::malformed("volume meta", format!("from {from}: {e}")).into())
}

/// Files per `ListParts` page asked for (the node caps it too).
const LIST_PAGE: u32 = 65_536;

/// The answer budget of one `ScanParts` (well under `MAX_PAYLOAD`).
const SCAN_BUDGET: usize = 16 << 20;

impl NodeBackend {
    /// `list_volume` as `ListVolume`, then `ListParts` pages of each part
    /// directory until the node says there is no more.
    async fn list_volume_paged(&self, number: u16) -> BackendResult<VolumeListing> {
        let (alloc, stale, part_dirs, strays) = match self
            .ask(Request::ListVolume { volume: number }, None)
            .await?
        {
            Response::VolumeFiles {
                alloc,
                stale,
                part_dirs,
                strays,
            } => (alloc, stale, part_dirs, strays),
            other => return Err(self.unexpected("ListVolume", &other)),
        };
        let mut out = VolumeListing {
            alloc,
            stale: stale
                .into_iter()
                .map(|(id, b)| (BackendId(id), b))
                .collect(),
            parts: Vec::new(),
            strays: strays
                .into_iter()
                .map(|(path, size)| StrayFile { path, size })
                .collect(),
        };
        for part in part_dirs {
            self.list_part_dir(number, part, &mut out).await?;
        }
        Ok(out)
    }

    async fn list_part_dir(
        &self,
        volume: u16,
        part: u8,
        out: &mut VolumeListing,
    ) -> BackendResult<()> {
        let mut from = Some(0);
        while let Some(start) = from {
            let req = Request::ListParts {
                volume,
                part,
                from: start,
                max: LIST_PAGE,
            };
            let Response::PartList {
                files,
                strays,
                next,
            } = self.ask(req, None).await?
            else {
                return Err(
                    CoreError::malformed("node response", "ListParts: not a PartList").into(),
                );
            };
            out.parts
                .extend(files.into_iter().map(|(chunk, size)| PartFile {
                    part: PartId { chunk, part },
                    size,
                }));
            out.strays.extend(
                strays
                    .into_iter()
                    .map(|(path, size)| StrayFile { path, size }),
            );
            if next.is_some_and(|n| n <= start) {
                return Err(
                    CoreError::malformed("node response", "ListParts page goes backwards").into(),
                );
            }
            from = next;
        }
        Ok(())
    }

    /// `scan_parts` as `ScanParts` requests of as many parts as fit
    /// [`SCAN_BUDGET`] (at least one).
    async fn scan_batches(
        &self,
        meta: VolumeMeta,
        parts: Vec<PartId>,
    ) -> BackendResult<Vec<PartScan>> {
        let geo = meta.geometry()?;
        let k = geo.redundancy.data_parts();
        let per_part = 16 + geo.blocks_per_part() as usize * (14 + 8 * k);
        let batch = (SCAN_BUDGET / per_part).max(1);
        let text = toml::to_string(&meta)
            .map_err(|e| CoreError::InvalidSetting(format!("cannot encode .meta: {e}")))?;
        let mut out = Vec::with_capacity(parts.len());
        for group in parts.chunks(batch) {
            let req = Request::ScanParts {
                meta: text.clone(),
                parts: group.to_vec(),
            };
            match self.ask(req, None).await? {
                Response::PartScans(scans) if scans.len() == group.len() => out.extend(scans),
                Response::PartScans(scans) => {
                    let why = format!("{} scans for {} parts", scans.len(), group.len());
                    return Err(CoreError::malformed("node response", why).into());
                }
                other => return Err(self.unexpected("ScanParts", &other)),
            }
        }
        Ok(out)
    }
}

fn request_name(r: &Request) -> &'static str {
    match r {
        Request::Ping => "Ping",
        Request::VolumeNumber { .. } => "VolumeNumber",
        Request::VolumeNumbers => "VolumeNumbers",
        Request::CreateVolume { .. } => "CreateVolume",
        Request::LoadMeta { .. } => "LoadMeta",
        Request::SaveMeta { .. } => "SaveMeta",
        Request::OpenVolume { .. } => "OpenVolume",
        Request::Read { .. } => "Read",
        Request::Write { .. } => "Write",
        Request::VouchedWrite { .. } => "VouchedWrite",
        Request::Allocate { .. } => "Allocate",
        Request::Recreate { .. } => "Recreate",
        Request::Sync { .. } => "Sync",
        Request::LoadStale { .. } => "LoadStale",
        Request::SetStale { .. } => "SetStale",
        Request::ReadRaw { .. } => "ReadRaw",
        Request::WriteRaw { .. } => "WriteRaw",
        Request::ListVolume { .. } => "ListVolume",
        Request::ListParts { .. } => "ListParts",
        Request::ScanParts { .. } => "ScanParts",
    }
}

/// A response's kind, for errors (never its data).
fn response_name(r: &Response) -> &'static str {
    match r {
        Response::Pong => "Pong",
        Response::Done => "Done",
        Response::Number(_) => "Number",
        Response::Numbers(_) => "Numbers",
        Response::Meta(_) => "Meta",
        Response::Opened { .. } => "Opened",
        Response::Blocks { .. } => "Blocks",
        Response::VouchedBlocks { .. } => "VouchedBlocks",
        Response::Written { .. } => "Written",
        Response::Stale(_) => "Stale",
        Response::Error { .. } => "Error",
        Response::RawBlock { .. } => "RawBlock",
        Response::VolumeFiles { .. } => "VolumeFiles",
        Response::PartList { .. } => "PartList",
        Response::PartScans(_) => "PartScans",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::VecDeque;

    use qbd_core::transport::Pending;

    use super::*;

    /// Answers each request with the next scripted reply and records it.
    #[derive(Debug, Default)]
    struct Scripted {
        replies: Mutex<VecDeque<Result<Response, TransportError>>>,
        sent: Mutex<Vec<Request>>,
    }

    impl Transport for Scripted {
        fn submit(&self, batch: Vec<Request>) -> Vec<Pending> {
            batch
                .into_iter()
                .map(|r| {
                    self.sent.lock().unwrap().push(r);
                    let reply = self.replies.lock().unwrap().pop_front();
                    let reply = reply.unwrap_or(Err(TransportError::Timeout(1)));
                    Box::pin(async move { reply }) as Pending
                })
                .collect()
        }

        fn describe(&self) -> String {
            "scripted".into()
        }
    }

    fn backend(replies: Vec<Result<Response, TransportError>>) -> (NodeBackend, Arc<Scripted>) {
        let t = Arc::new(Scripted::default());
        t.replies.lock().unwrap().extend(replies);
        let hello = NodeHello {
            backend: Uuid::from_u128(7),
            name: "n7".into(),
        };
        (NodeBackend::new(t.clone(), hello), t)
    }

    fn meta() -> VolumeMeta {
        VolumeMeta {
            format_version: 1,
            name: "v".into(),
            uuid: Uuid::from_u128(99),
            number: 4,
            size: 1 << 20,
            block_size: 4096,
            chunk_size: 64 << 10,
            redundancy: "replicate:1".into(),
            read_only: false,
            append_only: false,
            epoch: 3,
            master: "h:1".into(),
            placement: vec![BackendId(Uuid::from_u128(7))],
        }
    }

    fn opened_reply(m: &VolumeMeta) -> Result<Response, TransportError> {
        let alloc = AllocMap::new(m.uuid, 16).encode();
        Ok(Response::Opened {
            alloc,
            corrupt_pages: vec![],
        })
    }

    const PART: PartId = PartId { chunk: 2, part: 0 };

    #[tokio::test]
    async fn meta_travels_as_toml_both_ways() {
        let m = meta();
        let text = toml::to_string(&m).unwrap();
        let (b, t) = backend(vec![Ok(Response::Meta(Some(text))), Ok(Response::Done)]);
        assert_eq!(b.load_meta(4).await.unwrap(), Some(m.clone()));
        b.save_meta(m.clone()).await.unwrap();
        let sent = t.sent.lock().unwrap();
        let Request::SaveMeta { meta } = &sent[1] else {
            panic!("{:?}", sent[1]);
        };
        assert_eq!(toml::from_str::<VolumeMeta>(meta).unwrap(), m);
    }

    #[tokio::test]
    async fn data_operations_need_an_open_volume_and_carry_its_number() {
        let m = meta();
        let (b, t) = backend(vec![opened_reply(&m), Ok(Response::Done)]);
        assert!(matches!(
            b.allocate(PART).await,
            Err(BackendError::NotOpen(_))
        ));
        assert!(t.sent.lock().unwrap().is_empty(), "nothing sent unopened");
        b.open_volume(m).await.unwrap();
        b.allocate(PART).await.unwrap();
        let sent = t.sent.lock().unwrap();
        assert_eq!(
            sent[1],
            Request::Allocate {
                volume: 4,
                epoch: 3,
                part: PART
            }
        );
    }

    #[tokio::test]
    async fn fenced_requests_carry_the_last_saved_epoch() {
        let m = meta();
        let mut next = m.clone();
        next.epoch = 4;
        let stale = Ok(Response::Error {
            code: ErrorCode::StaleEpoch,
            message: "SaveMeta of epoch 9".into(),
        });
        let (b, t) = backend(vec![
            opened_reply(&m),
            Ok(Response::Done), // Allocate at the open epoch
            Ok(Response::Done), // SaveMeta 4
            Ok(Response::Done), // Recreate
            Ok(Response::Done), // SetStale (mark)
            stale,              // SaveMeta 9, refused
            Ok(Response::Done), // SetStale (clear)
            opened_reply(&m),   // re-open with the older meta
            Ok(Response::Done), // Allocate
        ]);
        b.open_volume(m.clone()).await.unwrap();
        b.allocate(PART).await.unwrap();
        b.save_meta(next.clone()).await.unwrap();
        b.recreate(PART).await.unwrap();
        let of = BackendId(Uuid::from_u128(5));
        b.mark_stale(of, vec![1, 2]).await.unwrap();
        let mut refused = next.clone();
        refused.epoch = 9;
        let e = b.save_meta(refused).await.unwrap_err();
        assert!(e.is_fenced(), "{e}");
        b.clear_stale(of, vec![2]).await.unwrap();
        b.open_volume(m).await.unwrap();
        b.allocate(PART).await.unwrap();
        let sent = t.sent.lock().unwrap();
        assert_eq!(
            sent[1],
            Request::Allocate {
                volume: 4,
                epoch: 3,
                part: PART
            }
        );
        assert_eq!(
            sent[3],
            Request::Recreate {
                volume: 4,
                epoch: 4,
                part: PART
            }
        );
        assert_eq!(
            sent[4],
            Request::SetStale {
                volume: 4,
                epoch: 4,
                of: of.0,
                stale: true,
                chunks: vec![1, 2]
            }
        );
        assert!(
            matches!(
                sent[6],
                Request::SetStale {
                    epoch: 4,
                    stale: false,
                    ..
                }
            ),
            "a refused SaveMeta does not raise the epoch: {:?}",
            sent[6]
        );
        assert!(
            matches!(sent[8], Request::Allocate { epoch: 4, .. }),
            "re-opening with an older meta does not lower it: {:?}",
            sent[8]
        );
    }

    #[tokio::test]
    async fn reads_map_states_and_reject_short_replies() {
        let m = meta();
        let states = vec![
            WireBlockState::Data(5),
            WireBlockState::Zero(6),
            WireBlockState::Unwritten,
            WireBlockState::Corrupt("bad".into()),
        ];
        let good = Response::Blocks {
            states: states.clone(),
            data: vec![1; 4 * 4096],
        };
        let short = Response::Blocks {
            states,
            data: vec![1; 4096],
        };
        let (b, _) = backend(vec![opened_reply(&m), Ok(good), Ok(short)]);
        b.open_volume(m).await.unwrap();
        let r = b.read(PART, 8, 4).await.unwrap();
        assert_eq!(
            r.blocks,
            vec![
                BlockState::Data(Generation(5)),
                BlockState::Zero(Generation(6)),
                BlockState::Unwritten,
                BlockState::Corrupt("bad".into())
            ]
        );
        assert!(b.read(PART, 8, 4).await.is_err());
    }

    #[tokio::test]
    async fn writes_and_repairs_send_mode_and_flag() {
        let m = meta();
        let written = Ok(Response::Written {
            applied: 1,
            skipped: 2,
        });
        let (b, t) = backend(vec![opened_reply(&m), written.clone(), written]);
        b.open_volume(m).await.unwrap();
        let w = |data| BlockWrite {
            part: PART,
            first: 1,
            count: 3,
            data,
            generation: Generation(77),
        };
        let out = b.write(w(WriteData::Zero { punch: true })).await.unwrap();
        assert_eq!(
            out,
            WriteOutcome {
                applied: 1,
                skipped: 2
            }
        );
        b.heal(w(WriteData::Bytes(vec![9; 3 * 4096])))
            .await
            .unwrap();
        let sent = t.sent.lock().unwrap();
        assert!(matches!(
            &sent[1],
            Request::Write { volume: 4, mode: WriteMode::ZeroPunch, heal: false, generation: 77, data, .. } if data.is_empty()
        ));
        // Data goes as VouchedWrite: its checksums under the MAC.
        assert!(matches!(
            &sent[2],
            Request::VouchedWrite { heal: true, data, sums, count: 3, .. }
                if data.len() == 3 * 4096 && sums.len() == 3
        ));
    }

    #[tokio::test]
    async fn node_errors_map_to_backend_errors() {
        let m = meta();
        let err = |code| {
            Ok(Response::Error {
                code,
                message: "why".into(),
            })
        };
        let (b, _) = backend(vec![
            opened_reply(&m),
            err(ErrorCode::PartMissing),
            err(ErrorCode::PartCorrupt),
            err(ErrorCode::NotOpen),
            err(ErrorCode::StaleEpoch),
            err(ErrorCode::NoSpace),
            err(ErrorCode::Unknown(999)),
            Err(TransportError::Disconnected("gone".into())),
        ]);
        b.open_volume(m).await.unwrap();
        let e = b.allocate(PART).await.unwrap_err();
        assert!(
            matches!(e, BackendError::PartMissing { part: PART, .. }),
            "{e}"
        );
        let e = b.allocate(PART).await.unwrap_err();
        assert!(
            matches!(e, BackendError::PartCorrupt { part: PART, .. }),
            "{e}"
        );
        let e = b.allocate(PART).await.unwrap_err();
        assert!(matches!(e, BackendError::NotOpen(_)), "{e}");
        let e = b.allocate(PART).await.unwrap_err();
        assert!(e.is_fenced(), "{e}");
        assert!(b.allocate(PART).await.unwrap_err().is_no_space());
        let e = b.allocate(PART).await.unwrap_err();
        assert!(e.to_string().contains("why"), "{e}");
        let e = b.allocate(PART).await.unwrap_err();
        assert!(e.to_string().contains("gone"), "{e}");
    }

    #[tokio::test]
    async fn raw_operations_carry_volume_epoch_and_one_block() {
        let m = meta();
        let mut next = m.clone();
        next.epoch = 5;
        let rec = [0x11; RECORD_SIZE];
        let raw = |len| {
            Ok(Response::RawBlock {
                record: Box::new(rec),
                data: vec![7; len],
            })
        };
        let (b, t) = backend(vec![
            opened_reply(&m),
            raw(4096),
            raw(4095),
            Ok(Response::Done), // Read answered Done
            Ok(Response::Done), // WriteRaw at the open epoch
            Ok(Response::Done), // SaveMeta 5
            Ok(Response::Done), // WriteRaw
            Ok(Response::Error {
                code: ErrorCode::PartMissing,
                message: "no part".into(),
            }),
        ]);
        assert!(matches!(
            b.read_raw(PART, 0).await,
            Err(BackendError::NotOpen(_))
        ));
        b.open_volume(m).await.unwrap();
        let got = b.read_raw(PART, 9).await.unwrap();
        assert_eq!(got.record, rec);
        assert_eq!(got.data, vec![7; 4096]);
        let e = b.read_raw(PART, 9).await.unwrap_err();
        assert!(e.to_string().contains("4095 raw bytes"), "{e}");
        assert!(b.read_raw(PART, 9).await.is_err(), "Done is no RawBlock");
        b.write_raw(PART, 3, None, Some(rec)).await.unwrap();
        b.save_meta(next).await.unwrap();
        b.write_raw(PART, 4, Some(vec![2; 4096]), None)
            .await
            .unwrap();
        let e = b.write_raw(PART, 4, None, Some(rec)).await.unwrap_err();
        assert!(
            matches!(e, BackendError::PartMissing { part: PART, .. }),
            "{e}"
        );
        let sent = t.sent.lock().unwrap();
        assert_eq!(
            sent[1],
            Request::ReadRaw {
                volume: 4,
                epoch: 3,
                part: PART,
                block: 9
            }
        );
        assert_eq!(
            sent[4],
            Request::WriteRaw {
                volume: 4,
                epoch: 3,
                part: PART,
                block: 3,
                record: Some(Box::new(rec)),
                data: None
            }
        );
        assert!(
            matches!(&sent[6], Request::WriteRaw { epoch: 5, block: 4, record: None, data: Some(d), .. } if d.len() == 4096),
            "{:?}",
            sent[6]
        );
    }

    #[tokio::test]
    async fn unreadable_degraded_map_counts_every_chunk_stale() {
        let m = meta();
        let mut good = AllocMap::with_kind(BitmapKind::Stale, m.uuid, 16, 0);
        good.set(3);
        let maps = vec![
            (Uuid::from_u128(1), good.encode()),
            (Uuid::from_u128(2), vec![0xff; 10]),
        ];
        let (b, _) = backend(vec![opened_reply(&m), Ok(Response::Stale(maps))]);
        b.open_volume(m).await.unwrap();
        let stale = b.load_stale().await.unwrap();
        assert_eq!(stale[0].1.iter().collect::<Vec<_>>(), vec![3]);
        assert_eq!(stale[1].1.iter().count(), 16);
    }
}
