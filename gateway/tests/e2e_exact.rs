//! Exact occurrence counts beside other writers and objects, against the real kube-apiserver with real
//! replicas (issue 9; `docs/reliability.md`).
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crd_schema::{Attempt, RemediationRequest, name};
use futures::StreamExt;
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, PostParams};
use serde_json::{Value, json};
use support::{Cluster, ReplicaOptions, fingerprint_of, webhook};

/// Sends `n` single-alert webhooks concurrently, round-robin over the replicas.
async fn burst(c: &Cluster, n: usize, body: impl Fn(usize) -> Value) -> Vec<(u16, Value)> {
    futures::stream::iter(0..n)
        .map(|i| {
            let b = body(i);
            async move {
                let (status, _, body) = c.post_alerts(i, &b).await;
                (status, body)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await
}

/// Answers (201 and 202) per RR name.
fn answers_per_rr(results: &[(u16, Value)]) -> BTreeMap<String, i32> {
    let mut m = BTreeMap::new();
    for (status, body) in results {
        assert!(
            *status == 201 || *status == 202,
            "every answer is 201 or 202: {status} {body}"
        );
        *m.entry(body["remediationRequestName"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    m
}

fn count_of(rr: &RemediationRequest) -> i32 {
    rr.status
        .as_ref()
        .and_then(|s| s.deduplication.as_ref())
        .map_or(0, |d| d.occurrence_count)
}

/// The status as kubernaut's orchestrator holds it: its own Go structs, which know
/// `deduplication.{firstSeenAt,lastSeenAt,occurrenceCount}` and nothing namegate adds.
fn orchestrator_view(status: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for key in ["overallPhase", "message", "startTime", "completionStatus"] {
        if let Some(v) = status.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(d) = status.get("deduplication") {
        let mut dd = serde_json::Map::new();
        for key in ["firstSeenAt", "lastSeenAt", "occurrenceCount"] {
            if let Some(v) = d.get(key) {
                dd.insert(key.into(), v.clone());
            }
        }
        out.insert("deduplication".into(), Value::Object(dd));
    }
    Value::Object(out)
}

/// PUTs `obj` (raw JSON, exactly as given) to the status subresource of `name`.
async fn put_status(
    api: &Api<RemediationRequest>,
    name: &str,
    obj: &Value,
) -> Result<Value, kube::Error> {
    let ar = ApiResource::erase::<RemediationRequest>(&());
    let ns = api.namespace().unwrap().to_owned();
    let raw: Api<DynamicObject> = Api::namespaced_with(api.clone().into_client(), &ns, &ar);
    let o: DynamicObject = serde_json::from_value(obj.clone()).unwrap();
    raw.replace_status(name, &PostParams::default(), &o)
        .await
        .map(|o| serde_json::to_value(o).unwrap())
}

/// One whole-status replacement, as a controller-runtime `Status().Update()` makes it: read, set the
/// phase, PUT the whole status with the read's resourceVersion. `false` on a conflict.
async fn replace_status(
    api: &Api<RemediationRequest>,
    rr: &str,
    phase: &str,
    extra: Value,
) -> bool {
    let Ok(obj) = api.get(rr).await else {
        return false;
    };
    let mut v = serde_json::to_value(&obj).unwrap();
    let mut status = orchestrator_view(&v["status"]);
    status["overallPhase"] = json!(phase);
    if let (Some(s), Some(e)) = (status.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    v["status"] = status;
    put_status(api, rr, &v).await.is_ok()
}

/// Replaces the whole status of `rr` every ~100 ms, cycling through kubernaut's active phases, until
/// `stop`; returns how many replacements landed.
fn orchestrator(
    api: Api<RemediationRequest>,
    rr: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let phases = [
            "Pending",
            "Processing",
            "Analyzing",
            "Executing",
            "Verifying",
        ];
        let mut landed = 0;
        let mut i = 0;
        while !stop.load(Ordering::Acquire) {
            if replace_status(&api, &rr, phases[i % phases.len()], json!({})).await {
                landed += 1;
                i += 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        landed
    })
}

async fn wait_for_rr(c: &Cluster, rr: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while c.rrs().get_opt(rr).await.unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{rr} never appeared"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every replica's index no longer considers `rr` active.
async fn wait_inactive(c: &Cluster, fp: &str, rr: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for (i, r) in c.replicas.iter().enumerate() {
        loop {
            let view = r.index_view(fp).await;
            let active = view["entries"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == rr && e["active"] == true);
            if !active {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "replica {i} still sees {rr} active: {view}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn counts_stay_exact_while_the_orchestrator_replaces_the_whole_status() {
    let mut c = Cluster::start("e2e-orch", 3).await;
    let alert = || webhook(&[("orders", "KubePodCrashLooping")]);
    let fp = fingerprint_of("orders");
    let (n1, n2) = (
        name::name(&fp, Attempt::FIRST),
        name::name(&fp, Attempt::new(2).unwrap()),
    );

    let mut results = burst(&c, 1, |_| alert()).await;
    wait_for_rr(&c, &n1).await;
    let stop = Arc::new(AtomicBool::new(false));
    let orch = orchestrator(c.rrs(), n1.clone(), stop.clone());
    // A storm of ~3 s: several flush intervals of every replica, each met by whole-status writes.
    for _ in 0..12 {
        results.extend(burst(&c, 50, |_| alert()).await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Let the last flushes meet the orchestrator too.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Release);
    let replaced = orch.await.unwrap();
    assert!(
        replaced >= 10,
        "the orchestrator replaced the status {replaced} times"
    );

    // The orchestrator finishes attempt 1 (one more whole-status write), then attempt 2 starts from 1.
    let api = c.rrs();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !replace_status(
        &api,
        &n1,
        "Completed",
        json!({"completionStatus": {"outcome": "Remediated"}}),
    )
    .await
    {
        assert!(tokio::time::Instant::now() < deadline);
    }
    wait_inactive(&c, &fp.to_hex(), &n1).await;
    let second = burst(&c, 40, |_| alert()).await;
    assert_eq!(
        second.iter().filter(|(s, _)| *s == 201).count(),
        1,
        "one create of attempt 2"
    );
    results.extend(second);

    c.terminate_all();
    let answers = answers_per_rr(&results);
    assert_eq!(answers[&n2], 40);
    let counts: BTreeMap<String, i32> = c
        .list()
        .await
        .iter()
        .map(|rr| (rr.metadata.name.clone().unwrap(), count_of(rr)))
        .collect();
    assert_eq!(
        counts, answers,
        "occurrenceCount equals the 201/202 answers per RR ({replaced} whole-status writes)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn a_recreated_rr_never_inherits_the_old_objects_counts() {
    // A long flush interval puts the old object's duplicates and the new object's 201 in one interval.
    let opts = ReplicaOptions {
        extra_args: vec!["--flush-interval".into(), "3s".into()],
        ..ReplicaOptions::default()
    };
    let mut c = Cluster::start_with("e2e-recreate", &[opts]).await;
    let alert = || webhook(&[("billing", "KubePodCrashLooping")]);
    let fp = fingerprint_of("billing");
    let n1 = name::name(&fp, Attempt::FIRST);

    // The old object, counted and flushed: 20.
    let first = burst(&c, 20, |_| alert()).await;
    assert_eq!(answers_per_rr(&first)[&n1], 20);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while count_of(&c.rrs().get(&n1).await.unwrap()) != 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "first flush never came"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // More duplicates of the old object, not yet flushed, then an operator deletes it.
    let dups = burst(&c, 7, |_| alert()).await;
    assert!(dups.iter().all(|(s, _)| *s == 202));
    let old_uid = c.rrs().get(&n1).await.unwrap().metadata.uid;
    c.rrs().delete(&n1, &DeleteParams::default()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while c.replicas[0].index_view(&fp.to_hex()).await["entries"]
        .as_array()
        .is_some_and(|e| !e.is_empty())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "index kept the deleted RR"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The same name again: a new object, in the same flush interval.
    let again = burst(&c, 5, |_| alert()).await;
    let created = again.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(created, 1, "{again:?}");
    c.terminate_all();
    let rr = c.rrs().get(&n1).await.unwrap();
    assert_ne!(rr.metadata.uid, old_uid, "a new object");
    assert_eq!(
        count_of(&rr),
        5,
        "the new object counts its own 201 and 202s only, nothing of the old one: {:?}",
        rr.metadata.annotations
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn a_create_whose_reply_was_dropped_is_answered_201_and_audited_once() {
    let (proxy, _dir, mut c) = behind_fault_proxy("e2e-lost", vec![]).await;
    let fp = fingerprint_of("payments-api");
    let n1 = name::name(&fp, Attempt::FIRST);

    // The create (the only request of many kilobytes: the whole RR) goes through; its reply,
    // and every later byte on that connection, is dropped.
    proxy.drop_reply_to_next_request_of(6000);
    let mut body = webhook(&[("payments-api", "KubePodCrashLooping")]);
    // 8 KB of description: the create carries it twice (annotations, original payload), so it is
    // the one request far larger than anything else the replica sends (TLS hellos included).
    body["alerts"][0]["annotations"]["description"] = json!("x".repeat(8000));
    let answer = {
        let c = &c;
        let body = body.clone();
        async move { c.post_alerts(0, &body).await }
    };
    let watch = wait_for_rr(&c, &n1);
    let ((status, _, answer), ()) = tokio::join!(answer, watch);
    assert!(proxy.dropped_bytes() > 0, "a reply was dropped");
    assert_eq!(
        status, 201,
        "the request that made the RR is told so: {answer}"
    );
    assert_eq!(answer["remediationRequestName"], n1.as_str());

    // The client retries the same alert: now a duplicate of the RR, counted once more.
    let (status, _, _) = c.post_alerts(0, &body).await;
    assert_eq!(status, 202);
    let audit_url = c.replicas[0].audit_url.clone();
    c.terminate_all();
    let rr = c.rrs().get(&n1).await.unwrap();
    assert_eq!(count_of(&rr), 2, "one 201, one 202");
    let store = namegate::audit::store::AuditStore::open(&audit_url, None)
        .await
        .unwrap();
    let events = store
        .trail(&n1, namegate::audit::store::Page::first(100))
        .await
        .unwrap();
    let mut by_type = BTreeMap::<String, usize>::new();
    for e in &events {
        *by_type.entry(e.event_type.clone()).or_default() += 1;
    }
    // kubernaut's event set (docs/audit.md): the 201 is received + crd.created, the 202 one
    // signal.deduplicated.
    assert_eq!(
        by_type,
        BTreeMap::from([
            ("gateway.crd.created".to_owned(), 1),
            ("gateway.signal.deduplicated".to_owned(), 1),
            ("gateway.signal.received".to_owned(), 1),
        ])
    );
}

async fn readyz(r: &support::Replica) -> u16 {
    reqwest::get(format!("http://127.0.0.1:{}/readyz", r.health_port))
        .await
        .map_or(0, |resp| resp.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn a_stalled_watch_makes_the_index_stale_within_its_bound_and_nothing_is_answered_from_it() {
    // Watches end every 2 s on the server side, so a silent one is dead after 2 + 5 s.
    let bound = Duration::from_secs(2 + 5);
    let (proxy, _dir, mut c) = behind_fault_proxy(
        "e2e-stale",
        vec!["--index-watch-timeout".into(), "2s".into()],
    )
    .await;
    let alert = || webhook(&[("inventory", "KubePodCrashLooping")]);
    let fp = fingerprint_of("inventory");
    let (n1, n2) = (
        name::name(&fp, Attempt::FIRST),
        name::name(&fp, Attempt::new(2).unwrap()),
    );
    assert_eq!(c.post_alerts(0, &alert()).await.0, 201);

    // The network to the API server goes silent: open connections half-open, new ones unanswered.
    let stalled_at = tokio::time::Instant::now();
    proxy.stall_open_connections();
    proxy.drop_replies(true);
    // Meanwhile the orchestrator finishes attempt 1: the replica's view is now wrong.
    let api = c.rrs();
    assert!(
        replace_status(
            &api,
            &n1,
            "Completed",
            json!({"completionStatus": {"outcome": "Remediated"}})
        )
        .await
    );
    let r = &c.replicas[0];
    while readyz(r).await != 503 {
        assert!(
            stalled_at.elapsed() < bound + Duration::from_secs(3),
            "stale index not noticed within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let noticed = stalled_at.elapsed();
    assert!(
        r.metrics().await.contains("namegate_index_synced 0"),
        "the metric says so too"
    );
    // While stale, nothing is answered from the stale view: 503 + Retry-After.
    let (status, headers, _) = c.post_alerts(0, &alert()).await;
    assert_eq!(status, 503);
    assert!(headers.contains_key("retry-after"));

    // The fault ends: the index re-lists, turns fresh, and sees attempt 1 finished.
    proxy.restore();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while readyz(r).await != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never fresh again:\n{}",
            r.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _, body) = c.post_alerts(0, &alert()).await;
    assert_eq!(
        (status, body["remediationRequestName"].as_str()),
        (201, Some(n2.as_str()))
    );
    c.terminate_all();
    eprintln!("stale index noticed {noticed:?} after the stall (bound {bound:?})");
}

/// Waits until replica `r`'s index holds (`true`) or no longer holds (`false`) RR `rr`; how long that
/// took.
async fn until_index_holds(
    r: &support::Replica,
    fp: &str,
    rr: &str,
    holds: bool,
    within: Duration,
) -> Duration {
    let started = tokio::time::Instant::now();
    loop {
        let view = r.index_view(fp).await;
        let held = view["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == rr);
        if held == holds {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "index still {} {rr} after {within:?}: {view}",
            if holds { "without" } else { "holding" }
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn the_index_relists_promptly_after_a_break_even_after_an_earlier_outage() {
    // The deletion window after a watch break is the index's re-list delay. Its backoff grows while
    // the API server is unreachable; it must start small again once a list succeeds, or every later
    // break (hours later) waits out the backoff of an outage long over (docs/reliability.md, "The
    // deletion window").
    let (proxy, _dir, mut c) = behind_fault_proxy("e2e-relist", vec![]).await;
    let r = &c.replicas[0];
    let (fa, fb) = (fingerprint_of("ledger"), fingerprint_of("billing"));
    let (na, nb) = (
        name::name(&fa, Attempt::FIRST),
        name::name(&fb, Attempt::FIRST),
    );
    let (status, _, _) = c
        .post_alerts(0, &webhook(&[("ledger", "KubePodCrashLooping")]))
        .await;
    assert_eq!(status, 201);

    // An outage of 6 s: the watch breaks and every re-list fails, so the backoff grows (to several
    // seconds).
    proxy.refuse_connections(true);
    proxy.cut_open_connections();
    tokio::time::sleep(Duration::from_secs(6)).await;
    proxy.refuse_connections(false);
    // Recovered: a new RR reaches the index through the re-opened watch.
    let (status, _, _) = c
        .post_alerts(0, &webhook(&[("billing", "KubePodCrashLooping")]))
        .await;
    assert_eq!(status, 201);
    until_index_holds(r, &fb.to_hex(), &nb, true, Duration::from_secs(30)).await;
    // The watch keeps working for a while (2 s of health is what ends the earlier trouble; here it
    // stands for the hours between two breaks)...
    tokio::time::sleep(Duration::from_secs(3)).await;

    // ...then one short break (300 ms), and an RR deleted during it.
    proxy.refuse_connections(true);
    proxy.cut_open_connections();
    c.rrs().delete(&na, &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.refuse_connections(false);
    let forgotten = until_index_holds(r, &fa.to_hex(), &na, false, Duration::from_secs(30)).await;
    c.terminate_all();
    eprintln!("the deleted RR was forgotten {forgotten:?} after the break began");
    assert!(
        forgotten < Duration::from_secs(2),
        "the re-list after a 300 ms break waited {forgotten:?}: the backoff of the earlier outage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn sigterm_mid_storm_keeps_serving_through_the_delay_and_loses_nothing_answered() {
    let terminating = ReplicaOptions {
        shutdown_delay: Some("2s".into()),
        ..ReplicaOptions::default()
    };
    let opts = [
        terminating,
        ReplicaOptions::default(),
        ReplicaOptions::default(),
    ];
    let mut c = Cluster::start_with("e2e-sigterm", &opts).await;
    let alert = || webhook(&[("shipping", "KubePodCrashLooping")]);
    let mut results = Vec::new();
    for _ in 0..4 {
        results.extend(burst(&c, 60, |_| alert()).await);
    }
    // SIGTERM to replica 0 mid-storm; the storm goes on against all three.
    let pid = c.replicas[0].child.id().to_string();
    let term_at = tokio::time::Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut during_delay = BTreeMap::<u16, usize>::new();
    let mut after = Vec::new();
    while term_at.elapsed() < Duration::from_millis(3500) {
        let round = futures::stream::iter(0..60)
            .map(|i| {
                let b = alert();
                let c = &c;
                async move {
                    let r = c
                        .http
                        .post(c.replicas[i % 3].url("/api/v1/signals/prometheus"))
                        .json(&b)
                        .send()
                        .await;
                    let Ok(resp) = r else {
                        return (i % 3, 0, Value::Null);
                    };
                    let status = resp.status().as_u16();
                    (i % 3, status, resp.json().await.unwrap_or(Value::Null))
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
        let in_delay = term_at.elapsed() < Duration::from_millis(1500);
        for (replica, status, body) in round {
            if replica == 0 && in_delay {
                *during_delay.entry(status).or_default() += 1;
            }
            if status == 201 || status == 202 {
                after.push((status, body));
            }
        }
    }
    assert!(
        during_delay.keys().all(|s| *s == 201 || *s == 202),
        "during the shutdown delay the replica keeps answering: {during_delay:?}"
    );
    let exit = c.replicas[0].child.wait().unwrap();
    assert!(exit.success(), "{}", c.replicas[0].log_tail());
    results.extend(after);
    c.replicas.remove(0);
    c.terminate_all();
    let answers = answers_per_rr(&results);
    let counts: BTreeMap<String, i32> = c
        .list()
        .await
        .iter()
        .map(|rr| (rr.metadata.name.clone().unwrap(), count_of(rr)))
        .collect();
    assert_eq!(counts, answers, "every 201/202 counted exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn the_crd_accepts_the_orchestrators_status_writes_and_keeps_kubernauts_validation() {
    let c = Cluster::start_with("e2e-crd", &[]).await;
    let fp = fingerprint_of("crd-check");
    let rr = namegate_e2e::sample_rr(&fp, Attempt::FIRST, "crd-check");
    let name = rr.metadata.name.clone().unwrap();
    let api = c.rrs();
    api.create(&PostParams::default(), &rr).await.unwrap();
    // As kubernaut's Go structs write it: zero values omitted (no occurrenceCount, no times in
    // deduplication), conditions as a list map, durations, every enum.
    let orchestrator_status = json!({
        "overallPhase": "Executing",
        "startTime": "2026-11-29T12:00:00Z",
        "deduplication": {},
        "conditions": [{"type": "Ready", "status": "True", "reason": "Started",
            "message": "", "lastTransitionTime": "2026-11-29T12:00:00Z"}],
        "timeoutConfig": {"global": "1h", "processing": "5m"},
        "completionStatus": {"notificationStatus": "Sent", "timeoutPhase": "Executing"},
        "phaseProgress": {"processingStartTime": "2026-11-29T12:00:00Z"},
        "routingStatus": {"consecutiveFailureCount": 0},
    });
    let put = |status: Value| {
        let api = api.clone();
        let name = name.clone();
        async move {
            let mut v = serde_json::to_value(api.get(&name).await.unwrap()).unwrap();
            v["status"] = status;
            put_status(&api, &name, &v).await
        }
    };
    let stored = put(orchestrator_status.clone()).await.expect("accepted");
    let back = serde_json::to_value(&stored).unwrap();
    assert_eq!(
        back["status"]["timeoutConfig"]["global"], "1h",
        "not pruned"
    );
    assert_eq!(
        back["status"]["phaseProgress"]["processingStartTime"],
        "2026-11-29T12:00:00Z"
    );
    assert_eq!(back["status"]["conditions"][0]["type"], "Ready");

    // And what kubernaut's schema refuses, namegate's refuses too.
    for (field, bad) in [
        ("timeoutConfig", json!({"global": "soon"})),
        ("completionStatus", json!({"notificationStatus": "Bogus"})),
        ("completionStatus", json!({"outcome": "Maybe"})),
        ("overallPhase", json!("Sleeping")),
        (
            "conditions",
            json!([{"type": "Ready", "status": "Perhaps", "reason": "X", "message": "",
                "lastTransitionTime": "2026-11-29T12:00:00Z"}]),
        ),
    ] {
        let mut status = orchestrator_status.clone();
        status[field] = bad.clone();
        match put(status).await {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, 422, "{field}: {bad}: {s:?}"),
            other => panic!("{field} = {bad} must be refused, got {other:?}"),
        }
    }
}

/// One replica whose API-server connections go through a [`FaultProxy`]; the directory holds its
/// kubeconfig and must live as long as the replica.
async fn behind_fault_proxy(
    namespace_prefix: &str,
    extra_args: Vec<String>,
) -> (support::fault_proxy::FaultProxy, tempfile::TempDir, Cluster) {
    use support::fault_proxy::{FaultProxy, server_of};
    let original = std::path::PathBuf::from(std::env::var_os("KUBECONFIG").unwrap());
    let proxy = FaultProxy::start(server_of(&original)).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    proxy.kubeconfig(&original, &kubeconfig);
    let opts = ReplicaOptions {
        kubeconfig: Some(kubeconfig),
        extra_args,
        ..ReplicaOptions::default()
    };
    let c = Cluster::start_with(namespace_prefix, &[opts]).await;
    (proxy, dir, c)
}
