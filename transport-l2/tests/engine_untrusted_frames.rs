//! Any host on the segment can send frames. Garbage, truncated frames and
//! frames for other addresses, EtherTypes or sessions change nothing; a
//! forged request that the node rejects (its MAC fails upstairs) does not
//! shadow the genuine one.

mod engine_sim;

use std::time::{Duration, Instant};

use engine_sim::{Dir, LinkParams, MASTER, NODE, Rng, Sim};
use qbd_transport_l2::engine::wire::{FLAG_BUNDLE, Frame};
use qbd_transport_l2::engine::{Client, Config, Server, ServerEvent};

#[test]
fn garbage_and_foreign_frames_change_nothing() {
    let mut sim = Sim::new(11, 1500, LinkParams::hostile());
    sim.recording = Some(Vec::new());
    let mut rng = Rng(0xbad);
    for tag in 0..60 {
        sim.submit(tag, 3000, &vec![tag as u8; (tag * 700) as usize]);
    }
    let mut next_junk = sim.now;
    while sim.client.unfinished() > 0 {
        let recorded = sim.recording.as_ref().map_or(0, Vec::len);
        let burst = if sim.now >= next_junk { 2 } else { 0 };
        next_junk = next_junk.max(sim.now + Duration::from_micros(10 * burst));
        for _ in 0..burst {
            let dir = if rng.below(2) == 0 {
                Dir::ToServer
            } else {
                Dir::ToClient
            };
            let len = rng.below(200) as usize;
            let mut junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if recorded > 0 && rng.below(2) == 0 {
                // A real frame, truncated, or re-addressed elsewhere.
                let f = &sim.recording.as_ref().expect("recording")
                    [rng.below(recorded as u64) as usize];
                junk = f.clone();
                match rng.below(4) {
                    0 => junk.truncate(rng.below(f.len() as u64) as usize),
                    1 => junk[12] ^= 1,    // EtherType
                    2 => junk[20] ^= 0x80, // client epoch
                    _ => junk[0] ^= 0x40,  // destination
                }
            }
            sim.inject(dir, junk);
        }
        assert!(sim.step());
        assert!(sim.now - sim.t0 < Duration::from_secs(10));
    }
    for (tag, o) in &sim.outcomes {
        assert_eq!(
            (o.delivered, o.bad_response, o.failed.len()),
            (1, 0, 0),
            "tag {tag}"
        );
        assert_eq!(sim.executions(*tag), 1);
    }
    let s = sim.server.stats();
    assert!(s.malformed > 0 && s.foreign > 0, "{s:?}");
}

#[test]
fn rejected_forgery_does_not_shadow_the_genuine_request() {
    let now = Instant::now();
    let cfg = Config {
        epoch: 3,
        ..Config::default()
    };
    let mut client = Client::new(cfg.clone(), MASTER, NODE);
    let mut server = Server::new(
        Config {
            epoch: 9,
            ..cfg.clone()
        },
        NODE,
        MASTER,
        3,
    );
    let mut buf = vec![0u8; cfg.frame_capacity()];
    client.send(now, b"genuine".to_vec()).expect("fits");
    let n = client.poll_transmit(now, &mut buf).expect("a frame");
    let genuine = buf[..n].to_vec();
    // The attacker guesses the session and number and gets there first.
    let h = Frame::decode(&genuine).expect("valid").header;
    let mut forged = vec![0u8; cfg.frame_capacity()];
    let m = Frame {
        header: h,
        payload: b"FORGED!",
    }
    .encode(&mut forged)
    .expect("fits");
    server.handle_frame(now, &forged[..m]);
    let Some(ServerEvent::Request { id, message }) = server.poll_event() else {
        panic!("delivered");
    };
    assert_eq!(message, b"FORGED!");
    server.reject(id); // its MAC failed in the node protocol
    server.handle_frame(now, &genuine);
    let Some(ServerEvent::Request { id: id2, message }) = server.poll_event() else {
        panic!("the genuine copy is delivered");
    };
    assert_eq!((id2, message.as_slice()), (id, &b"genuine"[..]));
    let later = now + Duration::from_millis(1);
    assert!(server.respond(later, id2, b"ok".to_vec()).expect("fits"));
}

#[test]
fn a_bundle_that_is_not_whole_segments_is_dropped_whole() {
    let now = Instant::now();
    let cfg = Config {
        epoch: 3,
        ..Config::default()
    };
    let mut client = Client::new(cfg.clone(), MASTER, NODE);
    let server_cfg = Config {
        epoch: 9,
        ..cfg.clone()
    };
    let mut server = Server::new(server_cfg, NODE, MASTER, 3);
    for m in [&b"one"[..], b"two", b"three"] {
        client.send(now, m.to_vec()).expect("fits");
    }
    let mut buf = vec![0u8; cfg.frame_capacity()];
    let n = client.poll_transmit(now, &mut buf).expect("a frame");
    let bundle = buf[..n].to_vec();
    assert_eq!(
        client.poll_transmit(now, &mut buf),
        None,
        "all in one frame"
    );
    let f = Frame::decode(&bundle).expect("valid");
    assert_ne!(
        f.header.flags & FLAG_BUNDLE,
        0,
        "three small messages, one bundle"
    );
    assert_eq!(client.stats().bundles_sent, 1);
    // The same bundle one byte short: its whole first segments are not
    // delivered either.
    let mut cut = vec![0u8; cfg.frame_capacity()];
    let m = Frame {
        header: f.header,
        payload: &f.payload[..f.payload.len() - 1],
    }
    .encode(&mut cut)
    .expect("fits");
    server.handle_frame(now, &cut[..m]);
    assert_eq!(server.poll_event(), None);
    assert_eq!(server.stats().malformed, 1);
    server.handle_frame(now, &bundle);
    let got: Vec<Vec<u8>> = std::iter::from_fn(|| match server.poll_event() {
        Some(ServerEvent::Request { message, .. }) => Some(message),
        _ => None,
    })
    .collect();
    assert_eq!(got, [&b"one"[..], b"two", b"three"]);
}
