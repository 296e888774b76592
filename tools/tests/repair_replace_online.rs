//! `qbd repair --replace OLD=NEW` while the master serves: a client keeps
//! writing through the master, OLD's directory is deleted (or its node
//! killed), and `qbd repair --replace` goes through the master's admin
//! socket: the master reaches NEW itself, switches the table and fills NEW
//! on the heal path while the writes go on. Then every block reads back
//! through the same master what the model says, and after the master stops,
//! `qbd verify --deep` over the new set (the survivors and NEW) is HEALTHY
//! and NEW holds parts of every chunk.

mod common;
#[path = "common/repair_support.rs"]
mod repair_support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;

use common::fixture::{CHUNK, Fixture, Kind, SIZE, seeded};
use common::raw::Client;
use common::{Daemon, bins, qbd};
use repair_support::{report, state};

/// Bytes per client write.
const BLOCK: u64 = 4096;
/// At most this many writes per writer (the loop's bound).
const MAX_WRITES: u64 = 200_000;

/// A client writing 4 KiB blocks at seeded places until told to stop.
struct Writer {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    handle: thread::JoinHandle<Vec<(u64, Vec<u8>)>>,
}

impl Writer {
    /// Starts writing; returns once the first writes are acknowledged.
    fn start(addr: SocketAddr, name: &str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel();
        let (s, d, name) = (Arc::clone(&stop), Arc::clone(&done), name.to_owned());
        let handle = thread::spawn(move || write_until(addr, &name, &s, &d, &tx));
        rx.recv_timeout(common::DAEMON_TIMEOUT)
            .unwrap_or_else(|e| panic!("the writer did not get going: {e}"));
        Writer { stop, done, handle }
    }

    fn count(&self) -> u64 {
        self.done.load(Ordering::Acquire)
    }

    /// Stops it; returns its writes in order.
    fn finish(self) -> Vec<(u64, Vec<u8>)> {
        self.stop.store(true, Ordering::Release);
        self.handle
            .join()
            .unwrap_or_else(|_| panic!("the writer panicked"))
    }
}

