//! The API server stopped mid-burst (docs/api.md, docs/architecture.md): the gateway answers 503 + `Retry-After`
//! and keeps running; once the API server is back, the signals re-sent the way Alertmanager re-sends
//! them (every 5xx, again) converge to exactly one RR per fingerprint, and after a graceful stop the
//! occurrence counts equal the 201/202 answers given.
//!
//! The test runs its own API server (`namegate-kube-apiserver --keep-data` on a private `--dir`), so
//! stopping it disturbs no other test; `--keep-data` makes the restart resume the same cluster on the
//! same port with the same credentials, as a real control plane does after an outage.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crd_schema::{Attempt, name};
use futures::StreamExt;
use kube::Api;
use kube::api::ListParams;
use serde_json::Value;
use support::{
    PrivateApiServer, Replica, ReplicaOptions, fingerprint_of, fresh_namespace, install_crd,
    webhook,
};

const FINGERPRINTS: usize = 20;

fn deployment(fp: usize) -> String {
    format!("outage-{fp:02}")
}

#[derive(Debug)]
struct Answer {
    fp: usize,
    status: u16,
    retry_after: Option<String>,
    content_type: Option<String>,
    body: Value,
}

async fn send(http: &reqwest::Client, replica: &Replica, fp: usize) -> Answer {
    let resp = http
        .post(replica.url("/api/v1/signals/prometheus"))
        .json(&webhook(&[(&deployment(fp), "KubePodCrashLooping")]))
        .send()
        .await
        .expect("the gateway must answer (it must not die with the API server)");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (retry_after, content_type) = (header("retry-after"), header("content-type"));
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    Answer {
        fp,
        status,
        retry_after,
        content_type,
        body,
    }
}

/// A 503 must tell the sender when to come back, as an RFC 7807 problem.
fn assert_retryable_503(a: &Answer) {
    let secs: u64 = a
        .retry_after
        .as_deref()
        .unwrap_or_else(|| panic!("503 without Retry-After: {a:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is not delay-seconds: {a:?}"));
    assert!(secs >= 1, "{a:?}");
    assert_eq!(
        a.content_type.as_deref(),
        Some("application/problem+json"),
        "{a:?}"
    );
    assert_eq!(a.body["status"], 503, "{a:?}");
}

