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

/// The chart's RR name lock (`charts/namegate/templates/lock-policy.yaml`), rendered by the real helm (path
/// in `HELM`) for release namespace `namespace`: the ValidatingAdmissionPolicy and its binding, as JSON.
pub fn render_lock_policy(namespace: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    let helm = std::env::var_os("HELM").expect(
        "HELM is not set: the lock policy tests render the chart with helm; run scripts/test (or \
         `source scripts/lib/common.sh; source scripts/lib/helm.sh; ensure_helm`)",
    );
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/namegate");
    let out = std::process::Command::new(helm)
        .args(["template", "ng", chart, "--namespace", namespace])
        .args(["--show-only", "templates/lock-policy.yaml"])
        .output()
        .expect("running helm");
    assert!(
        out.status.success(),
        "helm template --show-only templates/lock-policy.yaml failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("helm renders UTF-8");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde_json::Value::deserialize(doc).expect("helm renders valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Installs the chart's RR name lock for `namespace` (server-side apply of the policy and its binding) and
/// waits until the API server enforces it: the policy plugin learns of new policies through its own
/// informers, so a create right after the apply may still pass. Returns the policy's name.
pub async fn install_lock_policy(client: &Client, namespace: &str) -> String {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let objects = render_lock_policy(namespace);
    assert_eq!(objects.len(), 2, "the policy and its binding: {objects:?}");
    let policy: ValidatingAdmissionPolicy =
        serde_json::from_value(objects[0].clone()).expect("the first object is the policy");
    let binding: ValidatingAdmissionPolicyBinding =
        serde_json::from_value(objects[1].clone()).expect("the second object is the binding");
    let policy_name = policy.metadata.name.clone().expect("the policy has a name");
    let apply = PatchParams::apply("namegate-e2e").force();
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .patch(&policy_name, &apply, &Patch::Apply(&policy))
        .await
        .expect("applying the lock policy");
    let binding_name = binding
        .metadata
        .name
        .clone()
        .expect("the binding has a name");
    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .patch(&binding_name, &apply, &Patch::Apply(&binding))
        .await
        .expect("applying the lock policy binding");

    // Probe with a dry-run create under a name that is not the lock, until it is refused by the policy.
    let (fp, workload) = random_fingerprint();
    let mut probe = sample_rr(&fp, Attempt::FIRST, &workload);
    probe.metadata.name = Some(format!("rr-{}-probe", &fp.to_hex()[..12]));
    let api: Api<RemediationRequest> = Api::namespaced(client.clone(), namespace);
    let dry_run = PostParams {
        dry_run: true,
        field_manager: None,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match api.create(&dry_run, &probe).await {
            Err(kube::Error::Api(status)) if status.message.contains(&policy_name) => {
                return policy_name;
            }
            Ok(_) => {}
            Err(e) => panic!("probing the lock policy: unexpected answer {e:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lock policy {policy_name} is not enforced within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
