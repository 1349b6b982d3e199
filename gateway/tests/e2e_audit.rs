//! The audit trail of real admissions: 3 replicas sharing one PostgreSQL store (issue 4 tests).
#![allow(clippy::unwrap_used)]

mod audit_support;
mod support;

use std::collections::BTreeMap;
use std::process::Command;

use crd_schema::{Attempt, name};
use futures::StreamExt;
use namegate::audit::store::Page;
use support::{Cluster, ReplicaOptions, fingerprint_of, webhook};

fn namegate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_namegate"))
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver and PostgreSQL: run scripts/test"]
async fn a_thousand_signal_burst_leaves_one_created_and_999_deduplicated_events() {
    let db = audit_support::TestDb::postgres().await;
    // The replicas connect directly (not through the test proxy): this test has no outage.
    let opts = ReplicaOptions {
        audit_url: Some(db.owner_url.clone()),
        ..ReplicaOptions::default()
    };
    let mut c = Cluster::start_with("e2e-audit", &[opts.clone(), opts.clone(), opts]).await;

    let codes: Vec<u16> = futures::stream::iter(0..1000)
        .map(|i| {
            let c = &c;
            async move {
                c.post_alerts(i, &webhook(&[("ledger-writer", "KubePodCrashLooping")]))
                    .await
                    .0
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert_eq!(codes.iter().filter(|s| **s == 201).count(), 1);
    assert_eq!(codes.iter().filter(|s| **s == 202).count(), 999);

    let rr = name::name(&fingerprint_of("ledger-writer"), Attempt::FIRST);
    // The lookup endpoint answers while the replicas serve (events may still be in flight).
    let resp = c
        .http
        .get(c.replicas[1].url(&format!("/api/v1/audit/correlations/{rr}?limit=5")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let page: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(page["correlation_id"], rr.as_str());
    assert!(
        page["next_cursor"].is_string(),
        "1000+ events do not fit in a page of 5: {page}"
    );

    c.terminate_all(); // graceful: every queued event is written before exit

    let store = db.open().await;
    let events = store.trail(&rr, Page::first(10_000)).await.unwrap();
    let mut by_type = BTreeMap::<String, usize>::new();
    for e in &events {
        *by_type.entry(e.event_type.clone()).or_default() += 1;
    }
    assert_eq!(
        by_type,
        BTreeMap::from([
            ("gateway.crd.created".to_owned(), 1),
            ("gateway.signal.deduplicated".to_owned(), 999),
            ("gateway.signal.received".to_owned(), 1),
        ])
    );
    assert!(
        events
            .iter()
            .all(|e| e.correlation_id == rr && e.event_category == "gateway")
    );
    // One event per duplicate (it was two: received + deduplicated), carrying what rebuilds the RR.
    let dups: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "gateway.signal.deduplicated")
        .collect();
    assert!(
        dups.iter()
            .all(|e| e.event_data["original_payload"].is_object()
                && e.event_data["signal_labels"]["alertname"] == "KubePodCrashLooping")
    );
    let dup_bytes: usize = dups.iter().map(|e| e.event_data.to_string().len()).sum();
    eprintln!(
        "audit per duplicate: {:.2} events, {} bytes of event_data",
        (events.len() - 2) as f64 / dups.len() as f64,
        dup_bytes / dups.len()
    );
    let created = events
        .iter()
        .find(|e| e.event_type == "gateway.crd.created")
        .unwrap();
    let uid = created.event_data["rr_uid"].as_str().unwrap();
    assert!(
        events.iter().all(|e| e.event_data["rr_uid"] == uid),
        "every event names the one RR object"
    );
    assert!(
        events.windows(2).all(|w| w[0].seq < w[1].seq),
        "oldest first"
    );

    let verify = namegate(&["audit", "verify", "--audit-url", &db.owner_url]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    // The replicas checkpointed their chain heads (one file here: they share a data directory), and
    // every checkpointed head is in the store.
    let checkpoints = c.dir.path().join("audit-checkpoints.jsonl");
    let verify = namegate(&[
        "audit",
        "verify",
        "--audit-url",
        &db.owner_url,
        "--checkpoints",
        &checkpoints.display().to_string(),
    ]);
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{text}");
    assert!(
        text.contains("checkpointed chain head(s) compared"),
        "{text}"
    );
    let show = namegate(&["audit", "show", &rr, "--audit-url", &db.owner_url]);
    assert!(show.status.success());
    let text = String::from_utf8_lossy(&show.stdout);
    assert_eq!(text.matches("gateway.crd.created").count(), 1, "{text}");

    // An UPDATE as the database owner, bypassing the append-only trigger, is found and named.
    let victim = events[500].event_id.to_string();
    db.tamper("error_message = 'edited'", &victim).await;
    let verify = namegate(&["audit", "verify", "--audit-url", &db.owner_url]);
    assert!(!verify.status.success());
    assert!(
        String::from_utf8_lossy(&verify.stdout).contains(&victim),
        "the tampered event is named"
    );
    store.close().await;
    db.cleanup().await;
}
