//! The audit store suite (docs/audit.md), run against SQLite and PostgreSQL alike.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod audit_support;

use audit_support::{TestDb, event};
use jiff::Timestamp;
use namegate::audit::chain::{HashAlgorithm, format_timestamp, truncate_to_micros};
use namegate::audit::cli;
use namegate::audit::lookup;
use namegate::audit::store::{AuditStore, BreakKind, Engine, Page, StoreConfig, StoredEvent};
use namegate::audit::{AuditEvent, EventOutcome, EventType};
use serde_json::json;

both_engines!(
    migrations_are_idempotent,
    append_and_trail_round_trip_in_order,
    appends_are_idempotent_per_event_id,
    invalid_events_are_refused_whole,
    verify_is_clean_and_hmac_is_checked,
    tampering_is_detected_naming_the_event,
    rows_are_append_only_except_the_migration_path,
    concurrent_appends_from_three_pools_keep_one_chain,
    lookup_groups_by_rr_uid_and_paginates,
    cli_show_and_verify_print_for_humans,
);

fn stored(store_events: &[StoredEvent]) -> Vec<u64> {
    store_events
        .iter()
        .map(|e| e.event_data["n"].as_u64().expect("n"))
        .collect()
}

async fn all(store: &AuditStore, cid: &str) -> Vec<StoredEvent> {
    store.trail(cid, Page::first(10_000)).await.expect("trail")
}

/// The newest schema version of each engine (PostgreSQL's 0002 hardens its append-only guard;
/// SQLite's 0002 drops the unused fingerprint index).
fn current_version(db: &TestDb) -> i64 {
    match db.engine {
        Engine::Sqlite | Engine::Postgres | Engine::DataStorage => 2,
    }
}

async fn migrations_are_idempotent(db: TestDb) {
    let store = db.open().await;
    let current = current_version(&db);
    assert_eq!(store.schema_version().await.unwrap(), Some(current));
    // Again, on the open store and through a second open: nothing to apply.
    let again = store.migrate().await.unwrap();
    assert!(again.applied.is_empty(), "{again:?}");
    assert_eq!(again.current, Some(current));
    let second = db.open().await;
    assert_eq!(second.schema_version().await.unwrap(), Some(current));
    // The indexes docs/audit.md names exist.
    let index_query = match db.engine {
        Engine::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_events'"
        }
        Engine::Postgres | Engine::DataStorage => {
            "SELECT indexname::text FROM pg_indexes WHERE tablename = 'audit_events'"
        }
    };
    let names: Vec<String> = match db.engine {
        Engine::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.owner_url).await.unwrap();
            sqlx::query_scalar(index_query)
                .fetch_all(&pool)
                .await
                .unwrap()
        }
        Engine::Postgres | Engine::DataStorage => {
            let pool = sqlx::PgPool::connect(&db.owner_url).await.unwrap();
            sqlx::query_scalar(index_query)
                .fetch_all(&pool)
                .await
                .unwrap()
        }
    };
    for want in [
        "audit_events_correlation_ts",
        "audit_events_legacy_correlation",
        "audit_events_correlation_seq",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "missing index {want}: {names:?}"
        );
    }
    // SQLite's writer does not pay for an index no query uses
    // (docs/decisions/0003-sqlite-drops-unused-index.md); PostgreSQL keeps it.
    let fingerprint = names.iter().any(|n| n == "audit_events_fingerprint_ts");
    assert_eq!(fingerprint, db.engine != Engine::Sqlite, "{names:?}");
    // A read-only open of an empty database reports the schema as missing instead of failing oddly.
    if db.engine == Engine::Sqlite {
        let empty = format!("sqlite://{}", db.dir.path().join("empty.db").display());
        let err = cli::show(&empty, "rr-x", &mut Vec::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("migrate-schema"), "{err}");
    }
    store.close().await;
    second.close().await;
    db.cleanup().await;
}

