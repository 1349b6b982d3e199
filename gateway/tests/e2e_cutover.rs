//! Cut-over: namegate in a live kubernaut cluster, against the real kube-apiserver with real objects
//! created through the API (ownerReferences, no kubelet). Target resolution runs with the production
//! defaults: owners resolved, missing targets rejected, `scope: labelled`
//! (`docs/compatibility.md`, `docs/cutover.md`).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use crd_schema::{Attempt, Fingerprint, name};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use kube::{Api, Client};
use serde_json::{Value, json};
use support::{Cluster, ReplicaOptions};

const MANAGED: &str = "kubernaut.ai/managed";

fn resolving() -> ReplicaOptions {
    ReplicaOptions {
        resolve: true,
        ..ReplicaOptions::default()
    }
}

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() {
            version.into()
        } else {
            format!("{group}/{version}")
        },
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// Creates `obj` (JSON with apiVersion/kind/metadata.name) in `ns`; returns its uid.
async fn create(client: &Client, ns: &str, resource: &ApiResource, obj: Value) -> String {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, resource);
    let obj: DynamicObject = serde_json::from_value(obj).unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap()
}

fn owner(api_version: &str, kind: &str, name: &str, uid: &str) -> Value {
    json!([{ "apiVersion": api_version, "kind": kind, "name": name, "uid": uid,
             "controller": true, "blockOwnerDeletion": true }])
}

fn pod_spec() -> Value {
    json!({ "containers": [{ "name": "app", "image": "registry.example/app:1" }] })
}

/// A workload namespace (labelled managed or not) with its `default` ServiceAccount (no controller
/// creates it on the test API server, and Pods need it).
async fn workload_namespace(client: &Client, prefix: &str, managed: Option<&str>) -> String {
    let ns = support::fresh_namespace(client, prefix).await;
    if let Some(v) = managed {
        label_namespace(client, &ns, v).await;
    }
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    ns
}

async fn label_namespace(client: &Client, ns: &str, value: &str) {
    Api::<Namespace>::all(client.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {MANAGED: value}}})),
        )
        .await
        .unwrap();
}

/// Deployment `deploy` → ReplicaSet `deploy-7d9c8b6f4` → Pods `deploy-7d9c8b6f4-<suffix>`.
async fn deployment_with_pods(client: &Client, ns: &str, deploy: &str, pods: &[&str]) {
    let labels = json!({"app": deploy});
    let d_uid = create(
        client,
        ns,
        &ar("apps", "v1", "Deployment", "deployments"),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": deploy},
               "spec": {"selector": {"matchLabels": labels},
                        "template": {"metadata": {"labels": labels}, "spec": pod_spec()}}}),
    )
    .await;
    let rs = format!("{deploy}-7d9c8b6f4");
    let rs_uid = create(
        client,
        ns,
        &ar("apps", "v1", "ReplicaSet", "replicasets"),
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
               "metadata": {"name": rs, "ownerReferences": owner("apps/v1", "Deployment", deploy, &d_uid)},
               "spec": {"selector": {"matchLabels": labels},
                        "template": {"metadata": {"labels": labels}, "spec": pod_spec()}}}),
    )
    .await;
    for suffix in pods {
        create(
            client,
            ns,
            &ar("", "v1", "Pod", "pods"),
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": format!("{rs}-{suffix}"), "labels": labels,
                                "ownerReferences": owner("apps/v1", "ReplicaSet", &rs, &rs_uid)},
                   "spec": pod_spec()}),
        )
        .await;
    }
}

fn alert(ns: &str, labels: Value) -> Value {
    let mut l =
        json!({"alertname": "KubePodCrashLooping", "severity": "critical", "namespace": ns});
    l.as_object_mut()
        .unwrap()
        .extend(labels.as_object().unwrap().clone());
    json!({"status": "firing", "labels": l, "annotations": {"summary": "crash looping"},
           "startsAt": jiff::Timestamp::now().to_string()})
}

fn webhook(alerts: Vec<Value>) -> Value {
    json!({"version": "4", "groupKey": "{}:{alertname=\"KubePodCrashLooping\"}", "status": "firing",
           "receiver": "namegate", "commonLabels": {}, "commonAnnotations": {}, "alerts": alerts})
}

fn fp(input: &str) -> String {
    Fingerprint::of_input(input).to_hex()
}

