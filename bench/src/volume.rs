//! The bench volume on the node, set up through node-protocol requests.
//!
//! [`Volume::prepare`] creates a 4 MiB volume "qbd-bench" (or reuses the
//! one a previous run left on a `--node`), opens it, takes a new epoch with
//! `SaveMeta`, allocates chunk 0's part and writes the blocks that reads
//! then hit (verified data, so the node reads and checks real blocks).
//! Each transport measured runs it once; the last run's epoch is the
//! newest, so every target writes with it, and writes use fresh
//! generations of that epoch (one counter shared by all targets), so every
//! one is applied.

use std::sync::atomic::{AtomicU64, Ordering};

use qbd_core::backend::PartId;
use qbd_core::generation::Generation;
use qbd_core::meta::volume::VolumeMeta;
use qbd_core::placement::BackendId;
use qbd_core::proto::msg::{Request, Response, WriteMode};
use qbd_core::transport::Transport;
use uuid::Uuid;

use crate::cli::Op;

/// The volume the bench uses on the node.
pub const VOLUME_NAME: &str = "qbd-bench";
/// Block size of the bench volume (the request size of read and write).
pub const BLOCK: u32 = 4096;
/// Its chunk size, which is also its size: one chunk, one part file.
const CHUNK: u64 = 4 << 20;
const PART: PartId = PartId { chunk: 0, part: 0 };
/// Requests per batch while filling the blocks.
const FILL_BATCH: u32 = 64;

/// The prepared volume: what requests need to address it.
#[derive(Debug)]
pub struct Volume {
    number: u16,
    epoch: u64,
    blocks: u32,
    /// The next generation counter of `epoch`.
    next_counter: AtomicU64,
    payload: Vec<u8>,
}

impl Volume {
    /// Creates (or reuses) the volume on the node `backend` reached by `t`,
    /// opens it, takes a new epoch, allocates its part and writes its first
    /// `blocks` blocks.
    pub async fn prepare(t: &dyn Transport, backend: Uuid, blocks: u32) -> Result<Volume, String> {
        let mut meta = match existing(t, blocks).await? {
            Some(meta) => meta,
            None => create(t, backend).await?,
        };
        let open = Request::OpenVolume {
            meta: meta_text(&meta)?,
        };
        match call(t, open, "OpenVolume").await? {
            Response::Opened { .. } => {}
            r => return Err(unexpected("OpenVolume", &r)),
        }
        meta.epoch += 1;
        meta.master = "qbd-bench".into();
        let save = Request::SaveMeta {
            meta: meta_text(&meta)?,
        };
        expect_done(call(t, save, "SaveMeta").await?, "SaveMeta")?;
        let alloc = Request::Allocate {
            volume: meta.number,
            epoch: meta.epoch,
            part: PART,
        };
        expect_done(call(t, alloc, "Allocate").await?, "Allocate")?;
        let volume = Volume {
            number: meta.number,
            epoch: meta.epoch,
            blocks,
            next_counter: AtomicU64::new(1),
            payload: (0..BLOCK).map(|i| (i % 251) as u8).collect(),
        };
        volume.fill(t).await?;
        Ok(volume)
    }

    /// Writes every block once, `FILL_BATCH` requests per submit.
    async fn fill(&self, t: &dyn Transport) -> Result<(), String> {
        let mut first = 0;
        while first < self.blocks {
            let last = (first + FILL_BATCH).min(self.blocks);
            let batch: Vec<Request> = (first..last).map(|b| self.write_req(b)).collect();
            for pending in t.submit(batch) {
                let r = pending.await.map_err(|e| format!("filling: {e}"))?;
                match r {
                    Response::Written { applied: 1, .. } => {}
                    r => return Err(unexpected("filling", &r)),
                }
            }
            first = last;
        }
        Ok(())
    }

    fn write_req(&self, block: u32) -> Request {
        let counter = self.next_counter.fetch_add(1, Ordering::Relaxed);
        self.write_with(block, counter)
    }

