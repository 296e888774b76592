//! An unreachable node: requests fail with `Deadline` at the configured
//! deadline, retransmissions back off (bounded, not one per minimum RTO),
//! and the session works again once the node is reachable.

mod engine_sim;

use std::time::Duration;

use engine_sim::{Dir, LinkParams, Sim};
use qbd_transport_l2::engine::{Config, FailReason};

#[test]
fn unreachable_node_fails_at_the_deadline_with_backoff() {
    let mut sim = Sim::new(21, 1500, LinkParams::clean());
    sim.submit(0, 8, b"hello");
    sim.settle(Duration::from_secs(1));
    assert_eq!(sim.outcomes[&0].delivered, 1);

    sim.cut = Some(Dir::ToServer);
    let start = sim.now;
    for tag in 1..4 {
        sim.submit(tag, 8, &[tag as u8; 5000]);
    }
    sim.settle(Duration::from_secs(10));
    let deadline = Config::default().deadline;
    for tag in 1..4 {
        assert_eq!(
            sim.outcomes[&tag].failed,
            vec![FailReason::Deadline],
            "tag {tag}"
        );
        assert_eq!(sim.executions(tag), 0);
    }
    let took = sim.now - start;
    assert!(
        took >= deadline && took < deadline + Duration::from_millis(10),
        "{took:?}"
    );
    // 1 ms doubling up to 200 ms, then every 200 ms: ~32 per message in 5 s.
    let st = sim.client.stats();
    assert!(st.retransmissions <= 3 * 40, "{st:?}");

    sim.cut = None;
    sim.submit(9, 8, b"back");
    sim.settle(Duration::from_secs(1));
    assert_eq!(sim.outcomes[&9].delivered, 1);
}
