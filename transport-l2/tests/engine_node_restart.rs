//! A node restart mid-stream (the server engine replaced by a fresh one
//! with a higher epoch) under a hostile link. The rule
//! (`docs/l2-protocol.md` §6): every message in flight when the master
//! notices the new epoch fails with `PeerRestarted`, exactly once, never
//! also delivered; later messages go to the new session and complete once.
//! The test retries the failed ones as the master's upper layer would
//! (after a new node-protocol handshake).

mod engine_sim;

use std::collections::HashMap;
use std::time::Duration;

use engine_sim::{LinkParams, Rng, Sim};
use qbd_transport_l2::engine::{ClientEvent, FailReason, MsgId};

/// Resubmits the tags of messages that failed with `PeerRestarted` since
/// event `from`; returns the new event count.
fn retry_failed(sim: &mut Sim, from: usize, payloads: &HashMap<u64, Vec<u8>>) -> usize {
    let failed: Vec<MsgId> = sim.events[from..]
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Failed {
                id,
                why: FailReason::PeerRestarted,
            } => Some(*id),
            _ => None,
        })
        .collect();
    let seen = sim.events.len();
    for id in failed {
        let (tag, _, resp) = sim.sent[&id];
        sim.submit(tag, resp, &payloads[&tag]);
    }
    seen
}

fn check_one_event_per_id(sim: &Sim) {
    let mut per_id: HashMap<MsgId, u32> = HashMap::new();
    for e in &sim.events {
        if let ClientEvent::Delivered { id, .. } | ClientEvent::Failed { id, .. } = e {
            *per_id.entry(*id).or_default() += 1;
        }
    }
    assert_eq!(per_id.len(), sim.sent.len());
    assert!(per_id.values().all(|&n| n == 1), "one event per message");
}

#[test]
fn restart_mid_stream_fails_in_flight_then_new_session_works() {
    let mut sim = Sim::new(0xdead, 1500, LinkParams::hostile());
    let mut rng = Rng(99);
    let mut payloads = HashMap::new();
    let mut seen = 0;
    let total = 200u64;
    let mut tag = 0;
    while tag < total || sim.client.unfinished() > 0 {
        while tag < total && sim.client.unfinished() < 16 {
            let len = if rng.below(3) == 0 {
                32 * 1024
            } else {
                rng.below(2000) as usize
            };
            let p: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            sim.submit(tag, 512, &p);
            payloads.insert(tag, p);
            tag += 1;
            if tag == total / 2 {
                sim.restart_server();
            }
        }
        assert!(sim.step(), "stalled");
        seen = retry_failed(&mut sim, seen, &payloads);
    }
    let restarted = sim
        .events
        .iter()
        .filter(|e| matches!(e, ClientEvent::PeerRestarted { .. }));
    assert_eq!(restarted.count(), 1);
    assert_eq!(sim.client.server_epoch(), Some(101));
    let mut failures = 0;
    for (tag, o) in &sim.outcomes {
        assert_eq!(o.delivered, 1, "tag {tag}: {o:?}");
        assert_eq!(o.bad_response, 0);
        assert!(
            o.failed.iter().all(|w| *w == FailReason::PeerRestarted),
            "{o:?}"
        );
        failures += o.failed.len() as u32;
        for inc in &sim.app.executions {
            assert!(
                inc.get(tag).copied().unwrap_or(0) <= 1,
                "once per incarnation"
            );
        }
        // Executed again only if it failed, and then by the new node.
        assert!(
            sim.executions(*tag) <= 1 + o.failed.len() as u32,
            "tag {tag}"
        );
    }
    assert!(failures > 0, "the restart caught requests in flight");
    check_one_event_per_id(&sim);
}

#[test]
fn restart_while_idle_fails_the_next_request_once() {
    let mut sim = Sim::new(5, 9000, LinkParams::clean());
    let payloads = HashMap::from([(1, b"one".to_vec()), (2, b"two".to_vec())]);
    sim.submit(1, 8, &payloads[&1]);
    sim.settle(Duration::from_secs(1));
    sim.restart_server();
    sim.submit(2, 8, &payloads[&2]);
    sim.settle(Duration::from_secs(1));
    assert_eq!(sim.outcomes[&2].failed, vec![FailReason::PeerRestarted]);
    assert_eq!(
        sim.executions(2),
        0,
        "the new node refused the old session's frame"
    );
    retry_failed(&mut sim, 0, &payloads);
    sim.settle(Duration::from_secs(1));
    assert_eq!(sim.outcomes[&2].delivered, 1);
    assert_eq!(sim.executions(2), 1);
    assert_eq!(sim.server.stats().resets, 1);
    check_one_event_per_id(&sim);
}
