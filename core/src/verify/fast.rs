//! The fast check: part files by name and size against what the volume
//! expects. Pure: the listings come from the backends.
//!
//! Per in-use chunk and part, the designated backend (placement) decides:
//! unreachable → not checked; no file → missing (the chunk is in use, so
//! its allocation bit is set somewhere or a sibling part exists); a file
//! of another size → wrong size; a set bit in a reachable backend's
//! degraded map for that backend → stale; else good. Part files anywhere
//! else (another backend, a chunk or part past the volume's shape) are
//! strays, as is anything the format does not name.

use std::collections::{HashMap, HashSet};

use super::report::{BackendStatus, ChunkCounts, ChunkState, PartProblem, Problem};
use super::{VolumeListing, needed_parts};
use crate::CoreResult;
use crate::backend::PartId;
use crate::format::alloc::{AllocMap, BitmapKind};
use crate::format::layout::PartLayout;
use crate::meta::volume::VolumeMeta;
use crate::placement::{BackendId, PlacementTable};
use crate::redundancy::{Redundancy, part_name};

/// Degraded maps by the backend they describe: (holder, map).
type StaleMaps = HashMap<BackendId, Vec<(BackendId, AllocMap)>>;

/// One reachable backend's listing; `None` when it does not hold the volume.
#[derive(Debug, Clone)]
pub struct BackendListing {
    /// The backend.
    pub id: BackendId,
    /// What it holds of the volume.
    pub listing: Option<VolumeListing>,
}

/// A part's status from names and sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartStatus {
    /// No file, chunk not in use.
    Absent,
    /// Present, right size, not marked stale.
    Good,
    /// Chunk in use, no file.
    Missing,
    /// Present, wrong size.
    WrongSize,
    /// Marked stale in a degraded map.
    Stale,
    /// Its backend did not answer.
    Unreachable,
}

/// The shape facts the checks need, from `.meta`.
#[derive(Debug, Clone)]
pub struct Shape {
    /// The policy.
    pub redundancy: Redundancy,
    /// Chunks of the volume.
    pub chunks: u64,
    /// Parts per chunk.
    pub parts: usize,
    /// Good parts a chunk needs.
    pub needed: usize,
    /// The part file layout.
    pub layout: PartLayout,
    /// The placement table.
    pub placement: PlacementTable,
}

impl Shape {
    /// From a validated `.meta`.
    pub fn of(meta: &VolumeMeta) -> CoreResult<Self> {
        let geo = meta.geometry()?;
        Ok(Shape {
            redundancy: geo.redundancy,
            chunks: geo.chunk_count(),
            parts: geo.redundancy.parts(),
            needed: needed_parts(geo.redundancy),
            layout: PartLayout::new(geo.block_size, geo.blocks_per_part()),
            placement: meta.placement()?,
        })
    }

    /// The backend of a part.
    pub fn backend(&self, chunk: u64, part: usize) -> BackendId {
        self.placement.backend(chunk, part)
    }

    fn at(&self, chunk: u64, part: usize) -> PartProblem {
        PartProblem {
            chunk,
            part: part as u8,
            backend: self.backend(chunk, part),
        }
    }
}

/// The result of the fast check.
#[derive(Debug, Clone)]
pub struct FastView {
    /// The volume's shape.
    pub shape: Shape,
    status: Vec<PartStatus>,
    in_use: Vec<bool>,
    reachable: HashSet<BackendId>,
    /// Backend-level problems (unreachable, maps).
    pub global: Vec<Problem>,
    /// Part problems, by chunk then part.
    pub parts: Vec<Problem>,
    /// Stray files.
    pub strays: Vec<Problem>,
}

/// Runs the fast check over the reachable backends' listings.
pub fn check(meta: &VolumeMeta, backends: &[BackendListing]) -> CoreResult<FastView> {
    let shape = Shape::of(meta)?;
    let n = shape.chunks as usize * shape.parts;
    let mut v = FastView {
        status: vec![PartStatus::Absent; n],
        in_use: vec![false; shape.chunks as usize],
        reachable: backends.iter().map(|b| b.id).collect(),
        global: Vec::new(),
        parts: Vec::new(),
        strays: Vec::new(),
        shape,
    };
    v.unreachable_entries();
    let mut stale = StaleMaps::new();
    let mut sizes: HashMap<PartId, u64> = HashMap::new();
    for b in backends {
        let Some(l) = &b.listing else {
            if v.shape.placement.entries().contains(&b.id) {
                v.global.push(Problem::VolumeAbsent { backend: b.id });
            }
            continue;
        };
        v.read_alloc(meta, b.id, l);
        v.read_stale(meta, b.id, l, &mut stale);
        v.place_files(b.id, l, &mut sizes);
    }
    v.judge_parts(&stale, &sizes);
    Ok(v)
}