async fn append_and_trail_round_trip_in_order(db: TestDb) {
    let store = db.open().await;
    // Values that must survive both engines exactly: sub-microsecond timestamps (truncated), odd
    // floats and integers, unicode, escapes, nesting.
    let mut first = event("rr-a", 0, Some("uid-1"));
    first.event_timestamp = "2024-02-29T23:59:59.999999999Z".parse().unwrap();
    first.event_data = json!({
        "n": 0, "rr_uid": "uid-1", "f": 0.1, "g": 1e300, "h": -0.0, "big": u64::MAX, "neg": i64::MIN,
        "s": "é ✓ \"q\" \\ \n \u{1}", "nul": "a\u{0}b", "nested": {"b": [1, {"z": null, "a": true}], "a": []},
        "original_payload": "{\"labels\":{\"alertname\":\"X\"}}"
    })
    .into();
    first.error_code = Some("e".into());
    first.error_message = Some("line1\nline2 \u{7f} ünï".into());
    first.duration_ms = Some(-5);
    first.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
    first.span_id = Some("00f067aa0ba902b7".into());
    first.cluster_id = Some("c1".into());
    let mut batch = vec![first.clone()];
    for n in 1..20 {
        batch.push(event(
            if n % 2 == 0 { "rr-a" } else { "rr-b" },
            n,
            Some("uid-1"),
        ));
    }
    let report = store.append_batch(&batch[..10]).await.unwrap();
    assert_eq!(report.inserted, 10);
    store.append_batch(&batch[10..]).await.unwrap();

    let a = all(&store, "rr-a").await;
    let b = all(&store, "rr-b").await;
    assert_eq!(stored(&a), (0..20).step_by(2).collect::<Vec<_>>());
    assert_eq!(stored(&b), (1..20).step_by(2).collect::<Vec<_>>());
    assert!(a.windows(2).all(|w| w[0].seq < w[1].seq));

    // Field-by-field round trip of the odd event.
    let got = &a[0];
    assert_eq!(got.event_id, first.event_id);
    assert_eq!(
        got.event_timestamp,
        truncate_to_micros(first.event_timestamp)
    );
    assert_eq!(
        format_timestamp(got.event_timestamp),
        "2024-02-29T23:59:59.999999Z"
    );
    assert_eq!(got.event_type, "gateway.signal.deduplicated");
    assert_eq!(got.event_action, "deduplicated");
    assert_eq!(got.event_category, "gateway");
    assert_eq!(got.event_outcome, "success");
    assert_eq!(got.event_version, "1.0");
    assert_eq!(got.event_data, first.event_data);
    assert_eq!(got.error_message, first.error_message);
    assert_eq!(got.duration_ms, Some(-5));
    assert_eq!(got.trace_id, first.trace_id);
    assert_eq!(got.fingerprint, first.fingerprint);
    assert_eq!(got.legacy_correlation_id, None);
    assert_eq!(got.previous_event_hash, None, "first of its chain");
    assert_eq!(got.hash_algorithm, "sha256");
    assert_eq!(
        a[1].previous_event_hash.as_deref(),
        Some(got.event_hash.as_str())
    );
    // The chain verifies after the round trip: the canonical form is stable across the engine.
    let report = store.verify().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!((report.events_checked, report.chains_checked), (20, 2));

    // Paging by seq.
    let page1 = store.trail("rr-a", Page::first(4)).await.unwrap();
    let page2 = store
        .trail(
            "rr-a",
            Page {
                after_seq: Some(page1[3].seq),
                limit: 4,
            },
        )
        .await
        .unwrap();
    assert_eq!(stored(&page1), vec![0, 2, 4, 6]);
    assert_eq!(stored(&page2), vec![8, 10, 12, 14]);
    assert!(all(&store, "rr-none").await.is_empty());
    store.close().await;
    db.cleanup().await;
}

async fn appends_are_idempotent_per_event_id(db: TestDb) {
    let store = db.open().await;
    let batch: Vec<AuditEvent> = (0..5).map(|n| event("rr-a", n, None)).collect();
    store.append_batch(&batch[..3]).await.unwrap();
    // A replay after a lost commit acknowledgement: the first three are skipped, not re-chained.
    let report = store.append_batch(&batch).await.unwrap();
    assert_eq!((report.inserted, report.duplicates), (2, 3));
    // The same event twice in one batch is stored once.
    let twice = event("rr-a", 5, None);
    let report = store.append_batch(&[twice.clone(), twice]).await.unwrap();
    assert_eq!((report.inserted, report.duplicates), (1, 1));
    assert_eq!(stored(&all(&store, "rr-a").await), vec![0, 1, 2, 3, 4, 5]);
    assert!(store.verify().await.unwrap().is_clean());
    store.close().await;
    db.cleanup().await;
}

