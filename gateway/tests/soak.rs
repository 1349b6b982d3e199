//! The fault soak (`scripts/soak`; `docs/reliability.md`, "The fault soak"): storms of one fingerprint
//! each over 3 real replicas, against a private real kube-apiserver, with one random fault per storm.
//! Each storm spreads `SOAK_SIGNALS` (120) alerts over `SOAK_STORM_MS` (3000) and ends once every
//! replica has written all it answered, so a fault only ever costs its own storm. Prints, per storm
//! and in total: duplicate active RRs (must be 0), Σ occurrenceCount vs the 201/202 answers (equal;
//! a SIGKILL storm may lose at most what the killed replica answered), and audit events lost.
//! Bounded: `SOAK_STORMS` storms and `SOAK_MAX_SECONDS` (default 600); loopback only.
//! `SOAK_FAULTS=Orchestrator,Sigkill` limits the faults, `SOAK_ORDER=cycle` takes them in turn,
//! `SOAK_KEEP=1` keeps the replicas' logs.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use crd_schema::RemediationRequest;
use futures::StreamExt;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use namegate::audit::store::{AuditStore, Page};
use rand::Rng;
use serde_json::{Value, json};
use support::fault_proxy::{FaultProxy, server_of};
use support::{
    PrivateApiServer, Replica, ReplicaOptions, fresh_namespace, install_crd, metric_sum, webhook,
};

const REPLICAS: usize = 3;
/// How long the replicas get to write everything they answered after a storm (an API server
/// restart and the flusher's retries included).
const QUIESCE_WITHIN: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    Sigterm,
    Sigkill,
    Orchestrator,
    DroppedReplies,
    WatchCut,
    ApiServerRestart,
    /// The audit store's PostgreSQL stopped for 3 s (only when the soak runs on PostgreSQL).
    PostgresOutage,
}

const FAULTS: [Fault; 8] = [
    Fault::None,
    Fault::Sigterm,
    Fault::Sigkill,
    Fault::Orchestrator,
    Fault::DroppedReplies,
    Fault::WatchCut,
    Fault::ApiServerRestart,
    Fault::PostgresOutage,
];

const PG_ENV: &str = "NAMEGATE_TEST_POSTGRES_URL";
const PG_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/lib/pg");

