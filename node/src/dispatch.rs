//! Requests → chunk-store operations: [`Node::handle`]. Pure of sockets, so
//! the fencing rules are tested by calling it directly.
//!
//! Every request maps to one `Backend` operation of the volume's
//! `DirBackend` (or of the root for the volume list and `.meta`). Two rules
//! sit on top:
//! - `SaveMeta` is the epoch compare-and-set: accepted only if its epoch is
//!   newer than the volume's, or the same epoch from the same master
//!   (`.meta`'s `master`); it then becomes the volume's claim. Two masters
//!   can never hold one epoch.
//! - `Read`, `Write` (normal or heal), `ReadRaw`, `WriteRaw`, `Allocate`,
//!   `Recreate` and `SetStale` carry the sender's **session epoch** and are
//!   accepted only if it is the volume's epoch: older is a master that lost
//!   the volume (it must neither read what the new one writes nor write,
//!   empty a part, clear a degraded-map bit or overwrite a parity record);
//!   newer was never claimed here. The fence is never the epoch inside a
//!   block's generation: a heal (`docs/heal.md`) writes a block at its
//!   source's generation, old by design. After the fence a normal write
//!   applies the backend's generation rule; a heal replaces the blocks.
//!   `Sync` is not fenced (it changes no data).
//!
//! `ListVolume`, `ListParts` and `ScanParts` (for `qbd verify`) read the
//! volume directory and part files directly, never write, need no open
//! volume and are not fenced; scans run on blocking threads, several parts
//! at once.
//!
//! `WriteRaw` bypasses the part file's checks (it is how a master stores
//! EC parity records), so its data must be exactly one block: the node
//! never lets raw bytes spill into a neighbouring block.
//!
//! Fenced requests hold the epoch lock shared for their whole duration, as
//! `SaveMeta` holds it exclusively: once a `SaveMeta` to epoch E has
//! returned, none of them of an older epoch can still take effect.

use std::sync::Arc;

use qbd_core::backend::{Backend, BlockWrite, PartId, RawBlock, WriteData, WriteOutcome};
use qbd_core::format::record::RECORD_SIZE;
use qbd_core::generation::Generation;
use qbd_core::meta::volume::VolumeMeta;
use qbd_core::placement::BackendId;
use qbd_core::proto::msg::{ErrorCode, Request, Response, SUM_LEN, WriteMode};
use uuid::Uuid;

use qbd_core::backend::dir::listing;
use qbd_core::backend::dir::scan::{self, ScanShape};
use qbd_core::proto::msg::MAX_PAYLOAD;
use qbd_core::verify::PartScan;

use crate::error::Refusal;
use crate::node::{Claim, Node, NodeVolume};

type Answer = Result<Response, Refusal>;

/// A `WriteRaw` request's fields.
struct RawWriteReq {
    volume: u16,
    epoch: u64,
    part: PartId,
    block: u32,
    record: Option<Box<[u8; RECORD_SIZE]>>,
    data: Option<Vec<u8>>,
}

/// A `Write` request's fields.
struct WriteReq {
    volume: u16,
    epoch: u64,
    part: PartId,
    first: u32,
    count: u32,
    generation: Generation,
    mode: WriteMode,
    heal: bool,
    data: Vec<u8>,
    /// The blocks' checksums, checked against `data` when the request was
    /// decoded (`VouchedWrite`): the records take them as they are.
    sums: Option<Vec<[u8; SUM_LEN]>>,
}