async fn invalid_events_are_refused_whole(db: TestDb) {
    let store = db.open().await;
    let good = event("rr-a", 1, None);
    let mut bad = event("rr-a", 2, None);
    bad.actor_id = Some("nul\0byte".into());
    let err = store.append_batch(&[good, bad.clone()]).await.unwrap_err();
    assert!(err.is_invalid_input() && err.is_permanent(), "{err}");
    assert!(err.to_string().contains(&bad.event_id.to_string()));
    assert_eq!(
        store.count().await.unwrap(),
        0,
        "nothing of the batch is stored"
    );
    let mut empty = event("", 3, None);
    empty.correlation_id.clear();
    assert!(
        store
            .append_batch(&[empty])
            .await
            .unwrap_err()
            .is_invalid_input()
    );
    store.close().await;
    db.cleanup().await;
}

async fn verify_is_clean_and_hmac_is_checked(db: TestDb) {
    let key = db.dir.path().join("hmac.key");
    std::fs::write(&key, "s3cret-key\n").unwrap();
    let keyed = AuditStore::open_with(&db.config().with_hmac_key_file(&key))
        .await
        .unwrap();
    assert_eq!(keyed.hash_algorithm(), HashAlgorithm::HmacSha256);
    let events: Vec<AuditEvent> = (0..6)
        .map(|n| event(["rr-a", "rr-b"][n as usize % 2], n, None))
        .collect();
    keyed.append_batch(&events).await.unwrap();
    let report = keyed.verify().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(all(&keyed, "rr-a").await[0].hash_algorithm, "hmac-sha256");

    // Without the key the content cannot be vouched for.
    let unkeyed = AuditStore::open_with(&db.config().without_migrations())
        .await
        .unwrap();
    let report = unkeyed.verify().await.unwrap();
    assert!(report.breaks.is_empty());
    assert_eq!(report.unverifiable, 6);
    assert!(!report.is_clean());

    // With the wrong key every row is a break.
    let wrong = db.dir.path().join("wrong.key");
    std::fs::write(&wrong, "other").unwrap();
    let report = AuditStore::open_with(&db.config().with_hmac_key_file(&wrong))
        .await
        .unwrap()
        .verify()
        .await
        .unwrap();
    assert_eq!(report.breaks.len(), 6);
    assert!(
        report
            .breaks
            .iter()
            .all(|b| b.kind == BreakKind::HashMismatch)
    );

    // An empty key file is refused rather than silently meaning "no key".
    let empty = db.dir.path().join("empty.key");
    std::fs::write(&empty, "\n").unwrap();
    let err = AuditStore::open_with(&db.config().with_hmac_key_file(&empty))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    keyed.close().await;
    unkeyed.close().await;
    db.cleanup().await;
}

async fn tampering_is_detected_naming_the_event(db: TestDb) {
    let store = db.open().await;
    let events: Vec<AuditEvent> = (0..15)
        .map(|n| event(if n < 10 { "rr-a" } else { "rr-b" }, n, None))
        .collect();
    store.append_batch(&events).await.unwrap();
    assert!(store.verify().await.unwrap().is_clean());

    // Rewrite the content of one event as the owner, around the trigger.
    let victim = events[4].event_id.to_string();
    db.tamper(
        r#"event_data = '{"n":4,"rr_uid":null,"signal_name":"Harmless"}'"#,
        &victim,
    )
    .await;
    let report = store.verify().await.unwrap();
    assert_eq!(report.breaks.len(), 1, "{report:?}");
    let b = &report.breaks[0];
    assert_eq!(b.event_id, victim);
    assert_eq!(b.correlation_id, "rr-a");
    assert_eq!(b.kind, BreakKind::HashMismatch);
    let line = b.to_string();
    assert!(
        line.starts_with(&format!(
            "chain break at event {victim} (correlation rr-a): event_hash: expected "
        )),
        "{line}"
    );

    // Remove an event of the other chain: the break is named at its successor's link.
    db.tamper_delete(&events[12].event_id.to_string()).await;
    let report = store.verify().await.unwrap();
    assert_eq!(report.breaks.len(), 2, "{report:?}");
    let b = report
        .breaks
        .iter()
        .find(|b| b.correlation_id == "rr-b")
        .unwrap();
    assert_eq!(b.event_id, events[13].event_id.to_string());
    assert_eq!(b.kind, BreakKind::PreviousHashMismatch);

    // Rewriting a row *and* its hash (possible for the owner when there is no HMAC key) moves the
    // break to the next row's link: the chain still shows where.
    let victim = events[7].event_id.to_string();
    db.tamper("event_outcome = 'failure'", &victim).await;
    let report = store.verify().await.unwrap();
    let forged_hash = report
        .breaks
        .iter()
        .find(|b| b.event_id == victim && b.kind == BreakKind::HashMismatch)
        .map(|b| b.expected.clone())
        .expect("content change detected");
    db.tamper(&format!("event_hash = '{forged_hash}'"), &victim)
        .await;
    let report = store.verify().await.unwrap();
    assert!(
        !report.breaks.iter().any(|b| b.event_id == victim),
        "{report:?}"
    );
    let successor = report
        .breaks
        .iter()
        .find(|b| b.event_id == events[8].event_id.to_string())
        .expect("successor's link broken");
    assert_eq!(successor.kind, BreakKind::PreviousHashMismatch);
    assert_eq!(successor.expected, forged_hash);
    store.close().await;
    db.cleanup().await;
}

