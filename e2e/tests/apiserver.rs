//! The API server behaviour namegate's correctness rests on, checked against the real kube-apiserver.
//! If one of these ever fails on a new Kubernetes version, the name-as-lock design needs revisiting.

use std::sync::Arc;

use crd_schema::rr::RemediationRequest;
use crd_schema::{Attempt, name};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use namegate_e2e::{client, fresh_namespace, install_crd, random_fingerprint, sample_rr};
use serde_json::json;

async fn setup(prefix: &str) -> (Client, Api<RemediationRequest>) {
    let client = client().await;
    install_crd(&client).await;
    let ns = fresh_namespace(&client, prefix).await;
    let api = Api::namespaced(client.clone(), &ns);
    (client, api)
}

fn reason(err: &kube::Error) -> Option<&str> {
    match err {
        kube::Error::Api(status) => Some(status.reason.as_str()),
        _ => None,
    }
}

#[tokio::test]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn create_twice_is_already_exists() {
    let (_, api) = setup("e2e-create").await;
    let (fp, workload) = random_fingerprint();
    let rr = sample_rr(&fp, Attempt::FIRST, &workload);

    let created = api
        .create(&PostParams::default(), &rr)
        .await
        .expect("first create wins");
    assert_eq!(
        created.metadata.name.as_deref(),
        Some(name::name(&fp, Attempt::FIRST).as_str())
    );

    let err = api
        .create(&PostParams::default(), &rr)
        .await
        .expect_err("second create must fail");
    assert_eq!(reason(&err), Some("AlreadyExists"), "{err:?}");
    if let kube::Error::Api(status) = &err {
        assert_eq!(status.code, 409);
        assert!(status.is_already_exists());
    }
}

#[tokio::test]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn two_hundred_concurrent_creates_have_exactly_one_winner() {
    let (_, api) = setup("e2e-race").await;
    let (fp, workload) = random_fingerprint();
    let rr = Arc::new(sample_rr(&fp, Attempt::FIRST, &workload));

    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (api, rr) = (api.clone(), rr.clone());
            tokio::spawn(async move { api.create(&PostParams::default(), &rr).await })
        })
        .collect();
    let (mut won, mut already_exists, mut other) = (0, 0, Vec::new());
    for t in tasks {
        match t.await.expect("task must not panic") {
            Ok(_) => won += 1,
            Err(e) if reason(&e) == Some("AlreadyExists") => already_exists += 1,
            Err(e) => other.push(e.to_string()),
        }
    }
    assert_eq!(
        (won, already_exists, other.len()),
        (1, 199, 0),
        "unexpected errors: {other:?}"
    );
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
}

#[tokio::test]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn field_selector_on_fingerprint_finds_only_that_fingerprint() {
    let (_, api) = setup("e2e-select").await;
    let (fp, workload) = random_fingerprint();
    let (other_fp, other_workload) = random_fingerprint();
    for (f, w, a) in [
        (&fp, &workload, 1),
        (&fp, &workload, 2),
        (&other_fp, &other_workload, 1),
    ] {
        api.create(
            &PostParams::default(),
            &sample_rr(f, Attempt::new(a).unwrap(), w),
        )
        .await
        .unwrap();
    }
    let selected = api
        .list(&ListParams::default().fields(&format!("spec.signalFingerprint={fp}")))
        .await
        .expect("selectableFields must allow a field selector on spec.signalFingerprint");
    let mut names: Vec<_> = selected
        .items
        .iter()
        .filter_map(|rr| rr.metadata.name.clone())
        .collect();
    names.sort();
    let mut expected = vec![
        name::name(&fp, Attempt::FIRST),
        name::name(&fp, Attempt::new(2).unwrap()),
    ];
    expected.sort();
    assert_eq!(names, expected);
}

