//! `namegate-bench store-cost`: the audit store's CPU per appended event, without HTTP around it
//! (docs/benchmarks.md, "The SQLite store's CPU per event").
//!
//! Appends pre-built events of the size of the benchmark's duplicate events (~2 KB of `event_data`)
//! in full batches, from a thread with a current-thread runtime — how the audit writer drives its
//! store — to a fresh SQLite store per run, and reads every thread's CPU time from
//! `/proc/self/task/*/schedstat` before and after: the driving thread, sqlx's SQLite worker, and the
//! rest. Variants (configurations of one binary, so runs alternate in the same minutes):
//! `pool-check` (sqlx pool, the `json_valid` CHECK evaluated), `pool` (sqlx pool, CHECK skipped),
//! `direct` (the writer's own connection on the driving thread, CHECK skipped — what
//! `StoreConfig::for_batch_writer` sets); `direct-0001` (`direct` on the schema before SQLite
//! migration 0002, with the `(fingerprint, event_timestamp)` index), `direct-nocts` (`direct`
//! without the `(correlation_id, event_timestamp)` index); and the floor variants of
//! [`super::storefloor`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use namegate::audit::store::{AuditStore, StoreConfig};
use namegate::audit::{AuditEvent, EventOutcome, EventType};

/// One measured run.
pub struct Run {
    pub variant: String,
    pub events: u64,
    pub wall_s: f64,
    /// CPU µs per event by thread group.
    pub per_event_us: BTreeMap<String, f64>,
}

impl Run {
    /// A run of `events` events that took `wall_s` and the CPU between two [`thread_cpu_ns`]
    /// readings, per event: the writer's threads (`audit-writer`, and `sqlx-sqlite-wor` for a store
    /// that has one) by name, every other as `other`.
    pub(crate) fn measured(
        variant: String,
        events: u64,
        wall_s: f64,
        before: &BTreeMap<String, u64>,
        after: &BTreeMap<String, u64>,
    ) -> Self {
        let mut per_event_us = BTreeMap::new();
        for (name, ns) in after {
            let used = ns.saturating_sub(before.get(name).copied().unwrap_or(0));
            let group = match name.as_str() {
                "audit-writer" | "sqlx-sqlite-wor" => name.clone(),
                _ => "other".to_owned(),
            };
            *per_event_us.entry(group).or_default() += used as f64 / 1e3 / events as f64;
        }
        Run {
            variant,
            events,
            wall_s,
            per_event_us,
        }
    }
}