impl FastView {
    /// A part's status.
    pub fn status(&self, chunk: u64, part: usize) -> PartStatus {
        self.status[self.index(chunk, part)]
    }

    /// Whether a chunk is in use.
    pub fn in_use(&self, chunk: u64) -> bool {
        self.in_use[chunk as usize]
    }

    /// Whether a backend answered.
    pub fn is_reachable(&self, b: BackendId) -> bool {
        self.reachable.contains(&b)
    }

    /// The good parts on `backend` (what a deep scan reads there).
    pub fn good_parts_on(&self, backend: BackendId) -> Vec<PartId> {
        let mut out = Vec::new();
        for c in 0..self.shape.chunks {
            for p in 0..self.shape.parts {
                if self.status(c, p) == PartStatus::Good && self.shape.backend(c, p) == backend {
                    out.push(PartId {
                        chunk: c,
                        part: p as u8,
                    });
                }
            }
        }
        out
    }

    /// A chunk's state from part statuses (`bad` parts count as not good
    /// on top of the statuses: the deep check's findings).
    pub fn chunk_state(&self, chunk: u64, bad: &[usize]) -> ChunkState {
        let mut good = 0;
        let mut unknown = 0;
        for p in 0..self.shape.parts {
            match self.status(chunk, p) {
                PartStatus::Good if !bad.contains(&p) => good += 1,
                PartStatus::Unreachable => unknown += 1,
                _ => {}
            }
        }
        classify(good, unknown, self.shape.parts, self.shape.needed)
    }

    /// Chunk counts and the lost-chunk problems, by fast statuses only.
    pub fn counts(&self) -> (ChunkCounts, Vec<Problem>) {
        let mut counts = ChunkCounts {
            total: self.shape.chunks,
            ..ChunkCounts::default()
        };
        let mut lost = Vec::new();
        for c in (0..self.shape.chunks).filter(|&c| self.in_use(c)) {
            let s = self.chunk_state(c, &[]);
            counts.add(s);
            if s == ChunkState::Lost {
                lost.push(self.lost_problem(c, &[]));
            }
        }
        (counts, lost)
    }

    /// The `ChunkLost` problem of a chunk.
    pub fn lost_problem(&self, chunk: u64, bad: &[usize]) -> Problem {
        let good = (0..self.shape.parts)
            .filter(|&p| self.status(chunk, p) == PartStatus::Good && !bad.contains(&p))
            .count();
        Problem::ChunkLost {
            chunk,
            good: good as u32,
            needed: self.shape.needed as u32,
        }
    }

    /// Per backend of the placement: (parts expected on it for in-use
    /// chunks, of those good).
    pub fn backend_counts(&self) -> HashMap<BackendId, (u64, u64)> {
        let mut out: HashMap<BackendId, (u64, u64)> = HashMap::new();
        for c in (0..self.shape.chunks).filter(|&c| self.in_use(c)) {
            for p in 0..self.shape.parts {
                let e = out.entry(self.shape.backend(c, p)).or_default();
                e.0 += 1;
                e.1 += u64::from(self.status(c, p) == PartStatus::Good);
            }
        }
        out
    }

    /// Fills in `parts_expected` / `parts_good` of backend statuses.
    pub fn fill_backends(&self, list: &mut [BackendStatus]) {
        let counts = self.backend_counts();
        for b in list.iter_mut() {
            let Some(id) = b.id else { continue };
            b.in_placement = self.shape.placement.entries().contains(&id);
            if let Some((e, g)) = counts.get(&id) {
                (b.parts_expected, b.parts_good) = (*e, *g);
            }
        }
    }

    fn index(&self, chunk: u64, part: usize) -> usize {
        chunk as usize * self.shape.parts + part
    }

    fn unreachable_entries(&mut self) {
        for id in self.shape.placement.entries() {
            if !self.reachable.contains(id) {
                self.global.push(Problem::BackendUnreachable {
                    backend: Some(*id),
                    address: None,
                    why: "no reachable backend has this identity: its parts were not checked"
                        .into(),
                });
            }
        }
    }