async fn rows_are_append_only_except_the_migration_path(db: TestDb) {
    let store = db.open().await;
    let legacy = "rr-b157a3a9e42f-1c2b5576";
    let new = "rr-wfpxiwoquc4m4qeqb4uv4c6v2ccaz5m5s2vymgaje3xk6vjpdwjq";
    let events: Vec<AuditEvent> = (0..4).map(|n| event(legacy, n, Some("uid-old"))).collect();
    store.append_batch(&events).await.unwrap();

    for sql in [
        "UPDATE audit_events SET event_outcome = 'failure'",
        "DELETE FROM audit_events",
    ] {
        let err = db.exec_owner(sql).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    if db.engine == Engine::Postgres {
        let err = db
            .exec_owner("TRUNCATE audit_events")
            .await
            .expect_err("truncate");
        assert!(err.to_string().contains("append-only"), "{err}");
    }
    assert_eq!(store.count().await.unwrap(), 4);

    // The migration's controlled rewrite (docs/migration.md) goes through the guard …
    db.migrate_correlation(legacy, new)
        .await
        .expect("guarded rewrite");
    // … and the guard is not left open.
    let err = db
        .exec_owner("DELETE FROM audit_events")
        .await
        .expect_err("guard released");
    assert!(err.to_string().contains("append-only"), "{err}");

    // Migrated rows stay in their original chain: verification is clean.
    let report = store.verify().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    // Both IDs find the migrated rows.
    let by_new = all(&store, new).await;
    let by_old = all(&store, legacy).await;
    assert_eq!(stored(&by_new), vec![0, 1, 2, 3]);
    assert_eq!(by_old, by_new);
    assert!(
        by_new
            .iter()
            .all(|e| e.correlation_id == new && e.legacy_correlation_id.as_deref() == Some(legacy))
    );

    // New events under the new ID start a chain of the new ID; everything still verifies.
    let later: Vec<AuditEvent> = (4..6).map(|n| event(new, n, Some("uid-new"))).collect();
    store.append_batch(&later).await.unwrap();
    let report = store.verify().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.chains_checked, 2);
    let newest = all(&store, new).await;
    assert_eq!(stored(&newest), vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(
        newest[4].previous_event_hash, None,
        "a new chain under the new ID"
    );

    // The lookup by the legacy ID shows the whole trail, the later events included.
    let page = lookup::correlation_trail(&store, legacy, None, 0)
        .await
        .unwrap();
    assert_eq!(page.resolved_ids, vec![legacy.to_owned(), new.to_owned()]);
    assert_eq!(
        page.events()
            .map(|e| e.event_data["n"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 5]
    );
    let uids: Vec<Option<&str>> = page.groups.iter().map(|g| g.rr_uid.as_deref()).collect();
    assert_eq!(uids, vec![Some("uid-old"), Some("uid-new")]);
    store.close().await;
    db.cleanup().await;
}

async fn concurrent_appends_from_three_pools_keep_one_chain(db: TestDb) {
    // Three stores = three replicas with their own connections, appending to one correlation ID.
    let first = db.open().await;
    let mut tasks = Vec::new();
    for replica in 0..3u64 {
        let store = AuditStore::open_with(&{
            let mut c = db.config();
            // SQLite: writers queue on the file lock; let them wait instead of failing.
            c.busy_timeout = std::time::Duration::from_secs(30);
            c.acquire_timeout = std::time::Duration::from_secs(30);
            c
        })
        .await
        .unwrap();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut batch_size = 1 + replica as usize;
            while n < 300 {
                let k = batch_size.min((300 - n) as usize);
                let batch: Vec<AuditEvent> = (n..n + k as u64)
                    .map(|i| {
                        let mut e = event("rr-shared", replica * 1000 + i, Some("uid-1"));
                        e.actor_id = Some(format!("replica-{replica}"));
                        e
                    })
                    .collect();
                store.append_batch(&batch).await.expect("append");
                n += k as u64;
                batch_size = batch_size % 7 + 1;
                // Replicas append as requests arrive, not in a tight loop; a pause also lets SQLite's
                // busy handler (which polls) get the write lock at all.
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            store.close().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let trail = all(&first, "rr-shared").await;
    assert_eq!(trail.len(), 900);
    // One chain: every row links to the row before it in storage order.
    for w in trail.windows(2) {
        assert_eq!(
            w[1].previous_event_hash.as_deref(),
            Some(w[0].event_hash.as_str()),
            "seq {}",
            w[1].seq
        );
    }
    // The appends really interleaved (otherwise this test proves nothing about concurrency).
    let switches = trail
        .windows(2)
        .filter(|w| w[0].actor_id != w[1].actor_id)
        .count();
    assert!(switches >= 10, "only {switches} switches between replicas");
    // Each replica's events in its own order, all of them.
    for replica in 0..3u64 {
        let mine: Vec<u64> = stored(&trail)
            .into_iter()
            .filter(|n| n / 1000 == replica)
            .collect();
        assert_eq!(
            mine,
            (0..300).map(|i| replica * 1000 + i).collect::<Vec<_>>()
        );
    }
    let report = first.verify().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!((report.events_checked, report.chains_checked), (900, 1));
    first.close().await;
    db.cleanup().await;
}

async fn lookup_groups_by_rr_uid_and_paginates(db: TestDb) {
    let store = db.open().await;
    let cid = "rr-name";
    let base: Timestamp = "2025-01-17T10:00:00Z".parse().unwrap();
    // One name, two RR objects over time; received events carry no rr_uid.
    let plan: [(&str, Option<&str>); 7] = [
        ("received", None),
        ("created", Some("uid-1")),
        ("deduplicated", Some("uid-1")),
        ("received", None),
        ("created", Some("uid-2")),
        ("received", None),
        ("deduplicated", Some("uid-2")),
    ];
    let mut events = Vec::new();
    for (i, (kind, uid)) in plan.iter().enumerate() {
        let mut e = event(cid, i as u64, *uid);
        e.event_type = match *kind {
            "received" => EventType::SignalReceived,
            "created" => EventType::CrdCreated,
            _ => EventType::SignalDeduplicated,
        };
        e.event_outcome = EventOutcome::Success;
        // Stored out of time order: the lookup orders by time.
        e.event_timestamp = base + jiff::SignedDuration::from_secs(i as i64);
        events.push(e);
    }
    events.reverse();
    for e in &events {
        store.append_batch(std::slice::from_ref(e)).await.unwrap();
    }
    let page = lookup::correlation_trail(&store, cid, None, 0)
        .await
        .unwrap();
    assert_eq!(page.count, 7);
    assert_eq!(page.next_cursor, None);
    let shape: Vec<(Option<&str>, Vec<u64>)> = page
        .groups
        .iter()
        .map(|g| {
            (
                g.rr_uid.as_deref(),
                g.events
                    .iter()
                    .map(|e| e.event_data["n"].as_u64().unwrap())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (Some("uid-1"), vec![0, 1, 2]),
            (Some("uid-2"), vec![3, 4, 5, 6])
        ]
    );

    // Pages of 3 walk the same order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = lookup::correlation_trail(&store, cid, cursor.as_deref(), 3)
            .await
            .unwrap();
        pages += 1;
        seen.extend(page.events().map(|e| e.event_data["n"].as_u64().unwrap()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, (0..7).collect::<Vec<_>>());
    assert_eq!(pages, 3);
    let err = lookup::correlation_trail(&store, cid, Some("garbage"), 3)
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    let empty = lookup::correlation_trail(&store, "rr-unknown", None, 0)
        .await
        .unwrap();
    assert_eq!(empty.count, 0);
    // The JSON shape the HTTP endpoint returns.
    let body = serde_json::to_value(&page).unwrap();
    assert_eq!(body["groups"][0]["rr_uid"], "uid-1");
    assert_eq!(
        body["groups"][0]["events"][0]["event_type"],
        "gateway.signal.received"
    );
    assert_eq!(
        body["groups"][0]["events"][0]["event_timestamp"],
        "2025-01-17T10:00:00.000000Z"
    );
    store.close().await;
    db.cleanup().await;
}

async fn cli_show_and_verify_print_for_humans(db: TestDb) {
    let store = db.open().await;
    let events: Vec<AuditEvent> = (0..3).map(|n| event("rr-cli", n, Some("uid-9"))).collect();
    store.append_batch(&events).await.unwrap();
    let mut out = Vec::new();
    cli::show(&db.url, "rr-cli", &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "audit trail of rr-cli");
    assert_eq!(lines[1], "RR object uid uid-9:");
    for (i, e) in events.iter().enumerate() {
        assert!(
            lines[2 + i].contains(&format!("event={}", e.event_id)),
            "{text}"
        );
        assert!(
            lines[2 + i].contains("gateway.signal.deduplicated"),
            "{text}"
        );
    }
    assert_eq!(lines[5], "3 event(s)");
    let err = cli::show(&db.url, "rr-nothing", &mut Vec::new())
        .await
        .unwrap_err();
    assert!(err.is_not_found());

    let mut out = Vec::new();
    let report = cli::verify_to(&db.url, None, &mut out).await.unwrap();
    assert!(report.is_clean());
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "3 event(s) in 1 chain(s) checked: all chains intact\n"
    );

    db.tamper("severity = 'info'", &events[1].event_id.to_string())
        .await;
    let mut out = Vec::new();
    let report = cli::verify_to(&db.url, None, &mut out).await.unwrap();
    assert!(!report.is_clean());
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with(&format!(
            "chain break at event {} (correlation rr-cli): event_hash: expected ",
            events[1].event_id
        )),
        "{text}"
    );
    assert!(
        text.ends_with("3 event(s) in 1 chain(s) checked: 1 break(s)\n"),
        "{text}"
    );

    let mut out = Vec::new();
    let report = cli::migrate_schema_to(&db.url, &mut out).await.unwrap();
    assert!(report.applied.is_empty());
    assert!(
        String::from_utf8(out)
            .unwrap()
            .contains(&format!("is current (version {})", current_version(&db)))
    );
    store.close().await;
    db.cleanup().await;
}

#[tokio::test]
async fn a_fresh_store_reports_what_migrate_schema_applied() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}",
        dir.path().join("nested/dir/audit.db").display()
    );
    let mut out = Vec::new();
    let report = cli::migrate_schema_to(&url, &mut out).await.unwrap();
    assert_eq!(report.applied, vec![1, 2]);
    assert!(
        String::from_utf8(out)
            .unwrap()
            .contains("applied migration(s) 1, 2; now at version 2")
    );
    // The file was created, WAL mode.
    let store = AuditStore::open_with(&StoreConfig::new(&url).without_migrations())
        .await
        .unwrap();
    assert_eq!(store.engine(), Engine::Sqlite);
    assert!(dir.path().join("nested/dir/audit.db").exists());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    store.close().await;
}

/// docs/audit.md, "Store": the SQLite WAL is checkpointed at SQLite's threshold of 1,000 pages (16
/// KiB each in a new store) right after the commit that crossed it, and the file is reused: however
/// much is appended, the `-wal` file stays within the threshold plus one batch, and what was appended
/// is in the database file itself.
#[tokio::test]
async fn the_sqlite_wal_is_checkpointed_and_reused_within_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let wal = dir.path().join("audit.db-wal");
    let config = StoreConfig::new(format!("sqlite://{}", path.display())).for_batch_writer();
    let store = AuditStore::open_with(&config).await.unwrap();
    const THRESHOLD: u64 = 1_000 * 16_384;
    let pad = "x".repeat(2_000);
    let mut largest_wal = 0;
    // What one batch adds to the WAL (its pages, index pages, frame headers): the first batch's.
    let mut batch_wal = None;
    let (batches, per_batch) = (50u64, 256u64);
    for b in 0..batches {
        let batch: Vec<AuditEvent> = (0..per_batch)
            .map(|i| {
                let n = b * per_batch + i;
                let mut ev = event(&format!("rr-{}", i % 7), n, None);
                ev.event_data = json!({ "n": n, "pad": pad }).into();
                ev
            })
            .collect();
        store.append_batch(&batch).await.unwrap();
        let size = std::fs::metadata(&wal).unwrap().len();
        batch_wal.get_or_insert(size);
        largest_wal = largest_wal.max(size);
    }
    assert_eq!(store.count().await.unwrap(), batches * per_batch);
    let db_bytes = std::fs::metadata(&path).unwrap().len();
    eprintln!("WAL: largest {largest_wal} B, one batch {batch_wal:?} B; database {db_bytes} B");
    // ~30 MB appended: without checkpoints the WAL would hold all of it and the database file none.
    assert!(
        db_bytes > THRESHOLD,
        "database file {db_bytes} B: the WAL was not checkpointed into it"
    );
    // At most the threshold plus the batch that crossed it (allowing that batch twice the first's
    // pages: later batches also split index pages).
    let limit = THRESHOLD + 2 * batch_wal.unwrap();
    assert!(
        largest_wal <= limit,
        "the WAL reached {largest_wal} B, over {limit} B"
    );
    // Closing the store (its last connection) checkpoints the rest and removes the file.
    store.close().await;
    assert!(!wal.exists(), "the -wal file outlived the store");
}

