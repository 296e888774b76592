//! `qbd-master` refuses a cluster key file that is not 64 hex digits —
//! multi-byte UTF-8, invalid UTF-8, empty, too short — with a clear error
//! naming the file and exit code 2, never a panic; before touching any
//! backend.

mod common;

use std::process::Command;

use common::{Backing, Volume};

const BAD_KEYS: [&[u8]; 5] = [
    // 64 bytes with a two-byte character: a byte-offset slicer panicked.
    "é0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd".as_bytes(),
    b"\xff\xfe0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab",
    b"",
    b"abcd\n",
    "ключ ключ\n".as_bytes(),
];

#[test]
fn key_files_of_any_bytes_are_refused_clearly_without_a_panic() {
    let vol = Volume::new("keyed", 1, Backing::Disk);
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("cluster.key");
    let key_arg = key.display().to_string();
    for extra in [vec![], vec!["--node", "127.0.0.1:1"]] {
        for bytes in BAD_KEYS {
            std::fs::write(&key, bytes).expect("write key");
            let mut args = vec!["--cluster-key", key_arg.as_str()];
            args.extend(&extra);
            let out = Command::new(env!("CARGO_BIN_EXE_qbd-master"))
                .args(vol.args("16M", &args))
                .output()
                .expect("runs");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{bytes:?}: {err}");
            assert!(!err.contains("panicked"), "{err}");
            assert!(
                err.contains("cluster key file") && err.contains("cluster.key"),
                "{err}"
            );
            assert!(err.contains("hexadecimal"), "{err}");
            assert!(out.stdout.is_empty(), "no ready line");
        }
    }
    // Nothing was created on the backend.
    let touched = std::fs::read_dir(vol.first_dir()).expect("list").count();
    assert_eq!(touched, 0, "the backend directory was written to");
}
