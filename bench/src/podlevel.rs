//! §1 rows for pod-level alerts: the API reads target resolution makes for the first signal of a Pod
//! and for its repeats, counted by the API server's own `apiserver_request_total` (GET and LIST of
//! pods, replicasets, deployments and namespaces), against real objects with ownerReferences (Deployment → ReplicaSet → Pods).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::apimetrics;
use crate::load;
use crate::procs::Replica;
use crate::report::Report;

const PROMETHEUS_PATH: &str = "/api/v1/signals/prometheus";
/// What target resolution may read: the objects of the owner chain, and namespaces (whose scope
/// labels must come from the watch, never from a read per signal).
const RESOURCES: [&str; 4] = ["pods", "replicasets", "deployments", "namespaces"];

pub fn ar(group: &str, kind: &str, plural: &str) -> ApiResource {
    let api_version = if group.is_empty() {
        "v1".to_owned()
    } else {
        format!("{group}/v1")
    };
    ApiResource {
        group: group.into(),
        version: "v1".into(),
        api_version,
        kind: kind.into(),
        plural: plural.into(),
    }
}

pub async fn create(
    client: &Client,
    ns: &str,
    r: &ApiResource,
    obj: Value,
) -> Result<String, String> {
    let api: Api<DynamicObject> = match ns {
        "" => Api::all_with(client.clone(), r),
        ns => Api::namespaced_with(client.clone(), ns, r),
    };
    let obj: DynamicObject = serde_json::from_value(obj).map_err(|e| e.to_string())?;
    let created = api
        .create(&PostParams::default(), &obj)
        .await
        .map_err(|e| format!("creating {} {:?}: {e}", r.kind, obj.metadata.name))?;
    Ok(created.metadata.uid.unwrap_or_default())
}

/// GETs and LISTs of [`RESOURCES`] so far, as the API server counts them.
async fn reads(client: &Client) -> Result<f64, String> {
    let mut total = 0.0;
    for r in RESOURCES {
        let c = apimetrics::scrape_resource(client, r).await?;
        total += c.gets() + c.lists();
    }
    Ok(total)
}

fn alert(ns: &str, pod: &str, starts_at: &str) -> Bytes {
    Bytes::from(
        json!({
            "version": "4", "groupKey": "{}:{alertname=\"KubePodCrashLooping\"}", "status": "firing",
            "receiver": "namegate", "commonLabels": {}, "commonAnnotations": {},
            "alerts": [{"status": "firing", "startsAt": starts_at,
                "labels": {"alertname": "KubePodCrashLooping", "severity": "critical", "namespace": ns,
                           "pod": pod, "container": "app", "job": "kube-state-metrics"},
                "annotations": {"summary": format!("Pod {ns}/{pod} is crash looping")}}]
        })
        .to_string(),
    )
}