impl Node {
    /// Answers one request. Never panics on bad input: everything that
    /// fails is a `Response::Error` with its code.
    pub async fn handle(&self, req: Request) -> Response {
        let answer = match req {
            Request::Ping => Ok(Response::Pong),
            Request::VolumeNumber { name } => self.volume_number(&name).await,
            Request::VolumeNumbers => self.volume_numbers().await,
            Request::CreateVolume { meta } => self.create_volume(&meta).await,
            Request::LoadMeta { number } => self.load_meta(number).await,
            Request::SaveMeta { meta } => self.save_meta(&meta).await,
            Request::OpenVolume { meta } => self.open_volume(&meta).await,
            Request::Read {
                volume,
                epoch,
                part,
                first,
                count,
            } => self.read(volume, epoch, part, first, count).await,
            Request::Write {
                volume,
                epoch,
                part,
                first,
                count,
                generation,
                mode,
                heal,
                data,
            } => {
                self.write(WriteReq {
                    volume,
                    epoch,
                    part,
                    first,
                    count,
                    generation: Generation(generation),
                    mode,
                    heal,
                    data,
                    sums: None,
                })
                .await
            }
            Request::VouchedWrite {
                volume,
                epoch,
                part,
                first,
                count,
                generation,
                heal,
                sums,
                data,
            } => {
                self.write(WriteReq {
                    volume,
                    epoch,
                    part,
                    first,
                    count,
                    generation: Generation(generation),
                    mode: WriteMode::Data,
                    heal,
                    data,
                    sums: Some(sums),
                })
                .await
            }
            Request::Allocate {
                volume,
                epoch,
                part,
            } => self.allocate(volume, epoch, part, false).await,
            Request::Recreate {
                volume,
                epoch,
                part,
            } => self.allocate(volume, epoch, part, true).await,
            Request::Sync { volume, parts } => self.sync(volume, parts).await,
            Request::LoadStale { volume } => self.load_stale(volume).await,
            Request::SetStale {
                volume,
                epoch,
                of,
                stale,
                chunks,
            } => self.set_stale(volume, epoch, of, stale, chunks).await,
            Request::ReadRaw {
                volume,
                epoch,
                part,
                block,
            } => self.read_raw(volume, epoch, part, block).await,
            Request::WriteRaw {
                volume,
                epoch,
                part,
                block,
                record,
                data,
            } => {
                self.write_raw(RawWriteReq {
                    volume,
                    epoch,
                    part,
                    block,
                    record,
                    data,
                })
                .await
            }
            Request::ListVolume { volume } => self.list_volume_files(volume).await,
            Request::ListParts {
                volume,
                part,
                from,
                max,
            } => self.list_parts(volume, part, from, max).await,
            Request::ScanParts { meta, parts } => self.scan_parts(&meta, parts).await,
        };
        answer.unwrap_or_else(Refusal::into_response)
    }

    /// `ListVolume`: the volume directory's own files (read-only).
    async fn list_volume_files(&self, volume: u16) -> Answer {
        let root = self.root().to_path_buf();
        let f = blocking(move || listing::volume_files(&root, volume)).await??;
        Ok(Response::VolumeFiles {
            alloc: f.alloc,
            stale: f.stale.into_iter().map(|(id, b)| (id.0, b)).collect(),
            part_dirs: f.part_dirs,
            strays: f.strays.into_iter().map(|s| (s.path, s.size)).collect(),
        })
    }

    /// `ListParts`: one page of a part directory, at most
    /// [`MAX_LIST_PAGE`] files whatever the request asks.
    async fn list_parts(&self, volume: u16, part: u8, from: u64, max: u32) -> Answer {
        if usize::from(part) >= qbd_core::redundancy::MAX_PARTS || max == 0 {
            return Err(Refusal::invalid(format!("ListParts part {part} max {max}")));
        }
        let root = self.root().to_path_buf();
        let max = (max as usize).min(MAX_LIST_PAGE);
        let page =
            blocking(move || listing::list_part_dir(&root, volume, part, from, max)).await??;
        Ok(Response::PartList {
            files: page.files.iter().map(|f| (f.part.chunk, f.size)).collect(),
            strays: page.strays.into_iter().map(|s| (s.path, s.size)).collect(),
            next: page.next,
        })
    }

