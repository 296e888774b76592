//! A write is executed once however its frames come back: a delayed
//! duplicate injected after the response was delivered (while the node
//! still stores the response, and after the master's floor passed it), and
//! a write whose response was lost so that the master retransmitted it.

mod engine_sim;

use std::time::Duration;

use engine_sim::{Dir, LinkParams, Sim};

fn write_payload(tag: u64) -> Vec<u8> {
    (0..32 * 1024).map(|i| (i as u64 ^ tag) as u8).collect()
}

#[test]
fn delayed_duplicate_write_is_not_executed_again() {
    for mtu in [1500, 9000] {
        let mut sim = Sim::new(42, mtu, LinkParams::clean());
        sim.recording = Some(Vec::new());
        sim.submit(1, 16, &write_payload(1));
        // Step until delivered, then replay at once: the node still holds
        // the response (the master's ack is delayed).
        while sim.outcomes[&1].delivered == 0 {
            assert!(sim.step());
        }
        let frames = sim.recording.take().expect("recorded");
        assert!(frames.len() > 1, "a multi-fragment write");
        for f in &frames {
            sim.inject(Dir::ToServer, f.clone());
        }
        sim.run_for(Duration::from_millis(5));
        assert_eq!(sim.executions(1), 1);
        assert_eq!(
            sim.outcomes[&1].delivered, 1,
            "one delivery, duplicates ignored"
        );

        // Later traffic moves the master's floor past it; replay again.
        sim.submit(2, 16, b"next");
        sim.settle(Duration::from_secs(1));
        for f in &frames {
            sim.inject(Dir::ToServer, f.clone());
        }
        sim.run_for(Duration::from_millis(5));
        assert_eq!(sim.executions(1), 1, "mtu {mtu}");
        assert_eq!(sim.executions(2), 1);
        assert_eq!(sim.outcomes[&1].delivered, 1);
        assert!(sim.server.stats().duplicates >= 2 * frames.len() as u64);
    }
}

#[test]
fn lost_response_is_resent_not_reexecuted() {
    let mut sim = Sim::new(7, 1500, LinkParams::clean());
    sim.cut = Some(Dir::ToClient);
    sim.submit(1, 4096, &write_payload(1));
    sim.run_for(Duration::from_millis(20));
    assert_eq!(sim.executions(1), 1, "executed while the answers are lost");
    assert!(
        sim.client.stats().retransmissions > 0,
        "the master retransmitted"
    );
    sim.cut = None;
    sim.settle(Duration::from_secs(1));
    assert_eq!(sim.outcomes[&1].delivered, 1);
    assert_eq!(sim.executions(1), 1);
    assert!(sim.server.stats().duplicates > 0);
}
