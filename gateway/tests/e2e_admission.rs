//! Admission across replicas, against the real kube-apiserver (docs/architecture.md; issue 3 tests).
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use crd_schema::{Attempt, name};
use futures::StreamExt;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use support::{Cluster, ReplicaOptions, fingerprint_of, webhook};

/// Sends `n` single-alert webhooks (built by `body(i)`) concurrently, round-robin over the replicas.
async fn burst(c: &Cluster, n: usize, body: impl Fn(usize) -> Value) -> Vec<(u16, Value)> {
    futures::stream::iter(0..n)
        .map(|i| {
            let b = body(i);
            async move {
                let (status, _, body) = c.post_alerts(i, &b).await;
                (status, body)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await
}

fn count_status(results: &[(u16, Value)]) -> BTreeMap<u16, usize> {
    let mut m = BTreeMap::new();
    for (s, _) in results {
        *m.entry(*s).or_default() += 1;
    }
    m
}

/// Waits until every replica's index shows `rr` of `fp` with `phase`-derived activity `active`.
async fn wait_indexes(c: &Cluster, fp: &str, rr: &str, active: bool, skip: &[usize]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for (i, r) in c.replicas.iter().enumerate() {
        if skip.contains(&i) {
            continue;
        }
        loop {
            let view = r.index_view(fp).await;
            let seen = view["entries"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == rr && e["active"] == active);
            if seen {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "replica {i} never saw {rr} active={active}: {view}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn set_status(c: &Cluster, rr: &str, status: Value) {
    c.rrs()
        .patch_status(
            rr,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn thousand_identical_alerts_over_three_replicas_make_one_rr() {
    let mut c = Cluster::start("e2e-storm", 3).await;
    let results = burst(&c, 1000, |_| {
        webhook(&[("ledger-writer", "KubePodCrashLooping")])
    })
    .await;
    let codes = count_status(&results);
    assert_eq!(
        codes,
        BTreeMap::from([(201, 1), (202, 999)]),
        "every answer is 201 or 202, exactly one 201"
    );

    let fp = fingerprint_of("ledger-writer");
    let expected = name::name(&fp, Attempt::FIRST);
    for (_, body) in &results {
        assert_eq!(body["remediationRequestName"], expected.as_str());
        assert_eq!(body["correlationId"], expected.as_str());
        assert_eq!(body["fingerprint"], fp.to_hex());
    }

    c.terminate_all();
    let rrs = c.list().await;
    assert_eq!(rrs.len(), 1, "exactly one RR");
    let dedup = rrs[0]
        .status
        .as_ref()
        .unwrap()
        .deduplication
        .as_ref()
        .unwrap();
    assert_eq!(
        dedup.occurrence_count, 1000,
        "after a graceful stop every answer is counted once"
    );
    // Each replica wrote its own absolute total into its own annotation (docs/reliability.md).
    let totals: BTreeMap<&String, i32> = rrs[0]
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(crd_schema::meta::OCCURRENCES_PREFIX))
        .map(|(k, v)| (k, v.parse().unwrap()))
        .collect();
    assert_eq!(
        totals.len(),
        3,
        "each replica wrote its own total: {totals:?}"
    );
    assert_eq!(totals.values().sum::<i32>(), 1000);
    let labels = rrs[0].metadata.labels.as_ref().unwrap();
    assert_eq!(labels["namegate.io/attempt"], "1");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "namegate");
    assert!(rrs[0].metadata.owner_references.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn fifty_fingerprints_interleaved_make_fifty_rrs() {
    let mut c = Cluster::start("e2e-fifty", 3).await;
    let results = burst(&c, 1000, |i| {
        webhook(&[(&format!("svc-{}", i % 50), "KubePodCrashLooping")])
    })
    .await;
    assert_eq!(
        count_status(&results),
        BTreeMap::from([(201, 50), (202, 950)])
    );
    c.terminate_all();
    let rrs = c.list().await;
    assert_eq!(rrs.len(), 50);
    for rr in &rrs {
        let d = rr.status.as_ref().unwrap().deduplication.as_ref().unwrap();
        assert_eq!(d.occurrence_count, 20, "{:?}", rr.metadata.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn terminal_rr_starts_attempt_two_unless_suppressing() {
    let c = Cluster::start("e2e-attempts", 3).await;
    let alert = || webhook(&[("checkout", "HighErrorRate")]);
    let fp = fingerprint_of("checkout");
    let (n1, n2) = (
        name::name(&fp, Attempt::FIRST),
        name::name(&fp, Attempt::new(2).unwrap()),
    );

    assert_eq!(
        count_status(&burst(&c, 30, |_| alert()).await),
        BTreeMap::from([(201, 1), (202, 29)])
    );

    // The orchestrator finishes attempt 1.
    set_status(
        &c,
        &n1,
        json!({"overallPhase": "Completed", "completionStatus": {"outcome": "Remediated"}}),
    )
    .await;
    wait_indexes(&c, &fp.to_hex(), &n1, false, &[]).await;
    let results = burst(&c, 60, |_| alert()).await;
    assert_eq!(
        count_status(&results),
        BTreeMap::from([(201, 1), (202, 59)])
    );
    let created: Vec<_> = results.iter().filter(|(s, _)| *s == 201).collect();
    assert_eq!(created[0].1["remediationRequestName"], n2.as_str());
    assert_eq!(created[0].1["attempt"], 2);

    // Attempt 2 ends needing manual review: it keeps suppressing.
    set_status(
        &c,
        &n2,
        json!({"overallPhase": "Failed", "completionStatus": {"outcome": "ManualReviewRequired"}}),
    )
    .await;
    wait_indexes(&c, &fp.to_hex(), &n2, false, &[]).await;
    let results = burst(&c, 30, |_| alert()).await;
    assert_eq!(count_status(&results), BTreeMap::from([(202, 30)]));
    assert!(
        results
            .iter()
            .all(|(_, b)| b["remediationRequestName"] == n2.as_str())
    );

    // Outcome cleared, but a back-off is in force: still suppressing.
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_mins(10)).to_string();
    set_status(
        &c,
        &n2,
        json!({"completionStatus": {"outcome": "Remediated"}, "routingStatus": {"nextAllowedExecution": later}}),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for r in &c.replicas {
        while r.index_view(&fp.to_hex()).await["lookup"]["suppressing"]["name"] != n2.as_str() {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let results = burst(&c, 30, |_| alert()).await;
    assert_eq!(count_status(&results), BTreeMap::from([(202, 30)]));
    assert_eq!(c.list().await.len(), 2, "no third RR while suppressed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn a_stale_replica_never_makes_a_second_active_rr() {
    let fp = fingerprint_of("inventory");
    let (n1, n2) = (
        name::name(&fp, Attempt::FIRST),
        name::name(&fp, Attempt::new(2).unwrap()),
    );
    let alert = || webhook(&[("inventory", "KubePodCrashLooping")]);
    // Replicas 0 and 1 are healthy; replica 2 joins later with its index frozen after its first list.
    let mut c = Cluster::start("e2e-stale", 2).await;
    assert_eq!(
        count_status(&burst(&c, 20, |_| alert()).await),
        BTreeMap::from([(201, 1), (202, 19)])
    );
    let frozen = support::Replica::start(
        &c.namespace,
        c.dir.path(),
        2,
        &ReplicaOptions {
            freeze_index: true,
            ..ReplicaOptions::default()
        },
    )
    .await;
    c.replicas.push(frozen);
    wait_indexes(&c, &fp.to_hex(), &n1, true, &[]).await;

    // Attempt 1 completes. Replica 2 still believes it active.
    set_status(&c, &n1, json!({"overallPhase": "Completed"})).await;
    wait_indexes(&c, &fp.to_hex(), &n1, false, &[2]).await;
    assert_eq!(
        c.replicas[2].index_view(&fp.to_hex()).await["lookup"]["suppressing"]["name"],
        n1.as_str()
    );

    let results = burst(&c, 90, |_| alert()).await;
    assert!(
        results.iter().all(|(s, _)| *s == 201 || *s == 202),
        "{:?}",
        count_status(&results)
    );
    let active: Vec<_> = c
        .list()
        .await
        .into_iter()
        .filter(|rr| rr.phase_view().is_active())
        .map(|rr| rr.metadata.name.unwrap())
        .collect();
    assert_eq!(active, vec![n2.clone()], "exactly one active RR, attempt 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn deletion_window_is_closed_by_the_consistent_read() {
    // The residual deletion window (docs/reliability.md): the last RRs of a fingerprint are deleted; a replica that saw
    // the deletion restarts at attempt 1 while a replica that did not would try attempt k+1.
    let fp = fingerprint_of("billing");
    let names: Vec<String> = (1..=2)
        .map(|n| name::name(&fp, Attempt::new(n).unwrap()))
        .collect();
    let alert = || webhook(&[("billing", "KubePodCrashLooping")]);
    let mut c = Cluster::start("e2e-window", 1).await;
    assert_eq!(c.post_alerts(0, &alert()).await.0, 201);
    set_status(&c, &names[0], json!({"overallPhase": "Failed"})).await;
    wait_indexes(&c, &fp.to_hex(), &names[0], false, &[]).await;
    assert_eq!(c.post_alerts(0, &alert()).await.0, 201);
    set_status(&c, &names[1], json!({"overallPhase": "Completed"})).await;
    wait_indexes(&c, &fp.to_hex(), &names[1], false, &[]).await;

    // A replica that will never see what follows.
    let stale = support::Replica::start(
        &c.namespace,
        c.dir.path(),
        1,
        &ReplicaOptions {
            freeze_index: true,
            ..ReplicaOptions::default()
        },
    )
    .await;
    c.replicas.push(stale);
    assert_eq!(
        c.replicas[1].index_view(&fp.to_hex()).await["entries"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Retention deletes both RRs; the healthy replica sees it.
    for n in &names {
        c.rrs().delete(n, &DeleteParams::default()).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !c.replicas[0].index_view(&fp.to_hex()).await["entries"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The healthy replica restarts the numbering at 1; the stale one must agree.
    let (status, _, body) = c.post_alerts(0, &alert()).await;
    assert_eq!((status, body["attempt"].as_u64()), (201, Some(1)));
    let (status, _, body) = c.post_alerts(1, &alert()).await;
    assert_eq!(
        status, 202,
        "the stale replica re-reads attempt 2, finds it gone, and joins attempt 1: {body}"
    );
    assert_eq!(body["remediationRequestName"], names[0].as_str());
    let live: Vec<_> = c
        .list()
        .await
        .into_iter()
        .map(|rr| rr.metadata.name.unwrap())
        .collect();
    assert_eq!(live, vec![names[0].clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn a_batch_with_one_malformed_alert_is_a_207() {
    let c = Cluster::start("e2e-batch", 1).await;
    let mut body = webhook(&(0..10).map(|_| ("placeholder", "X")).collect::<Vec<_>>());
    for (i, alert) in body["alerts"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        alert["labels"]["deployment"] = json!(format!("batch-{i}"));
    }
    // Alert 7 has no namespace: its target cannot be determined.
    body["alerts"][7]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("namespace");
    let (status, headers, resp) = c.post_alerts(0, &body).await;
    assert_eq!(status, 207, "{resp}");
    assert!(headers.contains_key("x-request-id"));
    let summary = &resp["summary"];
    assert_eq!(summary["total"], 10);
    assert_eq!(summary["created"], 9);
    assert_eq!(summary["rejected"], 1);
    let rejected = &resp["results"][7];
    assert_eq!(rejected["status"], "rejected");
    assert!(
        rejected["reason"].as_str().unwrap().contains("alerts[7]"),
        "{rejected}"
    );
    assert_eq!(c.list().await.len(), 9);
}