    /// `ScanParts`: scans the parts on blocking threads, several at once;
    /// refuses a batch whose answer could exceed the message size.
    async fn scan_parts(&self, text: &str, parts: Vec<PartId>) -> Answer {
        let meta = parse_meta(text)?;
        let shape = ScanShape::of(&meta)?;
        let per_block = 1 + 4 + 8 + 1 + 8 * usize::from(shape.data_parts);
        let bound = parts.len() * (16 + shape.layout.blocks as usize * per_block);
        if bound > MAX_PAYLOAD as usize - 4096 {
            return Err(Refusal::invalid(format!(
                "ScanParts of {} parts may not fit one message: ask for fewer",
                parts.len()
            )));
        }
        let dir = VolumeMeta::dir(self.root(), meta.number);
        Ok(Response::PartScans(
            scan_in_parallel(dir, shape, parts).await?,
        ))
    }

    async fn volume_number(&self, name: &str) -> Answer {
        Ok(Response::Number(
            self.root_backend().volume_number(name).await?,
        ))
    }

    async fn volume_numbers(&self) -> Answer {
        Ok(Response::Numbers(
            self.root_backend().volume_numbers().await?,
        ))
    }

    async fn create_volume(&self, text: &str) -> Answer {
        let meta = parse_meta(text)?;
        let _one_at_a_time = self.creating().await;
        self.root_backend().create_volume(meta.clone()).await?;
        let v = self.volume_or_new(meta.number)?;
        let mut claim = v.epoch.write().await;
        if meta.epoch > claim.epoch {
            *claim = Claim {
                epoch: meta.epoch,
                master: meta.master,
            };
        }
        Ok(Response::Done)
    }

    async fn load_meta(&self, number: u16) -> Answer {
        let meta = self.root_backend().load_meta(number).await?;
        let text = meta.map(|m| toml::to_string(&m)).transpose();
        let text = text.map_err(|e| Refusal::invalid(format!("cannot encode .meta: {e}")))?;
        Ok(Response::Meta(text))
    }

    /// The epoch compare-and-set: a newer epoch, or the same epoch from
    /// the master holding it; persist first, then take the new claim, all
    /// under the exclusive claim lock so no request of the old session is
    /// in flight meanwhile.
    async fn save_meta(&self, text: &str) -> Answer {
        let meta = parse_meta(text)?;
        let v = self.volume_or_new(meta.number)?;
        let mut claim = v.epoch.write().await;
        if meta.epoch < claim.epoch {
            return Err(Refusal::stale_epoch("SaveMeta", meta.epoch, claim.epoch));
        }
        if meta.epoch == claim.epoch && meta.master != claim.master {
            return Err(Refusal::new(
                ErrorCode::StaleEpoch,
                format!(
                    "epoch {} is already held by master {:?}, not {:?}",
                    claim.epoch, claim.master, meta.master
                ),
            ));
        }
        let new = Claim {
            epoch: meta.epoch,
            master: meta.master.clone(),
        };
        v.backend.save_meta(meta).await?;
        *claim = new;
        Ok(Response::Done)
    }

    /// Opens the volume; later opens (a master reconnecting, another master
    /// taking over) must name the same volume and report the current
    /// allocation map (`DirBackend::open_volume` is idempotent).
    async fn open_volume(&self, text: &str) -> Answer {
        let meta = parse_meta(text)?;
        let v = self.volume_or_new(meta.number)?;
        let mut opened = v.opened.lock().await;
        if let Some(current) = opened.as_ref() {
            same_volume(current, &meta)?;
        }
        let decoded = v.backend.open_volume(meta.clone()).await?;
        opened.get_or_insert(meta);
        Ok(Response::Opened {
            alloc: decoded.map.encode(),
            corrupt_pages: decoded.corrupt_pages,
        })
    }

