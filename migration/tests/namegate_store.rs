//! The migration of namegate's own audit store, on SQLite and on real PostgreSQL
//! (`NAMEGATE_TEST_POSTGRES_URL`), through the real binary; the store, its verification and its
//! lookups are the gateway's own code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pg_support;

use std::process::{Command, Output};

use crd_schema::{CorrelationId, Fingerprint};
use namegate::audit::lookup;
use namegate::audit::store::{AuditStore, Page};
use namegate::audit::{AuditEvent, EventOutcome, EventType};

struct Store {
    url: String,
    _dir: tempfile::TempDir,
    /// PostgreSQL: the test's database, dropped with the test (also when it fails).
    _db: Option<pg_support::TempDatabase>,
}

impl Store {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("audit.db").display());
        Self {
            url,
            _dir: dir,
            _db: None,
        }
    }

    async fn postgres() -> Self {
        let db = pg_support::TempDatabase::create("ng").await;
        Self {
            url: db.url.clone(),
            _dir: tempfile::tempdir().unwrap(),
            _db: Some(db),
        }
    }

    fn migrate(&self, extra: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_namegate-migrate"))
            .arg("--audit-url")
            .arg(&self.url)
            .args(extra)
            .output()
            .unwrap()
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ev(cid: &str, fp: Option<&Fingerprint>, at: &str, data: serde_json::Value) -> AuditEvent {
    let mut e = AuditEvent::new(EventType::SignalDeduplicated, EventOutcome::Success, cid);
    e.event_timestamp = at.parse().unwrap();
    e.fingerprint = fp.map(Fingerprint::to_hex);
    e.namespace = Some("prod".into());
    e.event_data = data.into();
    e
}

async fn scenario(store: Store) {
    let db = AuditStore::open(&store.url, None).await.unwrap();
    let fp = Fingerprint::of_input("prod:Deployment:payment-api");
    let p12 = &fp.to_hex()[..12];
    let first = format!("rr-{p12}-1737138721"); // unix-seconds era
    let second = format!("rr-{p12}-1c2b5576"); // uuid-suffix era
    let uid = "5a0e2c3d-8f1b-4c7a-9d2e-1f3b4a5c6d7e"; // the first RR's UID, named by its events
    let look_alike = "9b1e4a2c-0d3f-4e5a-8b6c-7d8e9f0a1b2c"; // a NotificationRequest UID
    let orphan = "rr-aaaaaaaaaaaa-0badcafe"; // no fingerprint anywhere
    db.append_batch(&[
        ev(
            &first,
            Some(&fp),
            "2026-01-17T18:32:01Z",
            serde_json::json!({"n": 1}),
        ),
        ev(
            &first,
            Some(&fp),
            "2026-01-17T18:32:05Z",
            serde_json::json!({"n": 2}),
        ),
        ev(
            uid,
            None,
            "2026-01-17T18:33:00Z",
            serde_json::json!({"n": 3, "rr_name": first}),
        ),
        ev(
            &second,
            Some(&fp),
            "2026-03-01T00:00:00Z",
            serde_json::json!({"n": 4}),
        ),
        ev(
            look_alike,
            None,
            "2026-03-01T00:00:01Z",
            serde_json::json!({"n": 5}),
        ),
        ev(
            orphan,
            None,
            "2026-03-01T00:00:02Z",
            serde_json::json!({"n": 6}),
        ),
    ])
    .await
    .unwrap();
    assert!(db.verify().await.unwrap().is_clean());

    // Dry run: the plan, nothing written.
    let dry = store.migrate(&["--dry-run"]);
    assert_eq!(dry.status.code(), Some(2), "{}", text(&dry));
    assert!(
        text(&dry).contains("legacy-unix-suffix: 1"),
        "{}",
        text(&dry)
    );
    assert_eq!(
        db.correlation_ids_for_legacy(&first).await.unwrap(),
        Vec::<String>::new()
    );

    let run = store.migrate(&[]);
    let out = text(&run);
    assert_eq!(run.status.code(), Some(2), "{out}");
    assert!(out.contains(&format!("UNRESOLVED {orphan}")), "{out}");
    assert!(out.contains("rows rewritten:"), "{out}");
    let new1 = db.correlation_ids_for_legacy(&first).await.unwrap();
    let new2 = db.correlation_ids_for_legacy(&second).await.unwrap();
    assert_eq!(new1.len(), 1);
    assert_eq!(new2.len(), 1);
    let attempt = |n: &str| match CorrelationId::parse(n) {
        CorrelationId::Rr(p) => (p.fingerprint, p.attempt.get()),
        other => panic!("{other:?}"),
    };
    assert_eq!(attempt(&new1[0]), (fp, 1));
    assert_eq!(attempt(&new2[0]), (fp, 2));
    // The UID's events joined their RR's trail.
    assert_eq!(db.correlation_ids_for_legacy(uid).await.unwrap(), new1);
    // Look-alike and unresolved IDs untouched.
    assert_eq!(
        db.trail(look_alike, Page::first(10)).await.unwrap().len(),
        1
    );
    assert_eq!(db.trail(orphan, Page::first(10)).await.unwrap().len(), 1);
    // Chains stay verifiable.
    assert!(db.verify().await.unwrap().is_clean());

    // Lookups: the legacy ID finds the migrated trail, the new name finds the same rows.
    let by_old = lookup::correlation_trail(&db, &first, None, 0)
        .await
        .unwrap();
    let by_new = lookup::correlation_trail(&db, &new1[0], None, 0)
        .await
        .unwrap();
    let ns = |p: &lookup::TrailPage| -> Vec<u64> {
        p.events()
            .map(|e| e.event_data["n"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(ns(&by_old), vec![1, 2, 3]);
    assert_eq!(ns(&by_new), vec![1, 2, 3]);
    assert!(by_old.resolved_ids.contains(&new1[0]));
    let uid_page = lookup::correlation_trail(&db, uid, None, 0).await.unwrap();
    assert_eq!(ns(&uid_page), vec![1, 2, 3]);
    let mut shown = Vec::new();
    namegate::audit::cli::show_from(&db, &first, &mut shown)
        .await
        .unwrap();
    let shown = String::from_utf8(shown).unwrap();
    assert!(shown.contains(&new1[0]), "{shown}");

    // A second run changes nothing and says so.
    let again = store.migrate(&[]);
    assert!(
        text(&again).contains("nothing to change"),
        "{}",
        text(&again)
    );
    assert_eq!(db.correlation_ids_for_legacy(&first).await.unwrap(), new1);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_is_migrated_verifiable_and_looked_up_both_ways() {
    scenario(Store::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run scripts/test"]
async fn postgres_store_is_migrated_verifiable_and_looked_up_both_ways() {
    scenario(Store::postgres().await).await;
}

/// A figure of the report's summary (`  label: N …`).
fn figure(out: &str, label: &str) -> usize {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} in\n{out}"))
}

/// Many fingerprints, each with two legacy names and a UID naming the first.
async fn many_remediations(db: &AuditStore) -> Vec<String> {
    let mut events = Vec::new();
    let mut legacy = Vec::new();
    for i in 0..80u32 {
        let fp = Fingerprint::of_input(&format!("prod:Deployment:app-{i}"));
        let p12 = &fp.to_hex()[..12];
        let a = format!("rr-{p12}-{:08x}", 0x1000_0000 + i);
        let b = format!("rr-{p12}-{}", 1_737_000_000 + i);
        let uid = uuid::Uuid::from_u128(0x5a0e_2c3d_8f1b_4c7a_9d2e_0000_0000_0000 + u128::from(i))
            .to_string();
        events.push(ev(
            &a,
            Some(&fp),
            "2026-01-01T00:00:00Z",
            serde_json::json!({}),
        ));
        events.push(ev(
            &uid,
            None,
            "2026-01-01T00:00:01Z",
            serde_json::json!({"rr_name": a}),
        ));
        events.push(ev(
            &b,
            Some(&fp),
            "2026-02-01T00:00:00Z",
            serde_json::json!({}),
        ));
        legacy.extend([a, b, uid]);
    }
    db.append_batch(&events).await.unwrap();
    legacy
}

/// What a run holds does not grow with the number of remediations (one page, one fingerprint
/// group, one batch: docs/migration.md, "Scale: bounded memory"), and small pages and batches give
/// exactly the result of one large page.
async fn bounded(small: Store, large: Store) {
    let mut mapped = Vec::new();
    for (store, args) in [
        (&small, &["--scan-page", "8", "--batch-rows", "10"][..]),
        (&large, &[][..]),
    ] {
        let db = AuditStore::open(&store.url, None).await.unwrap();
        let legacy = many_remediations(&db).await;
        let run = store.migrate(args);
        let out = text(&run);
        assert_eq!(run.status.code(), Some(0), "{out}");
        let held = figure(&out, "most IDs held at once:");
        let examined = figure(&out, "correlation IDs examined:");
        assert_eq!(examined, 240, "{out}");
        if !args.is_empty() {
            // A page of 8, a group of 3, a batch of at most 10 rows.
            assert!(held <= 8 + 3 + 10, "held {held}\n{out}");
        }
        let mut m = Vec::new();
        for id in &legacy {
            m.push((id.clone(), db.correlation_ids_for_legacy(id).await.unwrap()));
        }
        assert!(m.iter().all(|(_, n)| n.len() == 1), "{m:?}");
        assert!(db.verify().await.unwrap().is_clean());
        let again = store.migrate(args);
        assert!(
            text(&again).contains("nothing to change"),
            "{}",
            text(&again)
        );
        db.close().await;
        mapped.push(m);
    }
    assert_eq!(mapped[0], mapped[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_runs_hold_one_group_at_a_time_and_pages_do_not_change_the_result() {
    bounded(Store::sqlite(), Store::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run scripts/test"]
async fn postgres_runs_hold_one_group_at_a_time_and_pages_do_not_change_the_result() {
    bounded(Store::postgres().await, Store::postgres().await).await;
}