    fn read_alloc(&mut self, meta: &VolumeMeta, id: BackendId, l: &VolumeListing) {
        let Some(bytes) = &l.alloc else {
            self.global.push(Problem::AllocMissing { backend: id });
            return;
        };
        match AllocMap::decode(bytes, meta.uuid) {
            Ok(d) => {
                if !d.corrupt_pages.is_empty() {
                    self.global.push(Problem::AllocCorrupt {
                        backend: id,
                        why: format!("corrupt pages {:?}", d.corrupt_pages),
                    });
                }
                for c in d.map.iter().filter(|&c| c < self.shape.chunks) {
                    self.in_use[c as usize] = true;
                }
            }
            Err(e) => self.global.push(Problem::AllocCorrupt {
                backend: id,
                why: e.to_string(),
            }),
        }
    }

    fn read_stale(
        &mut self,
        meta: &VolumeMeta,
        holder: BackendId,
        l: &VolumeListing,
        maps: &mut StaleMaps,
    ) {
        for (of, bytes) in &l.stale {
            let map = match AllocMap::decode_kind(bytes, BitmapKind::Stale, meta.uuid) {
                Ok(d) => d.map,
                Err(e) => {
                    self.global.push(Problem::StaleMapUnreadable {
                        holder,
                        of: *of,
                        why: e.to_string(),
                    });
                    let mut all =
                        AllocMap::with_kind(BitmapKind::Stale, meta.uuid, self.shape.chunks, 0);
                    (0..self.shape.chunks).for_each(|c| {
                        all.set(c);
                    });
                    all
                }
            };
            if !map.is_empty() {
                maps.entry(*of).or_default().push((holder, map));
            }
        }
    }

    fn place_files(&mut self, id: BackendId, l: &VolumeListing, sizes: &mut HashMap<PartId, u64>) {
        for s in &l.strays {
            self.strays.push(Problem::Stray {
                backend: id,
                path: s.path.clone(),
                size: s.size,
            });
        }
        for f in &l.parts {
            let (c, p) = (f.part.chunk, usize::from(f.part.part));
            if c >= self.shape.chunks || p >= self.shape.parts || self.shape.backend(c, p) != id {
                self.strays.push(Problem::Stray {
                    backend: id,
                    path: format!("{}/{}", part_name(p), c),
                    size: f.size,
                });
                continue;
            }
            let i = self.index(c, p);
            self.in_use[c as usize] = true;
            self.status[i] = if f.size == self.shape.layout.file_size {
                PartStatus::Good
            } else {
                sizes.insert(f.part, f.size);
                PartStatus::WrongSize
            };
        }
    }

    fn judge_parts(&mut self, stale: &StaleMaps, sizes: &HashMap<PartId, u64>) {
        for c in 0..self.shape.chunks {
            if !self.in_use[c as usize] {
                continue;
            }
            for p in 0..self.shape.parts {
                self.judge_part(c, p, stale, sizes);
            }
        }
    }

    fn judge_part(&mut self, c: u64, p: usize, stale: &StaleMaps, sizes: &HashMap<PartId, u64>) {
        let i = self.index(c, p);
        let b = self.shape.backend(c, p);
        let at = self.shape.at(c, p);
        if !self.reachable.contains(&b) {
            self.status[i] = PartStatus::Unreachable;
            return;
        }
        match self.status[i] {
            PartStatus::Absent => {
                self.status[i] = PartStatus::Missing;
                self.parts.push(Problem::PartMissing(at));
            }
            PartStatus::WrongSize => {
                let size = sizes
                    .get(&PartId {
                        chunk: c,
                        part: p as u8,
                    })
                    .copied()
                    .unwrap_or_default();
                self.parts.push(Problem::PartWrongSize {
                    at,
                    size,
                    expected: self.shape.layout.file_size,
                });
            }
            PartStatus::Good => {
                let marked_by: Vec<BackendId> = stale
                    .get(&b)
                    .into_iter()
                    .flatten()
                    .filter(|(_, m)| m.get(c))
                    .map(|(h, _)| *h)
                    .collect();
                if !marked_by.is_empty() {
                    self.status[i] = PartStatus::Stale;
                    self.parts.push(Problem::PartStale { at, marked_by });
                }
            }
            _ => {}
        }
    }
}

/// A chunk's state from its good and unreachable part counts.
pub fn classify(good: usize, unknown: usize, parts: usize, needed: usize) -> ChunkState {
    if good == parts {
        ChunkState::Healthy
    } else if good >= needed {
        ChunkState::Degraded
    } else if good + unknown >= needed {
        ChunkState::Unavailable
    } else {
        ChunkState::Lost
    }
}
