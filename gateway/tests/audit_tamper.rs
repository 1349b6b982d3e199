//! Tamper evidence without holes (docs/audit.md, "Tamper evidence"): each way of tampering that a hash
//! chain alone cannot see, done for real on both engines, and the break `verify` must name.
//!
//! - rows rewritten as unkeyed (a valid `sha256` re-chain) under a key → `Unkeyed`;
//! - the newest events of a chain deleted → `Truncated` (checkpointed head missing);
//! - a whole chain deleted → `ChainMissing`;
//! - a whole chain rewritten consistently without a key → `CheckpointMismatch`;
//! - a checkpoint line forged without the key → `BadCheckpoint`;
//! - PostgreSQL: a role that may write the table but does not own it cannot get around the append-only
//!   trigger by setting the migration's session variable.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod audit_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use audit_support::{TestDb, event};
use namegate::audit::chain::{self, ChainHasher};
use namegate::audit::store::{
    AuditStore, BreakKind, Engine, Page, StoredEvent, VerifyOptions, VerifyReport,
};

both_engines!(
    rows_rewritten_unkeyed_fail_under_a_key,
    unkeyed_rows_from_before_the_key_are_accepted_when_told,
    deleting_the_newest_events_is_detected,
    deleting_a_whole_chain_is_detected,
    rewriting_a_whole_chain_without_a_key_is_detected,
    forged_checkpoint_lines_are_detected,
);

fn key_file(db: &TestDb) -> PathBuf {
    let key = db.dir.path().join("hmac.key");
    std::fs::write(&key, "audit-key\n").unwrap();
    key
}

fn checkpoints(db: &TestDb) -> PathBuf {
    db.dir.path().join("audit-checkpoints.jsonl")
}

/// A store that checkpoints after every append (interval zero), keyed or not.
async fn open(db: &TestDb, key: Option<&Path>) -> AuditStore {
    let mut cfg = db
        .config()
        .with_checkpoints(checkpoints(db), Duration::ZERO);
    cfg.hmac_key_file = key.map(Path::to_owned);
    AuditStore::open_with(&cfg).await.unwrap()
}

async fn chain_of(store: &AuditStore, cid: &str) -> Vec<StoredEvent> {
    store.trail(cid, Page::first(1000)).await.unwrap()
}

async fn verify(store: &AuditStore, db: &TestDb) -> VerifyReport {
    store
        .verify_with(&VerifyOptions {
            checkpoints: vec![checkpoints(db)],
            unkeyed_before: None,
        })
        .await
        .unwrap()
}

fn kinds(report: &VerifyReport) -> Vec<BreakKind> {
    report.breaks.iter().map(|b| b.kind).collect()
}

/// Appends `n` events to each of `cids`, one batch per event (so each gets its own checkpoint line).
async fn fill(store: &AuditStore, cids: &[&str], n: u64) {
    for i in 0..n {
        for cid in cids {
            store.append_batch(&[event(cid, i, None)]).await.unwrap();
        }
    }
    store.flush_checkpoint();
}

/// Re-chains `rows` (one whole chain, in order) as an attacker without the key can: plain SHA-256,
/// every link and hash consistent. `edit` may change a row's content first.
async fn rechain_unkeyed(db: &TestDb, rows: &[StoredEvent], edit: impl Fn(usize, &mut String)) {
    let plain = ChainHasher::default();
    let mut prev = String::new();
    for (i, ev) in rows.iter().enumerate() {
        let mut raw = ev.to_raw();
        edit(i, &mut raw.event_data);
        let hash = plain.hash(&prev, &chain::canonical(&raw));
        let prev_sql = if prev.is_empty() {
            "NULL".to_owned()
        } else {
            format!("'{prev}'")
        };
        db.tamper(
            &format!(
                "event_data = '{}', event_hash = '{hash}', previous_event_hash = {prev_sql}, \
                 hash_algorithm = 'sha256'",
                raw.event_data.replace('\'', "''")
            ),
            &raw.event_id,
        )
        .await;
        prev = hash;
    }
}

