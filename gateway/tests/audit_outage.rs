//! The store outage of docs/audit.md: PostgreSQL itself is stopped (`scripts/lib/pg stop`, fast mode)
//! for ~30 s while events keep arriving, then started again. The spill must grow during the outage and
//! be replayed afterwards: every event exactly once, in order, every chain intact, nothing dropped.
//!
//! It stops the whole server, so it lives alone in this test binary (cargo runs test binaries one
//! after another) and needs the cluster `scripts/lib/pg` manages (the one `scripts/test` starts).
//! `NAMEGATE_AUDIT_OUTAGE_SECS` shortens or lengthens the outage (default 30).
#![allow(clippy::unwrap_used)]

mod audit_support;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use audit_support::{PG_ENV, TestDb, event, init_logging, wait_until};
use namegate::audit::AuditEvent;
use namegate::audit::store::{AuditStore, Page, StoreConfig};
use namegate::audit::writer::{AuditMetrics, AuditWriter, WriterConfig};

const PG_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/lib/pg");
const CORRELATIONS: u64 = 10;

fn pg(cmd: &str) -> String {
    let out = Command::new(PG_SCRIPT)
        .arg(cmd)
        .output()
        .unwrap_or_else(|e| panic!("running {PG_SCRIPT} {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{PG_SCRIPT} {cmd} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Starts the server again if the test ends (or panics) while it is stopped, so later test binaries
/// find it running.
struct RestartOnDrop {
    stopped: Arc<AtomicBool>,
}

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        if self.stopped.load(Ordering::SeqCst) {
            let _ = Command::new(PG_SCRIPT).arg("start").output();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run scripts/test"]
async fn postgres_stopped_during_writes_every_event_lands_once_in_order() {
    let outage = Duration::from_secs(
        std::env::var("NAMEGATE_AUDIT_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30),
    );
    init_logging();
    let db = TestDb::postgres().await;
    let env_url = std::env::var(PG_ENV).expect("checked by TestDb::postgres");
    assert_eq!(
        pg("url"),
        env_url,
        "this test stops the server with scripts/lib/pg; {PG_ENV} must name that server"
    );
    // Straight to the server (no test proxy): the outage is the server's.
    let mut cfg = StoreConfig::new(&db.owner_url);
    cfg.acquire_timeout = Duration::from_millis(1500);
    let store = AuditStore::open_with(&cfg).await.expect("open store");
    let wcfg = WriterConfig {
        spill_after: Duration::from_millis(500),
        retry_max: Duration::from_secs(2),
        ..WriterConfig::in_data_dir(db.dir.path())
    };
    let (sink, writer) =
        AuditWriter::spawn_with_metrics(store.clone(), wcfg, AuditMetrics::default())
            .await
            .expect("spawn writer");
    let m = writer.metrics().clone();

    // The load: 5 events every 10 ms over 10 correlation IDs, through reservations, until told to stop.
    let producing = Arc::new(AtomicBool::new(true));
    let producer = {
        let sink = sink.clone();
        let producing = producing.clone();
        tokio::spawn(async move {
            let mut sent: Vec<AuditEvent> = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut n = 0u64;
            while producing.load(Ordering::SeqCst) {
                tick.tick().await;
                let mut permits = sink
                    .try_reserve(5)
                    .unwrap_or_else(|e| panic!("ingestion refused after {n} events: {e}"));
                for _ in 0..5 {
                    let ev = event(&format!("rr-{}", n % CORRELATIONS), n, Some("uid-1"));
                    permits.send_one(ev.clone());
                    sent.push(ev);
                    n += 1;
                }
            }
            sent
        })
    };

    wait_until(
        "events in the store before the outage",
        Duration::from_secs(30),
        || async { m.written.get() >= 500 },
    )
    .await;

    let stopped = Arc::new(AtomicBool::new(false));
    let _restart = RestartOnDrop {
        stopped: stopped.clone(),
    };
    tokio::task::spawn_blocking({
        let stopped = stopped.clone();
        move || {
            pg("stop");
            stopped.store(true, Ordering::SeqCst);
        }
    })
    .await
    .expect("pg stop");
    let outage_started = tokio::time::Instant::now();
    // Make sure it is the server this test writes to that went away.
    assert!(
        sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(2))
            .connect(&db.owner_url)
            .await
            .is_err(),
        "the database still answers after scripts/lib/pg stop"
    );
    let written_at_stop = m.written.get();
    wait_until("the spill to start", Duration::from_secs(30), || async {
        m.spill_bytes.get() > 0
    })
    .await;
    let early_spill = m.spill_bytes.get();
    // The outage itself is the scenario (not a synchronisation): keep the load on for its length.
    tokio::time::sleep_until(outage_started + outage).await;
    let late_spill = m.spill_bytes.get();
    assert!(
        late_spill > early_spill,
        "the spill did not grow: {early_spill} → {late_spill}"
    );
    assert!(
        m.written.get() <= written_at_stop + 5 * 256,
        "writes continued with the server stopped"
    );

    tokio::task::spawn_blocking({
        let stopped = stopped.clone();
        move || {
            pg("start");
            stopped.store(false, Ordering::SeqCst);
        }
    })
    .await
    .expect("pg start");
    // Load continues across the recovery, then stops.
    wait_until("the spill replayed", Duration::from_secs(120), || async {
        m.spill_bytes.get() == 0
    })
    .await;
    producing.store(false, Ordering::SeqCst);
    let sent = producer.await.expect("producer");
    let total = sent.len() as u64;
    wait_until(
        "every event in the store",
        Duration::from_secs(60),
        || async { m.written.get() >= total },
    )
    .await;
    let stats = writer.shutdown().await;
    assert_eq!(stats.dropped, 0);
    assert_eq!(stats.rejected, 0);
    assert!(
        stats.replayed > 0 && stats.replayed == stats.spilled,
        "{stats:?}"
    );
    eprintln!(
        "outage of {outage:?}: {total} events sent, {} spilled (peak spill {late_spill} bytes), {} replayed",
        stats.spilled, stats.replayed
    );

    // Exactly once, in order per correlation ID (and globally: one writer), chains intact.
    let mut all = Vec::new();
    for cid in 0..CORRELATIONS {
        let trail = store
            .trail(&format!("rr-{cid}"), Page::first(Page::MAX_LIMIT))
            .await
            .expect("trail");
        assert!(
            trail.len() < Page::MAX_LIMIT as usize,
            "page limit reached; raise it"
        );
        all.extend(trail);
    }
    assert_eq!(all.len() as u64, total, "stored vs sent");
    let ids: HashSet<_> = all.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len() as u64, total, "an event was stored twice");
    let mut per_cid: HashMap<&str, Vec<uuid::Uuid>> = HashMap::new();
    for ev in &sent {
        per_cid
            .entry(&ev.correlation_id)
            .or_default()
            .push(ev.event_id);
    }
    for cid in 0..CORRELATIONS {
        let cid = format!("rr-{cid}");
        let stored: Vec<_> = all
            .iter()
            .filter(|e| e.correlation_id == cid)
            .map(|e| e.event_id)
            .collect();
        assert_eq!(Some(&stored), per_cid.get(cid.as_str()), "order of {cid}");
    }
    all.sort_by_key(|e| e.seq);
    let global: Vec<_> = all.iter().map(|e| e.event_id).collect();
    let sent_ids: Vec<_> = sent.iter().map(|e| e.event_id).collect();
    assert_eq!(global, sent_ids, "global order");
    let report = store.verify().await.expect("verify");
    assert!(report.is_clean(), "{report:?}");
    store.close().await;
    db.cleanup().await;
}
