//! Runs of rows: reading every part of a chunk over a range of rows, with
//! the parity covers, and restoring unavailable data blocks from the
//! consistent parts only.
//!
//! A run is read with one backend read per part (the rows of a run are the
//! same contiguous part blocks in every part). Parity parts also give their
//! records (the covers), through the parity record path ([`super::parity`]).
//! Restoration applies `check_row` to every row, then groups the rows that
//! need decoding by decode set and makes one codec call per group, so a
//! whole chunk with one part down costs one call.

use std::ops::Range;

use futures_util::future::join_all;
use qbd_core::backend::{BackendError, BlockState, PartId};
use qbd_core::ec::{EcCodec, EcError, PartMeta, PartSet, RowVerdict, check_row};
use qbd_core::generation::Generation;

use super::super::{Volume, VolumeError};
use super::cache::CachedPart;

/// One part's blocks over a run of rows.
#[derive(Debug)]
pub struct PartRun {
    /// `rows × block_size` bytes (zeros where unavailable).
    pub data: Vec<u8>,
    /// Per row: what the part holds there.
    pub metas: Vec<PartMeta>,
}

/// Every part of a chunk over a run of rows.
#[derive(Debug)]
pub struct RunRead {
    /// The rows.
    pub rows: Range<u32>,
    /// K + M parts in part order.
    pub parts: Vec<PartRun>,
}

impl RunRead {
    /// The verdict on row `i` of the run.
    pub fn verdict(&self, k: usize, m: usize, i: usize) -> Result<RowVerdict, EcError> {
        let metas: Vec<PartMeta> = self.parts.iter().map(|p| p.metas[i]).collect();
        check_row(k, m, &metas)
    }
}

/// How one part of a run was read.
#[derive(Debug)]
pub enum PartProbe {
    /// Read (its blocks may still fail their checks).
    Read,
    /// Not read: its backend is failed or the part is stale.
    Unusable,
    /// The read failed.
    Failed(BackendError),
}

/// The generation a data block state stands for (`None`: unusable).
pub fn data_generation(st: &BlockState) -> Option<Generation> {
    match st {
        BlockState::Unwritten => Some(Generation::NONE),
        BlockState::Data(g) | BlockState::Zero(g) => Some(*g),
        BlockState::Corrupt(_) => None,
    }
}

impl Volume {
    /// Reads `rows` of every part of `chunk` (parity with its covers).
    /// Unusable parts, failed reads and blocks failing their checks are
    /// `Unavailable`; a part that cannot be read is handled like a
    /// replicated read handles it (stale or backend failed).
    pub(in crate::volume) async fn read_run(&self, chunk: u64, rows: Range<u32>) -> RunRead {
        let (run, probes) = self.probe_run(chunk, rows).await;
        for (p, probe) in probes.iter().enumerate() {
            if let PartProbe::Failed(e) = probe {
                self.part_unreadable(self.placement.slot(chunk, p), chunk, e)
                    .await;
            }
        }
        run
    }

    /// [`Volume::read_run`] without side effects: a part that cannot be
    /// read is reported in its [`PartProbe`], not recorded (repair and its
    /// dry run decide what to do about it).
    pub(in crate::volume) async fn probe_run(
        &self,
        chunk: u64,
        rows: Range<u32>,
    ) -> (RunRead, Vec<PartProbe>) {
        let parts = self.geo.redundancy.parts();
        let reads = (0..parts).map(|p| self.read_part_run(chunk, p, rows.clone()));
        let (parts, probes) = join_all(reads).await.into_iter().unzip();
        (RunRead { parts, rows }, probes)
    }

    async fn read_part_run(
        &self,
        chunk: u64,
        part: usize,
        rows: Range<u32>,
    ) -> (PartRun, PartProbe) {
        let slot = self.placement.slot(chunk, part);
        if !self.usable(slot, chunk) {
            let n = rows.len();
            let unavailable = PartRun {
                data: vec![0; n * self.bs() as usize],
                metas: vec![PartMeta::Unavailable; n],
            };
            return (unavailable, PartProbe::Unusable);
        }
        self.read_part_run_anyway(chunk, part, rows).await
    }

