//! Hostile frames on the L2 segment, from a host the cluster does not
//! trust (the spare master host):
//!
//! - **forged session openings**: `Request` frames for message 1 from
//!   random (locally administered) source MACs: a third replayed genuine
//!   hellos (as if captured), a third hellos under another key, a third
//!   random bytes; the flood that once evicted a master's session;
//! - **replays**: frames the master sent to a node, captured at the node's
//!   host and sent again from the spare host, so the source MAC is the
//!   master's (the switch briefly learns it on the wrong port): the node
//!   must drop every one as a duplicate or an unauthenticated message.

use std::time::{Duration, Instant};

use qbd_core::proto::ClusterKey;
use qbd_core::proto::session::ClientHandshake;
use qbd_netlab::Ns;
use qbd_transport_l2::af_packet::PacketSocket;
use qbd_transport_l2::engine::Mac;
use qbd_transport_l2::engine::admission::opening_frame;

use super::rng::Rng;
use crate::e2e::segment::IFACE;

/// QBD-L2's EtherType.
const ETHERTYPE: u16 = 0x88B5;
/// How long frames to a node are captured for a replay.
const CAPTURE: Duration = Duration::from_millis(300);
/// Most frames captured for a replay.
const MAX_CAPTURE: usize = 512;

fn open(ns: &Ns) -> Result<PacketSocket, String> {
    ns.run(|| PacketSocket::open(IFACE, ETHERTYPE))
        .map_err(|e| format!("packet socket in {}: {e}", ns.name()))
}

/// Sends `n` forged session openings from `from`, spread over `nodes`.
pub fn forge_openings(
    from: &Ns,
    nodes: &[[u8; 6]],
    key: &ClusterKey,
    n: usize,
    rng: &mut Rng,
) -> Result<usize, String> {
    let mut sock = open(from)?;
    let mut frames = Vec::with_capacity(n);
    let (_, genuine) = ClientHandshake::start(key, [1; 32], "replayed");
    let (_, wrong) = ClientHandshake::start(&ClusterKey([9; 32]), [2; 32], "forger");
    for i in 0..n {
        let mut src = [0u8; 6];
        src.iter_mut().for_each(|b| *b = rng.next_u64() as u8);
        src[0] = (src[0] | 0x02) & !0x01; // locally administered, unicast
        let payload = match i % 3 {
            0 => genuine.clone(),
            1 => wrong.clone(),
            _ => (0..rng.range(48, 200))
                .map(|_| rng.next_u64() as u8)
                .collect(),
        };
        let dst = Mac(nodes[i % nodes.len()]);
        let epoch = rng.next_u64() as u32;
        let frame = opening_frame(ETHERTYPE, dst, Mac(src), epoch, &payload)
            .map_err(|e| format!("forging a frame: {e}"))?;
        frames.push(frame);
    }
    send_all(&mut sock, &frames)
}

/// Captures what arrives at `node_host` for a moment and sends it again
/// from `from`; returns (captured, replayed).
pub fn replay(node_host: &Ns, from: &Ns) -> Result<(usize, usize), String> {
    let mut cap = open(node_host)?;
    let mut out = open(from)?;
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let deadline = Instant::now() + CAPTURE;
    while Instant::now() < deadline && frames.len() < MAX_CAPTURE {
        let got = cap
            .recv_batch(|f| frames.push(f.to_vec()))
            .map_err(|e| format!("capturing: {e}"))?;
        if got == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let captured = frames.len();
    let sent = send_all(&mut out, &frames)?;
    Ok((captured, sent))
}

fn send_all(sock: &mut PacketSocket, frames: &[Vec<u8>]) -> Result<usize, String> {
    let mut sent = 0;
    // Bounded: each round sends at least one frame or gives up.
    for _ in 0..frames.len() * 4 + 16 {
        if sent == frames.len() {
            break;
        }
        let rest: Vec<&[u8]> = frames[sent..].iter().map(Vec::as_slice).collect();
        match sock.send_batch(&rest) {
            Ok(0) => std::thread::sleep(Duration::from_millis(1)),
            Ok(n) => sent += n,
            Err(e) => return Err(format!("sending forged frames: {e}")),
        }
    }
    Ok(sent)
}
