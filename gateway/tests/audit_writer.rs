//! The audit writer (docs/audit.md): batches, spill while the store is unreachable, ordered replay,
//! backpressure, flush on shutdown — on SQLite and PostgreSQL, with real outages (see
//! `audit_support`). Waits are event-driven: poll a metric or the store with a deadline.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod audit_support;

use std::collections::HashSet;
use std::time::Duration;

use audit_support::{TestDb, event, wait_until};
use namegate::audit::AuditEvent;
use namegate::audit::store::{AuditStore, Page};
use namegate::audit::writer::{AuditMetrics, AuditSink, AuditWriter, WriterConfig};

both_engines!(
    writes_batches_and_shutdown_flushes,
    outage_spills_then_replays_in_order_exactly_once,
    backpressure_when_queue_and_spill_budget_are_exhausted,
    spill_survives_a_restart,
    an_event_the_store_refuses_is_kept_aside_not_dropped,
    the_dedicated_writer_drains_while_the_request_runtime_is_saturated,
);

const WAIT: Duration = Duration::from_secs(60);

fn config(db: &TestDb) -> WriterConfig {
    WriterConfig {
        batch_interval: Duration::from_millis(10),
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(300),
        spill_after: Duration::from_millis(500),
        probe_timeout: Duration::from_millis(500),
        insert_timeout: Duration::from_secs(5),
        ..WriterConfig::in_data_dir(db.dir.path())
    }
}

/// Sends events `from..to` round-robin over five correlation IDs through reservations, as the request
/// path does.
fn send(sink: &AuditSink, sent: &mut Vec<AuditEvent>, from: u64, to: u64) {
    for n in from..to {
        let ev = event(&format!("rr-{}", n % 5), n, Some("uid-1"));
        let permits = sink.try_reserve(1).expect("room in the queue");
        permits.send(ev.clone());
        sent.push(ev);
    }
}

/// Every sent event is stored exactly once, in emission order (one writer: the global order holds,
/// hence also the order per correlation ID), and every chain verifies.
async fn assert_stored_exactly_once_in_order(store: &AuditStore, sent: &[AuditEvent]) {
    let mut stored = Vec::new();
    for cid in 0..5 {
        stored.extend(
            store
                .trail(&format!("rr-{cid}"), Page::first(10_000))
                .await
                .expect("trail"),
        );
    }
    assert_eq!(stored.len(), sent.len(), "stored vs sent");
    let ids: HashSet<_> = stored.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), sent.len(), "an event was stored twice");
    stored.sort_by_key(|e| e.seq);
    let order: Vec<_> = stored.iter().map(|e| e.event_id).collect();
    let want: Vec<_> = sent.iter().map(|e| e.event_id).collect();
    assert_eq!(order, want, "storage order differs from emission order");
    let report = store.verify().await.expect("verify");
    assert!(report.is_clean(), "{report:?}");
}

async fn writes_batches_and_shutdown_flushes(db: TestDb) {
    let store = db.open().await;
    let (sink, writer) =
        AuditWriter::spawn_with_metrics(store.clone(), config(&db), AuditMetrics::default())
            .await
            .unwrap();
    let mut sent = Vec::new();
    send(&sink, &mut sent, 0, 600);
    // Two-slot reservations filled one by one, and the convenience path.
    for n in 600..800 {
        let mut permits = sink.try_reserve(2).unwrap();
        let a = event(&format!("rr-{}", n % 5), n * 10, None);
        let b = event(&format!("rr-{}", n % 5), n * 10 + 1, None);
        permits.send_one(a.clone());
        assert_eq!(permits.remaining(), 1);
        permits.send(b.clone());
        sent.extend([a, b]);
    }
    for n in 10_000..10_200 {
        let ev = event(&format!("rr-{}", n % 5), n, None);
        sink.try_send(ev.clone()).unwrap();
        sent.push(ev);
    }
    // No wait: shutdown itself must write everything queued.
    let stats = writer.shutdown().await;
    assert_eq!(stats.written, 1200);
    assert_eq!(
        (
            stats.dropped,
            stats.spilled,
            stats.rejected,
            stats.queue_depth
        ),
        (0, 0, 0, 0)
    );
    assert!(sink.try_reserve(1).unwrap_err().is_closed());
    assert_stored_exactly_once_in_order(&store, &sent).await;
    store.close().await;
    db.cleanup().await;
}

