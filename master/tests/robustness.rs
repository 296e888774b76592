//! `qbd-master` facing misbehaving clients: garbage, clients that vanish mid-handshake,
//! mid-request and mid-payload, oversized and out-of-range requests. After each, the master must
//! have answered or dropped that client (within a bound), and another client must still get the
//! right data. Raw bytes come from `common::raw`, a hand-rolled client over `TcpStream`.

mod common;

use std::io::Write;
use std::process::Command;

use common::data::{Prng, assert_same, random_bytes};
use common::raw::{self, Client};
use common::tools::{require_tool, run};
use common::{Backing, Master, Volume};

/// Known data at two places: the start of the volume and across a chunk boundary.
const REGIONS: [(u64, usize); 2] = [(0, 65536), (4 * 1024 * 1024 - 10_000, 30_000)];

/// A master on a 128 MiB volume (large enough that a 64 MiB read is in range) holding known
/// data at `REGIONS`.
fn master_with_data() -> (Volume, Master) {
    let volume = Volume::new("robust", 1, Backing::Shm);
    let master = Master::start(&volume.args("128M", &[]));
    let mut client = Client::connect(master.addr, &master.volume);
    for (i, &(offset, len)) in REGIONS.iter().enumerate() {
        client
            .write(offset, &region_data(i, len))
            .expect("seed write");
    }
    client.disconnect();
    (volume, master)
}

fn region_data(i: usize, len: usize) -> Vec<u8> {
    random_bytes(0x5eed_1000 + i as u64, len)
}

/// Another client still completes a handshake and reads back the known data; nbdinfo (a real
/// client) still gets the export's size.
fn assert_still_serves(master: &Master) {
    let mut client = Client::connect(master.addr, &master.volume);
    assert_eq!(client.size, 128 << 20, "export size after abuse");
    for (i, &(offset, len)) in REGIONS.iter().enumerate() {
        let got = client.read(offset, len as u32).expect("read after abuse");
        assert_same("known data after abuse", &region_data(i, len), &got);
    }
    client.disconnect();
    if let Some(nbdinfo) = require_tool("nbdinfo") {
        let mut cmd = Command::new(nbdinfo);
        cmd.args(["--size", &master.uri()]);
        let out = run(cmd);
        out.assert_success();
        assert_eq!(
            out.stdout.trim(),
            (128u64 << 20).to_string(),
            "nbdinfo --size"
        );
    }
}

#[test]
fn random_garbage_instead_of_a_handshake_is_dropped() {
    let (_volume, master) = master_with_data();
    let mut stream = raw::connect(master.addr);
    raw::read_greeting(&mut stream);
    let garbage = random_bytes(0x5eed_2001, 4096);
    let _ = stream.write_all(&garbage); // the server may close before reading it all
    raw::expect_closed(&mut stream, "after 4 KiB of garbage");
    assert_still_serves(&master);
}

#[test]
fn http_request_is_dropped() {
    let (_volume, master) = master_with_data();
    let mut stream = raw::connect(master.addr);
    let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    raw::expect_closed(&mut stream, "after an HTTP request");
    assert_still_serves(&master);
}

#[test]
fn client_vanishing_mid_handshake_is_harmless() {
    let (_volume, master) = master_with_data();
    drop(raw::connect(master.addr)); // before reading the greeting
    let mut stream = raw::connect(master.addr);
    raw::read_greeting(&mut stream);
    stream.write_all(&1u32.to_be_bytes()).expect("client flags");
    stream
        .write_all(&raw::option_header(raw::OPT_EXPORT_NAME, 6)[..10])
        .expect("half an option");
    drop(stream);
    assert_still_serves(&master);
}

#[test]
fn client_vanishing_mid_request_header_is_harmless() {
    let (_volume, master) = master_with_data();
    let mut client = Client::connect(master.addr, &master.volume);
    let header = raw::request_header(raw::CMD_WRITE, 1, 0, 4096);
    client
        .stream
        .write_all(&header[..13])
        .expect("half a header");
    drop(client);
    assert_still_serves(&master);
}

#[test]
fn client_vanishing_mid_write_payload_changes_nothing() {
    let (_volume, master) = master_with_data();
    let mut client = Client::connect(master.addr, &master.volume);
    let (offset, len) = REGIONS[1];
    let header = raw::request_header(raw::CMD_WRITE, 1, offset, len as u32);
    client.stream.write_all(&header).expect("header");
    client
        .stream
        .write_all(&[0xee; 1000])
        .expect("part of the payload");
    drop(client);
    // The incomplete write must not land, not even in part: assert_still_serves reads REGIONS.
    assert_still_serves(&master);
}

#[test]
fn oversized_read_is_answered_or_dropped() {
    let (_volume, master) = master_with_data();
    let mut client = Client::connect(master.addr, &master.volume);
    let handle = client.send_request(raw::CMD_READ, 0, 64 << 20);
    match client.read_reply() {
        Err(_) => {} // hard disconnect: the spec allows it for a payload this large
        Ok(reply) => {
            assert_eq!(reply.handle, handle);
            if reply.error == 0 {
                // Served: the 64 MiB payload follows and the connection stays usable.
                let mut payload = vec![0u8; 64 << 20];
                std::io::Read::read_exact(&mut client.stream, &mut payload).expect("payload");
                assert_same(
                    "oversized read",
                    &region_data(0, REGIONS[0].1),
                    &payload[..REGIONS[0].1],
                );
            }
            let still = client
                .read(0, 512)
                .expect("same connection after the oversized read");
            assert_same("read after oversized read", &region_data(0, 512), &still);
        }
    }
    assert_still_serves(&master);
}

