//! The fault wrapper around a directory backend: held and failed
//! operations, the event log, and crashes that lose unsynced writes whole
//! or torn (data without records, records without data).

mod common;

use std::sync::Arc;

use common::{Fixture, TestResult, generation, part, pattern, write};
use qbd_core::backend::fault::{Action, CrashMode, Event, FaultBackend, Gate, OpKind, Rule};
use qbd_core::backend::{Backend, BackendError, BlockState, PartRead};

/// The fixture's volume behind a crashable fault wrapper.
async fn faulty() -> TestResult<(Fixture, Arc<FaultBackend>)> {
    let f = Fixture::new().await?;
    let inner: Arc<dyn Backend> = f.backend.clone();
    Ok((f, Arc::new(FaultBackend::new(inner, true))))
}

/// Crashes, then reads `count` blocks of chunk `chunk` as a restarted
/// process would: a fresh backend, no cached files.
async fn crash_and_read(
    f: Fixture,
    fault: Arc<FaultBackend>,
    mode: CrashMode,
    chunk: u64,
    count: u32,
) -> TestResult<PartRead> {
    fault.crash(mode).await?;
    drop(fault);
    let f = f.reopen().await?;
    Ok(f.backend.read(part(chunk), 0, count).await?)
}

fn rule(
    op: OpKind,
    chunk: Option<u64>,
    block: Option<u32>,
    action: Action,
    times: Option<u32>,
) -> Rule {
    Rule {
        op,
        chunk,
        block,
        action,
        times,
    }
}

#[tokio::test]
async fn held_read_waits_at_the_gate_while_other_reads_complete() -> TestResult {
    let (_f, fault) = faulty().await?;
    let gate = Gate::new();
    fault.add_rule(rule(
        OpKind::Read,
        Some(0),
        None,
        Action::Hold(gate.clone()),
        None,
    ));
    let held = {
        let fault = fault.clone();
        tokio::spawn(async move { fault.read(part(0), 0, 1).await })
    };
    gate.wait_arrivals(1).await;
    let other = fault.read(part(1), 0, 1).await?;
    assert_eq!(other.blocks, vec![BlockState::Unwritten]);
    assert!(
        !held.is_finished(),
        "the held read completed before the gate opened"
    );
    gate.open();
    assert_eq!(held.await??.blocks, vec![BlockState::Unwritten]);
    let reads: Vec<_> = fault
        .events()
        .into_iter()
        .map(|e| matches!(e, Event::Read { part, .. } if part.chunk == 1))
        .collect();
    assert_eq!(reads, vec![true, false], "chunk 1's read is logged first");
    Ok(())
}

#[tokio::test]
async fn fail_rule_with_times_one_fails_once_then_passes() -> TestResult {
    let (_f, fault) = faulty().await?;
    fault.allocate(part(0)).await?;
    fault.add_rule(rule(OpKind::Write, None, None, Action::Fail, Some(1)));
    let e = write(&*fault, part(0), 0, pattern(1, 1), generation(1)).await;
    let e = e
        .err()
        .ok_or("the rule did not fire")?
        .downcast::<BackendError>()?;
    assert!(matches!(*e, BackendError::Injected(_)), "{e}");
    assert_eq!(
        fault.read(part(0), 0, 1).await?.blocks,
        vec![BlockState::Unwritten],
        "a failed write must not apply"
    );
    write(&*fault, part(0), 0, pattern(1, 1), generation(1)).await?;
    assert_eq!(
        fault.read(part(0), 0, 1).await?.blocks,
        vec![BlockState::Data(generation(1))]
    );
    assert_eq!(
        fault
            .events()
            .iter()
            .filter(|e| matches!(e, Event::Write { .. }))
            .count(),
        1,
        "failed writes are not logged"
    );
    Ok(())
}

#[tokio::test]
async fn rule_limited_to_a_block_spares_ranges_without_it() -> TestResult {
    let (_f, fault) = faulty().await?;
    fault.allocate(part(0)).await?;
    fault.add_rule(rule(OpKind::Write, Some(0), Some(5), Action::Fail, None));
    write(&*fault, part(0), 0, pattern(1, 5), generation(1)).await?;
    write(&*fault, part(0), 6, pattern(1, 2), generation(1)).await?;
    assert!(
        write(&*fault, part(0), 4, pattern(1, 2), generation(2))
            .await
            .is_err()
    );
    fault.clear_rules();
    write(&*fault, part(0), 4, pattern(1, 2), generation(2)).await?;
    Ok(())
}

#[tokio::test]
async fn event_log_records_writes_and_syncs_in_order() -> TestResult {
    let (_f, fault) = faulty().await?;
    fault.allocate(part(0)).await?;
    fault.allocate(part(1)).await?;
    write(&*fault, part(0), 0, pattern(1, 2), generation(1)).await?;
    write(&*fault, part(1), 3, pattern(1, 1), generation(2)).await?;
    fault.sync(None).await?;
    write(&*fault, part(0), 1, pattern(2, 1), generation(3)).await?;
    fault.sync(Some(vec![part(0)])).await?;
    let expected = vec![
        Event::Allocate { part: part(0) },
        Event::Allocate { part: part(1) },
        Event::Write {
            part: part(0),
            first: 0,
            count: 2,
            generation: generation(1),
        },
        Event::Write {
            part: part(1),
            first: 3,
            count: 1,
            generation: generation(2),
        },
        Event::Sync { parts: None },
        Event::Write {
            part: part(0),
            first: 1,
            count: 1,
            generation: generation(3),
        },
        Event::Sync {
            parts: Some(vec![part(0)]),
        },
    ];
    assert_eq!(fault.events(), expected);
    Ok(())
}