    /// Reads `rows` of `part` even if the degraded map calls it stale
    /// (`qbd repair` checks a stale part's blocks before it calls a row
    /// lost); only a failed backend is not asked.
    pub(in crate::volume) async fn read_part_run_anyway(
        &self,
        chunk: u64,
        part: usize,
        rows: Range<u32>,
    ) -> (PartRun, PartProbe) {
        let bs = self.bs() as usize;
        let n = rows.len();
        let unavailable = || PartRun {
            data: vec![0; n * bs],
            metas: vec![PartMeta::Unavailable; n],
        };
        let slot = self.placement.slot(chunk, part);
        if self.health.is_failed(slot) {
            return (unavailable(), PartProbe::Unusable);
        }
        let id = PartId {
            chunk,
            part: part as u8,
        };
        let read = match self.backends[slot].read(id, rows.start, n as u32).await {
            Ok(r) => r,
            Err(e) => return (unavailable(), PartProbe::Failed(e)),
        };
        let k = self.geo.redundancy.data_parts();
        let metas = if part < k {
            read.blocks
                .iter()
                .map(|st| data_generation(st).map_or(PartMeta::Unavailable, PartMeta::Data))
                .collect()
        } else {
            self.parity_metas(slot, id, rows.start, &read.blocks).await
        };
        let run = PartRun {
            data: read.data,
            metas,
        };
        (run, PartProbe::Read)
    }
}

/// Restores data parts `want` over a run: per row, a part's own verified
/// block when it is available, else the decoded block at the row's version
/// (if the row has a decode set), else `None` (EIO for that block).
pub fn restore(
    codec: EcCodec,
    bs: usize,
    run: &RunRead,
    want: PartSet,
) -> Result<Vec<(usize, CachedPart)>, EcError> {
    let (k, m) = (codec.data_shards(), codec.parity_shards());
    let n = run.rows.len();
    let mut out: Vec<(usize, CachedPart)> = want
        .iter()
        .map(|p| {
            let direct = &run.parts[p];
            let gens = direct
                .metas
                .iter()
                .map(|meta| match meta {
                    PartMeta::Data(g) => Some(*g),
                    _ => None,
                })
                .collect();
            (
                p,
                CachedPart {
                    data: direct.data.clone(),
                    gens,
                },
            )
        })
        .collect();
    // Rows needing a decode, grouped by decode set.
    let mut groups: Vec<(PartSet, Vec<(usize, RowVerdict)>)> = Vec::new();
    for i in 0..n {
        if out.iter().all(|(_, c)| c.gens[i].is_some()) {
            continue;
        }
        let v = run.verdict(k, m, i)?;
        let Some(set) = v.decode_set() else { continue };
        match groups.iter_mut().find(|(s, _)| *s == set) {
            Some((_, rows)) => rows.push((i, v)),
            None => groups.push((set, vec![(i, v)])),
        }
    }
    for (set, rows) in groups {
        let mut shards: Vec<Option<Vec<u8>>> = (0..k + m)
            .map(|p| {
                set.contains(p).then(|| {
                    let mut s = Vec::with_capacity(rows.len() * bs);
                    for (i, _) in &rows {
                        s.extend_from_slice(&run.parts[p].data[i * bs..(i + 1) * bs]);
                    }
                    s
                })
            })
            .collect();
        codec.reconstruct_data(&mut shards)?;
        for (p, c) in out.iter_mut() {
            let Some(shard) = &shards[*p] else { continue };
            for (j, (i, v)) in rows.iter().enumerate() {
                if c.gens[*i].is_none() {
                    c.data[i * bs..(i + 1) * bs].copy_from_slice(&shard[j * bs..(j + 1) * bs]);
                    c.gens[*i] = v.version_generation(*p);
                }
            }
        }
    }
    Ok(out)
}

/// [`restore`] off the runtime's worker threads when the run is large (a
/// whole-chunk decode takes milliseconds).
pub async fn restore_async(
    codec: EcCodec,
    bs: usize,
    run: RunRead,
    want: PartSet,
) -> Result<(RunRead, Vec<(usize, CachedPart)>), VolumeError> {
    if run.rows.len() * bs <= 64 << 10 {
        let out = restore(codec, bs, &run, want)?;
        return Ok((run, out));
    }
    tokio::task::spawn_blocking(move || {
        let out = restore(codec, bs, &run, want)?;
        Ok((run, out))
    })
    .await
    .map_err(|e| VolumeError::NoCopy(format!("reconstruction task: {e}")))?
}
