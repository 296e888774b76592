//! `--max-connections`: at the limit the next client is refused during the
//! handshake (its options answered NBD_REP_ERR_POLICY "too many
//! connections"), and once a served client disconnects a new one is
//! served. Checked with the raw client and with nbdinfo and qemu-img.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::raw::{self, Client};
use common::tools::{require_tool, run};
use common::{Backing, Master, Volume};

const OPT_ABORT: u32 = 2;
const OPT_GO: u32 = 7;
const REP_ACK: u32 = 1;
const REP_ERR_POLICY: u32 = (1 << 31) + 2;

fn master(limit: &str) -> (Volume, Master) {
    let vol = Volume::new("limited", 1, Backing::Disk);
    let m = Master::start(&vol.args("16M", &["--max-connections", limit]));
    (vol, m)
}

/// A raw client past the greeting and flags.
fn haggling(m: &Master) -> TcpStream {
    let mut s = raw::connect(m.addr);
    raw::read_greeting(&mut s);
    let flags = u32::from(raw::FLAG_FIXED_NEWSTYLE);
    s.write_all(&flags.to_be_bytes()).expect("flags");
    s
}

/// Sends OPT_GO for `export`; returns the reply type and data.
fn go(s: &mut TcpStream, export: &str) -> (u32, Vec<u8>) {
    let mut data = (export.len() as u32).to_be_bytes().to_vec();
    data.extend_from_slice(export.as_bytes());
    data.extend_from_slice(&0u16.to_be_bytes());
    let mut msg = raw::option_header(OPT_GO, data.len());
    msg.extend_from_slice(&data);
    s.write_all(&msg).expect("send GO");
    let (option, reply, data) = raw::read_option_reply(s);
    assert_eq!(option, OPT_GO);
    (reply, data)
}

/// Connects until the master has noticed a disconnect and serves again
/// (bounded): a refused EXPORT_NAME is a closed connection.
fn served_again(m: &Master) -> Client {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Client::try_connect(m.addr, &m.volume) {
            Ok(c) => return c,
            Err(e) => assert!(Instant::now() < deadline, "still refused: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_connection_past_the_limit_is_refused_until_one_leaves() {
    let (_vol, m) = master("2");
    let mut a = Client::connect(m.addr, &m.volume);
    let b = Client::connect(m.addr, &m.volume);
    // The third: every option refused with the reason, ABORT acknowledged.
    let mut c = haggling(&m);
    let (reply, text) = go(&mut c, &m.volume);
    let text = String::from_utf8_lossy(&text).into_owned();
    assert_eq!(reply, REP_ERR_POLICY, "{text}");
    assert!(text.contains("too many connections"), "{text}");
    assert!(text.contains("--max-connections"), "{text}");
    c.write_all(&raw::option_header(OPT_ABORT, 0))
        .expect("ABORT");
    let (option, reply, _) = raw::read_option_reply(&mut c);
    assert_eq!((option, reply), (OPT_ABORT, REP_ACK));
    raw::expect_closed(&mut c, "after ABORT");
    // A refused EXPORT_NAME (no error reply exists) closes the connection.
    let mut d = haggling(&m);
    let mut msg = raw::option_header(raw::OPT_EXPORT_NAME, m.volume.len());
    msg.extend_from_slice(m.volume.as_bytes());
    d.write_all(&msg).expect("EXPORT_NAME");
    raw::expect_closed(&mut d, "refused EXPORT_NAME");
    // The served ones still work; once one leaves, a new one is served.
    assert_eq!(a.read(0, 4096).expect("read"), vec![0; 4096]);
    b.disconnect();
    let mut e = served_again(&m);
    assert_eq!(e.read(4096, 4096).expect("read"), vec![0; 4096]);
    let log = m.stop_cleanly();
    assert!(log.contains("refused: too many connections"), "{log}");
}

#[test]
fn nbdinfo_and_qemu_img_report_the_refusal() {
    let Some(nbdinfo) = require_tool("nbdinfo") else {
        return;
    };
    let (_vol, m) = master("1");
    let uri = m.uri();
    let held = Client::connect(m.addr, &m.volume);
    let mut cmd = Command::new(&nbdinfo);
    cmd.arg(&uri).env("LIBNBD_DEBUG", "1");
    let out = run(cmd);
    out.assert_failure();
    // libnbd 1.14 prints the server's text only in its debug output.
    assert!(out.stderr.contains("server replied with error"), "{out}");
    assert!(out.stderr.contains("too many connections"), "{out}");
    if let Some(qemu_img) = require_tool("qemu-img") {
        let mut cmd = Command::new(qemu_img);
        cmd.args(["info", &uri]);
        let out = run(cmd);
        out.assert_failure();
        assert!(out.stderr.contains("too many connections"), "{out}");
    }
    held.disconnect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut cmd = Command::new(&nbdinfo);
        cmd.arg(&uri);
        let out = run(cmd);
        if out.success() {
            assert!(out.stdout.contains("export-size: 16777216"), "{out}");
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {out}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