/// The gateway's writer runs on a thread and runtime of its own (docs/audit.md, "The writer's thread"):
/// with every worker of the runtime that holds the sinks busy and never yielding — what 64 saturating
/// connections look like to a writer that shares their runtime — queued events still reach the store.
/// The store connects directly (not through the harness's proxy, whose tasks run on this runtime).
async fn the_dedicated_writer_drains_while_the_request_runtime_is_saturated(db: TestDb) {
    const WORKERS: usize = 2; // both_engines! runs on 2 workers
    let store_cfg = namegate::audit::store::StoreConfig {
        url: db.owner_url.clone(),
        ..db.config()
    };
    let (sink, writer) =
        AuditWriter::spawn_dedicated(store_cfg, config(&db), AuditMetrics::default())
            .await
            .unwrap();
    let m = writer.metrics().clone();

    // Occupy every worker: each task blocks its thread until released.
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = std::sync::Arc::new(std::sync::Mutex::new(release_rx));
    let busy = std::sync::Arc::new(std::sync::Barrier::new(WORKERS + 1));
    let mut hogs = Vec::new();
    for _ in 0..WORKERS {
        let (busy, release_rx) = (busy.clone(), release_rx.clone());
        hogs.push(tokio::spawn(async move {
            busy.wait();
            let _ = release_rx.lock().unwrap().recv_timeout(WAIT);
        }));
    }
    busy.wait();

    let mut sent = Vec::new();
    send(&sink, &mut sent, 0, 600);
    // The runtime cannot run timers or tasks now: wait on this thread, bounded.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while m.written.get() < 600 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let written_while_saturated = m.written.get();
    for _ in 0..WORKERS {
        release_tx.send(()).unwrap();
    }
    for hog in hogs {
        hog.await.unwrap();
    }
    assert_eq!(
        written_while_saturated, 600,
        "events written while every request worker was busy"
    );

    send(&sink, &mut sent, 600, 800);
    let stats = writer.shutdown().await;
    assert_eq!(stats.written, 800);
    assert_eq!((stats.dropped, stats.spilled, stats.queue_depth), (0, 0, 0));
    assert!(sink.try_reserve(1).unwrap_err().is_closed());
    let store = db.open().await;
    assert_stored_exactly_once_in_order(&store, &sent).await;
    store.close().await;
    db.cleanup().await;
}

