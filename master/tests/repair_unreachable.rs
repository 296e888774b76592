//! A designated backend that cannot be reached is reported and left: the
//! repair rebuilds what it can elsewhere, says which parts it left, and a
//! later repair with the backend back brings everything to full redundancy.
#![allow(clippy::unwrap_used)]

mod repair_support;

use qbd_master::volume::OpenMode;
use qbd_master::volume::repair::Problem;
use repair_support::{Cluster, assert_reads_back};

#[tokio::test]
async fn unreachable_backend_is_left_and_reported_then_repaired_when_back() {
    let c = Cluster::new("replicate:3", 3, 4);
    let want = c.fill(0xab5e).await;
    let gone = 2;
    let missing_part = (0..3).find(|&p| c.slot(0, p) == 1).unwrap();
    c.delete(0, missing_part);
    let r = c.repair(false, &[gone]).await;
    assert!(!r.all_repaired(), "{r:?}");
    assert_eq!(r.missing, 1, "{r:?}");
    assert_eq!(r.parts_rebuilt, 1, "the missing part is rebuilt: {r:?}");
    assert_eq!(
        r.parts_left, 4,
        "one part per chunk on the gone backend: {r:?}"
    );
    assert_eq!(r.unreachable.len(), 1, "{r:?}");
    assert!(
        r.findings
            .iter()
            .filter(|f| !f.repaired)
            .all(|f| matches!(f.problem, Problem::Unreachable { .. })),
        "{r:?}"
    );
    let back = c.repair(false, &[]).await;
    assert!(back.all_repaired(), "{back:?}");
    let clean = c.repair(true, &[]).await;
    assert_eq!(clean.chunks_healthy, clean.chunks_total, "{clean:?}");
    c.assert_parts_hold(&want).await;
    let v = c.open(OpenMode::Serve, &[]).await;
    assert_reads_back(&v, &want).await;
}
