//! `qbd repair --replace OLD=NEW`: a backend is gone for good (its node
//! stopped, its directory moved away); named by its UUID and left out of
//! the backend flags, it is replaced by a fresh directory or node. The
//! placement table names NEW on every backend, the repair fills NEW
//! (exit 0), `qbd verify --deep` over the new set is clean, a master on
//! the new set reads back every byte written, and the same replace run
//! again has nothing left to do.

mod common;
#[path = "common/repair_support.rs"]
mod repair_support;

use std::process::Command;

use common::fixture::{Fixture, Kind, SIZE};
use common::raw::Client;
use common::{Daemon, bins, qbd};
use repair_support::{report, state};

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

fn replaced(kind: Kind, redundancy: &str, backends: usize) {
    let mut f = Fixture::new(kind, "moved", redundancy, backends);
    let want = f.write(21);
    let old = 1;
    let old_id = f.backend_id(old);
    let old_flag = match kind {
        Kind::Dirs => f.root(old).display().to_string(),
        Kind::Nodes => f.addr(old).to_owned(),
    };
    f.make_unreachable(old);
    let fresh = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut _node = None;
    let (new_flag, new_arg) = match kind {
        Kind::Dirs => ("--dir", fresh.path().display().to_string()),
        Kind::Nodes => {
            let key = flag_value(&f.backend_args(), "--cluster-key");
            let mut cmd = Command::new(&bins().node);
            cmd.arg("--data")
                .arg(fresh.path())
                .args(["--listen", "127.0.0.1:0", "--id", "fresh"])
                .args(["--cluster-key", &key]);
            let d = Daemon::start(cmd, "qbd-node: ready ");
            let addr = d.field("tcp");
            _node = Some(d);
            ("--node", addr)
        }
    };
    let flags = without(&f.backend_args(), &old_flag);
    let mut args = vec!["repair".to_owned()];
    args.extend(flags.clone());
    args.extend(["--state".to_owned(), state(&f).display().to_string()]);
    args.extend(["--json".to_owned(), "--replace".to_owned()]);
    args.push(format!("{old_id}={new_arg}"));
    let out = qbd(&args);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let r = report(&out);
    let chunks = SIZE / common::fixture::CHUNK;
    assert_eq!((r.stale, r.parts_rebuilt), (chunks, chunks), "{r:#?}");

    let mut new_set = flags.clone();
    new_set.extend([new_flag.to_owned(), new_arg.clone()]);
    let mut v = vec!["verify".to_owned()];
    v.extend(new_set.clone());
    v.push("--deep".into());
    let deep = qbd(&v);
    assert_eq!(
        deep.code,
        Some(0),
        "verify --deep over the new set: {deep:#?}"
    );
    assert!(read_back(&f, &old_flag, new_flag, &new_arg) == want);
    let again = qbd(&args);
    assert_eq!(again.code, Some(0), "the same replace again: {again:#?}");
    let r = report(&again);
    assert_eq!(
        (r.stale, r.parts_rebuilt),
        (0, 0),
        "nothing left to do: {r:#?}"
    );
}

/// Reads the volume through a master on the new backend set.
fn read_back(f: &Fixture, old_flag: &str, new_flag: &str, new_arg: &str) -> Vec<u8> {
    let mut a = without(&f.master_args(), old_flag);
    a.extend([new_flag.to_owned(), new_arg.to_owned()]);
    let mut cmd = Command::new(&bins().master);
    cmd.args(&a);
    let master = Daemon::start(cmd, "qbd-master: ready ");
    let addr = master
        .field("tcp")
        .parse()
        .unwrap_or_else(|e| panic!("tcp=: {e}"));
    let mut c = Client::connect(addr, &f.name);
    let mut out = Vec::new();
    for i in 0..SIZE >> 20 {
        out.extend(
            c.read(i << 20, 1 << 20)
                .unwrap_or_else(|e| panic!("read MiB {i}: errno {e}")),
        );
    }
    c.disconnect();
    master.stop();
    out
}

#[test]
fn replicate3_over_dirs_replaced_by_a_fresh_dir() {
    replaced(Kind::Dirs, "replicate:3", 3);
}

#[test]
fn ec4_2_over_nodes_replaced_by_a_fresh_node() {
    replaced(Kind::Nodes, "ec:4+2", 6);
}
