//! The engines' own cost per request, without sockets: a client and a
//! server exchange frames in memory, QD requests in flight, 64-byte
//! requests and 4 KiB responses at MTU 9000, a virtual clock. Run it under
//! `valgrind --tool=callgrind` (instruction counts do not depend on what
//! else the machine does) and divide by the request count it prints:
//!
//! ```text
//! cargo build --release -p qbd-transport-l2 --example engine_cost
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     target/release/examples/engine_cost 20000 32
//! ```

use std::time::{Duration, Instant};

use qbd_transport_l2::engine::{Client, ClientEvent, Config, Mac, Server, ServerEvent};

fn main() {
    let mut args = std::env::args().skip(1);
    let total: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let qd: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(32);
    let (m, n) = (Mac([2, 0, 0, 0, 0, 1]), Mac([2, 0, 0, 0, 0, 2]));
    let cfg = Config {
        mtu: 9000,
        epoch: 7,
        ..Config::default()
    };
    let mut client = Client::new(cfg.clone(), m, n);
    let mut server = Server::new(
        Config {
            epoch: 9,
            ..cfg.clone()
        },
        n,
        m,
        7,
    );
    let mut now = Instant::now();
    let mut buf = vec![0u8; cfg.frame_capacity()];
    let response = vec![0x5au8; 4096 + 48];
    let (mut sent, mut done) = (0u64, 0u64);
    let mut steps = 0u64;
    while done < total && steps < total * 100 {
        steps += 1;
        while sent < total && sent - done < qd {
            client.send(now, vec![1u8; 64]).expect("fits");
            sent += 1;
        }
        while let Some(len) = client.poll_transmit(now, &mut buf) {
            server.handle_frame(now, &buf[..len]);
        }
        while let Some(ServerEvent::Request { id, .. }) = server.poll_event() {
            server.respond(now, id, response.clone()).expect("fits");
        }
        while let Some(len) = server.poll_transmit(now, &mut buf) {
            client.handle_frame(now, &buf[..len]);
        }
        while let Some(ev) = client.poll_event() {
            if matches!(ev, ClientEvent::Delivered { .. }) {
                done += 1;
            }
        }
        now += Duration::from_micros(5);
        if client.poll_timeout().is_some_and(|t| t <= now) {
            client.handle_timeout(now);
        }
        if server.poll_timeout().is_some_and(|t| t <= now) {
            server.handle_timeout(now);
        }
    }
    println!(
        "requests {done} qd {qd} steps {steps} client {:?} server {:?}",
        client.stats(),
        server.stats()
    );
}
