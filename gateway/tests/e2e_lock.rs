//! The gateway under the chart's RR name lock (docs/creators.md), on the real kube-apiserver: with the
//! ValidatingAdmissionPolicy bound to its namespace, every create the gateway makes passes — new
//! signals, batches, the next attempt after a terminal RR — and a foreign creator is still refused.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use crd_schema::{Attempt, name};
use futures::StreamExt;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{Cluster, fingerprint_of, webhook};

async fn burst(c: &Cluster, bodies: Vec<Value>) -> BTreeMap<u16, usize> {
    let statuses: Vec<u16> = futures::stream::iter(bodies.into_iter().enumerate())
        .map(|(i, b)| async move { c.post_alerts(i, &b).await.0 })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut m = BTreeMap::new();
    for s in statuses {
        *m.entry(s).or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs helm and the real kube-apiserver: run scripts/test"]
async fn every_create_of_the_gateway_passes_the_lock_policy() {
    let c = Cluster::start("e2e-lockgw", 3).await;
    let policy = namegate_e2e::install_lock_policy(&c.client, &c.namespace).await;

    // 20 workloads × 5 copies each, spread over the replicas: 20 creates, 80 duplicates.
    let bodies = (0..100)
        .map(|i| webhook(&[(&format!("svc-{}", i % 20), "KubePodCrashLooping")]))
        .collect();
    assert_eq!(
        burst(&c, bodies).await,
        BTreeMap::from([(201, 20), (202, 80)])
    );
    // A batch of several workloads (one 207 answer).
    let (status, _, body) = c
        .post_alerts(
            0,
            &webhook(&[("batch-a", "A"), ("batch-b", "B"), ("svc-0", "C")]),
        )
        .await;
    assert_eq!(status, 207, "{body}");
    assert_eq!(body["summary"]["created"], 2, "{body}");
    assert_eq!(body["summary"]["deduplicated"], 1, "{body}");

    // Attempt 2 after a terminal attempt 1.
    let fp = fingerprint_of("svc-0");
    let n1 = name::name(&fp, Attempt::FIRST);
    c.rrs()
        .patch_status(
            &n1,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"overallPhase": "Completed"}})),
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for r in &c.replicas {
        while r.index_view(&fp.to_hex()).await["lookup"]["suppressing"] != Value::Null {
            assert!(
                tokio::time::Instant::now() < deadline,
                "index never saw {n1} end"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (status, _, body) = c
        .post_alerts(1, &webhook(&[("svc-0", "KubePodCrashLooping")]))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["remediationRequestName"],
        name::name(&fp, Attempt::new(2).unwrap()).as_str()
    );

    // Every RR there is the gateway's, and the policy is still enforcing in this namespace.
    assert_eq!(c.list().await.len(), 23);
    let mut foreign = c.list().await.remove(0);
    foreign.metadata = kube::api::ObjectMeta {
        name: Some(format!("rr-{}-1c2b5576", &fp.to_hex()[..12])),
        ..Default::default()
    };
    let err = c
        .rrs()
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&policy), "{err}");
}
