//! The fault soak (`scripts/soak`; `docs/reliability.md`, "Soak"): storms of one fingerprint each over
//! 3 real replicas, against a private real kube-apiserver, with one random fault per storm. Prints,
//! per storm and in total: duplicate active RRs (must be 0), Σ occurrenceCount vs the 201/202
//! answers, and audit events lost. Bounded: `SOAK_STORMS` storms (default 3, the CI run) and
//! `SOAK_MAX_SECONDS` (default 600); loopback only.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crd_schema::RemediationRequest;
use futures::StreamExt;
use kube::Api;
use kube::api::{ListParams, PostParams};
use namegate::audit::store::{AuditStore, Page};
use rand::Rng;
use serde_json::{Value, json};
use support::fault_proxy::{FaultProxy, server_of};
use support::{PrivateApiServer, Replica, ReplicaOptions, fresh_namespace, install_crd, webhook};

const REPLICAS: usize = 3;

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

/// Sends one alert like Alertmanager: to a random serving replica, re-sent on 5xx or a failed
/// connection, up to 20 times. The answer it finally got, if any.
async fn deliver(http: &reqwest::Client, targets: &Targets, body: &Value) -> Option<(u16, Value)> {
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
                return Some((status, resp.json().await.unwrap_or(Value::Null)));
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    None
}

async fn replace_status(api: &Api<RemediationRequest>, rr: &str, phase: &str) {
    let Ok(obj) = api.get(rr).await else { return };
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
        return;
    };
    let _ = api.replace_status(rr, &PostParams::default(), &obj).await;
}

#[derive(Debug, Default)]
struct StormResult {
    answers: BTreeMap<String, i64>,
    unanswered: usize,
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
    let budget = Duration::from_secs(env_num("SOAK_MAX_SECONDS", 600));
    let started = tokio::time::Instant::now();

    let dir = tempfile::tempdir().unwrap();
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
    for storm in 0..storms {
        if started.elapsed() > budget {
            eprintln!("soak: time budget {budget:?} reached after {storm} storms");
            break;
        }
        let fault = FAULTS[rand::rng().random_range(0..FAULTS.len())];
        let workload = format!("soak-{storm}");
        let body = webhook(&[(&workload, "KubePodCrashLooping")]);
        let victim = rand::rng().random_range(0..REPLICAS);
        let inject_after = signals / 3;
        let (answered_tx, answered_rx) = tokio::sync::watch::channel(0usize);
        let stop_orch = Arc::new(AtomicBool::new(false));

        let storm_run = {
            let (http, targets, body, answered_tx) = (&http, &targets, &body, &answered_tx);
            futures::stream::iter(0..signals)
                .map(move |_| async move {
                    let a = deliver(http, targets, body).await;
                    answered_tx.send_modify(|n| *n += 1);
                    a
                })
                .buffer_unordered(16)
                .collect::<Vec<_>>()
        };
        let faults = async {
            let mut rx = answered_rx.clone();
            let _ = rx.wait_for(|n| *n >= inject_after).await;
            match fault {
                Fault::None => {}
                Fault::Sigterm | Fault::Sigkill => {
                    targets.lock().unwrap()[victim] = None;
                    let mut r = replicas[victim].take().unwrap();
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
                    let name = crd_schema::name::name(
                        &support::fingerprint_of(&workload),
                        crd_schema::Attempt::FIRST,
                    );
                    let phases = ["Processing", "Analyzing", "Executing", "Verifying"];
                    let mut i = 0;
                    while !stop_orch.load(Ordering::Acquire) && *rx.borrow() < signals {
                        replace_status(&rrs, &name, phases[i % phases.len()]).await;
                        i += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
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
        stop_orch.store(true, Ordering::Release);
        let mut r = StormResult::default();
        for a in answers {
            match a {
                Some((201 | 202, body)) => {
                    *r.answers
                        .entry(body["remediationRequestName"].as_str().unwrap().to_owned())
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

    let (mut dup_active, mut counted, mut answered, mut audit_lost, mut kill_loss) =
        (0usize, 0i64, 0i64, 0i64, 0i64);
    eprintln!("storm fault            RRs active answers Σcount unanswered audit(expected/found)");
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
        if *fault == Fault::Sigkill {
            kill_loss += ans - sum;
        } else {
            counted += sum;
            answered += ans;
            audit_lost += (ans - found).max(0);
        }
        eprintln!(
            "{storm:>5} {:<16} {:>4} {:>6} {ans:>7} {sum:>6} {:>10} {ans}/{found}",
            format!("{fault:?}"),
            mine.len(),
            active,
            r.unanswered
        );
    }
    eprintln!(
        "soak: {} storms in {:?}; duplicate active RRs: {dup_active}; Σ occurrenceCount {counted} vs \
         answers {answered} (storms without SIGKILL); lost to SIGKILL: {kill_loss}; audit events lost: \
         {audit_lost}",
        results.len(),
        started.elapsed()
    );
    assert_eq!(dup_active, 0, "never two active RRs of one fingerprint");
    assert_eq!(
        counted, answered,
        "counts equal the answers outside SIGKILL storms"
    );
    assert_eq!(audit_lost, 0, "no audit event lost outside SIGKILL storms");
}
