//! Repair test clusters: directory backends (any redundancy), a volume
//! filled with known bytes, damage done to part files on disk (delete,
//! truncate, flip data or record bytes), and checks that every part of
//! every chunk holds exactly what it should.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use qbd_core::backend::dir::DirBackend;
use qbd_core::backend::{Backend, BlockState, PartId};
use qbd_core::format::layout::PartLayout;
use qbd_core::meta::volume::RequestedShape;
use qbd_master::device::BlockDevice;
use qbd_master::volume::repair::{RepairOptions, RepairReport, run_repair};
use qbd_master::volume::{OpenMode, OpenRequest, Volume, open_volume_with};

pub const BLOCK: u64 = 4096;
pub const CHUNK: u64 = 64 << 10;
pub const BLOCKS: u32 = (CHUNK / BLOCK) as u32;

/// Directories and a state directory that outlive the volume's opens.
pub struct Cluster {
    pub dirs: Vec<tempfile::TempDir>,
    pub state: tempfile::TempDir,
    pub redundancy: String,
    pub parts: usize,
    /// Data parts (1 for replication).
    pub k: usize,
    pub size: u64,
}

impl Cluster {
    /// `dirs` backends, a volume of `chunks` chunks.
    pub fn new(redundancy: &str, dirs: usize, chunks: u64) -> Cluster {
        let (parts, k) = match redundancy.strip_prefix("ec:") {
            Some(km) => {
                let (k, m) = km.split_once('+').unwrap();
                let (k, m): (usize, usize) = (k.parse().unwrap(), m.parse().unwrap());
                (k + m, k)
            }
            None => (redundancy["replicate:".len()..].parse().unwrap(), 1),
        };
        Cluster {
            dirs: (0..dirs).map(|_| tempfile::tempdir().unwrap()).collect(),
            state: tempfile::tempdir().unwrap(),
            redundancy: redundancy.into(),
            parts,
            k,
            size: chunks * CHUNK,
        }
    }

    pub fn request(&self) -> OpenRequest {
        OpenRequest {
            name: "rv".into(),
            shape: RequestedShape {
                size: Some(self.size),
                block_size: Some(BLOCK as u32),
                chunk_size: Some(CHUNK),
                redundancy: Some(self.redundancy.parse().unwrap()),
            },
            read_only: false,
            state_dir: self.state.path().to_path_buf(),
        }
    }

    pub fn backends(&self, without: &[usize]) -> Vec<Arc<dyn Backend>> {
        (0..self.dirs.len())
            .filter(|i| !without.contains(i))
            .map(|i| Arc::new(DirBackend::open(self.dir(i)).unwrap()) as Arc<dyn Backend>)
            .collect()
    }

    /// Opens the volume in `mode` without backends `without`.
    pub async fn open(&self, mode: OpenMode, without: &[usize]) -> Volume {
        open_volume_with(self.backends(without), &self.request(), mode)
            .await
            .unwrap()
    }

    /// Creates the volume and fills it with seeded bytes; returns them.
    pub async fn fill(&self, seed: u64) -> Vec<u8> {
        let v = self.open(OpenMode::Serve, &[]).await;
        let data = random_bytes(seed, self.size as usize);
        for (i, c) in data.chunks(CHUNK as usize).enumerate() {
            v.write(i as u64 * CHUNK, c.to_vec(), false).await.unwrap();
        }
        v.flush().await.unwrap();
        data
    }

    /// Runs a repair on a volume opened for it (or inspected, if `dry`).
    pub async fn repair(&self, dry: bool, without: &[usize]) -> RepairReport {
        let mode = if dry {
            OpenMode::Inspect
        } else {
            OpenMode::Repair
        };
        let v = Arc::new(self.open(mode, without).await);
        let opts = RepairOptions {
            dry_run: dry,
            jobs: 2,
            ..Default::default()
        };
        run_repair(&v, self.state.path(), &opts, &mut |_| {})
            .await
            .unwrap()
    }

