//! Bounded by bytes, not counts (docs/limits.md), on a real replica and the real kube-apiserver: 32
//! concurrent worst-case requests — max-size bodies built to amplify — keep the replica's memory well
//! under the chart's limit and every RR small, while legitimate signals are still answered.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use support::{Cluster, webhook};

/// The chart's memory limit for the gateway container (`resources.limits.memory: 512Mi`).
const CHART_MEMORY_LIMIT: u64 = 512 << 20;
/// What the test allows: half the limit, the rest is margin.
const ALLOWED_PEAK: u64 = CHART_MEMORY_LIMIT / 2;
const BODY_LIMIT: usize = 256 * 1024;

fn vm_hwm(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kb * 1024
}

/// Common annotations just under the body limit, merged into `alerts` one-label alerts.
fn expanding(round: usize, alerts: usize) -> String {
    let common: serde_json::Map<String, Value> = (0..14)
        .map(|i| (format!("a{i}"), Value::String("x".repeat(16 * 1024 - 64))))
        .collect();
    let alerts: Vec<Value> = (0..alerts)
        .map(|i| json!({"labels": {"deployment": format!("amp-{round}-{i}")}}))
        .collect();
    let body = json!({
        "version": "4",
        "commonLabels": {"alertname": "Amplify", "namespace": "bounds"},
        "commonAnnotations": common,
        "alerts": alerts,
    })
    .to_string();
    assert!(body.len() <= BODY_LIMIT, "{} bytes", body.len());
    body
}

/// One alert as large as the body limit allows: labels and annotations at their caps, the rest in
/// one annotation — its originalPayload is almost the whole body.
fn one_huge_alert(round: usize, i: usize) -> String {
    let mut labels: serde_json::Map<String, Value> = (0..60)
        .map(|k| (format!("l{k}"), Value::String("v".repeat(1000))))
        .collect();
    labels.insert("alertname".into(), "Huge".into());
    labels.insert("namespace".into(), "bounds".into());
    labels.insert("deployment".into(), format!("huge-{round}-{i}").into());
    let mut annotations: serde_json::Map<String, Value> = (0..12)
        .map(|k| (format!("a{k}"), Value::String("w".repeat(16 * 1024 - 32))))
        .collect();
    annotations.insert("summary".into(), "s".into());
    let body = json!({"version": "4", "alerts": [{"labels": labels, "annotations": annotations}]})
        .to_string();
    assert!(body.len() <= BODY_LIMIT, "{} bytes", body.len());
    body
}

#[tokio::test]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn thirty_two_worst_case_requests_stay_far_below_the_memory_limit() {
    let c = Cluster::start("e2e-bounds", 1).await;
    let pid = c.replicas[0].child.id();
    let url = c.replicas[0].url("/api/v1/signals/prometheus");
    let idle = vm_hwm(pid);

    // Legitimate signals, sent throughout: each must be answered 201/202, or 503 with Retry-After.
    let legit = async {
        let mut answers = Vec::new();
        for i in 0..40 {
            let (status, headers, body) = c
                .post_alerts(0, &webhook(&[(&format!("legit-{}", i % 8), "Legit")]))
                .await;
            assert!(
                matches!(status, 201 | 202)
                    || (status == 503 && headers.contains_key("retry-after")),
                "a legitimate signal got {status}: {body}"
            );
            answers.push(status);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        answers
    };

    // Three rounds of 32 concurrent worst-case bodies: batches that expand past their budget (413),
    // batches just inside it (admitted, each RR trimmed to its byte budget), single maximal alerts.
    // A connection per request: a server may close a connection after a 413 or 408 (hyper does when
    // it answers before the body ends), and a pooled connection would then fail the next request.
    let attacker = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let attack = async {
        let mut statuses = Vec::new();
        for round in 0..3 {
            let bodies: Vec<String> = (0..32)
                .map(|i| match i % 3 {
                    0 => expanding(round * 100 + i, 600),
                    1 => expanding(round * 100 + i, 24),
                    _ => one_huge_alert(round, i),
                })
                .collect();
            let got: Vec<Result<u16, String>> = futures::stream::iter(bodies)
                .map(|b| {
                    let http = attacker.clone();
                    let url = url.clone();
                    async move {
                        http.post(&url)
                            .header("content-type", "application/json")
                            .body(b)
                            .send()
                            .await
                            .map(|r| r.status().as_u16())
                            .map_err(|e| format!("{e:?}"))
                    }
                })
                .buffer_unordered(32)
                .collect()
                .await;
            for g in got {
                match g {
                    Ok(s) => statuses.push(s),
                    Err(e) => panic!("{e}\nreplica log:\n{}", c.replicas[0].log_tail()),
                }
            }
        }
        statuses
    };
    let (answers, statuses) = tokio::join!(legit, attack);

    let peak = vm_hwm(pid);
    eprintln!(
        "replica peak RSS {} MiB (idle {} MiB); attack answers {:?}; legitimate answers {:?}",
        peak >> 20,
        idle >> 20,
        count(&statuses),
        count(&answers)
    );
    assert!(
        peak < ALLOWED_PEAK,
        "peak RSS {} MiB, allowed {} MiB (half the chart's limit)",
        peak >> 20,
        ALLOWED_PEAK >> 20
    );
    assert!(
        statuses.iter().all(|s| matches!(s, 201 | 207 | 413 | 503)),
        "{:?}",
        count(&statuses)
    );
    assert!(statuses.contains(&413), "the expanding batches are refused");
    assert!(
        answers.iter().any(|s| matches!(s, 201 | 202)),
        "legitimate signals were admitted meanwhile"
    );

    // Every RR stays small in etcd, whatever the batch carried.
    let largest = c
        .list()
        .await
        .iter()
        .map(|rr| serde_json::to_vec(rr).unwrap().len())
        .max()
        .unwrap();
    eprintln!("largest RR: {largest} bytes");
    assert!(largest < 128 * 1024, "an RR of {largest} bytes");
}

fn count(statuses: &[u16]) -> std::collections::BTreeMap<u16, usize> {
    let mut m = std::collections::BTreeMap::new();
    for s in statuses {
        *m.entry(*s).or_default() += 1;
    }
    m
}
