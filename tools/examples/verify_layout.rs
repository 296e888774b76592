//! Builds a volume layout for benchmarking `qbd verify` (see
//! `bench/verify-layout.sh`), without a master:
//!
//! `verify_layout ROOT BACKENDS REDUNDANCY CHUNKS CHUNK_SIZE FILLED`
//!
//! makes `ROOT/b0 .. ROOT/b<BACKENDS-1>` directory backends holding volume
//! `bench`: a real `.backend`, `.volumesmeta`, `.meta` (placement over the
//! backends) and `.alloc` with every chunk's bit set, and every part file
//! at its placed backend with its full size, sparse. The first `FILLED`
//! chunks get a real header and every block written (seeded data, valid
//! records, generation 1) — replication only — so `--deep` has data to
//! check; the others have no header (the fast check does not open files,
//! and 786k header pages would cost 3 GiB).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use qbd_core::backend::Backend;
use qbd_core::backend::dir::DirBackend;
use qbd_core::format::alloc::AllocMap;
use qbd_core::format::groups::BITMAP_OFFSET;
use qbd_core::format::layout::{META_OFFSET, PartLayout};
use qbd_core::format::record::{MetaRecord, RECORD_SIZE, RecordPos};
use qbd_core::generation::Generation;
use qbd_core::meta::volume::VolumeMeta;
use qbd_core::redundancy::{Redundancy, part_name};

type Res<T> = Result<T, String>;

struct Plan {
    root: PathBuf,
    backends: usize,
    redundancy: String,
    chunks: u64,
    chunk_size: u64,
    filled: u64,
}

fn main() -> ExitCode {
    match parse().and_then(|p| build(&p)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("verify_layout: {e}");
            ExitCode::from(2)
        }
    }
}

fn parse() -> Res<Plan> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 6 {
        return Err(
            "usage: verify_layout ROOT BACKENDS REDUNDANCY CHUNKS CHUNK_SIZE FILLED".into(),
        );
    }
    let num = |s: &str| qbd_core::size::parse_size(s).map_err(|e| format!("{s}: {e}"));
    Ok(Plan {
        root: PathBuf::from(&a[0]),
        backends: num(&a[1])? as usize,
        redundancy: a[2].clone(),
        chunks: num(&a[3])?,
        chunk_size: num(&a[4])?,
        filled: num(&a[5])?,
    })
}

fn build(p: &Plan) -> Res<()> {
    let roots: Vec<PathBuf> = (0..p.backends)
        .map(|i| p.root.join(format!("b{i}")))
        .collect();
    let mut ids = Vec::new();
    for r in &roots {
        fs::create_dir_all(r).map_err(|e| format!("{}: {e}", r.display()))?;
        ids.push(DirBackend::open(r).map_err(|e| e.to_string())?.id());
    }
    let meta = VolumeMeta {
        format_version: 1,
        name: "bench".into(),
        uuid: uuid::Uuid::new_v4(),
        number: 1,
        size: p.chunks * p.chunk_size,
        block_size: 4096,
        chunk_size: p.chunk_size,
        redundancy: p.redundancy.clone(),
        read_only: false,
        append_only: false,
        epoch: 1,
        master: "verify_layout".into(),
        placement: ids.clone(),
    };
    let geo = meta.geometry().map_err(|e| e.to_string())?;
    let placement = meta.placement().map_err(|e| e.to_string())?;
    let layout = PartLayout::new(geo.block_size, geo.blocks_per_part());
    let r: Redundancy = geo.redundancy;
    if p.filled > 0 && r.data_parts() != 1 {
        return Err("FILLED chunks need replication".into());
    }
    let mut alloc = AllocMap::new(meta.uuid, geo.chunk_count());
    (0..geo.chunk_count()).for_each(|c| {
        alloc.set(c);
    });
    let alloc = alloc.encode();
    for r in &roots {
        create_volume(r, &meta, &alloc)?;
    }
    let mut block = vec![0u8; geo.block_size as usize];
    for c in 0..geo.chunk_count() {
        for part in 0..r.parts() {
            let b = ids
                .iter()
                .position(|id| *id == placement.backend(c, part))
                .unwrap_or(0);
            let path = VolumeMeta::dir(&roots[b], 1)
                .join(part_name(part).to_string())
                .join(c.to_string());
            let f = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            f.set_len(layout.file_size).map_err(|e| e.to_string())?;
            if c < p.filled {
                fill(&f, &layout, &meta, c, part as u8, r, &mut block)?;
            }
        }
        if c % 16384 == 0 {
            eprintln!("verify_layout: chunk {c} of {}", geo.chunk_count());
        }
    }
    Ok(())
}

fn create_volume(root: &Path, meta: &VolumeMeta, alloc: &[u8]) -> Res<()> {
    let vol = VolumeMeta::dir(root, 1);
    for part in 0..meta.redundancy().map_err(|e| e.to_string())?.parts() {
        fs::create_dir_all(vol.join(part_name(part).to_string())).map_err(|e| e.to_string())?;
    }
    meta.save(root).map_err(|e| e.to_string())?;
    fs::write(
        root.join(".volumesmeta"),
        "format_version = 1\n\n[volumes]\nbench = 1\n",
    )
    .map_err(|e| e.to_string())?;
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(vol.join(".alloc"))
        .map_err(|e| e.to_string())?;
    f.write_all(alloc).map_err(|e| e.to_string())
}

/// Header, every record and every data block of one part.
fn fill(
    f: &File,
    layout: &PartLayout,
    meta: &VolumeMeta,
    chunk: u64,
    part: u8,
    r: Redundancy,
    block: &mut [u8],
) -> Res<()> {
    let io = |e: std::io::Error| e.to_string();
    let h = layout.header(
        meta.uuid,
        chunk,
        part,
        r.parts() as u8,
        r.data_parts() as u8,
    );
    f.write_all_at(&h.encode(), 0).map_err(io)?;
    // Every record is written below, so every record group is initialised.
    let mut groups = layout.empty_groups(chunk, part);
    for g in 0..groups.groups() {
        groups.set(g);
    }
    f.write_all_at(&groups.encode(), BITMAP_OFFSET)
        .map_err(io)?;
    let mut records = vec![0u8; layout.blocks as usize * RECORD_SIZE];
    let mut data = Vec::with_capacity(layout.blocks as usize * block.len());
    for i in 0..layout.blocks {
        let mut x = (chunk << 32 | u64::from(i)) | 1;
        for w in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let rec = MetaRecord::for_data(block, Generation::new(1, 1));
        let pos = RecordPos {
            chunk,
            part,
            block: i,
        };
        records[i as usize * RECORD_SIZE..][..RECORD_SIZE].copy_from_slice(&rec.encode(pos));
        data.extend_from_slice(block);
    }
    f.write_all_at(&records, META_OFFSET).map_err(io)?;
    f.write_all_at(&data, layout.data_offset).map_err(io)
}