    /// Answers with the stored checksums and unchecked data: the master
    /// checks each block once, end to end (`msg::VouchedBlocks`), so the
    /// node hashes nothing to answer a read.
    async fn read(&self, volume: u16, epoch: u64, part: PartId, first: u32, count: u32) -> Answer {
        let v = self.touched(volume)?;
        let claim = v.epoch.read().await;
        fence("Read", epoch, &claim)?;
        let (states, data) = v.backend.read_vouched(part, first, count)?;
        drop(claim);
        Ok(Response::VouchedBlocks { states, data })
    }

    /// The session-epoch fence, then the backend's generation rule (or the
    /// heal: the blocks at their given generation, whatever is stored).
    async fn write(&self, w: WriteReq) -> Answer {
        let v = self.touched(w.volume)?;
        let data = match (w.mode, w.data) {
            (WriteMode::Data, d) => WriteData::Bytes(d),
            (WriteMode::ZeroPunch, d) if d.is_empty() => WriteData::Zero { punch: true },
            (WriteMode::ZeroFill, d) if d.is_empty() => WriteData::Zero { punch: false },
            (_, _) => return Err(Refusal::invalid("a zero write carries no data")),
        };
        let claim = v.epoch.read().await;
        fence("Write", w.epoch, &claim)?;
        let bw = BlockWrite {
            part: w.part,
            first: w.first,
            count: w.count,
            data,
            generation: w.generation,
        };
        let WriteOutcome { applied, skipped } = match (&w.sums, w.heal) {
            (Some(sums), heal) => v.backend.write_vouched(bw, sums, heal)?,
            (None, true) => v.backend.heal(bw).await?,
            (None, false) => v.backend.write(bw).await?,
        };
        drop(claim);
        Ok(Response::Written { applied, skipped })
    }

    /// The epoch fence, then allocate (or recreate: empty) the part.
    async fn allocate(&self, volume: u16, epoch: u64, part: PartId, recreate: bool) -> Answer {
        let v = self.touched(volume)?;
        let what = if recreate { "Recreate" } else { "Allocate" };
        let current = v.epoch.read().await;
        fence(what, epoch, &current)?;
        if recreate {
            v.backend.recreate(part).await?;
        } else {
            v.backend.allocate(part).await?;
        }
        drop(current);
        Ok(Response::Done)
    }

    async fn sync(&self, volume: u16, parts: Option<Vec<PartId>>) -> Answer {
        self.touched(volume)?.backend.sync(parts).await?;
        Ok(Response::Done)
    }

    async fn load_stale(&self, volume: u16) -> Answer {
        let maps = self.touched(volume)?.backend.load_stale().await?;
        let maps = maps.into_iter().map(|(id, m)| (id.0, m.encode()));
        Ok(Response::Stale(maps.collect()))
    }

    /// The epoch fence, then mark or clear degraded-map bits.
    async fn set_stale(
        &self,
        volume: u16,
        epoch: u64,
        of: Uuid,
        stale: bool,
        chunks: Vec<u64>,
    ) -> Answer {
        let v = self.touched(volume)?;
        let current = v.epoch.read().await;
        fence("SetStale", epoch, &current)?;
        if stale {
            v.backend.mark_stale(BackendId(of), chunks).await?;
        } else {
            v.backend.clear_stale(BackendId(of), chunks).await?;
        }
        drop(current);
        Ok(Response::Done)
    }

    async fn read_raw(&self, volume: u16, epoch: u64, part: PartId, block: u32) -> Answer {
        let v = self.touched(volume)?;
        let claim = v.epoch.read().await;
        fence("ReadRaw", epoch, &claim)?;
        let RawBlock { data, record } = v.backend.read_raw(part, block).await?;
        drop(claim);
        Ok(Response::RawBlock {
            record: Box::new(record),
            data,
        })
    }

