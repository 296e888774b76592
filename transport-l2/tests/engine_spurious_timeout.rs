//! A timeout that was only a delay does not cost the window: when every
//! frame sent again after a decrease reaches the node twice (its duplicate
//! reports say so), the decrease is undone. A descheduled node poller on a
//! busy 2-core host is exactly that: before this, each pause halved the
//! window and QD32 throughput fell round after round.

mod engine_sim;

use std::time::Duration;

use engine_sim::{LinkParams, Sim};

fn warm(sim: &mut Sim, tags: std::ops::Range<u64>) {
    for tag in tags {
        sim.submit(tag, 4096, &[tag as u8; 64]);
    }
    sim.settle(Duration::from_secs(1));
    assert_eq!(sim.client.unfinished(), 0);
}

#[test]
fn a_paused_node_causes_timeouts_but_the_window_is_restored() {
    let mut sim = Sim::new(21, 9000, LinkParams::clean());
    warm(&mut sim, 0..64);
    let before = sim.client.window();
    // The node's engine is off the CPU for 5 ms with 32 requests in flight:
    // far longer than the RTO, and nothing is lost.
    for tag in 64..96 {
        sim.submit(tag, 4096, &[tag as u8; 64]);
    }
    sim.server_paused_until = Some(sim.now + Duration::from_millis(5));
    sim.settle(Duration::from_secs(1));
    assert_eq!(sim.client.unfinished(), 0);
    let st = sim.client.stats().clone();
    assert!(
        st.retransmissions > 0,
        "the pause timed requests out: {st:?}"
    );
    assert!(st.undone_decreases >= 1, "{st:?}");
    assert!(
        sim.client.window() >= before,
        "window {} after the pause, {before} before: {st:?}",
        sim.client.window()
    );
    for tag in 0..96 {
        assert_eq!(sim.executions(tag), 1, "tag {tag}");
    }
}

#[test]
fn a_real_loss_keeps_the_decrease() {
    // 5 % loss and no pauses: resent frames replace lost ones, so the node
    // does not see them twice and the window stays reduced at times.
    let mut sim = Sim::new(
        22,
        9000,
        LinkParams {
            loss_per_mille: 50,
            ..LinkParams::clean()
        },
    );
    warm(&mut sim, 0..400);
    let st = sim.client.stats().clone();
    assert!(st.retransmissions > 0, "{st:?}");
    assert!(
        st.undone_decreases < st.retransmissions,
        "not every loss is undone: {st:?}"
    );
}