/// 300 events in 5 chains (`rr-0` … `rr-4`), appended by the writer's store, which is then closed.
async fn fill_300_events_in_5_chains(url: &str) {
    let store = AuditStore::open_with(&StoreConfig::new(url).for_batch_writer())
        .await
        .unwrap();
    let batch: Vec<AuditEvent> = (0..300u64)
        .map(|n| event(&format!("rr-{}", n % 5), n, None))
        .collect();
    store.append_batch(&batch).await.unwrap();
    store.close().await;
}

/// Opens a store filled by [`fill_300_events_in_5_chains`] as the writer does: its 300 events are
/// there, one more appended to `rr-0` goes on in that chain, and all 301 verify.
async fn reopened_goes_on_in_its_chains(url: &str) -> AuditStore {
    let store = AuditStore::open_with(&StoreConfig::new(url).for_batch_writer())
        .await
        .unwrap();
    assert_eq!(store.count().await.unwrap(), 300);
    store
        .append_batch(&[event("rr-0", 300, None)])
        .await
        .unwrap();
    let report = store.verify().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.events_checked, 301);
    store
}

/// A store created before SQLite migration 0002 (with the `(fingerprint, event_timestamp)` index and
/// at schema version 1) is migrated when opened: the index is dropped, its events and chains stay,
/// and appends go on in the same chains (docs/decisions/0003-sqlite-drops-unused-index.md).
#[tokio::test]
async fn an_existing_store_loses_the_unused_index_and_keeps_its_chains() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    fill_300_events_in_5_chains(&url).await;
    // Back to what version 1 left: the index, filled, and no record of migration 2.
    let index_exists = || async {
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE name = 'audit_events_fingerprint_ts'",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
        n == 1
    };
    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "CREATE INDEX audit_events_fingerprint_ts ON audit_events (fingerprint, event_timestamp); \
         DELETE FROM namegate_audit_schema_migrations WHERE version = 2;",
    )
    .execute(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    assert!(index_exists().await);

    let mut out = Vec::new();
    let report = cli::migrate_schema_to(&url, &mut out).await.unwrap();
    assert_eq!(report.applied, vec![2]);
    assert!(!index_exists().await, "the migration drops the index");
    let store = reopened_goes_on_in_its_chains(&url).await;
    assert_eq!(store.count().await.unwrap(), 301);
    store.close().await;
}