#[tokio::test]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn status_write_with_stale_resource_version_is_conflict() {
    let (_, api) = setup("e2e-conflict").await;
    let (fp, workload) = random_fingerprint();
    let created = api
        .create(
            &PostParams::default(),
            &sample_rr(&fp, Attempt::FIRST, &workload),
        )
        .await
        .unwrap();
    let rr_name = created.metadata.name.clone().unwrap();
    let stale_rv = created.metadata.resource_version.clone().unwrap();

    let dedup = |count: i32, rv: &str| {
        json!({
            "metadata": {"resourceVersion": rv},
            "status": {"deduplication": {
                "firstSeenAt": "2026-11-26T12:00:00Z", "lastSeenAt": "2026-11-26T12:00:00Z", "occurrenceCount": count
            }}
        })
    };
    let fresh = api
        .patch_status(
            &rr_name,
            &PatchParams::default(),
            &Patch::Merge(dedup(1, &stale_rv)),
        )
        .await
        .expect("a status write with the current resourceVersion succeeds");
    assert_ne!(
        fresh.metadata.resource_version.as_deref(),
        Some(stale_rv.as_str())
    );

    let err = api
        .patch_status(
            &rr_name,
            &PatchParams::default(),
            &Patch::Merge(dedup(2, &stale_rv)),
        )
        .await
        .expect_err("a stale resourceVersion precondition must fail");
    assert_eq!(reason(&err), Some("Conflict"), "{err:?}");

    // The merge patch touched only status.deduplication.
    let now = api.get_status(&rr_name).await.unwrap();
    let status = now.status.unwrap();
    assert_eq!(status.deduplication.unwrap().occurrence_count, 1);
    assert_eq!(status.overall_phase, None);
}

#[tokio::test]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn spec_is_immutable() {
    let (_, api) = setup("e2e-immutable").await;
    let (fp, workload) = random_fingerprint();
    let rr_name = name::name(&fp, Attempt::FIRST);
    api.create(
        &PostParams::default(),
        &sample_rr(&fp, Attempt::FIRST, &workload),
    )
    .await
    .unwrap();
    let err = api
        .patch(
            &rr_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"severity": "info"}})),
        )
        .await
        .expect_err("CEL self == oldSelf must refuse a spec change");
    assert_eq!(reason(&err), Some("Invalid"), "{err:?}");
    assert!(err.to_string().contains("spec is immutable"), "{err}");
    // Metadata stays writable (the migration labels legacy RRs).
    api.patch(
        &rr_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
    )
    .await
    .expect("metadata changes are allowed");
}

#[tokio::test]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn schema_rejects_a_bad_fingerprint_and_unknown_phase() {
    let (_, api) = setup("e2e-schema").await;
    let (fp, workload) = random_fingerprint();
    let mut rr = sample_rr(&fp, Attempt::FIRST, &workload);
    rr.spec.signal_fingerprint = fp.to_hex().to_uppercase();
    let err = api
        .create(&PostParams::default(), &rr)
        .await
        .expect_err("uppercase hex violates the pattern");
    assert_eq!(reason(&err), Some("Invalid"), "{err:?}");
    assert!(err.to_string().contains("signalFingerprint"), "{err}");

    rr.spec.signal_fingerprint = fp.to_hex();
    api.create(&PostParams::default(), &rr).await.unwrap();
    let rr_name = name::name(&fp, Attempt::FIRST);
    let err = api
        .patch_status(
            &rr_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"overallPhase": "Exploded"}})),
        )
        .await
        .expect_err("overallPhase is an enum");
    assert_eq!(reason(&err), Some("Invalid"), "{err:?}");
    // Orchestrator-owned objects namegate does not read are preserved, not pruned.
    let written = api
        .patch_status(
            &rr_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"overallPhase": "Completed",
                "completionStatus": {"outcome": "Remediated"},
                "phaseProgress": {"aiAnalysisRef": {"name": "x"}}}})),
        )
        .await
        .unwrap();
    let status = written.status.unwrap();
    assert_eq!(status.overall_phase.as_deref(), Some("Completed"));
    assert_eq!(
        status.phase_progress.unwrap().0["aiAnalysisRef"]["name"],
        "x"
    );
}
