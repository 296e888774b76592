//! The `qbd-node` binary: key handling, the ready line, SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use qbd_core::proto::ClusterKey;
use qbd_core::proto::frame::{FrameHeader, FrameKind, HEADER_LEN};
use qbd_core::proto::msg::{Request, Response};
use qbd_core::proto::session::ClientHandshake;

fn node(data: &std::path::Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qbd-node"));
    cmd.arg("--data")
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--id", "n7"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Reads the ready line; returns the TCP address it names.
fn ready(child: &mut Child) -> String {
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .expect("ready line");
    assert!(
        line.starts_with("qbd-node: ready id=n7 backend="),
        "{line:?}"
    );
    line.trim_end()
        .rsplit_once(" tcp=")
        .expect("tcp= field")
        .1
        .to_string()
}

fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut hdr = [0u8; HEADER_LEN];
    s.read_exact(&mut hdr).expect("header");
    let h = FrameHeader::decode(&hdr).expect("header decodes");
    let mut f = vec![0u8; h.frame_len()];
    f[..HEADER_LEN].copy_from_slice(&hdr);
    s.read_exact(&mut f[HEADER_LEN..]).expect("frame");
    f
}

fn ping(addr: &str, key: &ClusterKey) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (hs, hello) = ClientHandshake::start(key, [7; 32], "daemon-test");
    s.write_all(&hello).expect("hello");
    let (mut session, _) = hs.finish(&read_frame(&mut s)).expect("handshake");
    let mut payload = Vec::new();
    Request::Ping.encode(&mut payload);
    let mut frame = Vec::new();
    session.seal(
        FrameKind::Request,
        Request::Ping.opcode(),
        1,
        &payload,
        &mut frame,
    );
    s.write_all(&frame).expect("ping");
    let answer = read_frame(&mut s);
    let (h, p) = session.open(&answer).expect("pong verifies");
    assert_eq!(Response::decode(h.opcode, p), Ok(Response::Pong));
}

fn terminate(child: &mut Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success());
    let status = child.wait().expect("node exits");
    assert!(status.success(), "exit after SIGTERM: {status:?}");
}

#[test]
fn refuses_to_start_without_a_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = node(dir.path(), &[]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--cluster-key"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn refuses_a_malformed_key_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key");
    std::fs::write(&key, "not hex\n").expect("write key");
    let out = node(dir.path(), &["--cluster-key", key.to_str().expect("utf-8")])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
}

/// Key files that are not 64 hex digits: multi-byte UTF-8 (64 bytes, so a
/// byte-offset slicer would cut a character), invalid UTF-8, empty, short.
const BAD_KEYS: [&[u8]; 5] = [
    "é0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd".as_bytes(),
    b"\xff\xfe0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab",
    b"",
    b"abcd\n",
    "ключ ключ\n".as_bytes(),
];

#[test]
fn key_files_of_any_bytes_are_refused_clearly_without_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("cluster.key");
    for bytes in BAD_KEYS {
        std::fs::write(&key, bytes).expect("write key");
        let out = node(dir.path(), &["--cluster-key", key.to_str().expect("utf-8")])
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
    }
}

#[test]
fn serves_with_a_key_file_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = ClusterKey([0x33; 32]);
    let key_file = dir.path().join("cluster.key");
    std::fs::write(&key_file, format!("{}\n", key.to_hex())).expect("write key");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    let mut child = node(&data, &["--cluster-key", key_file.to_str().expect("utf-8")])
        .spawn()
        .expect("spawn");
    let addr = ready(&mut child);
    ping(&addr, &key);
    terminate(&mut child);
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    assert!(err.contains("stopped cleanly"), "{err}");
}

#[test]
fn insecure_mode_warns_and_uses_the_zero_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = node(dir.path(), &["--insecure"]).spawn().expect("spawn");
    let addr = ready(&mut child);
    ping(&addr, &ClusterKey::INSECURE);
    terminate(&mut child);
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    assert!(err.contains("WARNING: --insecure"), "{err}");
}