/// A counter of the replica's metrics, summed over the label sets whose text contains `filter`.
async fn counter(c: &Cluster, family: &str, filter: &str) -> u64 {
    let text = c.replicas[0].metrics().await;
    text.lines()
        .filter(|l| l.starts_with(family) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Metadata reads of objects that were found, as the replica counts them.
async fn reads(c: &Cluster) -> u64 {
    counter(c, "namegate_target_reads_total", "found").await
}

async fn post_event(c: &Cluster, event: &Value) -> (u16, Value) {
    let resp = c
        .http
        .post(c.replicas[0].url("/api/v1/signals/kubernetes-event"))
        .json(event)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn pod_signals_resolve_to_their_workload_with_bounded_reads() {
    let c = Cluster::start_with("e2e-cutover", &[resolving()]).await;
    let ns = workload_namespace(&c.client, "shop", Some("true")).await;
    deployment_with_pods(
        &c.client,
        &ns,
        "checkout",
        &["aaaaa", "bbbbb", "ccccc", "ddddd", "eeeee"],
    )
    .await;
    let deploy_fp = fp(&format!("{ns}:Deployment:checkout"));

    // First pod of the Deployment: one read per hop (Pod, ReplicaSet, Deployment), one RR on the
    // Deployment.
    let before = reads(&c).await;
    let (status, _, body) = c
        .post_alerts(
            0,
            &webhook(vec![alert(&ns, json!({"pod": "checkout-7d9c8b6f4-aaaaa"}))]),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["fingerprint"], deploy_fp.as_str());
    let rrs = c.list().await;
    assert_eq!(rrs.len(), 1);
    let target = &rrs[0].spec.target_resource;
    assert_eq!(
        (target.kind.as_str(), target.name.as_str()),
        ("Deployment", "checkout")
    );
    assert_eq!(target.api_version.as_deref(), Some("apps/v1"));
    assert_eq!(reads(&c).await - before, 3, "Pod, ReplicaSet, Deployment");

    // The same pod again: no API call at all.
    let before = reads(&c).await;
    let (status, _, body) = c
        .post_alerts(
            0,
            &webhook(vec![alert(&ns, json!({"pod": "checkout-7d9c8b6f4-aaaaa"}))]),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("duplicate")),
        "{body}"
    );
    assert_eq!(
        reads(&c).await - before,
        0,
        "a repeat is served from the cache"
    );

    // A second pod of the same Deployment: the same RR; only the new Pod is read.
    let before = reads(&c).await;
    let (status, _, body) = c
        .post_alerts(
            0,
            &webhook(vec![alert(&ns, json!({"pod": "checkout-7d9c8b6f4-bbbbb"}))]),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["remediationRequestName"],
        rrs[0].metadata.name.clone().unwrap().as_str()
    );
    assert_eq!(reads(&c).await - before, 1);

    // A concurrent burst for a third pod: single-flight, one read.
    let before = reads(&c).await;
    let burst = futures::future::join_all((0..24).map(|_| {
        let body = webhook(vec![alert(&ns, json!({"pod": "checkout-7d9c8b6f4-ccccc"}))]);
        let c = &c;
        async move { c.post_alerts(0, &body).await.0 }
    }))
    .await;
    assert!(burst.iter().all(|s| *s == 202), "{burst:?}");
    assert_eq!(
        reads(&c).await - before,
        1,
        "one read for 24 concurrent signals"
    );

    // A Warning Event about one of those pods: the same RR.
    let now = jiff::Timestamp::now().to_string();
    let (status, body) = post_event(
        &c,
        &json!({"apiVersion": "v1", "kind": "Event", "type": "Warning", "reason": "BackOff",
                "message": "Back-off restarting failed container",
                "metadata": {"name": "checkout.1", "namespace": ns},
                "involvedObject": {"kind": "Pod", "name": "checkout-7d9c8b6f4-ddddd", "namespace": ns, "apiVersion": "v1"},
                "firstTimestamp": now, "lastTimestamp": now, "count": 3}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["fingerprint"], deploy_fp.as_str());

    // A deleted pod: rejected with the reason, nothing created — 400 alone, `rejected` in a batch.
    let api: Api<DynamicObject> =
        Api::namespaced_with(c.client.clone(), &ns, &ar("", "v1", "Pod", "pods"));
    api.delete(
        "checkout-7d9c8b6f4-eeeee",
        &DeleteParams::default().grace_period(0),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while api
        .get_metadata_opt("checkout-7d9c8b6f4-eeeee")
        .await
        .unwrap()
        .is_some()
    {
        assert!(tokio::time::Instant::now() < deadline, "pod not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone = alert(&ns, json!({"pod": "checkout-7d9c8b6f4-eeeee"}));
    let (status, _, body) = c.post_alerts(0, &webhook(vec![gone.clone()])).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("does not exist"),
        "{body}"
    );
    let pvc_alert = alert(
        &ns,
        json!({"persistentvolumeclaim": "data-0", "alertname": "KubePersistentVolumeFillingUp"}),
    );
    let (status, _, body) = c
        .post_alerts(0, &webhook(vec![gone, pvc_alert.clone()]))
        .await;
    assert_eq!(status, 207, "{body}");
    assert_eq!(body["results"][0]["status"], "rejected");
    assert!(
        body["results"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("does not exist")
    );
    // The PVC does not exist yet either.
    assert_eq!(body["results"][1]["status"], "rejected");
    assert_eq!(
        c.list().await.len(),
        1,
        "nothing created for missing targets"
    );

    // A PVC alert: an RR on the PVC (kind from discovery's singular name).
    create(
        &c.client,
        &ns,
        &ar("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data-0"},
               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await;
    // The missing PVC was cached as missing for a few seconds: wait it out, bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let body = loop {
        let (status, _, body) = c.post_alerts(0, &webhook(vec![pvc_alert.clone()])).await;
        if status == 201 {
            break body;
        }
        assert_eq!(status, 400, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "PVC never resolved: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        body["fingerprint"],
        fp(&format!("{ns}:PersistentVolumeClaim:data-0")).as_str()
    );

    // A Job of a CronJob resolves to the CronJob.
    let cj_uid = create(
        &c.client,
        &ns,
        &ar("batch", "v1", "CronJob", "cronjobs"),
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
               "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {
                   "restartPolicy": "Never", "containers": [{"name": "app", "image": "registry.example/app:1"}]}}}}}}),
    )
    .await;
    create(
        &c.client,
        &ns,
        &ar("batch", "v1", "Job", "jobs"),
        json!({"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": "nightly-29000000", "ownerReferences": owner("batch/v1", "CronJob", "nightly", &cj_uid)},
               "spec": {"template": {"spec": {"restartPolicy": "Never",
                   "containers": [{"name": "app", "image": "registry.example/app:1"}]}}}}),
    )
    .await;
    let (status, _, body) = c
        .post_alerts(
            0,
            &webhook(vec![alert(
                &ns,
                json!({"job_name": "nightly-29000000", "alertname": "KubeJobFailed"}),
            )]),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["fingerprint"],
        fp(&format!("{ns}:CronJob:nightly")).as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn a_crd_installed_after_start_becomes_a_target_kind() {
    let c = Cluster::start_with("e2e-cutover-crd", &[resolving()]).await;
    let ns = workload_namespace(&c.client, "tabs", Some("true")).await;
    // A Kind of its own per run: CRDs outlive a test on a shared API server.
    let id = format!("{:08x}", rand::random::<u32>());
    let group = format!("t{id}.example.com");
    let kind = format!("CronTab{id}");
    let (singular, plural) = (kind.to_lowercase(), format!("{}s", kind.to_lowercase()));
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": plural, "singular": singular, "kind": kind},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(c.client.clone());
    crds.create(&PostParams::default(), &crd).await.unwrap();
    // Until it is established and discovery refreshed, `crontab` is no resource label (400).
    let body = webhook(vec![alert(
        &ns,
        json!({singular.clone(): "my-tab", "alertname": "CronTabLate"}),
    )]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut created = false;
    loop {
        if !created {
            let resource = ar(&group, "v1", &kind, &plural);
            let api: Api<DynamicObject> = Api::namespaced_with(c.client.clone(), &ns, &resource);
            let obj: DynamicObject = serde_json::from_value(json!({
                "apiVersion": format!("{group}/v1"), "kind": kind, "metadata": {"name": "my-tab"}}))
            .unwrap();
            match api.create(&PostParams::default(), &obj).await {
                Ok(_) => created = true,
                Err(e) => eprintln!("CronTab not created yet: {e}"),
            }
        }
        let (status, _, resp) = c.post_alerts(0, &body).await;
        if status == 201 {
            assert_eq!(
                resp["fingerprint"],
                fp(&format!("{ns}:{kind}:my-tab")).as_str()
            );
            let rr = &c.list().await[0];
            assert_eq!(rr.spec.target_resource.kind, kind);
            assert_eq!(
                rr.spec.target_resource.api_version.as_deref(),
                Some(format!("{group}/v1").as_str())
            );
            crds.delete(&format!("{plural}.{group}"), &DeleteParams::default())
                .await
                .unwrap();
            return;
        }
        assert_eq!(status, 400, "{resp}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "CRD kind never admitted: {resp}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn unlabelled_namespace_is_rejected_with_200_until_labelled() {
    let c = Cluster::start_with("e2e-cutover-scope", &[resolving()]).await;
    let ns = workload_namespace(&c.client, "unmanaged", None).await;
    deployment_with_pods(&c.client, &ns, "api", &["aaaaa"]).await;
    let body = webhook(vec![alert(&ns, json!({"pod": "api-7d9c8b6f4-aaaaa"}))]);
    let (status, _, resp) = c.post_alerts(0, &body).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["status"], "rejected");
    assert_eq!(resp["reason"], "unmanaged_resource");
    assert_eq!(
        resp["resource"],
        json!({"namespace": ns, "kind": "Deployment", "name": "api"})
    );
    assert!(resp["message"].as_str().unwrap().contains(MANAGED));
    assert!(c.list().await.is_empty(), "nothing created out of scope");

    // Labelling the namespace takes effect through the watch (a Deployment not read before, so no
    // cache entry is involved).
    label_namespace(&c.client, &ns, "true").await;
    deployment_with_pods(&c.client, &ns, "web", &["aaaaa"]).await;
    let web = webhook(vec![alert(&ns, json!({"pod": "web-7d9c8b6f4-aaaaa"}))]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _, resp) = c.post_alerts(0, &web).await;
        if status == 201 {
            break;
        }
        assert_eq!(
            (status, &resp["reason"]),
            (200, &json!("unmanaged_resource"))
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "namespace label never seen"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // `false` on the resolved resource wins over a managed namespace.
    let deployments: Api<DynamicObject> = Api::namespaced_with(
        c.client.clone(),
        &ns,
        &ar("apps", "v1", "Deployment", "deployments"),
    );
    deployment_with_pods(&c.client, &ns, "db", &["aaaaa"]).await;
    deployments
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {MANAGED: "false"}}})),
        )
        .await
        .unwrap();
    let (status, _, resp) = c
        .post_alerts(
            0,
            &webhook(vec![alert(&ns, json!({"pod": "db-7d9c8b6f4-aaaaa"}))]),
        )
        .await;
    assert_eq!(
        (status, &resp["reason"]),
        (200, &json!("unmanaged_resource")),
        "{resp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn an_in_flight_legacy_rr_absorbs_signals_then_attempt_two_follows() {
    let c = Cluster::start_with("e2e-cutover-legacy", &[resolving()]).await;
    let ns = workload_namespace(&c.client, "legacy", Some("true")).await;
    deployment_with_pods(&c.client, &ns, "ledger", &["aaaaa"]).await;
    let fingerprint = Fingerprint::of_input(&format!("{ns}:Deployment:ledger"));
    let legacy = "rr-b157a3a9e42f-1c2b5576";

    // What the kubernaut gateway left behind: a legacy-named, active RR of the same fingerprint,
    // with the attempt label the migration puts on it.
    let now = jiff::Timestamp::now().to_string();
    let rr: crd_schema::RemediationRequest = serde_json::from_value(json!({
        "apiVersion": "kubernaut.ai/v1alpha1", "kind": "RemediationRequest",
        "metadata": {"name": legacy, "labels": {"namegate.io/attempt": "1"}},
        "spec": {"signalFingerprint": fingerprint.to_hex(), "signalName": "KubePodCrashLooping",
                 "severity": "critical", "signalType": "alert", "targetType": "kubernetes",
                 "targetResource": {"kind": "Deployment", "name": "ledger", "namespace": ns},
                 "firingTime": now, "receivedTime": now}
    }))
    .unwrap();
    c.rrs().create(&PostParams::default(), &rr).await.unwrap();
    c.rrs()
        .patch_status(
            legacy,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"overallPhase": "Processing"}})),
        )
        .await
        .unwrap();

    let body = webhook(vec![alert(&ns, json!({"pod": "ledger-7d9c8b6f4-aaaaa"}))]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let view = c.replicas[0].index_view(&fingerprint.to_hex()).await;
        if view["entries"].as_array().is_some_and(|e| !e.is_empty()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "index never saw the legacy RR"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _, resp) = c.post_alerts(0, &body).await;
    assert_eq!(status, 202, "{resp}");
    assert_eq!(resp["remediationRequestName"], legacy);
    assert_eq!(c.list().await.len(), 1, "no second RR at cut-over");

    // The orchestrator finishes it: the next signal starts attempt 2 under the new naming.
    c.rrs()
        .patch_status(
            legacy,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"overallPhase": "Completed"}})),
        )
        .await
        .unwrap();
    let expected = name::name(&fingerprint, Attempt::new(2).unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _, resp) = c.post_alerts(0, &body).await;
        if status == 201 {
            assert_eq!(resp["remediationRequestName"], expected.as_str());
            assert_eq!(resp["attempt"], 2);
            break;
        }
        assert_eq!(status, 202, "{resp}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "never left the legacy RR"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
