//! A slow node does not cause a retransmission storm: credits hold the
//! master back while the node's application is behind, and when the node's
//! engine is descheduled for milliseconds at a time, RTO backoff and the
//! AIMD window keep retransmissions bounded relative to requests.

mod engine_sim;

use std::time::{Duration, Instant};

use engine_sim::{LinkParams, MASTER, NODE, Sim};
use qbd_transport_l2::engine::Server;

fn slow_sim(seed: u64, params: LinkParams, max_pending: u32) -> Sim {
    let mut sim = Sim::new(seed, 1500, params);
    sim.server_cfg.max_pending = max_pending;
    sim.server = Server::new(sim.server_cfg.clone(), NODE, MASTER, 7);
    sim.app.per_tick = Some(2);
    sim.app.tick = Duration::from_micros(200);
    sim
}

fn submit_all(sim: &mut Sim, n: u64) {
    for tag in 0..n {
        let len = if tag % 4 == 0 { 8192 } else { 100 };
        sim.submit(tag, 64, &vec![tag as u8; len]);
    }
}

fn assert_all_once(sim: &Sim, n: u64) {
    assert_eq!(sim.outcomes.len() as u64, n);
    for (tag, o) in &sim.outcomes {
        assert_eq!((o.delivered, o.failed.len()), (1, 0), "tag {tag}: {o:?}");
        assert_eq!(sim.executions(*tag), 1);
    }
}

#[test]
fn slow_application_is_held_back_by_credits() {
    let n = 300;
    let mut sim = slow_sim(3, LinkParams::clean(), 8);
    submit_all(&mut sim, n);
    sim.settle(Duration::from_secs(4));
    assert_all_once(&sim, n);
    let st = sim.client.stats();
    assert_eq!(st.retransmissions, 0, "{st:?}");
    // Before the node's first frame the master may send `initial_credit`
    // (16); after that the node's 8 bound its backlog.
    let backlog = sim.app.max_queue;
    assert!(
        backlog <= 16 + 2,
        "credits bound the node's backlog: {backlog}"
    );
}

#[test]
fn descheduled_node_engine_causes_no_storm() {
    let n = 300;
    let mut sim = slow_sim(4, LinkParams::clean(), 64);
    submit_all(&mut sim, n);
    let mut next_pause = sim.now;
    let start: Instant = sim.now;
    while sim.client.unfinished() > 0 {
        if sim.now >= next_pause {
            // 4 ms off every 10 ms: longer than many RTOs.
            sim.server_paused_until = Some(sim.now + Duration::from_millis(4));
            next_pause = sim.now + Duration::from_millis(10);
        }
        assert!(sim.step());
        assert!(sim.now - start < Duration::from_secs(4));
    }
    assert_all_once(&sim, n);
    let st = sim.client.stats();
    // Each pause may time out what is in flight once or twice, never a
    // retransmission per request per RTO.
    assert!(st.retransmissions > 0, "the pauses did bite: {st:?}");
    assert!(st.retransmissions <= n / 2, "storm: {st:?}");
    eprintln!("descheduled node: {st:?}, {:?}", sim.now - start);
}