async fn rows_rewritten_unkeyed_fail_under_a_key(db: TestDb) {
    let key = key_file(&db);
    let store = open(&db, Some(&key)).await;
    fill(&store, &["rr-a"], 4).await;
    assert!(verify(&store, &db).await.is_clean());

    // The whole chain re-hashed without the key: every link and hash is a valid SHA-256 chain.
    let rows = chain_of(&store, "rr-a").await;
    rechain_unkeyed(&db, &rows, |_, _| {}).await;

    // Without a key nothing is wrong with it (this is what the key is for)…
    let unkeyed = AuditStore::open_with(&db.config().without_migrations())
        .await
        .unwrap();
    let plain_report = unkeyed.verify().await.unwrap();
    assert!(plain_report.breaks.is_empty(), "{plain_report:?}");
    // …with the key, every downgraded row is named.
    let report = verify(&store, &db).await;
    let unkeyed_breaks: Vec<&str> = report
        .breaks
        .iter()
        .filter(|b| b.kind == BreakKind::Unkeyed)
        .map(|b| b.event_id.as_str())
        .collect();
    let ids: Vec<String> = rows.iter().map(|r| r.event_id.to_string()).collect();
    assert_eq!(unkeyed_breaks, ids, "{report:?}");
    // The head was checkpointed with its keyed hash: that is a second, independent finding.
    assert!(kinds(&report).contains(&BreakKind::CheckpointMismatch));
    assert!(
        report.breaks[0].to_string().contains("unkeyed"),
        "{}",
        report.breaks[0]
    );
    store.close().await;
    db.cleanup().await;
}

async fn unkeyed_rows_from_before_the_key_are_accepted_when_told(db: TestDb) {
    // A store that ran without a key, then got one.
    let before = AuditStore::open_with(&db.config()).await.unwrap();
    before
        .append_batch(&[event("rr-old", 0, None)])
        .await
        .unwrap();
    let key_introduced = jiff::Timestamp::now();
    let key = key_file(&db);
    let keyed = open(&db, Some(&key)).await;
    keyed
        .append_batch(&[event("rr-new", 0, None)])
        .await
        .unwrap();
    keyed.flush_checkpoint();

    let strict = verify(&keyed, &db).await;
    assert_eq!(kinds(&strict), vec![BreakKind::Unkeyed], "{strict:?}");
    let told = keyed
        .verify_with(&VerifyOptions {
            checkpoints: vec![checkpoints(&db)],
            unkeyed_before: Some(key_introduced),
        })
        .await
        .unwrap();
    assert!(told.is_clean(), "{told:?}");
    keyed.close().await;
    db.cleanup().await;
}

async fn deleting_the_newest_events_is_detected(db: TestDb) {
    let store = open(&db, None).await;
    fill(&store, &["rr-a", "rr-b"], 5).await;
    let clean = verify(&store, &db).await;
    assert!(clean.is_clean(), "{clean:?}");
    assert_eq!(clean.checkpoint_heads_checked, 2);

    let rows = chain_of(&store, "rr-a").await;
    // Without checkpoints, a cut tail verifies: the hole this closes.
    db.tamper_delete(&rows[4].event_id.to_string()).await;
    db.tamper_delete(&rows[3].event_id.to_string()).await;
    assert!(store.verify().await.unwrap().breaks.is_empty());

    let report = verify(&store, &db).await;
    assert_eq!(kinds(&report), vec![BreakKind::Truncated], "{report:?}");
    let b = &report.breaks[0];
    assert_eq!(b.chain_key, "rr-a");
    assert_eq!(b.event_id, rows[4].event_id.to_string());
    assert!(b.got.contains(&rows[2].event_id.to_string()), "{b}");
    store.close().await;
    db.cleanup().await;
}

async fn deleting_a_whole_chain_is_detected(db: TestDb) {
    let store = open(&db, None).await;
    fill(&store, &["rr-a", "rr-b"], 3).await;
    let rows = chain_of(&store, "rr-b").await;
    for r in &rows {
        db.tamper_delete(&r.event_id.to_string()).await;
    }
    assert!(store.verify().await.unwrap().breaks.is_empty());

    let report = verify(&store, &db).await;
    assert_eq!(kinds(&report), vec![BreakKind::ChainMissing], "{report:?}");
    assert_eq!(report.breaks[0].chain_key, "rr-b");
    assert_eq!(report.breaks[0].event_id, rows[2].event_id.to_string());
    store.close().await;
    db.cleanup().await;
}