    pub fn dir(&self, i: usize) -> &Path {
        self.dirs[i].path()
    }

    /// The backend (directory index) of part `part` of `chunk`.
    pub fn slot(&self, chunk: u64, part: usize) -> usize {
        ((chunk + part as u64) % self.dirs.len() as u64) as usize
    }

    /// The file of part `part` of `chunk` (volume number 1).
    pub fn part_file(&self, chunk: u64, part: usize) -> PathBuf {
        self.dir(self.slot(chunk, part))
            .join("1")
            .join(qbd_core::redundancy::part_name(part).to_string())
            .join(chunk.to_string())
    }

    fn layout(&self) -> PartLayout {
        PartLayout::new(BLOCK as u32, BLOCKS / self.k as u32)
    }

    pub fn delete(&self, chunk: u64, part: usize) {
        std::fs::remove_file(self.part_file(chunk, part)).unwrap();
    }

    pub fn truncate(&self, chunk: u64, part: usize) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.part_file(chunk, part))
            .unwrap();
        f.set_len(self.layout().data_offset_of(1)).unwrap();
    }

    /// Flips a byte inside part block `block`'s data.
    pub fn flip_data(&self, chunk: u64, part: usize, block: u32) {
        flip(
            &self.part_file(chunk, part),
            self.layout().data_offset_of(block) + 100,
        );
    }

    /// Flips a byte inside part block `block`'s meta record.
    pub fn flip_record(&self, chunk: u64, part: usize, block: u32) {
        flip(
            &self.part_file(chunk, part),
            self.layout().record_offset(block) + 20,
        );
    }

    /// A hash of every file under the backends (names, sizes, contents).
    pub fn tree_hash(&self) -> blake3::Hash {
        let mut h = blake3::Hasher::new();
        for d in &self.dirs {
            hash_tree(d.path(), &mut h);
        }
        h.finalize()
    }

    /// Every data block of every part holds exactly the volume's bytes:
    /// each replica (or each EC data part) checked on its own.
    pub async fn assert_parts_hold(&self, want: &[u8]) {
        let backends = self.backends(&[]);
        let b0 = &backends[0];
        let meta = b0.load_meta(1).await.unwrap().unwrap();
        for b in &backends {
            b.open_volume(meta.clone()).await.unwrap();
        }
        let chunks = self.size / CHUNK;
        let rows = BLOCKS / self.k as u32;
        let checked = if self.k == 1 { self.parts } else { self.k };
        for c in 0..chunks {
            for p in 0..checked {
                let b = &backends[self.slot(c, p)];
                let id = PartId {
                    chunk: c,
                    part: p as u8,
                };
                let r = b.read(id, 0, rows).await.unwrap();
                for row in 0..rows as usize {
                    assert!(
                        matches!(r.blocks[row], BlockState::Data(_)),
                        "chunk {c} part {p} block {row}: {:?}",
                        r.blocks[row]
                    );
                    let vb = if self.k == 1 { row } else { row * self.k + p };
                    let at = (c * CHUNK) as usize + vb * BLOCK as usize;
                    assert!(
                        r.data[row * BLOCK as usize..(row + 1) * BLOCK as usize]
                            == want[at..at + BLOCK as usize],
                        "chunk {c} part {p} block {row} differs from what was written"
                    );
                }
            }
        }
    }
}

/// The whole volume read through a (serving) open equals `want`.
pub async fn assert_reads_back(v: &Volume, want: &[u8]) {
    for (i, c) in want.chunks(CHUNK as usize).enumerate() {
        let got = v.read(i as u64 * CHUNK, CHUNK as u32).await.unwrap();
        assert!(got == c, "chunk {i} reads back different bytes");
    }
}

fn flip(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, at).unwrap();
}

fn hash_tree(dir: &Path, h: &mut blake3::Hasher) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        h.update(p.to_string_lossy().as_bytes());
        if p.is_dir() {
            hash_tree(&p, h);
        } else {
            h.update(&std::fs::read(&p).unwrap());
        }
    }
}

pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
