//! A volume with far more chunks than the process may open files fills
//! through NBD (issue 15, "bounded resources"): a 1 TiB `replicate:2`
//! volume of 256 MiB chunks (4096 chunks, 8192 part files over two
//! directories) gets one block written in every chunk by a master whose
//! `RLIMIT_NOFILE` is 1024; every block then reads back. Before part files
//! were kept in a bounded cache this failed with "Too many open files"
//! after about a thousand chunks.

mod common;

use std::process::Command;

use common::raw::Client;
use common::{Backing, Master, Volume};

const CHUNK: u64 = 256 << 20;
const CHUNKS: u64 = (1 << 40) / CHUNK;
const BLOCK: usize = 4096;
const NOFILE: u32 = 1024;

/// The block written in `chunk`: somewhere inside it, not always at its
/// start, with bytes that name the chunk.
fn place(chunk: u64) -> (u64, Vec<u8>) {
    let offset = chunk * CHUNK + (chunk * 7919 % (CHUNK / BLOCK as u64)) * BLOCK as u64;
    let mut data = vec![(chunk % 251) as u8; BLOCK];
    data[..8].copy_from_slice(&chunk.to_le_bytes());
    (offset, data)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn a_1tib_volume_fills_one_block_per_chunk_under_a_1024_fd_limit() {
    let vol = Volume::new("bounded", 2, Backing::Shm);
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={NOFILE}:{NOFILE}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_qbd-master"))
        .args(vol.args("1T", &["--chunk-size", "256M"]));
    let master = Master::try_start_command(cmd).unwrap_or_else(|e| panic!("start: {e}"));
    let pid = master.pid().expect("pid");
    let mut client = Client::connect(master.addr, &master.volume);
    let mut most_fds = 0;
    for chunk in 0..CHUNKS {
        let (offset, data) = place(chunk);
        client.write(offset, &data).unwrap_or_else(|e| {
            panic!("write to chunk {chunk}: NBD error {e}\n{}", master.stderr())
        });
        if chunk % 512 == 0 {
            most_fds = most_fds.max(open_fds(pid));
        }
    }
    client.flush().expect("flush");
    for chunk in 0..CHUNKS {
        let (offset, data) = place(chunk);
        let got = client
            .read(offset, BLOCK as u32)
            .unwrap_or_else(|e| panic!("read of chunk {chunk}: NBD error {e}"));
        assert!(got == data, "chunk {chunk} read back different bytes");
    }
    client.disconnect();
    eprintln!("{CHUNKS} chunks written and read back; at most {most_fds} fds open");
    assert!(most_fds < NOFILE as usize, "{most_fds} fds open");
    let stderr = master.stop_cleanly();
    assert!(!stderr.contains("Too many open files"), "{stderr}");
}
