//! EC test clusters: K+M directory backends, each behind a fault wrapper,
//! a model of the volume's bytes, seeded random I/O.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use qbd_core::backend::Backend;
use qbd_core::backend::dir::DirBackend;
use qbd_core::backend::fault::{Action, Event, FaultBackend, Gate, OpKind, Rule};
use qbd_core::meta::volume::RequestedShape;
use qbd_master::device::BlockDevice;
use qbd_master::volume::{OpenRequest, Volume, open_volume};

pub const BLOCK: u64 = 4096;

/// Directories and a state directory that outlive master restarts.
pub struct Cluster {
    pub dirs: Vec<tempfile::TempDir>,
    pub state: tempfile::TempDir,
    pub size: u64,
    pub chunk: u64,
    pub k: usize,
    pub m: usize,
}

impl Cluster {
    /// K+M backends, a volume of `size` bytes in chunks of `chunk`.
    pub fn new(k: usize, m: usize, size: u64, chunk: u64) -> Cluster {
        Cluster {
            dirs: (0..k + m).map(|_| tempfile::tempdir().unwrap()).collect(),
            state: tempfile::tempdir().unwrap(),
            size,
            chunk,
            k,
            m,
        }
    }

    fn request(&self) -> OpenRequest {
        OpenRequest {
            name: "ecv".into(),
            shape: RequestedShape {
                size: Some(self.size),
                block_size: Some(BLOCK as u32),
                chunk_size: Some(self.chunk),
                redundancy: Some(format!("ec:{}+{}", self.k, self.m).parse().unwrap()),
            },
            read_only: false,
            state_dir: self.state.path().to_path_buf(),
        }
    }

    /// Opens the volume over fresh backends, each wrapped in a fault wrapper.
    pub async fn open(&self, crashable: bool) -> (Volume, Vec<Arc<FaultBackend>>) {
        self.open_with(crashable, |_| {}).await
    }

    /// Like [`open`](Self::open), with faults set up before the volume opens
    /// (e.g. a backend dead during recovery).
    pub async fn open_with(
        &self,
        crashable: bool,
        setup: impl FnOnce(&[Arc<FaultBackend>]),
    ) -> (Volume, Vec<Arc<FaultBackend>>) {
        let faults: Vec<Arc<FaultBackend>> = self
            .dirs
            .iter()
            .map(|d| {
                let inner: Arc<dyn Backend> = Arc::new(DirBackend::open(d.path()).unwrap());
                Arc::new(FaultBackend::new(inner, crashable))
            })
            .collect();
        setup(&faults);
        let backends = faults
            .iter()
            .map(|f| f.clone() as Arc<dyn Backend>)
            .collect();
        (
            open_volume(backends, &self.request()).await.unwrap(),
            faults,
        )
    }

    pub fn dir(&self, i: usize) -> &Path {
        self.dirs[i].path()
    }

    /// The file of part index `part` of `chunk` in backend `i` (volume 1).
    pub fn part_file(&self, i: usize, part: usize, chunk: u64) -> PathBuf {
        self.dir(i)
            .join("1")
            .join(qbd_core::redundancy::part_name(part).to_string())
            .join(chunk.to_string())
    }

    /// The backend (slot) holding part `part` of `chunk`.
    pub fn slot(&self, chunk: u64, part: usize) -> usize {
        ((chunk + part as u64) % (self.k + self.m) as u64) as usize
    }
}

/// Makes a backend fail every data operation (a dead disk or node).
pub fn kill(f: &FaultBackend) {
    for op in [OpKind::Read, OpKind::Write, OpKind::Sync, OpKind::Allocate] {
        f.add_rule(Rule {
            op,
            chunk: None,
            block: None,
            action: Action::Fail,
            times: None,
        });
    }
}

/// Holds every write to `chunk` on `f` at a new gate.
pub fn hold_writes(f: &FaultBackend, chunk: u64) -> Gate {
    let gate = Gate::new();
    f.add_rule(Rule {
        op: OpKind::Write,
        chunk: Some(chunk),
        block: None,
        action: Action::Hold(gate.clone()),
        times: None,
    });
    gate
}

/// Writes (and repairs) `f` has completed so far.
pub fn writes_done(f: &FaultBackend) -> usize {
    f.events()
        .iter()
        .filter(|e| matches!(e, Event::Write { .. }))
        .count()
}

/// Waits until `f` has completed `n` writes (a parity write's record
/// follows its data write without yielding, so it is complete too).
pub async fn wait_writes(f: &FaultBackend, n: usize) {
    while writes_done(f) < n {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// The journal file of the volume in `state`.
pub fn journal_file(state: &Path) -> PathBuf {
    std::fs::read_dir(state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "journal"))
        .expect("a journal file")
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

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let seed = self.next();
        (0..n)
            .map(|i| (seed.wrapping_mul(i as u64 + 1) >> 24) as u8 ^ i as u8)
            .collect()
    }
}

/// One random write (offset, length): partial rows, full rows, several
/// chunks, unaligned, depending on the draw.
pub fn random_extent(rng: &mut Rng, size: u64, chunk: u64) -> (u64, usize) {
    let len = match rng.below(4) {
        0 => 1 + rng.below(BLOCK * 2),         // sub-block / small unaligned
        1 => BLOCK * (1 + rng.below(8)),       // a few blocks
        2 => chunk / 2 + rng.below(chunk * 2), // across chunks
        _ => 512 * (1 + rng.below(64)),        // sector-sized
    };
    let len = len.min(size);
    let off = rng.below(size - len + 1);
    let off = if rng.below(2) == 0 {
        off / BLOCK * BLOCK
    } else {
        off
    };
    (off, len as usize)
}

/// Writes random extents, mirroring them in `model`.
pub async fn random_writes(v: &Volume, model: &mut [u8], rng: &mut Rng, n: usize, chunk: u64) {
    for _ in 0..n {
        let (off, len) = random_extent(rng, model.len() as u64, chunk);
        let d = rng.bytes(len);
        v.write(off, d.clone(), false).await.unwrap();
        model[off as usize..off as usize + len].copy_from_slice(&d);
    }
}

/// Reads the whole volume in pieces and compares it with the model.
pub async fn check_all(v: &Volume, model: &[u8], what: &str) {
    let piece = 256 << 10;
    for off in (0..model.len()).step_by(piece) {
        let len = piece.min(model.len() - off);
        let got = v.read(off as u64, len as u32).await.unwrap();
        assert!(
            got == model[off..off + len],
            "{what}: bytes at {off}..{} differ",
            off + len
        );
    }
}