/// docs/audit.md, "Store": a store created with 4 KiB pages (every release before 16 KiB became the
/// default) keeps them; converted offline with the statements given there it has 16 KiB pages, every
/// event, and chains that still verify.
#[tokio::test]
async fn an_old_4_kib_store_converted_offline_keeps_its_events_and_chains() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let url = format!("sqlite://{}", path.display());
    // A store as older releases created it: 4 KiB pages, WAL.
    let old = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .page_size(4096)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
    sqlx::SqliteConnection::connect_with(&old)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    let page_size = || async {
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let page: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
        page
    };
    fill_300_events_in_5_chains(&url).await;
    assert_eq!(
        page_size().await,
        4096,
        "an existing store keeps its page size"
    );

    // The offline conversion (gateway stopped): out of WAL, new page size, rebuild, back to WAL.
    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    for sql in [
        "PRAGMA journal_mode = DELETE",
        "PRAGMA page_size = 16384",
        "VACUUM",
        "PRAGMA journal_mode = WAL",
    ] {
        sqlx::query(sql).execute(&mut c).await.unwrap();
    }
    c.close().await.unwrap();
    assert_eq!(page_size().await, 16384);

    let store = reopened_goes_on_in_its_chains(&url).await;
    assert_eq!(all(&store, "rr-0").await.len(), 61);
    store.close().await;
}

