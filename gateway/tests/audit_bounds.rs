//! The audit trail is bounded in bytes, not counts (docs/audit.md): the queue, the rejected-event file
//! and lookup pages, on both engines. (The spill budget is in bytes already: `audit_writer.rs`.)
#![allow(clippy::unwrap_used)]

#[macro_use]
mod audit_support;

use std::collections::HashSet;
use std::time::Duration;

use audit_support::{TestDb, event, wait_until};
use namegate::audit::AuditEvent;
use namegate::audit::lookup::{self, MAX_PAGE_BYTES};
use namegate::audit::store::Page;
use namegate::audit::writer::{AuditMetrics, AuditWriter, WriterConfig};

both_engines!(
    queue_is_bounded_in_bytes,
    rejected_file_is_bounded_in_bytes,
    lookup_pages_are_bounded_in_bytes,
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

/// An event whose `event_data` carries `kib` KiB of text.
fn big(cid: &str, n: u64, kib: usize) -> AuditEvent {
    let mut ev = event(cid, n, Some("uid-1"));
    ev.event_data
        .insert("blob", serde_json::json!("x".repeat(kib * 1024)));
    ev
}

async fn queue_is_bounded_in_bytes(db: TestDb) {
    let store = db.open().await;
    let budget = 256 * 1024;
    let cfg = WriterConfig {
        // Plenty of slots: only the byte budget can stop the queue.
        queue_capacity: 10_000,
        queue_budget_bytes: budget,
        batch_size: 1,
        spill_budget_bytes: 1,
        ..config(&db)
    };
    let (sink, writer) =
        AuditWriter::spawn_with_metrics(store.clone(), cfg, AuditMetrics::default())
            .await
            .unwrap();
    let m = writer.metrics().clone();
    db.outage_begin().await;

    // 32 KiB events while the store is down and the spill takes one batch: the writer holds two,
    // then the queue fills — by bytes, after about budget / 32 KiB events, not 10,000.
    let size = big("rr-0", 0, 32).approx_bytes();
    let mut sent = Vec::new();
    let mut refused = 0u32;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut n = 0u64;
    while refused < 20 {
        assert!(tokio::time::Instant::now() < deadline, "never refused");
        match sink.try_reserve(1) {
            Ok(p) => {
                let ev = big(&format!("rr-{}", n % 3), n, 32);
                p.send(ev.clone());
                sent.push(ev);
                n += 1;
            }
            Err(e) => {
                assert!(e.is_backpressure(), "{e}");
                refused += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let queued = u64::try_from(m.queue_bytes.get()).unwrap();
    // Refused at the budget; the writer may still take one more event off the queue while the
    // refusals are counted (it keeps retrying the store), so the gauge is within one event of it.
    assert!(
        queued + size >= budget && queued < budget + size,
        "queued {queued} bytes with a budget of {budget} (events of {size})"
    );
    assert!(
        (sent.len() as u64) < 2 + budget / size + 2,
        "accepted {} events of {size} bytes under a {budget}-byte budget",
        sent.len()
    );

    // Back up: everything accepted is stored, exactly once.
    db.outage_end().await;
    let stats = writer.shutdown().await;
    assert_eq!(stats.dropped, 0);
    let mut stored = HashSet::new();
    for cid in 0..3 {
        for e in store
            .trail(&format!("rr-{cid}"), Page::first(10_000))
            .await
            .unwrap()
        {
            assert!(stored.insert(e.event_id), "stored twice");
        }
    }
    assert_eq!(stored.len(), sent.len());
    assert_eq!(m.queue_bytes.get(), 0);
    store.close().await;
    db.cleanup().await;
}

async fn rejected_file_is_bounded_in_bytes(db: TestDb) {
    let store = db.open().await;
    let budget = 8 * 1024;
    let cfg = WriterConfig {
        rejected_budget_bytes: budget,
        ..config(&db)
    };
    let rejected_path = cfg.rejected_path();
    let (sink, writer) =
        AuditWriter::spawn_with_metrics(store.clone(), cfg, AuditMetrics::default())
            .await
            .unwrap();
    let m = writer.metrics().clone();
    // Events the store refuses permanently (NUL in text), ~3 KiB each: two fit, the rest cannot.
    for n in 0..6 {
        let mut poison = big("rr-p", n, 3);
        poison.error_message = Some("nul\0inside".into());
        sink.try_reserve(1).unwrap().send(poison);
    }
    wait_until("every poison event handled", WAIT, || async {
        m.rejected.get() + m.dropped.get() == 6
    })
    .await;
    let size = std::fs::metadata(&rejected_path).unwrap().len();
    assert!(size <= budget, "rejected file {size} > {budget}");
    assert_eq!(m.rejected.get(), 2);
    assert_eq!(m.dropped.get(), 4);
    writer.shutdown().await;
    store.close().await;
    db.cleanup().await;
}

async fn lookup_pages_are_bounded_in_bytes(db: TestDb) {
    let store = db.open().await;
    // Ten events of 1 MiB each: a page of 100 must stop near MAX_PAGE_BYTES.
    let events: Vec<AuditEvent> = (0..10).map(|n| big("rr-big", n, 1024)).collect();
    for ev in &events {
        store.append_batch(std::slice::from_ref(ev)).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = lookup::correlation_trail(&store, "rr-big", cursor.as_deref(), 100)
            .await
            .unwrap();
        pages += 1;
        let bytes: usize = page.events().map(|e| e.event_data.to_string().len()).sum();
        assert!(page.count >= 1);
        assert!(
            bytes <= MAX_PAGE_BYTES,
            "a page of {} events holds {bytes} bytes",
            page.count
        );
        seen.extend(page.events().map(|e| e.event_id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(pages < 20, "pagination does not end");
    }
    let want: Vec<_> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(seen, want, "every event once, in order");
    assert!(
        pages >= 3,
        "10 MiB in pages of at most 4 MiB: {pages} pages"
    );
    store.close().await;
    db.cleanup().await;
}