/// Runs `scripts/lib/pg <cmd>` (the private cluster `scripts/soak` started).
fn pg(cmd: &str) -> String {
    let out = std::process::Command::new(PG_SCRIPT)
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

/// Starts PostgreSQL again if the soak ends (or panics) during an outage.
struct RestartPgOnDrop(bool);

impl Drop for RestartPgOnDrop {
    fn drop(&mut self) {
        if self.0 {
            let _ = std::process::Command::new(PG_SCRIPT).arg("start").output();
        }
    }
}

/// `url` with its database replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host = base[scheme_end..]
        .split_once('/')
        .map_or(&base[scheme_end..], |(h, _)| h);
    let mut out = format!("{}{host}/{db}", &base[..scheme_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A fresh database on the soak's PostgreSQL: the audit store all replicas share.
async fn fresh_pg_database(admin_url: &str) -> String {
    use sqlx::Connection;
    let db = format!("soak_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {admin_url}: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
        .execute(&mut admin)
        .await
        .expect("create the soak's database");
    let _ = admin.close().await;
    with_database(admin_url, &db)
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The base URLs of the replicas that serve right now (`None` while one is restarting).
type Targets = std::sync::Mutex<Vec<Option<String>>>;

/// One answer: the replica URL that gave it, its status and body.
struct Answer {
    url: String,
    status: u16,
    body: Value,
}

/// Sends one alert like Alertmanager: to a random serving replica, re-sent on 5xx or a failed
/// connection, up to 20 times. The answer it finally got, if any.
async fn deliver(http: &reqwest::Client, targets: &Targets, body: &Value) -> Option<Answer> {
    for _ in 0..20 {
        let url = {
            let live: Vec<String> = targets.lock().unwrap().iter().flatten().cloned().collect();
            (!live.is_empty()).then(|| live[rand::rng().random_range(0..live.len())].clone())
        };
        let Some(url) = url else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        match http.post(&url).json(body).send().await {
            Ok(resp) if resp.status().as_u16() < 500 => {
                let status = resp.status().as_u16();
                let body = resp.json().await.unwrap_or(Value::Null);
                return Some(Answer { url, status, body });
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    None
}

/// Whether every replica behind `metrics` has written everything it answered: no RR with pending
/// occurrences (or a derived status still to rewrite) and no audit event queued or spilled.
async fn quiescent(http: &reqwest::Client, metrics: &[String]) -> bool {
    for url in metrics {
        let Ok(resp) = http.get(url).send().await else {
            return false;
        };
        let text = resp.text().await.unwrap_or_default();
        if !text.contains("namegate_occurrence_pending_rrs")
            || metric_sum(&text, "namegate_occurrence_pending_rrs", "") != 0.0
            || metric_sum(&text, "namegate_audit_queue_depth", "") != 0.0
            || metric_sum(&text, "namegate_audit_spill_bytes", "") != 0.0
        {
            return false;
        }
    }
    true
}

/// How long after `deleted` the replica behind `health_port` still held RR `name` in its index
/// (polled every 2 ms; `None` when it still holds it after 30 s).
async fn forgotten_after(
    http: &reqwest::Client,
    health_port: u16,
    fp: &str,
    name: &str,
    deleted: tokio::time::Instant,
) -> Option<Duration> {
    let url = format!("http://127.0.0.1:{health_port}/debug/index/{fp}");
    while deleted.elapsed() < Duration::from_secs(30) {
        let view: Value = match http.get(&url).send().await {
            Ok(resp) => resp.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        let held = view["entries"]
            .as_array()
            .is_none_or(|entries| entries.iter().any(|e| e["name"] == name));
        if !held {
            return Some(deleted.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

/// Waits (bounded) until every replica is quiescent; `false` when it never got there.
async fn quiesce(http: &reqwest::Client, metrics: &[String], within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if quiescent(http, metrics).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// One whole-status replacement; whether it landed (a conflict with a flush is expected).
async fn replace_status(api: &Api<RemediationRequest>, rr: &str, phase: &str) -> bool {
    let Ok(obj) = api.get(rr).await else {
        return false;
    };
    let mut v = serde_json::to_value(&obj).unwrap();
    let d = &v["status"]["deduplication"];
    let status = json!({
        "overallPhase": phase,
        "deduplication": {"firstSeenAt": d["firstSeenAt"], "lastSeenAt": d["lastSeenAt"],
            "occurrenceCount": d["occurrenceCount"]},
    });
    v["status"] = status;
    // kubernaut's structs know nothing of namegate's annotations-held totals: a whole-status PUT.
    let Ok(obj) = serde_json::from_value::<RemediationRequest>(v) else {
        return false;
    };
    api.replace_status(rr, &PostParams::default(), &obj)
        .await
        .is_ok()
}

/// The soak's scratch directory (a `TempDir` that may have been kept).
struct DirRef(std::path::PathBuf);

impl DirRef {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

#[derive(Debug, Default)]
struct StormResult {
    answers: BTreeMap<String, i64>,
    unanswered: usize,
    /// Answers given by the incarnation a SIGKILL ended: what the kill can lose at most.
    killed_answers: i64,
    /// The replicas never wrote everything they answered within the quiescence bound.
    unquiesced: bool,
    /// Whole-status replacements that landed during an orchestrator storm.
    orchestrator_writes: usize,
    /// The storm's RRs, active ones and Σ occurrenceCount once quiescent.
    rrs: usize,
    active: usize,
    counted: i64,
    /// Per replica and deleted RR: how long after the delete returned its index still held the RR
    /// (`None`: not forgotten within the bound).
    forget_lags: Vec<Option<Duration>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver: run scripts/test or scripts/soak"]
async fn soak() {
    // The soak is its own command (`scripts/soak`, which sets SOAK_STORMS), not part of
    // `scripts/test`: its faults are random (docs/reliability.md, "The fault soak").
    if std::env::var_os("SOAK_STORMS").is_none() {
        eprintln!("soak: not run without SOAK_STORMS; run scripts/soak");
        return;
    }
    let storms = env_num("SOAK_STORMS", 3);
    let signals = env_num("SOAK_SIGNALS", 120) as usize;
    // A storm's signals are spread over this long, so that it spans several flush intervals (1 s)
    // and every fault meets occurrences still pending.
    let storm_span = Duration::from_millis(env_num("SOAK_STORM_MS", 3000));
    let budget = Duration::from_secs(env_num("SOAK_MAX_SECONDS", 600));
    let started = tokio::time::Instant::now();
    // `SOAK_FAULTS=Orchestrator,Sigkill` limits the faults drawn from (all by default).
    let faults: Vec<Fault> = match std::env::var("SOAK_FAULTS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|f| {
                *FAULTS
                    .iter()
                    .find(|x| format!("{x:?}").eq_ignore_ascii_case(f.trim()))
                    .unwrap_or_else(|| {
                        panic!("SOAK_FAULTS: unknown fault {f:?}; known: {FAULTS:?}")
                    })
            })
            .collect(),
        _ => FAULTS.to_vec(),
    };
    // On PostgreSQL (scripts/soak starts its private cluster) the replicas share one audit database,
    // as in production, and the PostgreSQL outage is one of the faults; on SQLite it is left out.
    let pg_admin = std::env::var(PG_ENV).ok().filter(|u| !u.is_empty());
    let faults: Vec<Fault> = match &pg_admin {
        Some(url) => {
            if faults.contains(&Fault::PostgresOutage) {
                assert_eq!(
                    pg("url"),
                    *url,
                    "the PostgreSQL outage stops the server with scripts/lib/pg; {PG_ENV} must name it"
                );
            }
            faults
        }
        None => {
            let rest: Vec<Fault> = faults
                .into_iter()
                .filter(|f| *f != Fault::PostgresOutage)
                .collect();
            assert!(!rest.is_empty(), "the PostgreSQL outage needs {PG_ENV}");
            rest
        }
    };
    let shared_audit = match &pg_admin {
        Some(admin) => Some(fresh_pg_database(admin).await),
        None => None,
    };
    let mut pg_down = RestartPgOnDrop(false);

    // `SOAK_ORDER=cycle` takes the faults in turn instead of at random.
    let cycle = std::env::var("SOAK_ORDER").is_ok_and(|o| o == "cycle");

    let dir = tempfile::tempdir().unwrap();
    // `SOAK_KEEP=1` keeps the replicas' logs and audit databases for a post-mortem.
    let dir_path = dir.path().to_owned();
    if std::env::var_os("SOAK_KEEP").is_some() {
        eprintln!("soak: keeping {}", dir_path.display());
        std::mem::forget(dir);
    }
    let dir = DirRef(dir_path);
    let api = PrivateApiServer::start(&dir.path().join("kube"));
    let client = api.client().await;
    install_crd(&client).await;
    let namespace = fresh_namespace(&client, "soak").await;
    let mut proxies = Vec::new();
    let mut opts = Vec::new();
    for i in 0..REPLICAS {
        let proxy = FaultProxy::start(server_of(&api.kubeconfig)).await;
        let kubeconfig = dir.path().join(format!("kubeconfig-{i}"));
        proxy.kubeconfig(&api.kubeconfig, &kubeconfig);
        proxies.push(proxy);
        opts.push(ReplicaOptions {
            kubeconfig: Some(kubeconfig),
            audit_url: shared_audit.clone(),
            extra_args: vec![
                "--index-watch-timeout".into(),
                "3s".into(),
                "--request-timeout".into(),
                "8s".into(),
            ],
            ..ReplicaOptions::default()
        });
    }
    let mut replicas = Vec::new();
    for (i, o) in opts.iter().enumerate() {
        replicas.push(Some(Replica::start(&namespace, dir.path(), i, o).await));
    }
    let ingest = |r: &Replica| r.url("/api/v1/signals/prometheus");
    let targets: Targets =
        std::sync::Mutex::new(replicas.iter().flatten().map(ingest).map(Some).collect());
    let http = reqwest::Client::new();
    let mut api = api;
    let rrs: Api<RemediationRequest> = Api::namespaced(client.clone(), &namespace);

    let mut results: Vec<(u64, Fault, StormResult)> = Vec::new();
    let mut signals_sent = 0usize;
    for storm in 0..storms {
        if started.elapsed() > budget {
            eprintln!("soak: time budget {budget:?} reached after {storm} storms");
            break;
        }
        let fault = if cycle {
            faults[storm as usize % faults.len()]
        } else {
            faults[rand::rng().random_range(0..faults.len())]
        };
        let workload = format!("soak-{storm}");
        let body = webhook(&[(&workload, "KubePodCrashLooping")]);
        let victim = rand::rng().random_range(0..REPLICAS);
        let inject_after = signals / 3;
        let (answered_tx, answered_rx) = tokio::sync::watch::channel(0usize);
        let metrics_urls: Vec<String> = replicas
            .iter()
            .flatten()
            .map(|r| format!("http://127.0.0.1:{}/metrics", r.metrics_port))
            .collect();
        let mut killed_url = None;
        let mut orchestrator_writes = 0;

        let storm_run = {
            let (http, targets, body, answered_tx) = (&http, &targets, &body, &answered_tx);
            let t0 = tokio::time::Instant::now();
            let spacing = storm_span / signals.max(1) as u32;
            futures::stream::iter(0..signals)
                .map(move |i| async move {
                    tokio::time::sleep_until(t0 + spacing * i as u32).await;
                    let a = deliver(http, targets, body).await;
                    answered_tx.send_modify(|n| *n += 1);
                    a
                })
                .buffer_unordered(16)
                .collect::<Vec<_>>()
        };
        let faults = async {
            let mut rx = answered_rx.clone();
            // The orchestrator works on the RR from its creation on; other faults hit mid-storm.
            let after = if fault == Fault::Orchestrator {
                1
            } else {
                inject_after
            };
            let _ = rx.wait_for(|n| *n >= after).await;
            match fault {
                Fault::None => {}
                Fault::Sigterm | Fault::Sigkill => {
                    targets.lock().unwrap()[victim] = None;
                    let mut r = replicas[victim].take().unwrap();
                    killed_url = Some(ingest(&r));
                    if fault == Fault::Sigterm {
                        let status = r.terminate();
                        assert!(status.success(), "{}", r.log_tail());
                    }
                    drop(r); // SIGKILL (a no-op after a graceful exit)
                    let restarted =
                        Replica::start(&namespace, dir.path(), victim, &opts[victim]).await;
                    targets.lock().unwrap()[victim] = Some(ingest(&restarted));
                    replicas[victim] = Some(restarted);
                }
                Fault::Orchestrator => {
                    // Whole-status writes every ~100 ms through the storm and on until every
                    // replica has flushed (and at least 10 landed): the last flushes meet them too.
                    let name = crd_schema::name::name(
                        &support::fingerprint_of(&workload),
                        crd_schema::Attempt::FIRST,
                    );
                    let phases = ["Processing", "Analyzing", "Executing", "Verifying"];
                    let deadline = tokio::time::Instant::now() + storm_span + QUIESCE_WITHIN;
                    let mut i = 0;
                    while tokio::time::Instant::now() < deadline {
                        if replace_status(&rrs, &name, phases[i % phases.len()]).await {
                            orchestrator_writes += 1;
                        }
                        i += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if *rx.borrow() >= signals
                            && orchestrator_writes >= 10
                            && quiescent(&http, &metrics_urls).await
                        {
                            break;
                        }
                    }
                }
                Fault::DroppedReplies => {
                    proxies[victim].drop_replies(true);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    proxies[victim].restore();
                }
                Fault::WatchCut => {
                    proxies[victim].stall_open_connections();
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    proxies[victim].restore();
                }
                Fault::ApiServerRestart => {
                    api.restart();
                }
                Fault::PostgresOutage => {
                    pg_down.0 = true;
                    tokio::task::spawn_blocking(|| pg("stop")).await.unwrap();
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    tokio::task::spawn_blocking(|| pg("start")).await.unwrap();
                    pg_down.0 = false;
                }
            }
        };
        let (answers, ()) = tokio::join!(storm_run, faults);
        // Every storm ends once the replicas have written all they answered: a fault of the next
        // storm (a SIGKILL) must not take this storm's pending occurrences with it and have them
        // counted as this storm's loss.
        let metrics_urls: Vec<String> = replicas
            .iter()
            .flatten()
            .map(|r| format!("http://127.0.0.1:{}/metrics", r.metrics_port))
            .collect();
        let mut r = StormResult {
            unquiesced: !quiesce(&http, &metrics_urls, QUIESCE_WITHIN).await,
            orchestrator_writes,
            ..StormResult::default()
        };
        signals_sent += signals;
        for a in answers {
            match a {
                Some(a) if a.status == 201 || a.status == 202 => {
                    if killed_url.as_deref() == Some(a.url.as_str()) && fault == Fault::Sigkill {
                        r.killed_answers += 1;
                    }
                    *r.answers
                        .entry(
                            a.body["remediationRequestName"]
                                .as_str()
                                .unwrap()
                                .to_owned(),
                        )
                        .or_default() += 1;
                }
                _ => r.unanswered += 1,
            }
        }
        // The figures of the storm's RRs, now that everything answered is written...
        let fp = support::fingerprint_of(&workload).to_hex();
        let mine: Vec<RemediationRequest> = rrs
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|rr| rr.spec.signal_fingerprint == fp)
            .collect();
        r.rrs = mine.len();
        r.active = mine
            .iter()
            .filter(|rr| !crd_schema::phase::is_terminal(rr.phase_view().phase))
            .count();
        r.counted = mine
            .iter()
            .map(|rr| {
                i64::from(
                    rr.status
                        .as_ref()
                        .and_then(|s| s.deduplication.as_ref())
                        .map_or(0, |d| d.occurrence_count),
                )
            })
            .sum();
        // ...then retention deletes them, and each replica's index must forget them: until it does,
        // it would answer a duplicate onto a dead RR (the deletion window).
        let health: Vec<u16> = replicas.iter().flatten().map(|r| r.health_port).collect();
        for rr in &mine {
            let name = rr.metadata.name.clone().unwrap();
            rrs.delete(&name, &DeleteParams::default()).await.unwrap();
            let deleted = tokio::time::Instant::now();
            let lags = futures::future::join_all(
                health
                    .iter()
                    .map(|port| forgotten_after(&http, *port, &fp, &name, deleted)),
            )
            .await;
            r.forget_lags.extend(lags);
        }
        results.push((storm, fault, r));
    }

    // The cost of the per-replica totals: API writes per RR, per replica, per flush that wrote
    // (from the surviving replicas' own metrics).
    let (mut patches, mut status_patches, mut patch_conflicts, mut flushes, mut gone) =
        (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut spilled, mut replayed, mut dropped) = (0.0, 0.0, 0.0);
    for r in replicas.iter().flatten() {
        let text = r.metrics().await;
        patches += metric_sum(&text, "namegate_apiserver_requests_total", "verb=\"patch\"");
        status_patches += metric_sum(
            &text,
            "namegate_apiserver_requests_total",
            "verb=\"patch_status\"",
        );
        patch_conflicts += metric_sum(&text, "namegate_apiserver_requests_total", "code=\"409\"")
            - metric_sum(
                &text,
                "namegate_apiserver_requests_total",
                "verb=\"create\",code=\"409\"",
            );
        flushes += metric_sum(&text, "namegate_occurrence_flushes_total", "result=\"ok\"");
        gone += metric_sum(
            &text,
            "namegate_occurrence_flushes_total",
            "result=\"gone\"",
        );
        spilled += metric_sum(&text, "namegate_audit_spilled_events_total", "");
        replayed += metric_sum(&text, "namegate_audit_replayed_events_total", "");
        dropped += metric_sum(&text, "namegate_audit_dropped_events_total", "");
    }

    // Every replica stops gracefully (final flushes), then the audit trails are read.
    let mut audit_urls = std::collections::BTreeSet::new();
    for r in replicas.iter_mut().flatten() {
        audit_urls.insert(r.audit_url.clone());
        assert!(r.terminate().success(), "{}", r.log_tail());
    }
    let mut stores = Vec::new();
    for url in &audit_urls {
        stores.push(AuditStore::open(url, None).await.unwrap());
    }

    let (mut dup_active, mut counted, mut answered, mut audit_lost) = (0usize, 0i64, 0i64, 0i64);
    let (mut kill_loss, mut kill_bound, mut over_kill_bound, mut unquiesced) = (0i64, 0i64, 0, 0);
    let (mut orchestrator_storms, mut weak_orchestrator) = (0, 0);
    let mut lags: Vec<Duration> = Vec::new();
    let mut never_forgotten = 0;
    eprintln!(
        "storm fault            RRs active answers Σcount unanswered killed-answers forgotten audit(expected/found)"
    );
    for (storm, fault, r) in &results {
        dup_active += r.active.saturating_sub(1);
        lags.extend(r.forget_lags.iter().flatten());
        never_forgotten += r.forget_lags.iter().filter(|l| l.is_none()).count();
        let sum = r.counted;
        let ans: i64 = r.answers.values().sum();
        let mut found = 0i64;
        for name in r.answers.keys() {
            for store in &stores {
                let trail = store.trail(name, Page::first(10_000)).await.unwrap();
                found += trail
                    .iter()
                    .filter(|e| {
                        e.event_type == "gateway.signal.deduplicated"
                            || e.event_type == "gateway.crd.created"
                    })
                    .count() as i64;
            }
        }
        unquiesced += usize::from(r.unquiesced);
        if *fault == Fault::Sigkill {
            // A SIGKILL loses what the killed incarnation answered but had not written yet (at
            // most its last flush interval): never more than it answered, never a count too high.
            kill_loss += ans - sum;
            kill_bound += r.killed_answers;
            if sum > ans || ans - sum > r.killed_answers || ans - found > r.killed_answers {
                over_kill_bound += 1;
            }
        } else {
            counted += sum;
            answered += ans;
            audit_lost += (ans - found).max(0);
        }
        eprintln!(
            "{storm:>5} {:<16} {:>4} {:>6} {ans:>7} {sum:>6} {:>10} {:>14} {:>9} {ans}/{found}{}",
            format!("{fault:?}"),
            r.rrs,
            r.active,
            r.unanswered,
            r.killed_answers,
            format!(
                "{}ms",
                r.forget_lags
                    .iter()
                    .flatten()
                    .max()
                    .map_or(0, |d| d.as_millis())
            ),
            if r.unquiesced { " (not quiescent)" } else { "" },
        );
        if r.orchestrator_writes > 0 {
            eprintln!(
                "      {} whole-status writes by the orchestrator",
                r.orchestrator_writes
            );
        }
        if *fault == Fault::Orchestrator {
            orchestrator_storms += 1;
            if r.orchestrator_writes < 10 {
                weak_orchestrator += 1;
            }
        }
    }
    eprintln!(
        "soak: {} storms, {signals_sent} signals in {:?}; duplicate active RRs: {dup_active}; \
         Σ occurrenceCount {counted} vs answers {answered} (storms without SIGKILL); lost to SIGKILL: \
         {kill_loss} of {kill_bound} answers by killed replicas; audit events lost: {audit_lost}; \
         storms not quiescent: {unquiesced}",
        results.len(),
        started.elapsed()
    );
    lags.sort();
    let pct = |p: usize| {
        lags.get((lags.len() * p / 100).min(lags.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    eprintln!(
        "soak: deletion window (delete returned → a replica's index forgot the RR): {} samples, \
         p50 {:?}, p99 {:?}, max {:?}; never forgotten within 30 s: {never_forgotten}",
        lags.len(),
        pct(50),
        pct(99),
        lags.last().copied().unwrap_or_default()
    );
    eprintln!(
        "soak: occurrence writes by the surviving replicas: {flushes} flushes written (RR × replica × \
         round), {patches} metadata patches ({:.2} per flush), {status_patches} status patches ({:.2} \
         per flush), {patch_conflicts} conflicts (409) on them; occurrences dropped as gone: {gone}",
        patches / flushes.max(1.0),
        status_patches / flushes.max(1.0),
    );
    eprintln!(
        "soak: audit on the surviving replicas: {spilled} events spilled, {replayed} replayed, \
         {dropped} dropped"
    );
    assert_eq!(dup_active, 0, "never two active RRs of one fingerprint");
    assert_eq!(never_forgotten, 0, "every replica forgets a deleted RR");
    assert_eq!(
        counted, answered,
        "counts equal the answers outside SIGKILL storms"
    );
    assert_eq!(audit_lost, 0, "no audit event lost outside SIGKILL storms");
    assert_eq!(
        over_kill_bound, 0,
        "a SIGKILL loses at most what the killed replica answered, and never over-counts"
    );
    assert_eq!(
        unquiesced, 0,
        "every storm's answers are written within {QUIESCE_WITHIN:?}"
    );
    assert_eq!(
        weak_orchestrator, 0,
        "every one of the {orchestrator_storms} orchestrator storms met at least 10 whole-status writes"
    );
}