    /// The epoch fence, then the raw overwrite of one block's bytes.
    async fn write_raw(&self, w: RawWriteReq) -> Answer {
        let v = self.touched(w.volume)?;
        if let Some(data) = &w.data {
            let block_size = v.opened.lock().await.as_ref().map(|m| m.block_size);
            let block_size = block_size.ok_or_else(|| Refusal::not_open(w.volume))?;
            if data.len() != block_size as usize {
                return Err(Refusal::invalid(format!(
                    "raw write of {} data bytes to a block of {block_size}",
                    data.len()
                )));
            }
        }
        let current = v.epoch.read().await;
        fence("WriteRaw", w.epoch, &current)?;
        v.backend
            .write_raw(w.part, w.block, w.data, w.record.map(|r| *r))
            .await?;
        drop(current);
        Ok(Response::Done)
    }

    /// A volume this node has touched; the backend itself says `NotOpen`
    /// if it was touched but never opened.
    fn touched(&self, volume: u16) -> Result<Arc<NodeVolume>, Refusal> {
        self.volume(volume).ok_or_else(|| Refusal::not_open(volume))
    }
}

/// The most files a `ListParts` page holds (17 bytes each on the wire).
pub const MAX_LIST_PAGE: usize = 65_536;

/// Runs `f` on a blocking thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        Refusal::new(
            qbd_core::proto::msg::ErrorCode::Io,
            format!("scan task: {e}"),
        )
    })
}

/// Scans `parts` (files under the volume directory `dir`) with one
/// blocking task per available core, answers in the order asked.
async fn scan_in_parallel(
    dir: std::path::PathBuf,
    shape: ScanShape,
    parts: Vec<PartId>,
) -> Result<Vec<PartScan>, Refusal> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per = parts.len().div_ceil(threads).max(1);
    let tasks: Vec<_> = parts
        .chunks(per)
        .map(|group| {
            let (dir, group) = (dir.clone(), group.to_vec());
            // Spawned here (not when awaited), so the groups run at once.
            tokio::task::spawn_blocking(move || {
                group
                    .into_iter()
                    .map(|p| {
                        let path = dir
                            .join(qbd_core::redundancy::part_name(usize::from(p.part)).to_string())
                            .join(p.chunk.to_string());
                        scan::scan_part(&path, p, &shape)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut out = Vec::with_capacity(parts.len());
    for t in tasks {
        let scans = t.await.map_err(|e| {
            Refusal::new(
                qbd_core::proto::msg::ErrorCode::Io,
                format!("scan task: {e}"),
            )
        })?;
        out.extend(scans);
    }
    Ok(out)
}

/// The session-epoch fence: a request is served only for the epoch the
/// volume is at. Older: a master that lost the volume; newer: an epoch
/// never claimed here (the master skipped `SaveMeta`).
fn fence(what: &str, theirs: u64, claim: &Claim) -> Result<(), Refusal> {
    if theirs == claim.epoch {
        return Ok(());
    }
    if theirs < claim.epoch {
        return Err(Refusal::stale_epoch(what, theirs, claim.epoch));
    }
    Err(Refusal::new(
        ErrorCode::StaleEpoch,
        format!(
            "{what} of epoch {theirs}, which was never taken on this node (the volume is at \
             epoch {})",
            claim.epoch
        ),
    ))
}

fn parse_meta(text: &str) -> Result<VolumeMeta, Refusal> {
    toml::from_str::<VolumeMeta>(text).map_err(|e| Refusal::invalid(format!("bad .meta: {e}")))
}

/// A re-open must name the volume that is open, with the same shape.
fn same_volume(current: &VolumeMeta, asked: &VolumeMeta) -> Result<(), Refusal> {
    let shape = |m: &VolumeMeta| {
        (
            m.uuid,
            m.size,
            m.block_size,
            m.chunk_size,
            m.redundancy.clone(),
        )
    };
    if shape(current) != shape(asked) {
        return Err(Refusal::invalid(format!(
            "volume {} is open as {} with another shape or identity",
            current.number, current.uuid
        )));
    }
    Ok(())
}

#[cfg(test)]
#[path = "dispatch_tests.rs"]
mod tests;