/// docs/decisions/0002-writer-skips-json-check.md: the writer's store does not evaluate the table's
/// `json_valid` CHECK, so what it appends must be JSON by construction — text with escapes, non-ASCII,
/// nesting and odd numbers included, in a store created before (whose schema keeps the CHECK).
#[tokio::test]
async fn the_writers_store_appends_only_valid_json_and_the_check_stays_in_the_schema() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    // An existing store: created and written by the lookup store, as `serve` does.
    let lookups = AuditStore::open_with(&StoreConfig::new(&url))
        .await
        .unwrap();
    lookups
        .append_batch(&[event("rr-0", 0, None)])
        .await
        .unwrap();
    let writer = AuditStore::open_with(
        &StoreConfig::new(&url)
            .without_migrations()
            .for_batch_writer(),
    )
    .await
    .unwrap();
    let odd = [
        json!({ "n": 1, "s": "quote \" backslash \\ tab \t nl \n nul-free \u{1} é 雪 🦀" }),
        json!({ "n": 2, "nested": { "b": [1, -2, 3.5e300, null, true], "a": {} }, "big": u64::MAX }),
        json!({ "n": 3, "key with \"quotes\"": "\u{7f}\u{2028}", "": "" }),
    ];
    let batch: Vec<AuditEvent> = odd
        .iter()
        .enumerate()
        .map(|(i, data)| {
            let mut ev = event("rr-0", i as u64 + 1, None);
            ev.event_data = data.clone().into();
            ev
        })
        .collect();
    assert_eq!(writer.append_batch(&batch).await.unwrap().inserted, 3);
    writer.close().await;

    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let invalid: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE NOT json_valid(event_data)")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(invalid, 0);
    let schema: String =
        sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = 'audit_events'")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert!(
        schema.contains("CHECK (json_valid(event_data))"),
        "{schema}"
    );
    c.close().await.unwrap();
    let report = lookups.verify().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(all(&lookups, "rr-0").await.len(), 4);
    lookups.close().await;
}