async fn rewriting_a_whole_chain_without_a_key_is_detected(db: TestDb) {
    let store = open(&db, None).await;
    fill(&store, &["rr-a"], 3).await;
    let rows = chain_of(&store, "rr-a").await;
    rechain_unkeyed(&db, &rows, |i, data| {
        if i == 1 {
            *data = data.replace("KubePodCrashLooping", "NothingToSeeHere");
        }
    })
    .await;
    assert!(store.verify().await.unwrap().breaks.is_empty());

    let report = verify(&store, &db).await;
    assert_eq!(
        kinds(&report),
        vec![BreakKind::CheckpointMismatch],
        "{report:?}"
    );
    assert_eq!(report.breaks[0].event_id, rows[2].event_id.to_string());
    store.close().await;
    db.cleanup().await;
}

async fn forged_checkpoint_lines_are_detected(db: TestDb) {
    let key = key_file(&db);
    let store = open(&db, Some(&key)).await;
    fill(&store, &["rr-a"], 2).await;
    assert!(verify(&store, &db).await.is_clean());

    // A line claiming rr-a ends earlier, sealed without the key.
    let rows = chain_of(&store, "rr-a").await;
    let mut forged = serde_json::json!({
        "v": 1, "at": "2026-01-01T00:00:00Z", "alg": "hmac-sha256",
        "heads": [{"chain": "rr-a", "event_id": rows[0].event_id.to_string(), "event_hash": rows[0].event_hash}],
    });
    let seal = ChainHasher::default().hash("", &chain::canonical_json(&forged));
    forged["seal"] = serde_json::json!(seal);
    let mut text = std::fs::read_to_string(checkpoints(&db)).unwrap();
    text.push_str(&format!("{forged}\n"));
    std::fs::write(checkpoints(&db), text).unwrap();

    let report = verify(&store, &db).await;
    assert_eq!(kinds(&report), vec![BreakKind::BadCheckpoint], "{report:?}");
    assert!(
        report.breaks[0].got.contains("seal"),
        "{}",
        report.breaks[0]
    );
    store.close().await;
    db.cleanup().await;
}

/// PostgreSQL: the migration's session variable is honoured for the table owner only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run scripts/test"]
async fn append_only_guard_is_not_bypassed_by_a_session_variable() {
    audit_support::init_logging();
    let db = TestDb::postgres().await;
    assert_eq!(db.engine, Engine::Postgres);
    let store = db.open().await;
    store.append_batch(&[event("rr-a", 0, None)]).await.unwrap();
    let id = chain_of(&store, "rr-a").await[0].event_id;
    let role = format!("writer_{}", uuid::Uuid::now_v7().simple());

    db.exec_owner(&format!(
        "CREATE ROLE {role}; GRANT SELECT, INSERT, UPDATE, DELETE ON audit_events TO {role};"
    ))
    .await
    .unwrap();
    for statement in [
        format!("UPDATE audit_events SET correlation_id = 'rr-x' WHERE event_id = '{id}'"),
        format!("DELETE FROM audit_events WHERE event_id = '{id}'"),
    ] {
        let err = db
            .exec_owner(&format!(
                "BEGIN; SET LOCAL ROLE {role}; SET LOCAL namegate.migration = 'on'; {statement}; COMMIT;"
            ))
            .await
            .expect_err("a non-owner role must not rewrite audit rows");
        assert!(
            err.to_string().contains("append-only"),
            "{statement}: {err}"
        );
    }
    // The owner still has the controlled path (the correlation-ID migration).
    db.migrate_correlation("rr-a", "rr-b").await.unwrap();
    assert_eq!(chain_of(&store, "rr-b").await.len(), 1);
    assert!(store.verify().await.unwrap().is_clean());

    db.exec_owner(&format!("DROP OWNED BY {role}; DROP ROLE {role};"))
        .await
        .unwrap();
    store.close().await;
    db.cleanup().await;
}