/// Sends one pod-level alert per Pod of one Deployment (`pods` ≥ 2), then `repeats` more for the same Pods, through
/// a replica with target resolution on (the defaults), and reports the reads per signal.
pub async fn run(
    client: &Client,
    namegate: &Path,
    work_dir: &Path,
    (pods, repeats): (usize, usize),
    starts_at: &str,
    report: &mut Report,
) -> Result<(), String> {
    let ns = namegate_e2e::fresh_namespace(client, "bench-pods").await;
    // Its own RR namespace: the occurrence-accounting check of the other sections counts the RRs of theirs.
    let rr_namespace = namegate_e2e::fresh_namespace(client, "bench-pods-rr").await;
    let namespaces: Api<DynamicObject> =
        Api::all_with(client.clone(), &ar("", "Namespace", "namespaces"));
    namespaces
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"kubernaut.ai/managed": "true"}}})),
        )
        .await
        .map_err(|e| e.to_string())?;
    create(
        client,
        &ns,
        &ar("", "ServiceAccount", "serviceaccounts"),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
    )
    .await?;
    let labels = json!({"app": "web"});
    let pod_spec = json!({"containers": [{"name": "app", "image": "registry.example/app:1"}]});
    let template = json!({"selector": {"matchLabels": labels},
                          "template": {"metadata": {"labels": labels}, "spec": pod_spec}});
    let d_uid = create(
        client,
        &ns,
        &ar("apps", "Deployment", "deployments"),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": template}),
    )
    .await?;
    let owner = |api: &str, kind: &str, name: &str, uid: &str| json!([{"apiVersion": api, "kind": kind, "name": name, "uid": uid, "controller": true}]);
    let rs_uid = create(
        client,
        &ns,
        &ar("apps", "ReplicaSet", "replicasets"),
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
               "metadata": {"name": "web-7d9c8b6f4", "ownerReferences": owner("apps/v1", "Deployment", "web", &d_uid)},
               "spec": template}),
    )
    .await?;
    let names: Vec<String> = (0..pods).map(|i| format!("web-7d9c8b6f4-{i:05}")).collect();
    for n in &names {
        create(
            client,
            &ns,
            &ar("", "Pod", "pods"),
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": n, "labels": labels,
                                "ownerReferences": owner("apps/v1", "ReplicaSet", "web-7d9c8b6f4", &rs_uid)},
                   "spec": pod_spec}),
        )
        .await?;
    }

    let gw = Replica::start_with(
        namegate,
        &rr_namespace,
        work_dir,
        "gateway-pods",
        Duration::from_secs(1),
        Duration::from_secs(180),
        &[],
    )
    .await?;
    let addr = gw.addr;

    // The first signal of the first Pod: Pod, ReplicaSet and Deployment are read.
    let r0 = reads(client).await?;
    let first = load::send_all(
        addr,
        PROMETHEUS_PATH,
        vec![alert(&ns, &names[0], starts_at)],
        1,
    )
    .await;
    let r1 = reads(client).await?;
    // The first signal of every other Pod: one read each (owners are cached).
    let rest: Vec<Bytes> = names[1..]
        .iter()
        .map(|p| alert(&ns, p, starts_at))
        .collect();
    let others = load::send_all(addr, PROMETHEUS_PATH, rest, 8).await;
    let r2 = reads(client).await?;
    // Repeats of those Pods: served from the cache.
    let again: Vec<Bytes> = (0..repeats)
        .map(|i| alert(&ns, &names[i % names.len()], starts_at))
        .collect();
    let repeated = load::send_all(addr, PROMETHEUS_PATH, again, 32).await;
    let r3 = reads(client).await?;
    drop(gw);

    let ok = |a: &[Result<u16, String>]| a.iter().filter(|r| matches!(r, Ok(201 | 202))).count();
    if ok(&first) + ok(&others) + ok(&repeated) != 1 + names.len() - 1 + repeats {
        report.note(format!(
            "§1 pod-level: not every signal was admitted (first {:?}, others {} of {}, repeats {} of {repeats})",
            first,
            ok(&others),
            names.len() - 1,
            ok(&repeated)
        ));
    }
    let first_reads = r1 - r0;
    report.row(
        "1",
        "pod-level alert, first signal of the first Pod of a Deployment: API reads (GET/LIST of pods, replicasets, deployments, namespaces)",
        format!("{first_reads} (Pod → ReplicaSet → Deployment)"),
        "",
        "",
        "≤ 1 per hop (3)",
        crate::report::yes_no(first_reads <= 3.0),
    );
    let per_pod = (r2 - r1) / (names.len() - 1).max(1) as f64;
    report.row(
        "1",
        "pod-level alert, first signal of another Pod of that Deployment: API reads per signal",
        format!(
            "{per_pod:.2} ({} reads for {} Pods)",
            r2 - r1,
            names.len() - 1
        ),
        "",
        "",
        "1 (the Pod; owners cached)",
        crate::report::yes_no(per_pod <= 1.0 + 1e-9),
    );
    let per_repeat = (r3 - r2) / repeats.max(1) as f64;
    report.row(
        "1",
        "pod-level alert, repeat signal of a Pod seen recently: API reads per signal",
        format!("{per_repeat:.3} ({} reads for {repeats} repeats)", r3 - r2),
        "",
        "",
        "0",
        crate::report::yes_no(r3 - r2 == 0.0),
    );
    Ok(())
}