/// docs/audit.md, "The writer's thread": the writer's SQLite appends (on a connection of their own,
/// `StoreConfig::for_batch_writer`) fail exactly as the pool's do. Another process holding the write
/// lock past the busy timeout is an unavailable store (the writer retries, then spills), for both.
#[tokio::test]
async fn a_locked_sqlite_store_is_unavailable_to_the_writers_appends_as_to_the_pools() {
    let db = TestDb::sqlite().await;
    let pool_store = db.open().await;
    let writer_store = AuditStore::open_with(&db.config().for_batch_writer())
        .await
        .unwrap();
    db.outage_begin().await;
    for (what, store) in [("pool", &pool_store), ("writer", &writer_store)] {
        let err = store
            .append_batch(&[event("rr-0", 0, None)])
            .await
            .expect_err(what);
        assert!(
            err.is_unavailable() && err.is_retryable(),
            "{what}: {err:?}"
        );
        assert!(err.to_string().contains("locked"), "{what}: {err}");
    }
    db.outage_end().await;
    // And the lock released, both append into one chain.
    writer_store
        .append_batch(&[event("rr-0", 1, None)])
        .await
        .unwrap();
    pool_store
        .append_batch(&[event("rr-0", 2, None)])
        .await
        .unwrap();
    writer_store
        .append_batch(&[event("rr-0", 3, None)])
        .await
        .unwrap();
    assert_eq!(stored(&all(&pool_store, "rr-0").await), vec![1, 2, 3]);
    assert!(pool_store.verify().await.unwrap().is_clean());
    writer_store.close().await;
    pool_store.close().await;
}

/// A store that cannot be written (here: opened read-only, `mode=ro`; the tests run as root, whom file
/// permissions do not stop) is unavailable to the writer's appends as to the pool's: SQLITE_READONLY.
#[tokio::test]
async fn a_read_only_sqlite_store_is_unavailable_to_the_writers_appends_as_to_the_pools() {
    let db = TestDb::sqlite().await;
    let store = db.open().await;
    store.append_batch(&[event("rr-0", 0, None)]).await.unwrap();
    let read_only = format!("{}?mode=ro", db.url);
    for (what, config) in [
        ("pool", StoreConfig::new(&read_only).without_migrations()),
        (
            "writer",
            StoreConfig::new(&read_only)
                .without_migrations()
                .for_batch_writer(),
        ),
    ] {
        let ro = AuditStore::open_with(&config).await.expect(what);
        let err = ro
            .append_batch(&[event("rr-0", 1, None)])
            .await
            .expect_err(what);
        assert!(err.is_unavailable(), "{what}: {err:?}");
        assert!(err.to_string().contains("readonly"), "{what}: {err}");
        ro.close().await;
    }
    assert_eq!(store.count().await.unwrap(), 1);
    store.close().await;
}