async fn outage_spills_then_replays_in_order_exactly_once(db: TestDb) {
    let store = db.open().await;
    let cfg = config(&db);
    let spill_path = cfg.spill_path.clone();
    let (sink, writer) =
        AuditWriter::spawn_with_metrics(store.clone(), cfg, AuditMetrics::default())
            .await
            .unwrap();
    let m = writer.metrics().clone();
    let mut sent = Vec::new();

    send(&sink, &mut sent, 0, 200);
    wait_until("the first events in the store", WAIT, || async {
        m.written.get() == 200
    })
    .await;

    db.outage_begin().await;
    send(&sink, &mut sent, 200, 500);
    wait_until(
        "the spill to take everything sent during the outage",
        WAIT,
        || async { m.spilled.get() == 300 && m.spill_bytes.get() > 0 },
    )
    .await;
    let spill_len = std::fs::metadata(&spill_path).unwrap().len();
    assert_eq!(spill_len as i64, m.spill_bytes.get());
    send(&sink, &mut sent, 500, 600);
    wait_until("the spill to grow", WAIT, || async {
        m.spilled.get() == 400
    })
    .await;
    assert!(m.spill_bytes.get() as u64 > spill_len);
    assert_eq!(
        m.written.get(),
        200,
        "nothing reached the store during the outage"
    );

    db.outage_end().await;
    // Newer events while the replay may still be running: they must land after the spilled ones.
    send(&sink, &mut sent, 600, 700);
    wait_until("replay and the newer events", WAIT, || async {
        m.written.get() == 700 && m.spill_bytes.get() == 0
    })
    .await;
    let stats = writer.shutdown().await;
    // Events sent after the outage ended may still go through the spill (behind the older ones).
    assert!(stats.spilled >= 400, "{stats:?}");
    assert_eq!(stats.replayed, stats.spilled);
    assert_eq!((stats.dropped, stats.rejected), (0, 0));
    assert_eq!(
        std::fs::metadata(&spill_path).unwrap().len(),
        0,
        "spill emptied"
    );
    assert_stored_exactly_once_in_order(&store, &sent).await;
    store.close().await;
    db.cleanup().await;
}