/// The database of one run of `variant` under `dir`, with any earlier run's files removed.
pub(crate) fn fresh_db(dir: &Path, variant: &str) -> PathBuf {
    let path = dir.join(format!("store-cost-{variant}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

/// Runs `measure` on a thread named like the gateway's writer, so its CPU is grouped the same.
pub(crate) fn on_writer_thread(
    measure: impl FnOnce() -> Result<Run, String> + Send + 'static,
) -> Result<Run, String> {
    std::thread::Builder::new()
        .name("audit-writer".to_owned())
        .spawn(measure)
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|_| "the store-cost thread panicked".to_owned())?
}

/// What a `direct-…` experiment changes in the fresh store's schema before it appends
/// (docs/benchmarks.md, "The audit writer's CPU per event and its floor").
fn schema_change(variant: &str) -> Option<&'static str> {
    match variant {
        // The schema before SQLite migration 0002: the fingerprint index back.
        "direct-0001" => Some(
            "CREATE INDEX audit_events_fingerprint_ts ON audit_events (fingerprint, event_timestamp)",
        ),
        // The alternative not taken: without the (correlation_id, event_timestamp) index.
        "direct-nocts" => Some("DROP INDEX audit_events_correlation_ts"),
        _ => None,
    }
}

fn config(url: &str, variant: &str) -> Result<StoreConfig, String> {
    let mut c = StoreConfig::new(url).for_batch_writer();
    match variant {
        "direct" | "direct-0001" | "direct-nocts" => {}
        "pool" => c.sqlite_direct_appends = false,
        "pool-check" => {
            c.sqlite_direct_appends = false;
            c.sqlite_check_event_data = true;
        }
        other => {
            return Err(format!(
                "unknown variant {other:?} (pool-check, pool, direct, direct-0001, direct-nocts, \
                 floor, floor-unique, floor-schema)"
            ));
        }
    }
    Ok(c)
}

/// A duplicate event as the gateway writes one for an Alertmanager alert (sizes and members; the
/// values are made up).
pub(crate) fn event(n: u64, chains: u64) -> AuditEvent {
    let cid = format!("rr-{:052x}", n % chains);
    let mut ev = AuditEvent::new(EventType::SignalDeduplicated, EventOutcome::Success, &cid);
    let fp = format!("{:064x}", n % chains);
    ev.fingerprint = Some(fp.clone());
    ev.namespace = Some("prod".into());
    ev.actor_type = Some("ServiceAccount".into());
    ev.actor_id = Some("system:serviceaccount:monitoring:alertmanager".into());
    ev.resource_type = Some("RemediationRequest".into());
    ev.resource_id = Some(cid.clone());
    ev.severity = Some("critical".into());
    let labels: serde_json::Map<String, serde_json::Value> = (0..12)
        .map(|i| {
            (
                format!("label_{i:02}"),
                format!("value-{i}-{}", "x".repeat(24)).into(),
            )
        })
        .collect();
    ev.event_data = serde_json::json!({
        "signal_name": "KubePodCrashLooping",
        "fingerprint": fp,
        "rr_uid": "0b7d3f3e-1c2a-4a4e-9f4b-6f1d2e3c4b5a",
        "severity": "critical",
        "resource_kind": "Deployment",
        "resource_name": "payments-api",
        "occurrence_count": n,
        "original_payload": {
            "status": "firing",
            "labels": labels,
            "annotations": {
                "summary": "Pod is crash looping.",
                "description": "x".repeat(600),
                "runbook_url": "https://runbooks.example/KubePodCrashLooping",
            },
            "startsAt": "2026-11-30T07:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example/graph?g0.expr=rate%28kube_pod_container_status_restarts_total%5B5m%5D%29",
        },
    })
    .into();
    ev
}

/// ns on CPU per thread name, from `/proc/self/task/*/{comm,schedstat}`.
pub(crate) fn thread_cpu_ns() -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let ns: u64 = std::fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0);
        *out.entry(comm.trim().to_owned()).or_default() += ns;
    }
    out
}

/// One run of `variant`: `events` events in batches of `batch`, to a fresh store under `dir`.
pub fn run(dir: &Path, variant: &str, events: u64, batch: usize) -> Result<Run, String> {
    if super::storefloor::is_floor(variant) {
        return super::storefloor::run(dir, variant, events, batch);
    }
    let path = fresh_db(dir, variant);
    let url = format!("sqlite://{}", path.display());
    let cfg = config(&url, variant)?;
    let variant = variant.to_owned();
    on_writer_thread(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            // Created and migrated as `serve` does, then opened as the writer opens it.
            AuditStore::open_with(&StoreConfig::new(&url))
                .await
                .map_err(|e| e.to_string())?
                .close()
                .await;
            if let Some(sql) = schema_change(&variant) {
                let conn = rusqlite::Connection::open(&path).map_err(|e| e.to_string())?;
                conn.execute_batch(sql).map_err(|e| e.to_string())?;
            }
            let store = AuditStore::open_with(&cfg.without_migrations())
                .await
                .map_err(|e| e.to_string())?;
            // Built before the clock starts: what is measured is the store.
            let all: Vec<AuditEvent> = (0..events).map(|n| event(n, 64)).collect();
            let before = thread_cpu_ns();
            let started = Instant::now();
            for chunk in all.chunks(batch) {
                store.append_batch(chunk).await.map_err(|e| e.to_string())?;
            }
            let wall_s = started.elapsed().as_secs_f64();
            let after = thread_cpu_ns();
            store.close().await;
            Ok(Run::measured(variant, events, wall_s, &before, &after))
        })
    })
}
