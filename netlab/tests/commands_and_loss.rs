//! What the lab adds for daemons and lossy links: programs run inside a
//! namespace (and are the child process itself), loopback is up in every
//! namespace, and [`Loss`] drops and counts frames of one EtherType.
//! Needs root; without it each test prints `SKIPPED: ...` and passes, unless
//! `QBD_REQUIRE_PRIVILEGED=1`.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use qbd_netlab::{Lab, Loss};

const TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn commands_run_inside_the_namespace_as_the_child_itself() {
    let Some(mut lab) = Lab::new("commands_run_inside_the_namespace_as_the_child_itself") else {
        return;
    };
    let (a, _b) = lab.pair(1500);
    let inside = a
        .exec("readlink", &["/proc/self/ns/net"])
        .expect("readlink");
    let via_run = a.run(|| std::fs::read_link("/proc/thread-self/ns/net").expect("read_link"));
    assert_eq!(inside.trim(), via_run.to_string_lossy());
    let links = a.exec("ip", &["-o", "link"]).expect("ip link");
    assert!(links.contains("eth0") && links.contains("lo"), "{links}");

    // `ip netns exec` replaces itself: the child's pid is the program's, so
    // signals sent to the child reach it.
    let mut child = a.command("sleep").arg("30").spawn().expect("spawn sleep");
    let comm = std::path::PathBuf::from(format!("/proc/{}/comm", child.id()));
    let started = Instant::now();
    let is_sleep = || std::fs::read_to_string(&comm).is_ok_and(|c| c.trim() == "sleep");
    while !is_sleep() && started.elapsed() < TIMEOUT {
        std::thread::sleep(Duration::from_millis(5));
    }
    let named = is_sleep();
    child.kill().expect("kill sleep");
    child.wait().expect("wait for sleep");
    assert!(named, "the child did not become `sleep`");
}

#[test]
fn loopback_is_up_in_every_namespace() {
    let Some(mut lab) = Lab::new("loopback_is_up_in_every_namespace") else {
        return;
    };
    let ns = lab.namespace();
    let listener = ns.run(|| TcpListener::bind("127.0.0.1:0")).expect("bind");
    let addr = listener.local_addr().expect("local addr");
    ns.run(|| TcpStream::connect_timeout(&addr, TIMEOUT))
        .expect("connect on 127.0.0.1 inside the namespace");
    let (_conn, _) = listener.accept().expect("accept");
    // The caller's namespace does not see that listener.
    let here = TcpStream::connect_timeout(&addr, Duration::from_millis(200));
    assert!(
        here.is_err(),
        "reached the namespace's loopback from outside"
    );
}

#[test]
fn loss_drops_and_counts_frames_of_its_ethertype_only() {
    let Some(mut lab) = Lab::new("loss_drops_and_counts_frames_of_its_ethertype_only") else {
        return;
    };
    let (a, b) = lab.pair(1500);
    // This test alone puts IPv4 on the link, to have a sender of frames.
    a.ip(&["addr", "add", "10.99.0.1/24", "dev", "eth0"])
        .expect("addr a");
    b.ip(&["addr", "add", "10.99.0.2/24", "dev", "eth0"])
        .expect("addr b");
    let loss = Loss::install(&b, "eth0", 0x0800, 100).expect("install loss");
    assert_eq!(loss.seen().expect("seen").packets, 0);

    let receiver = b.run(|| UdpSocket::bind("10.99.0.2:9999")).expect("bind b");
    let sender = a.run(|| UdpSocket::bind("10.99.0.1:0")).expect("bind a");
    for i in 0..10u8 {
        sender.send_to(&[i; 32], "10.99.0.2:9999").expect("send");
    }
    let started = Instant::now();
    while loss.seen().expect("seen").packets < 10 && started.elapsed() < TIMEOUT {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (seen, dropped) = (loss.seen().expect("seen"), loss.dropped().expect("dropped"));
    // ARP (0x0806) passes uncounted, which is how the datagrams got sent.
    assert_eq!((seen.packets, dropped.packets), (10, 10));
    assert!(dropped.bytes >= 10 * 32);
    receiver
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    assert!(
        receiver.recv(&mut [0u8; 64]).is_err(),
        "a dropped datagram arrived"
    );
    assert_eq!(loss.ns().name(), b.name());
    assert!(Loss::install(&b, "eth1", 0x0800, 101).is_err());
}