fn write_until(
    addr: SocketAddr,
    name: &str,
    stop: &AtomicBool,
    done: &AtomicU64,
    started: &mpsc::Sender<()>,
) -> Vec<(u64, Vec<u8>)> {
    let mut c = Client::connect(addr, name);
    let mut writes = Vec::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..MAX_WRITES {
        if stop.load(Ordering::Acquire) {
            break;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = (x % (SIZE / BLOCK)) * BLOCK;
        let data = seeded(x, BLOCK as usize);
        assert_eq!(c.write(off, &data), Ok(()), "write {i} at {off}");
        writes.push((off, data));
        done.store(i + 1, Ordering::Release);
        if i == 20 {
            let _ = started.send(());
        }
    }
    assert_eq!(c.flush(), Ok(()), "flush");
    c.disconnect();
    writes
}

/// Reads the whole volume through the master at `addr`.
fn read_all(addr: SocketAddr, name: &str) -> Vec<u8> {
    let mut c = Client::connect(addr, name);
    let mut out = Vec::with_capacity(SIZE as usize);
    for i in 0..SIZE >> 20 {
        out.extend(
            c.read(i << 20, 1 << 20)
                .unwrap_or_else(|e| panic!("read MiB {i}: errno {e}")),
        );
    }
    c.disconnect();
    out
}

/// `flags` without the backend flag naming `gone` (and its value).
fn without(flags: &[String], gone: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < flags.len() {
        if i + 1 < flags.len() && flags[i + 1] == gone {
            i += 2;
            continue;
        }
        out.push(flags[i].clone());
        i += 1;
    }
    out
}

fn flag_value(flags: &[String], name: &str) -> String {
    let i = flags
        .iter()
        .position(|x| x == name)
        .unwrap_or_else(|| panic!("no {name} in {flags:?}"));
    flags[i + 1].clone()
}

/// OLD gone for good: its directory deleted, or its node stopped.
fn lose(f: &mut Fixture, old: usize) {
    match f.kind {
        Kind::Dirs => std::fs::remove_dir_all(f.root(old))
            .unwrap_or_else(|e| panic!("delete {}: {e}", f.root(old).display())),
        Kind::Nodes => f.make_unreachable(old),
    }
}

/// A fresh NEW: `(backend flag, its value, the node serving it)`.
fn fresh(f: &Fixture, dir: &tempfile::TempDir) -> (&'static str, String, Option<Daemon>) {
    match f.kind {
        Kind::Dirs => ("--dir", dir.path().display().to_string(), None),
        Kind::Nodes => {
            let key = flag_value(&f.backend_args(), "--cluster-key");
            let mut cmd = Command::new(&bins().node);
            cmd.arg("--data")
                .arg(dir.path())
                .args(["--listen", "127.0.0.1:0", "--id", "fresh"])
                .args(["--cluster-key", &key]);
            let d = Daemon::start(cmd, "qbd-node: ready ");
            ("--node", d.field("tcp"), Some(d))
        }
    }
}

fn replaced_online(kind: Kind, redundancy: &str, backends: usize) {
    let mut f = Fixture::new(kind, "online", redundancy, backends);
    let mut model = f.write(41);
    let master = f.start_master();
    let addr: SocketAddr = master
        .field("tcp")
        .parse()
        .unwrap_or_else(|e| panic!("tcp=: {e}"));
    let writer = Writer::start(addr, &f.name);

    let old = 1;
    let old_id = f.backend_id(old);
    let old_flag = match kind {
        Kind::Dirs => f.root(old).display().to_string(),
        Kind::Nodes => f.addr(old).to_owned(),
    };
    lose(&mut f, old);
    let new_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (new_flag, new_arg, _node) = fresh(&f, &new_dir);
    let flags = without(&f.backend_args(), &old_flag);
    let mut args = vec!["repair".to_owned()];
    args.extend(flags.clone());
    args.extend(["--state".to_owned(), state(&f).display().to_string()]);
    args.extend([
        "--json".to_owned(),
        "--max-rate".to_owned(),
        "4M".to_owned(),
    ]);
    args.extend(["--replace".to_owned(), format!("{old_id}={new_arg}")]);
    let before = writer.count();
    let out = qbd(&args);
    let during = writer.count() - before;
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(
        out.stderr.contains("through the running master")
            && out.stderr.contains("through the master: backend 1 is now"),
        "the master made the switch: {out:#?}"
    );
    assert!(report(&out).all_repaired(), "{out:#?}");
    assert!(during > 0, "the client wrote while the replace ran");

    for (off, data) in writer.finish() {
        let off = off as usize;
        model[off..off + data.len()].copy_from_slice(&data);
    }
    assert!(
        read_all(addr, &f.name) == model,
        "a block read back through the master differs from what was written"
    );
    master.stop();

    let mut new_set = flags;
    new_set.extend([new_flag.to_owned(), new_arg]);
    let mut v = vec!["verify".to_owned()];
    v.extend(new_set);
    v.push("--deep".into());
    let deep = qbd(&v);
    assert_eq!(
        deep.code,
        Some(0),
        "verify --deep over the new set: {deep:#?}"
    );
    assert!(deep.stdout.contains("HEALTHY"), "{deep:#?}");
    let parts = common::damage::volume_dir(new_dir.path());
    let held = (0..SIZE / CHUNK)
        .filter(|c| {
            std::fs::read_dir(&parts).is_ok_and(|letters| {
                letters
                    .filter_map(Result::ok)
                    .any(|l| l.path().join(c.to_string()).is_file())
            })
        })
        .count() as u64;
    assert_eq!(held, SIZE / CHUNK, "NEW holds a part of every chunk");
}

#[test]
fn replicate2_over_dirs_replaced_while_a_client_writes() {
    replaced_online(Kind::Dirs, "replicate:2", 2);
}

#[test]
fn replicate2_over_nodes_replaced_while_a_client_writes() {
    replaced_online(Kind::Nodes, "replicate:2", 2);
}