#[test]
fn read_past_the_end_is_einval_and_the_connection_survives() {
    let (_volume, master) = master_with_data();
    let mut client = Client::connect(master.addr, &master.volume);
    assert_eq!(
        client.read(client.size - 512, 4096),
        Err(raw::EINVAL),
        "read across the end"
    );
    assert_eq!(
        client.read(client.size, 512),
        Err(raw::EINVAL),
        "read at the end"
    );
    assert_eq!(
        client.read(u64::MAX - 100, 4096),
        Err(raw::EINVAL),
        "offset + length overflows"
    );
    let still = client
        .read(0, 4096)
        .expect("same connection after the refused reads");
    assert_same("read after refused reads", &region_data(0, 4096), &still);
    client.disconnect();
    assert_still_serves(&master);
}

#[test]
fn write_past_the_end_is_refused_and_the_connection_survives() {
    let (_volume, master) = master_with_data();
    let mut client = Client::connect(master.addr, &master.volume);
    let size = client.size;
    let result = client.write(size - 512, &[0xee; 4096]);
    // The spec says ENOSPC (SHOULD); EINVAL is the other answer servers give.
    assert!(
        matches!(result, Err(raw::ENOSPC | raw::EINVAL)),
        "write across the end: {result:?}"
    );
    let tail = client.read(size - 512, 512).expect("read the last sector");
    assert_same("last sector after refused write", &[0u8; 512], &tail);
    client.disconnect();
    assert_still_serves(&master);
}

#[test]
fn many_clients_vanishing_at_random_points_leave_the_server_serving() {
    let (_volume, master) = master_with_data();
    let mut prng = Prng::new(0x5eed_3001);
    for _ in 0..50 {
        let mut client = Client::connect(master.addr, &master.volume);
        let offset = prng.next_u64() % (client.size - 65536);
        let header = raw::request_header(raw::CMD_WRITE, 9, offset, 65536);
        let cut = (prng.next_u64() % 28) as usize + 1;
        let _ = client.stream.write_all(&header[..cut]);
        drop(client);
    }
    assert_still_serves(&master);
}

#[test]
fn silent_client_is_dropped_after_the_handshake_timeout() {
    let volume = Volume::new("robust", 1, Backing::Disk);
    let master = Master::start(&volume.args("16M", &["--handshake-timeout", "1"]));
    let mut stream = raw::connect(master.addr);
    raw::read_greeting(&mut stream);
    raw::expect_closed(&mut stream, "a client that never sends its flags");
}

#[test]
fn unknown_option_gets_err_unsup_and_haggling_continues() {
    let (_volume, master) = master_with_data();
    let client = Client::connect_after(master.addr, &master.volume, |stream| {
        let mut msg = raw::option_header(0x00c0_ffee, 5);
        msg.extend_from_slice(b"hello");
        stream.write_all(&msg).expect("unknown option");
        let (option, reply_type, _) = raw::read_option_reply(stream);
        assert_eq!((option, reply_type), (0x00c0_ffee, raw::REP_ERR_UNSUP));
    });
    assert_eq!(client.size, 128 << 20);
    client.disconnect();
    assert_still_serves(&master);
}

#[test]
fn unknown_command_is_einval_and_the_connection_survives() {
    let (_volume, master) = master_with_data();
    let mut client = Client::connect(master.addr, &master.volume);
    let handle = client.send_request(0x42, 0, 0);
    let reply = client.read_reply().expect("a reply to the unknown command");
    assert_eq!(
        reply,
        raw::Reply {
            error: raw::EINVAL,
            handle
        }
    );
    let still = client
        .read(0, 4096)
        .expect("same connection after the unknown command");
    assert_same("read after unknown command", &region_data(0, 4096), &still);
    client.disconnect();
    assert_still_serves(&master);
}

#[test]
fn client_resetting_with_requests_in_flight_is_harmless() {
    let (_volume, master) = master_with_data();
    let mut client = Client::connect(master.addr, &master.volume);
    for i in 0..32u64 {
        client.send_request(raw::CMD_READ, i << 20, 1 << 20);
    }
    client.read_reply().expect("the first reply");
    // Closing with unread replies in the receive buffer makes the kernel send RST, not FIN.
    drop(client);
    assert_still_serves(&master);
}

#[test]
fn flushed_writes_survive_a_crash_even_when_flushed_on_another_connection() {
    let volume = Volume::new("crash", 2, Backing::Shm);
    let args = volume.args("64M", &["--chunk-size", "1M"]);
    let master = Master::start(&args);
    let data = random_bytes(0x5eed_4001, 3 << 20);
    let offset = (1 << 20) - 12_345; // unaligned, across three chunk boundaries
    let mut writer = Client::connect(master.addr, &master.volume);
    for (i, piece) in data.chunks(256 << 10).enumerate() {
        writer
            .write(offset + (i as u64) * (256 << 10), piece)
            .expect("write");
    }
    // CAN_MULTI_CONN: a flush on any connection covers every write replied to before it.
    let mut flusher = Client::connect(master.addr, &master.volume);
    flusher.flush().expect("flush");
    master.crash();

    let master = Master::start(&args);
    let mut reader = Client::connect(master.addr, &master.volume);
    let got = reader
        .read(offset, data.len() as u32)
        .expect("read after restart");
    assert_same("flushed data after SIGKILL and restart", &data, &got);
}

#[test]
fn max_payload_write_and_read_round_trip_in_one_request_each() {
    let (_volume, master) = master_with_data();
    let mut client = Client::connect(master.addr, &master.volume);
    let data = random_bytes(0x5eed_5001, 32 << 20);
    let offset = 64 << 20;
    client.write(offset, &data).expect("32 MiB write");
    let got = client.read(offset, 32 << 20).expect("32 MiB read");
    assert_same("32 MiB round trip", &data, &got);
    client.disconnect();
    assert_still_serves(&master);
}