async fn backpressure_when_queue_and_spill_budget_are_exhausted(db: TestDb) {
    let store = db.open().await;
    let cfg = WriterConfig {
        queue_capacity: 4,
        // One event per batch makes the accounting below exact.
        batch_size: 1,
        // Room for one batch: the spill takes the first, then it is full.
        spill_budget_bytes: 1,
        ..config(&db)
    };
    let (sink, writer) =
        AuditWriter::spawn_with_metrics(store.clone(), cfg, AuditMetrics::default())
            .await
            .unwrap();
    let m = writer.metrics().clone();
    db.outage_begin().await;

    // The first batch goes to the spill (an empty spill takes one batch whatever its size) …
    let mut sent = Vec::new();
    send(&sink, &mut sent, 0, 1);
    wait_until("the first batch in the spill", WAIT, || async {
        m.spilled.get() == 1
    })
    .await;
    // … then the budget is used up: the writer takes one more event it cannot place anywhere, stops
    // draining, and the queue (4) fills. Offer events until exactly that much has been accepted;
    // refusals on the way (the queue is full while the writer is busy probing the store) are the
    // backpressure too.
    let mut refusals = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut n = 1u64;
    while sent.len() < 1 + 1 + 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "accepted only {} events",
            sent.len()
        );
        match sink.try_reserve(1) {
            Ok(permits) => {
                let ev = event(&format!("rr-{}", n % 5), n, None);
                permits.send(ev.clone());
                sent.push(ev);
                n += 1;
            }
            Err(e) => refusals.push(e),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Now nothing moves while the store is down: observe a while (several store probes).
    let observe_until = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::Instant::now() < observe_until {
        match sink.try_reserve(1) {
            Ok(_) => panic!("accepted an event with the queue and the spill budget exhausted"),
            Err(e) => refusals.push(e),
        }
        assert_eq!((m.spilled.get(), m.dropped.get()), (1, 0));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for refusal in &refusals {
        assert!(refusal.is_backpressure(), "{refusal}");
        assert!(refusal.retry_after().unwrap() >= Duration::from_secs(1));
    }
    assert_eq!(m.queue_depth.get(), 4);

    db.outage_end().await;
    wait_until(
        "the writer to drain the backlog into the store",
        WAIT,
        || async { m.written.get() == sent.len() as u64 },
    )
    .await;
    // Accepting again.
    let more = sink
        .try_reserve(1)
        .expect("room again once the store is back");
    let ev = event(&format!("rr-{}", n % 5), n, None);
    more.send(ev.clone());
    sent.push(ev);
    let stats = writer.shutdown().await;
    assert_eq!((stats.dropped, stats.spilled, stats.replayed), (0, 1, 1));
    assert_stored_exactly_once_in_order(&store, &sent).await;
    store.close().await;
    db.cleanup().await;
}

async fn spill_survives_a_restart(db: TestDb) {
    let store = db.open().await;
    let cfg = config(&db);
    db.outage_begin().await;
    let (sink, writer) =
        AuditWriter::spawn_with_metrics(store.clone(), cfg.clone(), AuditMetrics::default())
            .await
            .unwrap();
    let m = writer.metrics().clone();
    let mut sent = Vec::new();
    send(&sink, &mut sent, 0, 50);
    wait_until("the spill to take the events", WAIT, || async {
        m.spilled.get() == 50
    })
    .await;
    // Queued at shutdown with the store still down: shutdown puts them in the spill too.
    send(&sink, &mut sent, 50, 60);
    let stats = writer.shutdown().await;
    assert_eq!((stats.spilled, stats.written, stats.dropped), (60, 0, 0));
    assert!(std::fs::metadata(&cfg.spill_path).unwrap().len() > 0);
    drop(sink);

    // A new process: the spill is replayed on start, before anything new.
    db.outage_end().await;
    let (sink, writer) =
        AuditWriter::spawn_with_metrics(store.clone(), cfg.clone(), AuditMetrics::default())
            .await
            .unwrap();
    let m = writer.metrics().clone();
    send(&sink, &mut sent, 60, 70);
    wait_until("the spill replayed after the restart", WAIT, || async {
        m.written.get() == 70 && m.spill_bytes.get() == 0
    })
    .await;
    let stats = writer.shutdown().await;
    assert_eq!((stats.replayed, stats.dropped), (60, 0));
    assert_stored_exactly_once_in_order(&store, &sent).await;
    store.close().await;
    db.cleanup().await;
}

async fn an_event_the_store_refuses_is_kept_aside_not_dropped(db: TestDb) {
    let store = db.open().await;
    let cfg = config(&db);
    let rejected_path = cfg.rejected_path();
    let (sink, writer) =
        AuditWriter::spawn_with_metrics(store.clone(), cfg, AuditMetrics::default())
            .await
            .unwrap();
    let mut sent = Vec::new();
    send(&sink, &mut sent, 0, 5);
    let mut poison = event("rr-0", 99, None);
    poison.error_message = Some("nul\0inside".into());
    sink.try_send(poison.clone()).unwrap();
    send(&sink, &mut sent, 5, 10);
    let stats = writer.shutdown().await;
    assert_eq!((stats.written, stats.rejected, stats.dropped), (10, 1, 0));
    let kept = std::fs::read_to_string(&rejected_path).unwrap();
    assert!(kept.contains(&poison.event_id.to_string()), "{kept}");
    assert_stored_exactly_once_in_order(&store, &sent).await;
    store.close().await;
    db.cleanup().await;
}

#[tokio::test]
async fn reservations_count_in_the_queue_and_are_released_on_drop() {
    let db = TestDb::sqlite().await;
    let store = db.open().await;
    let cfg = WriterConfig {
        queue_capacity: 4,
        ..config(&db)
    };
    let (sink, writer) =
        AuditWriter::spawn_with_metrics(store.clone(), cfg, AuditMetrics::default())
            .await
            .unwrap();
    let permits = sink.try_reserve(3).unwrap();
    assert_eq!(sink.queue_depth(), 3);
    assert!(
        sink.try_reserve(2).unwrap_err().is_backpressure(),
        "all or nothing"
    );
    drop(permits);
    assert_eq!(sink.queue_depth(), 0);

    // Sending more than reserved is a caller bug, but the event is still delivered.
    let mut permits = sink.try_reserve(1).unwrap();
    permits.send_one(event("rr-0", 0, None));
    permits.send_one(event("rr-0", 1, None));
    drop(permits);
    let stats = writer.shutdown().await;
    assert_eq!((stats.written, stats.dropped), (2, 0));
    store.close().await;
}
