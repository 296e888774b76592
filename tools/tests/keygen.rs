//! `qbd keygen` run as a binary: the output format, and freshness.

use std::process::Command;

fn keygen() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_qbd"))
        .arg("keygen")
        .output()
        .expect("qbd runs");
    assert!(out.status.success(), "qbd keygen failed: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn keygen_prints_64_lowercase_hex_and_a_newline() {
    let key = keygen();
    let hex = key.strip_suffix('\n').expect("ends with a newline");
    assert_eq!(hex.len(), 64, "{key:?}");
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{key:?}"
    );
    assert!(qbd_core::proto::ClusterKey::from_hex(&key).is_ok());
}

#[test]
fn two_keys_differ() {
    assert_ne!(keygen(), keygen());
}
