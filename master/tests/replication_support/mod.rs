//! A cluster of directory backends, each behind a fault wrapper, for the
//! replication tests: open, reopen, read from one replica alone.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use qbd_core::backend::Backend;
use qbd_core::backend::dir::DirBackend;
use qbd_core::backend::fault::{Action, FaultBackend, OpKind, Rule};
use qbd_core::meta::volume::RequestedShape;
use qbd_master::volume::{OpenRequest, Volume, open_volume};

pub const BLOCK: u64 = 4096;
pub const CHUNK: u64 = 64 << 10;

/// Directories and a state directory that outlive master restarts.
pub struct Cluster {
    pub dirs: Vec<tempfile::TempDir>,
    pub state: tempfile::TempDir,
    pub size: u64,
    pub replicas: u8,
}

impl Cluster {
    pub fn new(backends: usize, replicas: u8, size: u64) -> Cluster {
        Cluster {
            dirs: (0..backends)
                .map(|_| tempfile::tempdir().unwrap())
                .collect(),
            state: tempfile::tempdir().unwrap(),
            size,
            replicas,
        }
    }

    fn request(&self) -> OpenRequest {
        OpenRequest {
            name: "rep".into(),
            shape: RequestedShape {
                size: Some(self.size),
                block_size: Some(BLOCK as u32),
                chunk_size: Some(CHUNK),
                redundancy: Some(format!("replicate:{}", self.replicas).parse().unwrap()),
            },
            read_only: false,
            state_dir: self.state.path().to_path_buf(),
        }
    }

    /// Opens the volume over fresh backends, each wrapped in a fault wrapper.
    pub async fn open(&self, crashable: bool) -> (Volume, Vec<Arc<FaultBackend>>) {
        let faults: Vec<Arc<FaultBackend>> = self
            .dirs
            .iter()
            .map(|d| {
                let inner: Arc<dyn Backend> = Arc::new(DirBackend::open(d.path()).unwrap());
                Arc::new(FaultBackend::new(inner, crashable))
            })
            .collect();
        let backends = faults
            .iter()
            .map(|f| f.clone() as Arc<dyn Backend>)
            .collect();
        (
            open_volume(backends, &self.request()).await.unwrap(),
            faults,
        )
    }

    /// Opens the volume with every backend but `only` failing reads.
    pub async fn open_reading_only_from(&self, only: usize) -> Volume {
        let (v, faults) = self.open(false).await;
        for (i, f) in faults.iter().enumerate() {
            if i != only {
                f.add_rule(Rule {
                    op: OpKind::Read,
                    chunk: None,
                    block: None,
                    action: Action::Fail,
                    times: None,
                });
            }
        }
        v
    }

    pub fn dir(&self, i: usize) -> &Path {
        self.dirs[i].path()
    }

    /// The file of `part` (a, b, ...) of `chunk` in backend `i` (volume number 1).
    pub fn part_file(&self, i: usize, part: char, chunk: u64) -> PathBuf {
        self.dir(i)
            .join("1")
            .join(part.to_string())
            .join(chunk.to_string())
    }
}

/// A block's content for write number `id` (0 = never written: zeros).
pub fn block_value(id: u32) -> Vec<u8> {
    if id == 0 {
        return vec![0; BLOCK as usize];
    }
    let mut b = vec![(id % 251) as u8 ^ 0x5a; BLOCK as usize];
    b[..4].copy_from_slice(&id.to_le_bytes());
    b
}

/// Which write a block's content came from (0: zeros), if any.
pub fn value_id(b: &[u8]) -> Option<u32> {
    if b.iter().all(|&x| x == 0) {
        return Some(0);
    }
    let id = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    (block_value(id) == b).then_some(id)
}

/// A seeded xorshift generator (tests replay from the seed).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