fn assert_alive(replicas: &mut [Replica]) {
    for (i, r) in replicas.iter_mut().enumerate() {
        assert!(
            matches!(r.child.try_wait(), Ok(None)),
            "replica {i} died:\n{}",
            r.log_tail()
        );
        let log = std::fs::read_to_string(&r.log).unwrap_or_default();
        assert!(
            !log.contains("panicked"),
            "replica {i} panicked:\n{}",
            r.log_tail()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn api_server_stopped_mid_burst_then_restarted_converges_to_one_rr_per_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let mut api = PrivateApiServer::start(&dir.path().join("kube"));
    let client = api.client().await;
    install_crd(&client).await;
    let namespace = fresh_namespace(&client, "e2e-outage").await;
    let opts = ReplicaOptions {
        kubeconfig: Some(api.kubeconfig.clone()),
        extra_args: vec!["--request-timeout".into(), "5s".into()],
        ..ReplicaOptions::default()
    };
    let mut replicas = vec![
        Replica::start(&namespace, dir.path(), 0, &opts).await,
        Replica::start(&namespace, dir.path(), 1, &opts).await,
    ];
    let http = reqwest::Client::new();

    // The burst: 200 single-alert webhooks, 8 in flight, alternating replicas. Signals 0..50 are
    // fingerprints 0..10; 50..60 are the first signals of fingerprints 10..20, racing with the kill,
    // which happens once 52 answers are back; from signal 60 on (sent only after the kill) all 20
    // fingerprints.
    const SIGNALS: usize = 200;
    const KILL_AFTER: usize = 52;
    let (answered_tx, mut answered_rx) = tokio::sync::watch::channel(0usize);
    let (killed_tx, killed_rx) = tokio::sync::watch::channel(false);
    let burst = futures::stream::iter(0..SIGNALS)
        .map(|j| {
            let (http, replicas, answered_tx) = (&http, &replicas, &answered_tx);
            let mut killed_rx = killed_rx.clone();
            async move {
                let fp = match j {
                    0..50 => j % 10,
                    50..60 => j - 40,
                    _ => {
                        killed_rx.wait_for(|k| *k).await.unwrap();
                        j % FINGERPRINTS
                    }
                };
                let a = send(http, &replicas[j % 2], fp).await;
                answered_tx.send_modify(|n| *n += 1);
                (j, a)
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>();
    let killer = async {
        answered_rx.wait_for(|n| *n >= KILL_AFTER).await.unwrap();
        api.kill();
        killed_tx.send(true).unwrap();
    };
    let (mut burst, ()) = tokio::join!(burst, killer);
    burst.sort_by_key(|(j, _)| *j);

    let codes = burst.iter().fold(BTreeMap::new(), |mut m, (_, a)| {
        *m.entry(a.status).or_insert(0usize) += 1;
        m
    });
    eprintln!("burst answers by status: {codes:?}");
    for (_, a) in &burst {
        assert!(
            matches!(a.status, 201 | 202 | 503),
            "only created, duplicate or retryable: {a:?}"
        );
        if a.status == 503 {
            assert_retryable_503(a);
        }
    }
    assert!(
        codes.get(&503).copied().unwrap_or(0) >= 1,
        "the API server was down for the last 140 signals: some must have been refused"
    );
    // Duplicates of RRs the index already holds need no API call: they are admitted in the outage.
    for (j, a) in &burst[60..] {
        if a.fp < 10 {
            assert_eq!(
                a.status, 202,
                "signal {j} (a duplicate) during the outage: {a:?}"
            );
        }
    }
    assert_alive(&mut replicas);
    for r in &replicas {
        let health = reqwest::get(format!("http://127.0.0.1:{}/healthz", r.health_port))
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
    }

    // The API server comes back: same data, same port, same credentials.
    api.restart();

    // Every refused signal is delivered again, as Alertmanager does for a 5xx, until accepted.
    let mut accepted: BTreeMap<usize, Vec<u16>> = BTreeMap::new();
    let mut pending = Vec::new();
    for (_, a) in burst {
        match a.status {
            503 => pending.push(a.fp),
            s => accepted.entry(a.fp).or_default().push(s),
        }
    }
    let retried = pending.len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut round = 0;
    while !pending.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} signals still refused 90 s after the restart; replica 0:\n{}",
            pending.len(),
            replicas[0].log_tail()
        );
        round += 1;
        let answers: Vec<Answer> = futures::stream::iter(pending.iter().enumerate())
            .map(|(k, fp)| send(&http, &replicas[(k + round) % 2], *fp))
            .buffer_unordered(8)
            .collect()
            .await;
        pending.clear();
        let mut wait = Duration::ZERO;
        for a in answers {
            match a.status {
                201 | 202 => accepted.entry(a.fp).or_default().push(a.status),
                503 => {
                    assert_retryable_503(&a);
                    let secs: u64 = a.retry_after.as_deref().unwrap().parse().unwrap();
                    wait = wait.max(Duration::from_secs(secs.min(2)));
                    pending.push(a.fp);
                }
                _ => panic!("unexpected answer after the restart: {a:?}"),
            }
        }
        // The sender's back-off, as Retry-After asks (capped: Alertmanager's own is short too).
        tokio::time::sleep(wait).await;
    }
    eprintln!("{retried} refused signals re-sent; all accepted after {round} round(s)");
    assert_alive(&mut replicas);

    // Exactly one RR per fingerprint, attempt 1, and at most one 201 per fingerprint (none when the
    // create was committed but its answer lost in the outage: the re-sent signal then joins it).
    let rrs: Api<crd_schema::RemediationRequest> = Api::namespaced(client.clone(), &namespace);
    let names: BTreeSet<String> = rrs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|rr| rr.metadata.name.unwrap())
        .collect();
    let expected: BTreeSet<String> = (0..FINGERPRINTS)
        .map(|fp| name::name(&fingerprint_of(&deployment(fp)), Attempt::FIRST))
        .collect();
    assert_eq!(names, expected, "exactly one RR per fingerprint");
    for fp in 0..FINGERPRINTS {
        let codes = &accepted[&fp];
        assert!(
            codes.iter().filter(|s| **s == 201).count() <= 1,
            "fingerprint {fp}: {codes:?}"
        );
    }

    // A graceful stop flushes every occurrence: counts equal the 201/202 answers given.
    for r in &mut replicas {
        let status = r.terminate();
        assert!(status.success(), "{status}:\n{}", r.log_tail());
    }
    for rr in rrs.list(&ListParams::default()).await.unwrap().items {
        let fp = (0..FINGERPRINTS)
            .find(|fp| fingerprint_of(&deployment(*fp)).to_hex() == rr.spec.signal_fingerprint)
            .unwrap();
        let count = rr
            .status
            .as_ref()
            .and_then(|s| s.deduplication.as_ref())
            .map(|d| d.occurrence_count)
            .unwrap_or(0);
        assert_eq!(
            count as usize,
            accepted[&fp].len(),
            "occurrenceCount of {} (fingerprint {fp})",
            rr.metadata.name.unwrap()
        );
    }
}