#[tokio::test]
async fn crash_loses_unsynced_writes_and_keeps_synced_ones() -> TestResult {
    let (f, fault) = faulty().await?;
    fault.allocate(part(0)).await?;
    let synced = pattern(1, 2);
    write(&*fault, part(0), 0, synced.clone(), generation(1)).await?;
    fault.sync(None).await?;
    // Two unsynced writes over block 0, one over never-written block 2.
    write(&*fault, part(0), 0, pattern(2, 1), generation(2)).await?;
    write(&*fault, part(0), 0, pattern(3, 1), generation(3)).await?;
    write(&*fault, part(0), 2, pattern(4, 1), generation(4)).await?;
    let r = crash_and_read(f, fault, CrashMode::All, 0, 3).await?;
    let g1 = BlockState::Data(generation(1));
    assert_eq!(r.blocks, vec![g1.clone(), g1, BlockState::Unwritten]);
    assert_eq!(&r.data[..synced.len()], &synced[..]);
    assert!(r.data[synced.len()..].iter().all(|&x| x == 0));
    Ok(())
}

#[tokio::test]
async fn sync_of_one_part_protects_only_that_part() -> TestResult {
    let (f, fault) = faulty().await?;
    fault.allocate(part(0)).await?;
    fault.allocate(part(1)).await?;
    write(&*fault, part(0), 0, pattern(1, 1), generation(1)).await?;
    write(&*fault, part(1), 0, pattern(1, 1), generation(2)).await?;
    fault.sync(Some(vec![part(0)])).await?;
    fault.crash(CrashMode::All).await?;
    drop(fault);
    let f = f.reopen().await?;
    assert_eq!(
        f.backend.read(part(0), 0, 1).await?.blocks,
        vec![BlockState::Data(generation(1))]
    );
    assert_eq!(
        f.backend.read(part(1), 0, 1).await?.blocks,
        vec![BlockState::Unwritten]
    );
    Ok(())
}

#[tokio::test]
async fn crash_keeping_records_but_not_data_leaves_the_block_corrupt() -> TestResult {
    let (f, fault) = faulty().await?;
    fault.allocate(part(0)).await?;
    write(&*fault, part(0), 0, pattern(1, 2), generation(1)).await?;
    fault.sync(None).await?;
    write(&*fault, part(0), 1, pattern(2, 1), generation(2)).await?;
    let r = crash_and_read(f, fault, CrashMode::DataOnly, 0, 2).await?;
    assert_eq!(r.blocks[0], BlockState::Data(generation(1)));
    assert!(
        matches!(&r.blocks[1], BlockState::Corrupt(why) if why.contains("data checksum")),
        "{:?}",
        r.blocks[1]
    );
    assert!(
        r.data[4096..].iter().all(|&x| x == 0),
        "corrupt data is never returned"
    );
    Ok(())
}

#[tokio::test]
async fn crash_keeping_data_but_not_records_over_an_unwritten_block_reads_zeros() -> TestResult {
    let (f, fault) = faulty().await?;
    fault.allocate(part(0)).await?;
    write(&*fault, part(0), 0, pattern(2, 1), generation(2)).await?;
    let r = crash_and_read(f, fault, CrashMode::MetaOnly, 0, 1).await?;
    // The surviving data is not described by any record: never trusted.
    assert_eq!(r.blocks, vec![BlockState::Unwritten]);
    assert!(r.data.iter().all(|&x| x == 0));
    Ok(())
}

#[tokio::test]
async fn crash_keeping_data_but_not_records_over_older_data_reads_corrupt() -> TestResult {
    let (f, fault) = faulty().await?;
    fault.allocate(part(0)).await?;
    write(&*fault, part(0), 0, pattern(1, 1), generation(1)).await?;
    fault.sync(None).await?;
    write(&*fault, part(0), 0, pattern(2, 1), generation(2)).await?;
    let r = crash_and_read(f, fault, CrashMode::MetaOnly, 0, 1).await?;
    assert!(
        matches!(r.blocks[0], BlockState::Corrupt(_)),
        "{:?}",
        r.blocks[0]
    );
    Ok(())
}

#[tokio::test]
async fn crashed_backend_fails_every_later_operation() -> TestResult {
    let (_f, fault) = faulty().await?;
    fault.allocate(part(0)).await?;
    fault.crash(CrashMode::All).await?;
    assert!(matches!(
        fault.read(part(0), 0, 1).await,
        Err(BackendError::Injected(_))
    ));
    assert!(
        write(&*fault, part(0), 0, pattern(1, 1), generation(1))
            .await
            .is_err()
    );
    assert!(matches!(
        fault.sync(None).await,
        Err(BackendError::Injected(_))
    ));
    assert!(matches!(
        fault.allocate(part(1)).await,
        Err(BackendError::Injected(_))
    ));
    Ok(())
}
