//! A node that forgot a session (evicted, idle) answers its master's frames
//! with a `Reset` carrying `FLAG_UNKNOWN_SESSION` at its current epoch
//! (`docs/l2-protocol.md` §6, §7a): the master's engine fails what was in
//! flight with `PeerRestarted`, once, and reports `PeerRestarted` so the
//! link re-handshakes. The flag at an older epoch, or a plain `Reset` at the
//! current one, changes nothing.

use std::time::Instant;

use qbd_transport_l2::engine::admission::{FLAG_UNKNOWN_SESSION, reset_frame};
use qbd_transport_l2::engine::wire::Frame;
use qbd_transport_l2::engine::{Client, ClientEvent, Config, FailReason, Mac, Server, ServerEvent};

const MASTER: Mac = Mac([2, 0, 0, 0, 0, 1]);
const NODE: Mac = Mac([2, 0, 0, 0, 0, 2]);

/// A client that has heard the node (epoch 40) and has message 2 in flight;
/// returns it and the header of its last request frame.
fn client_with_one_in_flight() -> (Client, Frame<'static>, Vec<u8>) {
    let now = Instant::now();
    let ccfg = Config {
        epoch: 7,
        ..Config::default()
    };
    let scfg = Config {
        epoch: 40,
        ..Config::default()
    };
    let mut client = Client::new(ccfg.clone(), MASTER, NODE);
    let mut server = Server::new(scfg, NODE, MASTER, 7);
    let mut buf = vec![0u8; ccfg.frame_capacity()];
    client.send(now, b"one".to_vec()).expect("send");
    let n = client.poll_transmit(now, &mut buf).expect("frame");
    server.handle_frame(now, &buf[..n]);
    let Some(ServerEvent::Request { id, .. }) = server.poll_event() else {
        panic!("delivered");
    };
    server.respond(now, id, b"ok".to_vec()).expect("respond");
    let n = server.poll_transmit(now, &mut buf).expect("response");
    client.handle_frame(now, &buf[..n]);
    assert!(matches!(
        client.poll_event(),
        Some(ClientEvent::Delivered { .. })
    ));
    client.send(now, b"two".to_vec()).expect("send");
    let n = client.poll_transmit(now, &mut buf).expect("frame");
    buf.truncate(n);
    let frame = Frame::decode(&buf).expect("decodes");
    let header_only = Frame {
        header: frame.header,
        payload: &[],
    };
    (client, header_only, buf.clone())
}

fn reset(req: &Frame<'_>, epoch: u32, flags: u16) -> Vec<u8> {
    let mut buf = [0u8; 64];
    let n = reset_frame(&req.header, NODE, epoch, flags, &mut buf).expect("reset");
    buf[..n].to_vec()
}

#[test]
fn an_unknown_session_reset_fails_in_flight_once_and_asks_for_a_new_handshake() {
    let (mut client, req, _) = client_with_one_in_flight();
    assert_eq!(req.header.server_epoch, 40);
    client.handle_frame(Instant::now(), &reset(&req, 40, FLAG_UNKNOWN_SESSION));
    let events: Vec<ClientEvent> = std::iter::from_fn(|| client.poll_event()).collect();
    assert_eq!(
        events,
        vec![
            ClientEvent::Failed {
                id: qbd_transport_l2::engine::MsgId(2),
                why: FailReason::PeerRestarted
            },
            ClientEvent::PeerRestarted { epoch: 40 },
        ]
    );
    assert_eq!(client.unfinished(), 0);
    // A second copy finds nothing left to fail.
    client.handle_frame(Instant::now(), &reset(&req, 40, FLAG_UNKNOWN_SESSION));
    let more: Vec<ClientEvent> = std::iter::from_fn(|| client.poll_event()).collect();
    assert_eq!(more, vec![ClientEvent::PeerRestarted { epoch: 40 }]);
}

#[test]
fn a_plain_reset_or_an_older_epoch_changes_nothing() {
    let (mut client, req, _) = client_with_one_in_flight();
    client.handle_frame(Instant::now(), &reset(&req, 40, 0));
    client.handle_frame(Instant::now(), &reset(&req, 39, FLAG_UNKNOWN_SESSION));
    assert_eq!(client.poll_event(), None);
    assert_eq!(client.unfinished(), 1);
}
