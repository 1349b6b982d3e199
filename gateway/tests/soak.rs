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
use kube::api::{ListParams, PostParams};
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
}

const FAULTS: [Fault; 7] = [
    Fault::None,
    Fault::Sigterm,
    Fault::Sigkill,
    Fault::Orchestrator,
    Fault::DroppedReplies,
    Fault::WatchCut,
    Fault::ApiServerRestart,
];

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
/// occurrences (or a derived status still to rewrite) and no audit event queued.
async fn quiescent(http: &reqwest::Client, metrics: &[String]) -> bool {
    for url in metrics {
        let Ok(resp) = http.get(url).send().await else {
            return false;
        };
        let text = resp.text().await.unwrap_or_default();
        if !text.contains("namegate_occurrence_pending_rrs")
            || metric_sum(&text, "namegate_occurrence_pending_rrs", "") != 0.0
            || metric_sum(&text, "namegate_audit_queue_depth", "") != 0.0
        {
            return false;
        }
    }
    true
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver: run scripts/test or scripts/soak"]
async fn soak() {
    // The soak is its own command (`scripts/soak`, which sets SOAK_STORMS), not part of
    // `scripts/test`: its faults are random, and its open finding is in docs/reliability.md.
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
        results.push((storm, fault, r));
    }

    // Quiescence: every replica stops gracefully (final flushes), then the figures are taken.
    let mut audit_urls = BTreeMap::new();
    for (i, r) in replicas.iter_mut().enumerate() {
        if let Some(r) = r.as_mut() {
            audit_urls.insert(i, r.audit_url.clone());
            assert!(r.terminate().success(), "{}", r.log_tail());
        }
    }
    let rrs = rrs.list(&ListParams::default()).await.unwrap().items;
    let mut stores = Vec::new();
    for url in audit_urls.values() {
        stores.push(AuditStore::open(url, None).await.unwrap());
    }

    let (mut dup_active, mut counted, mut answered, mut audit_lost) = (0usize, 0i64, 0i64, 0i64);
    let (mut kill_loss, mut kill_bound, mut over_kill_bound, mut unquiesced) = (0i64, 0i64, 0, 0);
    let (mut orchestrator_storms, mut weak_orchestrator) = (0, 0);
    eprintln!(
        "storm fault            RRs active answers Σcount unanswered killed-answers audit(expected/found)"
    );
    for (storm, fault, r) in &results {
        let fp = support::fingerprint_of(&format!("soak-{storm}")).to_hex();
        let mine: Vec<&RemediationRequest> = rrs
            .iter()
            .filter(|rr| rr.spec.signal_fingerprint == fp)
            .collect();
        let active = mine
            .iter()
            .filter(|rr| !crd_schema::phase::is_terminal(rr.phase_view().phase))
            .count();
        dup_active += active.saturating_sub(1);
        let sum: i64 = mine
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
            "{storm:>5} {:<16} {:>4} {:>6} {ans:>7} {sum:>6} {:>10} {:>14} {ans}/{found}{}",
            format!("{fault:?}"),
            mine.len(),
            active,
            r.unanswered,
            r.killed_answers,
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
    assert_eq!(dup_active, 0, "never two active RRs of one fingerprint");
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
