//! The namespace harness itself: cleanup on panic, the stale sweep,
//! isolation of the test runner's threads, links with no IP address.

use std::path::Path;
use std::sync::Mutex;

use qbd_netlab::{Lab, NETNS_DIR};

fn exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

#[test]
fn namespaces_are_deleted_even_when_the_test_panics() {
    let created = Mutex::new(Vec::new());
    let outcome = std::panic::catch_unwind(|| {
        let Some(mut lab) = Lab::new("namespaces_are_deleted_even_when_the_test_panics") else {
            return false;
        };
        let (a, b) = lab.pair(1500);
        let c = lab.namespace();
        let sw = lab.switch(&[&c], 9000);
        created
            .lock()
            .expect("lock")
            .extend([a.name(), b.name(), c.name(), sw.name()].map(str::to_owned));
        assert!(exists(a.name()) && exists(sw.name()));
        // A panic inside the namespace thread reaches the test thread.
        a.run(|| -> bool { panic!("deliberate panic inside {}", a.name()) })
    });
    let created = created.into_inner().expect("lock");
    if matches!(outcome, Ok(false)) {
        return; // skipped
    }
    assert!(outcome.is_err(), "the deliberate panic did not propagate");
    assert_eq!(created.len(), 4);
    for name in &created {
        assert!(!exists(name), "{name} left behind");
    }
}

#[test]
fn stale_namespaces_of_dead_processes_are_swept() {
    let Some(_lab) = Lab::new("stale_namespaces_of_dead_processes_are_swept") else {
        return;
    };
    // Above the largest pid_max Linux allows (2^22): no such process.
    let dead = "qbdt-4194305-0";
    let own = format!("qbdt-{}-sweeptest", std::process::id());
    for name in [dead, &own] {
        qbd_netlab::ip(&["netns", "add", name]).expect("create namespace");
    }
    qbd_netlab::sweep_stale();
    let (dead_gone, own_kept) = (!exists(dead), exists(&own));
    let _ = qbd_netlab::ip(&["netns", "del", &own]);
    let _ = qbd_netlab::ip(&["netns", "del", dead]);
    assert!(dead_gone, "namespace of a dead pid not swept");
    assert!(own_kept, "namespace of a live pid swept");
}

#[test]
fn run_moves_only_a_fresh_thread_and_links_have_no_ip() {
    let Some(mut lab) = Lab::new("run_moves_only_a_fresh_thread_and_links_have_no_ip") else {
        return;
    };
    let (a, b) = lab.pair(9000);
    let current = || std::fs::read_link("/proc/thread-self/ns/net").expect("read ns link");
    let here = current();
    let (in_a, in_b) = (a.run(current), b.run(current));
    assert!(in_a != here && in_b != here && in_a != in_b);
    assert_eq!(current(), here, "the test thread moved");

    for ns in [&a, &b] {
        let addrs = ns
            .ip(&["-o", "addr", "show", "dev", "eth0"])
            .expect("ip addr");
        assert!(
            !addrs.contains("inet"),
            "{}: eth0 has an IP address: {addrs}",
            ns.name()
        );
        let link = ns
            .ip(&["-o", "link", "show", "dev", "eth0"])
            .expect("ip link");
        assert!(
            link.contains("mtu 9000") && link.contains("state UP"),
            "{link}"
        );
    }
}
