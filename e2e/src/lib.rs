//! Support for tests that run against the real kube-apiserver started by `scripts/kube-up`.
//!
//! Every test gets a namespace of its own: without a controller-manager a deleted namespace never
//! finishes terminating, so tests isolate by creating fresh ones rather than by cleaning up.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use crd_schema::rr::{RemediationRequest, RemediationRequestSpec, TargetResource, TargetType};
use crd_schema::{Attempt, Fingerprint, meta, name};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, CustomResourceExt};

/// A client for the API server named by `KUBECONFIG`. Panics with a clear message when it is not
/// set: these tests must fail, not skip, when the real component is missing.
pub async fn client() -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: these tests need the real kube-apiserver; run scripts/test \
         (or export the line printed by scripts/kube-up)"
    );
    Client::try_default()
        .await
        .expect("KUBECONFIG must name a reachable API server")
}

/// Creates a namespace with a random suffix and returns its name.
pub async fn fresh_namespace(client: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{:08x}", rand::random::<u32>());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("creating a test namespace");
    name
}

/// Installs (server-side applies) the RR CRD and waits until it is Established.
pub async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = RemediationRequest::crd();
    let crd_name = crd
        .metadata
        .name
        .clone()
        .expect("the generated CRD has a name");
    crds.patch(
        &crd_name,
        &PatchParams::apply("namegate-e2e").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("applying the RR CRD");
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(crds, &crd_name, conditions::is_crd_established()),
    )
    .await
    .expect("the RR CRD must become Established within 60 s")
    .expect("watching the CRD");
}

/// The fingerprint of a made-up Deployment, unique per call with a random name.
pub fn random_fingerprint() -> (Fingerprint, String) {
    let workload = format!("app-{:08x}", rand::random::<u32>());
    (
        Fingerprint::of_input(&format!("e2e:Deployment:{workload}")),
        workload,
    )
}

/// A valid RR for attempt `attempt` of `fp`, as the gateway would create it.
pub fn sample_rr(fp: &Fingerprint, attempt: Attempt, workload: &str) -> RemediationRequest {
    let now = Time(jiff::Timestamp::now());
    let rr_name = name::name(fp, attempt);
    let mut rr = RemediationRequest::new(
        &rr_name,
        RemediationRequestSpec {
            signal_fingerprint: fp.to_hex(),
            signal_name: "KubePodCrashLooping".into(),
            severity: "critical".into(),
            signal_type: "alert".into(),
            signal_source: Some("prometheus".into()),
            target_type: TargetType::Kubernetes,
            target_resource: TargetResource {
                kind: "Deployment".into(),
                name: workload.into(),
                namespace: Some("e2e".into()),
                api_version: Some("apps/v1".into()),
            },
            cluster_id: None,
            firing_time: now.clone(),
            received_time: now,
            signal_labels: BTreeMap::from([("alertname".into(), "KubePodCrashLooping".into())]),
            signal_annotations: BTreeMap::new(),
            provider_data: None,
            original_payload: None,
        },
    );
    rr.metadata.labels = Some(BTreeMap::from([
        (meta::MANAGED_BY_KEY.into(), meta::MANAGED_BY_VALUE.into()),
        (meta::ATTEMPT_LABEL.into(), attempt.to_string()),
    ]));
    rr.metadata.annotations = Some(BTreeMap::from([(
        meta::CORRELATION_ANNOTATION.into(),
        rr_name,
    )]));
    rr
}