    /// A write of `block` with generation counter `counter` of the epoch,
    /// as the master sends it (`VouchedWrite`: the checksum computed here).
    fn write_with(&self, block: u32, counter: u64) -> Request {
        Request::Write {
            volume: self.number,
            epoch: self.epoch,
            part: PART,
            first: block,
            count: 1,
            generation: Generation::new(self.epoch, counter).0,
            mode: WriteMode::Data,
            heal: false,
            data: self.payload.clone(),
        }
        // As the master sends it: checksums under the MAC, data outside.
        .vouched()
    }

    /// A request of `op`: reads of a random written block, writes to
    /// consecutive blocks (so concurrent writes never share a block while
    /// QD < blocks, and every write is applied).
    pub fn request(&self, op: Op, rng: &mut u64) -> Request {
        match op {
            Op::Ping => Request::Ping,
            Op::Read => Request::Read {
                volume: self.number,
                epoch: self.epoch,
                part: PART,
                first: (next_random(rng) % u64::from(self.blocks)) as u32,
                count: 1,
            },
            Op::Write => {
                let counter = self.next_counter.fetch_add(1, Ordering::Relaxed);
                self.write_with((counter % u64::from(self.blocks)) as u32, counter)
            }
        }
    }
}

/// The volume's meta if a previous run left it (checked for shape).
async fn existing(t: &dyn Transport, blocks: u32) -> Result<Option<VolumeMeta>, String> {
    let name = VOLUME_NAME.into();
    let number = match call(t, Request::VolumeNumber { name }, "VolumeNumber").await? {
        Response::Number(Some(n)) => n,
        Response::Number(None) => return Ok(None),
        r => return Err(unexpected("VolumeNumber", &r)),
    };
    let text = match call(t, Request::LoadMeta { number }, "LoadMeta").await? {
        Response::Meta(Some(text)) => text,
        r => return Err(unexpected("LoadMeta", &r)),
    };
    let meta: VolumeMeta = toml::from_str(&text)
        .map_err(|e| format!("volume {VOLUME_NAME} on the node: bad .meta: {e}"))?;
    if meta.block_size != BLOCK || meta.chunk_size < u64::from(blocks) * u64::from(BLOCK) {
        return Err(format!(
            "volume {VOLUME_NAME} on the node has another shape (block size {}, \
             chunk size {}); remove it or use another node",
            meta.block_size, meta.chunk_size
        ));
    }
    Ok(Some(meta))
}

/// Creates the volume under the first free number.
async fn create(t: &dyn Transport, backend: Uuid) -> Result<VolumeMeta, String> {
    let numbers = match call(t, Request::VolumeNumbers, "VolumeNumbers").await? {
        Response::Numbers(v) => v,
        r => return Err(unexpected("VolumeNumbers", &r)),
    };
    let number = (1..=u16::MAX)
        .find(|n| !numbers.contains(n))
        .ok_or("no free volume number on the node")?;
    let meta = VolumeMeta {
        format_version: 1,
        name: VOLUME_NAME.into(),
        uuid: Uuid::new_v4(),
        number,
        size: CHUNK,
        block_size: BLOCK,
        chunk_size: CHUNK,
        redundancy: "replicate:1".into(),
        read_only: false,
        append_only: false,
        epoch: 0,
        master: "qbd-bench".into(),
        placement: vec![BackendId(backend)],
    };
    let create = Request::CreateVolume {
        meta: meta_text(&meta)?,
    };
    expect_done(call(t, create, "CreateVolume").await?, "CreateVolume")?;
    Ok(meta)
}

/// One call; a node's error reply becomes an error too.
async fn call(t: &dyn Transport, req: Request, what: &str) -> Result<Response, String> {
    match t.call(req).await {
        Ok(Response::Error { code, message }) => {
            Err(format!("{what}: node refused ({code:?}): {message}"))
        }
        Ok(r) => Ok(r),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// The error for an answer of the wrong kind.
pub fn unexpected(what: &str, r: &Response) -> String {
    format!("{what}: unexpected answer {r:?}")
}

fn expect_done(r: Response, what: &str) -> Result<(), String> {
    match r {
        Response::Done => Ok(()),
        r => Err(unexpected(what, &r)),
    }
}

fn meta_text(m: &VolumeMeta) -> Result<String, String> {
    toml::to_string(m).map_err(|e| format!("cannot encode .meta: {e}"))
}

/// xorshift64*: cheap, good enough to spread reads over the blocks.
fn next_random(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}
