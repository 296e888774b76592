//! A socket file left at the admin socket's path by a master that is gone
//! (nobody listens): `qbd repair` notices nobody answers and repairs
//! offline (exit 0); a master started later replaces the stale file and
//! answers on it (the next repair goes through it).

mod common;
#[path = "common/repair_support.rs"]
mod repair_support;

use common::fixture::{Fixture, Kind};
use repair_support::{repair, report, state};

#[test]
fn stale_admin_socket_is_ignored_by_the_tool_and_replaced_by_the_master() {
    let f = Fixture::new(Kind::Dirs, "stale", "replicate:3", 3);
    f.write(13);
    let path = qbd_master::admin::default_socket(&state(&f), "stale");
    drop(
        std::os::unix::net::UnixListener::bind(&path)
            .unwrap_or_else(|e| panic!("bind {}: {e}", path.display())),
    );
    assert!(path.exists(), "the stale socket file is left behind");

    let out = repair(&f, &["--json"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(
        !out.stderr.contains("through the running master"),
        "{out:#?}"
    );
    assert!(report(&out).all_repaired());

    let master = f.start_master();
    assert_eq!(master.field("admin"), path.display().to_string());
    let out = repair(&f, &["--json"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(
        out.stderr.contains("through the running master"),
        "{out:#?}"
    );
    master.stop();
    assert!(
        !path.exists(),
        "the master removes its socket when it stops"
    );
}
