//! The Helm chart (`charts/namegate`), checked with a real `helm` (built by `scripts/lib/helm.sh`, path in
//! `HELM`) and the real kube-apiserver (`KUBECONFIG`): lint, render with several value sets, validate every
//! rendered object by a server-side dry-run, read the gateway's config back with the gateway's own parser,
//! and hold the RBAC to least privilege (docs/security.md, docs/kube-harness.md).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::Role;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams, ValidationDirective,
};
use kube::discovery::{self, Scope};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client};
use namegate::config::{Config, Settings, parse_listen};
use namegate::http::auth::AuthMode;
use namegate_e2e::{client, fresh_namespace};
use serde::Deserialize;
use serde_json::{Value, json};

const RELEASE: &str = "ng";

// ------------------------------------------------------------------------------------------ helm

/// The helm binary named by `HELM`. Panics (the test fails, it does not skip) when it is missing.
fn helm() -> PathBuf {
    let path = std::env::var_os("HELM").map(PathBuf::from).expect(
        "HELM is not set: these tests need helm; run scripts/test (or `source scripts/lib/common.sh; \
         source scripts/lib/helm.sh; ensure_helm`)",
    );
    assert!(
        path.is_file(),
        "HELM={} is not a file: build it with ensure_helm (scripts/lib/helm.sh)",
        path.display()
    );
    path
}

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/namegate")
}

/// Runs helm; returns (success, stdout, stderr).
fn run_helm(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(helm())
        .args(args)
        .output()
        .expect("running helm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `helm template` of the chart into `namespace` with `--set` values; panics with helm's output on failure.
fn render(namespace: &str, sets: &[&str]) -> Vec<Value> {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        RELEASE,
        chart.to_str().expect("a UTF-8 path"),
        "--namespace",
        namespace,
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    let (ok, stdout, stderr) = run_helm(&args);
    assert!(ok, "helm {args:?} failed:\n{stderr}\n{stdout}");
    let objects: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&stdout)
        .map(|doc| Value::deserialize(doc).expect("helm renders valid YAML"))
        .filter(|v| !v.is_null())
        .collect();
    assert!(!objects.is_empty(), "helm rendered nothing");
    objects
}

/// `helm template` that must fail, with `needle` in the error.
fn render_fails(sets: &[&str], needle: &str) {
    let chart = chart_dir();
    let mut args = vec!["template", RELEASE, chart.to_str().expect("a UTF-8 path")];
    for s in sets {
        args.extend(["--set", s]);
    }
    let (ok, stdout, stderr) = run_helm(&args);
    assert!(!ok, "helm {args:?} must fail, rendered:\n{stdout}");
    assert!(
        stderr.contains(needle),
        "helm {args:?}: expected {needle:?} in the error, got:\n{stderr}"
    );
}

// ------------------------------------------------------------------------------- object access

fn kind(o: &Value) -> &str {
    o["kind"].as_str().expect("every object has a kind")
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"]
        .as_str()
        .expect("every object has a name")
}

fn of_kind<'a>(objects: &'a [Value], k: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| kind(o) == k).collect()
}

/// The name of the ingestion Service (the chart's full name, or `service.name`): the one Service that
/// is not the metrics Service.
fn ingestion_service(objects: &[Value]) -> &str {
    let names: Vec<&str> = of_kind(objects, "Service")
        .into_iter()
        .map(name)
        .filter(|n| !n.ends_with("-metrics"))
        .collect();
    assert_eq!(names.len(), 1, "one ingestion Service, found {names:?}");
    names[0]
}

fn one<'a>(objects: &'a [Value], k: &str) -> &'a Value {
    let found = of_kind(objects, k);
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {k}, got {}",
        found.len()
    );
    found[0]
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn gvk_of(o: &Value) -> GroupVersionKind {
    let api_version = o["apiVersion"]
        .as_str()
        .expect("every object has an apiVersion");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind(o))
}

// ------------------------------------------------------------------------------- API server side

/// Installs the CRD exactly as shipped in `charts/namegate/crds/` (what Helm installs) by server-side
/// apply, as `namegate_e2e::install_crd` does with the generated one, and waits until it is Established.
async fn install_chart_crd(client: &Client) {
    let path = chart_dir().join("crds/remediationrequests.yaml");
    let text = std::fs::read_to_string(&path).expect("reading the chart's CRD");
    let crd: CustomResourceDefinition = serde_yaml_ng::from_str(&text)
        .expect("the chart's CRD parses as a CustomResourceDefinition");
    let crd_name = crd.metadata.name.clone().expect("the CRD has a name");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        &crd_name,
        &PatchParams::apply("namegate-e2e").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("applying the chart's CRD");
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(crds, &crd_name, conditions::is_crd_established()),
    )
    .await
    .expect("the CRD must become Established within 60 s")
    .expect("watching the CRD");
}

/// Every object through the real API server's admission and validation without persisting it: a dry-run
/// create (what Helm does) and a dry-run server-side apply with strict field validation (unknown or
/// duplicate fields are errors, not warnings).
async fn dry_run_all(client: &Client, namespace: &str, objects: &[Value]) {
    let mut failures = Vec::new();
    for o in objects {
        let what = format!("{} {}", kind(o), name(o));
        let gvk = gvk_of(o);
        let (ar, caps) = match discovery::pinned_kind(client, &gvk).await {
            Ok(found) => found,
            Err(e) => {
                failures.push(format!(
                    "{what}: the API server does not serve {gvk:?}: {e}"
                ));
                continue;
            }
        };
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => {
                assert_eq!(
                    o["metadata"]["namespace"].as_str(),
                    Some(namespace),
                    "{what}: namespaced objects must name the release namespace"
                );
                Api::namespaced_with(client.clone(), namespace, &ar)
            }
            Scope::Cluster => {
                assert!(
                    o["metadata"].get("namespace").is_none(),
                    "{what}: a cluster-scoped object with a namespace"
                );
                Api::all_with(client.clone(), &ar)
            }
        };
        let obj: DynamicObject =
            serde_json::from_value(o.clone()).expect("a rendered object is a DynamicObject");
        let create = PostParams {
            dry_run: true,
            field_manager: Some("helm".into()),
        };
        if let Err(e) = api.create(&create, &obj).await {
            failures.push(format!("{what}: dry-run create: {e}"));
        }
        let apply = PatchParams {
            dry_run: true,
            force: true,
            field_manager: Some("namegate-chart-e2e".into()),
            field_validation: Some(ValidationDirective::Strict),
        };
        if let Err(e) = api.patch(name(o), &apply, &Patch::Apply(&obj)).await {
            failures.push(format!("{what}: dry-run server-side apply (strict): {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "the API server refused rendered objects:\n{}",
        failures.join("\n")
    );
}

/// A fresh namespace that enforces the `restricted` Pod Security Standard (the API server's built-in
/// PodSecurity admission), and proof that it does: a pod without hardening is refused there.
async fn restricted_namespace(client: &Client) -> String {
    let name = format!("e2e-chart-{:08x}", rand::random::<u32>());
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            },
        },
    }))
    .expect("a Namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("creating a test namespace");
    // No controller-manager: the `default` ServiceAccount the probe pod runs as is not created for us.
    let default_sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "default"}})).expect("a ServiceAccount");
    Api::<ServiceAccount>::namespaced(client.clone(), &name)
        .create(&PostParams::default(), &default_sa)
        .await
        .expect("creating the default ServiceAccount");
    // Allowed by the baseline standard, refused by restricted (no securityContext at all).
    let unhardened: Pod = serde_json::from_value(json!({
        "metadata": {"name": "unhardened"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .expect("a Pod");
    let refused = Api::<Pod>::namespaced(client.clone(), &name)
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &unhardened,
        )
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("violates PodSecurity")),
        "PodSecurity admission must refuse an unhardened pod in {name}, got {refused:?}"
    );
    name
}

/// The pods the chart's Deployments and Jobs would create pass the `restricted` Pod Security Standard:
/// each pod template is dry-run created as a Pod. Pods need their ServiceAccount to exist, so the
/// rendered ServiceAccounts are created for real first.
async fn dry_run_pods(client: &Client, namespace: &str, objects: &[Value]) {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    for sa in of_kind(objects, "ServiceAccount") {
        let sa: ServiceAccount = serde_json::from_value(sa.clone()).expect("a ServiceAccount");
        sas.create(&PostParams::default(), &sa)
            .await
            .expect("creating a rendered ServiceAccount");
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut failures = Vec::new();
    for o in objects
        .iter()
        .filter(|o| matches!(kind(o), "Deployment" | "Job"))
    {
        let template = &o["spec"]["template"];
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": template["metadata"].clone(),
            "spec": template["spec"].clone(),
        });
        pod["metadata"]["name"] = json!(format!("{}-pod", name(o)));
        let pod: Pod = serde_json::from_value(pod).expect("a pod template is a Pod");
        let params = PostParams {
            dry_run: true,
            field_manager: Some("namegate-chart-e2e".into()),
        };
        if let Err(e) = pods.create(&params, &pod).await {
            failures.push(format!("the pod of {} {}: {e}", kind(o), name(o)));
        }
    }
    assert!(
        failures.is_empty(),
        "pods refused (restricted Pod Security Standard):\n{}",
        failures.join("\n")
    );
}

// ------------------------------------------------------------------------------- chart properties

/// (apiGroup, resource, verb) triples granted by a Role or ClusterRole.
fn grants(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().into_iter().flatten() {
        for g in strs(&rule["apiGroups"]) {
            for r in strs(&rule["resources"]) {
                for v in strs(&rule["verbs"]) {
                    out.insert((g.to_owned(), r.to_owned(), v.to_owned()));
                }
            }
        }
    }
    out
}

fn triples(t: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    t.iter()
        .map(|(g, r, v)| ((*g).to_owned(), (*r).to_owned(), (*v).to_owned()))
        .collect()
}

/// docs/security.md: no Secrets, no delete, no wildcards, no privilege-granting verbs anywhere; the gateway's
/// Role is exactly the RR rules; ClusterRoles only create TokenReviews and SubjectAccessReviews.
fn assert_least_privilege(objects: &[Value], auth: AuthMode) {
    assert_least_privilege_with(objects, auth, &[]);
}

/// The reads target resolution needs with the default values (docs/compatibility.md): metadata `get`
/// of the kinds a signal may name and their owners, `list` of pods (a Service's selector), a watch of
/// namespaces (scope labels) and of CRDs (discovery refresh).
const TARGET_READS: [(&str, &str, &str); 19] = [
    ("", "pods", "get"),
    ("", "pods", "list"),
    ("", "services", "get"),
    ("", "persistentvolumeclaims", "get"),
    ("", "persistentvolumes", "get"),
    ("", "nodes", "get"),
    ("", "replicationcontrollers", "get"),
    ("apps", "deployments", "get"),
    ("apps", "replicasets", "get"),
    ("apps", "statefulsets", "get"),
    ("apps", "daemonsets", "get"),
    ("batch", "jobs", "get"),
    ("batch", "cronjobs", "get"),
    ("autoscaling", "horizontalpodautoscalers", "get"),
    ("policy", "poddisruptionbudgets", "get"),
    ("", "namespaces", "list"),
    ("", "namespaces", "watch"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
];

/// [`assert_least_privilege`] for values that add `extra_reads` (`targets.extraReadableResources`).
fn assert_least_privilege_with(
    objects: &[Value],
    auth: AuthMode,
    extra_reads: &[(&str, &str, &str)],
) {
    let forbidden_verbs = [
        "*",
        "delete",
        "deletecollection",
        "escalate",
        "bind",
        "impersonate",
    ];
    for role in of_kind(objects, "Role")
        .into_iter()
        .chain(of_kind(objects, "ClusterRole"))
    {
        let what = format!("{} {}", kind(role), name(role));
        assert!(
            role.get("aggregationRule").is_none(),
            "{what}: aggregated roles grant whatever is aggregated into them"
        );
        for rule in role["rules"].as_array().expect("roles list rules") {
            let groups = strs(&rule["apiGroups"]);
            let resources = strs(&rule["resources"]);
            let verbs = strs(&rule["verbs"]);
            assert!(
                rule.get("nonResourceURLs").is_none(),
                "{what}: nonResourceURLs {rule}"
            );
            assert!(
                !groups.contains(&"*"),
                "{what}: wildcard apiGroup in {rule}"
            );
            for r in &resources {
                assert!(
                    *r != "*" && !r.starts_with("*/") && !r.ends_with("/*"),
                    "{what}: wildcard resource in {rule}"
                );
                assert!(
                    *r != "secrets" && !r.starts_with("secrets/"),
                    "{what}: grants access to secrets: {rule}"
                );
            }
            for v in &verbs {
                assert!(!forbidden_verbs.contains(v), "{what}: verb {v} in {rule}");
            }
        }
    }

    let gateway_role = objects
        .iter()
        .find(|o| kind(o) == "Role" && name(o) == format!("{RELEASE}-namegate"))
        .expect("the gateway's Role");
    assert_eq!(
        grants(gateway_role),
        triples(&[
            ("kubernaut.ai", "remediationrequests", "get"),
            ("kubernaut.ai", "remediationrequests", "list"),
            ("kubernaut.ai", "remediationrequests", "watch"),
            ("kubernaut.ai", "remediationrequests", "create"),
            // Metadata patches of the per-replica occurrence totals (docs/reliability.md).
            ("kubernaut.ai", "remediationrequests", "patch"),
            ("kubernaut.ai", "remediationrequests/status", "get"),
            ("kubernaut.ai", "remediationrequests/status", "patch"),
        ]),
        "the gateway's Role grants exactly what admission, the index and the flusher use"
    );

    // The gateway's own auth ClusterRole creates TokenReviews and SubjectAccessReviews, nothing else; the
    // sender and audit-reader ClusterRoles (for binding callers) pass the gateway's own check only:
    // one verb on the gateway's Service, by name.
    let allowed_auth = triples(&[
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("authorization.k8s.io", "subjectaccessreviews", "create"),
    ]);
    let mut target_reads = triples(&TARGET_READS);
    target_reads.extend(triples(extra_reads));
    let cluster_roles = of_kind(objects, "ClusterRole");
    let (target_roles, other_roles): (Vec<&Value>, Vec<&Value>) = cluster_roles
        .iter()
        .copied()
        .partition(|r| name(r).ends_with("-targets"));
    let (caller_roles, auth_roles): (Vec<&Value>, Vec<&Value>) = other_roles
        .into_iter()
        .partition(|r| name(r).ends_with("-sender") || name(r).ends_with("-audit-reader"));
    let auth_grants: BTreeSet<_> = auth_roles.iter().flat_map(|r| grants(r)).collect();
    let read_grants: BTreeSet<_> = target_roles.iter().flat_map(|r| grants(r)).collect();
    assert_eq!(
        read_grants, target_reads,
        "target resolution is granted exactly its metadata reads and watches"
    );
    for r in &caller_roles {
        let expected = if name(r).ends_with("-sender") {
            triples(&[("", "services", "create")])
        } else {
            triples(&[("", "services/audit", "get")])
        };
        assert_eq!(grants(r), expected, "{}", name(r));
        for rule in r["rules"].as_array().expect("rules") {
            assert_eq!(
                strs(&rule["resourceNames"]),
                [ingestion_service(objects)],
                "{}: a caller role names the gateway's Service only, or it would let callers create Services",
                name(r)
            );
        }
    }
    match auth {
        AuthMode::Kubernetes => {
            assert_eq!(
                auth_grants, allowed_auth,
                "auth: kubernetes needs TokenReview and SubjectAccessReview, nothing else cluster-wide"
            );
            assert_eq!(
                caller_roles.len(),
                2,
                "the sender and audit-reader ClusterRoles"
            );
        }
        AuthMode::None => assert!(
            auth_grants.is_empty(),
            "auth: none needs no cluster-wide permission beyond target reads"
        ),
    }
    // Every binding refers to a Role or ClusterRole of the chart (never to cluster-admin, edit, …).
    let roles: BTreeSet<(&str, &str)> = objects
        .iter()
        .filter(|o| matches!(kind(o), "Role" | "ClusterRole"))
        .map(|o| (kind(o), name(o)))
        .collect();
    for b in of_kind(objects, "RoleBinding")
        .into_iter()
        .chain(of_kind(objects, "ClusterRoleBinding"))
    {
        let r = &b["roleRef"];
        let target = (
            r["kind"].as_str().expect("roleRef.kind"),
            r["name"].as_str().expect("roleRef.name"),
        );
        assert!(
            roles.contains(&target),
            "{} {} binds {target:?}, which the chart does not define",
            kind(b),
            name(b)
        );
    }
}

/// What one value set is expected to produce.
#[derive(Debug)]
struct Expect {
    replicas: i64,
    auth: AuthMode,
    /// The NAMEGATE_AUDIT_URL env var: `Ok(url)` for a literal value, `Err((secret, key))` for a secretKeyRef.
    audit_url: Result<&'static str, (&'static str, &'static str)>,
    /// Reads added by `targets.extraReadableResources`.
    extra_reads: &'static [(&'static str, &'static str, &'static str)],
}

fn env_var<'a>(container: &'a Value, var: &str) -> &'a Value {
    container["env"]
        .as_array()
        .expect("the container has env")
        .iter()
        .find(|e| e["name"] == var)
        .unwrap_or_else(|| panic!("env {var} is missing"))
}

/// The gateway Deployment and its ConfigMap: what `namegate serve` will actually run with, parsed by the
/// gateway's own configuration code.
fn assert_gateway(objects: &[Value], expect: &Expect) {
    let deploy = one(objects, "Deployment");
    let spec = &deploy["spec"];
    assert_eq!(spec["replicas"].as_i64(), Some(expect.replicas), "replicas");
    let pod = &spec["template"]["spec"];
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "one gateway container");
    let c = &containers[0];

    // Security (restricted Pod Security Standard).
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"]);
    assert!(
        sc["capabilities"].get("add").is_none(),
        "no capability added"
    );
    for r in ["requests", "limits"] {
        for k in ["cpu", "memory"] {
            assert!(c["resources"][r][k].is_string(), "resources.{r}.{k} is set");
        }
    }

    // Ports and probes.
    let ports: BTreeMap<&str, i64> = c["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("named port"),
                p["containerPort"].as_i64().expect("port number"),
            )
        })
        .collect();
    assert_eq!(
        ports,
        BTreeMap::from([("health", 8081), ("http", 8080), ("metrics", 9090)])
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "health");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "health");
    assert!(
        c.get("lifecycle").is_none(),
        "no preStop: the gateway has shutdown-delay"
    );

    // Command line: `namegate serve --config … --listen …`; the listen flags parse as the gateway does.
    let mut argv = strs(&c["command"]);
    argv.extend(strs(&c["args"]));
    assert_eq!(argv[..2], ["namegate", "serve"], "{argv:?}");
    let flag = |f: &str| {
        argv.iter()
            .find_map(|a| a.strip_prefix(&format!("--{f}=")))
            .unwrap_or_else(|| panic!("--{f} missing in {argv:?}"))
    };
    assert_eq!(flag("config"), "/etc/namegate/config.yaml");
    for (f, port) in [
        ("listen", 8080),
        ("health-listen", 8081),
        ("metrics-listen", 9090),
    ] {
        assert_eq!(
            parse_listen(flag(f))
                .expect("a valid listen address")
                .port(),
            port,
            "--{f}"
        );
    }

    // Namespace from the downward API; the audit store URL from a value or a Secret.
    assert_eq!(
        env_var(c, "POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    let audit = env_var(c, "NAMEGATE_AUDIT_URL");
    let audit_url = match expect.audit_url {
        Ok(url) => {
            assert_eq!(audit["value"], url);
            url
        }
        Err((secret, key)) => {
            let r = &audit["valueFrom"]["secretKeyRef"];
            assert_eq!(
                (r["name"].as_str(), r["key"].as_str()),
                (Some(secret), Some(key))
            );
            "postgres://namegate@postgres:5432/namegate"
        }
    };

    // The config file: mounted where --config points, parsed by the gateway's own code.
    let cm = one(objects, "ConfigMap");
    let cm_volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["configMap"]["name"] == cm["metadata"]["name"])
        .expect("the ConfigMap is a volume");
    assert!(
        c["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .any(|m| m["name"] == cm_volume["name"]
                && m["mountPath"] == "/etc/namegate/config.yaml"
                && m["subPath"] == "config.yaml"),
        "the config file is mounted at /etc/namegate/config.yaml"
    );
    let text = cm["data"]["config.yaml"].as_str().expect("config.yaml");
    let file = Settings::from_yaml(text, "config.yaml".into())
        .unwrap_or_else(|e| panic!("the gateway refuses the chart's config file: {e}\n{text}"));
    assert_eq!(file.auth, Some(expect.auth), "auth in the config file");
    if expect.auth == AuthMode::Kubernetes {
        // SubjectAccessReviews name the chart's Service, which the sender ClusterRole grants.
        assert_eq!(
            file.auth_service_name.as_deref(),
            Some(ingestion_service(objects)),
            "auth-service-name is the ingestion Service's name"
        );
    }
    let spill = file
        .audit_spill_path
        .clone()
        .expect("the spill file is placed on the data volume");
    let data_mount = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["name"] == "data")
        .expect("a writable data volume");
    assert!(
        spill.starts_with(data_mount["mountPath"].as_str().expect("mountPath")),
        "the spill file {spill:?} must be on the writable data volume (the root filesystem is read-only)"
    );
    if let Some(db) = audit_url.strip_prefix("sqlite://") {
        assert!(
            Path::new(db).starts_with(data_mount["mountPath"].as_str().expect("mountPath")),
            "the SQLite database {db} must be on the writable data volume"
        );
    }

    // Everything together resolves as in the pod: flags and env over the file.
    let cli = Settings {
        listen: Some(parse_listen(flag("listen")).expect("listen")),
        health_listen: Some(parse_listen(flag("health-listen")).expect("health-listen")),
        metrics_listen: Some(parse_listen(flag("metrics-listen")).expect("metrics-listen")),
        namespace: Some("release-ns".into()),
        audit_url: Some(audit_url.into()),
        ..Settings::default()
    };
    let cfg = Config::resolve(cli.over(file))
        .unwrap_or_else(|e| panic!("the rendered settings do not resolve: {e}"));
    assert_eq!(
        cfg.auth, expect.auth,
        "the gateway runs with the chart's auth mode"
    );

    // Kubernetes must wait longer than the gateway's own shutdown before SIGKILL: the shutdown delay,
    // then the request drain and the final occurrence flush, each bounded by drain-timeout.
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        Duration::from_secs(grace) > cfg.shutdown_delay + 2 * cfg.drain_timeout,
        "terminationGracePeriodSeconds {grace} must exceed shutdown-delay {:?} + 2 × drain-timeout {:?}",
        cfg.shutdown_delay,
        cfg.drain_timeout
    );

    // The ingestion Service: port 8080 named http, selecting exactly the gateway pods.
    let services = of_kind(objects, "Service");
    let svc = services
        .iter()
        .find(|s| name(s) == format!("{RELEASE}-namegate") || name(s) == "gateway-service")
        .expect("the ingestion Service");
    let sp = &svc["spec"]["ports"][0];
    assert_eq!(
        (sp["name"].as_str(), sp["port"].as_i64()),
        (Some("http"), Some(8080))
    );
    assert_eq!(sp["targetPort"], "http");
    assert_eq!(
        svc["spec"]["selector"], spec["selector"]["matchLabels"],
        "the Service selects the Deployment's pods"
    );
    let sa = pod["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName");
    assert!(
        objects.iter().any(|o| kind(o) == "ServiceAccount"
            && name(o) == sa
            && o["metadata"]["annotations"]["helm.sh/hook"].is_null()),
        "the gateway runs as the release's own ServiceAccount {sa}"
    );

    // Several replicas survive node drains and are spread over nodes.
    if expect.replicas > 1 {
        let pdb = one(objects, "PodDisruptionBudget");
        assert_eq!(pdb["spec"]["selector"], spec["selector"]);
        let budget_ok = pdb["spec"]["maxUnavailable"] == 1
            || pdb["spec"]["minAvailable"]
                .as_i64()
                .is_some_and(|m| m >= 1 && m < expect.replicas);
        assert!(
            budget_ok,
            "PDB keeps replicas up during drains: {}",
            pdb["spec"]
        );
        let spread_by_host = pod["topologySpreadConstraints"]
            .as_array()
            .is_some_and(|cs| {
                cs.iter().any(|tc| {
                    tc["topologyKey"] == "kubernetes.io/hostname"
                        && tc["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
                })
            });
        let anti_affinity = !pod["affinity"]["podAntiAffinity"].is_null();
        assert!(
            spread_by_host || anti_affinity,
            "replicas are spread across nodes"
        );
    }
}

// ------------------------------------------------------------------------------- value sets

const SQLITE_URL: &str = "sqlite:///var/lib/namegate/audit.db";

/// One value set: name, `--set` arguments, expectations.
fn value_sets() -> Vec<(&'static str, Vec<&'static str>, Expect)> {
    vec![
        (
            "defaults (PostgreSQL URL from a Secret, auth kubernetes, 3 replicas)",
            vec![],
            Expect {
                replicas: 3,
                auth: AuthMode::Kubernetes,
                audit_url: Err(("namegate-audit", "url")),
                extra_reads: &[],
            },
        ),
        (
            "sqlite demo mode with auth none",
            vec![
                "replicaCount=1",
                "auth=none",
                "audit.url=sqlite:///var/lib/namegate/audit.db",
            ],
            Expect {
                replicas: 1,
                auth: AuthMode::None,
                audit_url: Ok(SQLITE_URL),
                extra_reads: &[],
            },
        ),
        (
            "postgres secret mode with senders, HMAC key, metrics Service, PDB minAvailable, hard anti-affinity, \
             migration hook",
            vec![
                "audit.existingSecret=pg-audit",
                "audit.existingSecretKey=dsn",
                "audit.hmacKey.existingSecret=audit-hmac",
                "senders[0].kind=ServiceAccount",
                "senders[0].name=alertmanager-main",
                "senders[0].namespace=monitoring",
                "auditReaders[0].kind=Group",
                "auditReaders[0].name=sre",
                "auditReaders[0].apiGroup=rbac.authorization.k8s.io",
                "metrics.service.enabled=true",
                "metrics.podAnnotations=true",
                "podDisruptionBudget.minAvailable=2",
                "podAntiAffinity=hard",
                "gateway.otlpEndpoint=http://otel-collector:4318/v1/traces",
                "gateway.extraConfig.audit-queue-capacity=4096",
                "migration.enabled=true",
                "terminationGracePeriodSeconds=60",
                "authorization.audience=namegate",
            ],
            Expect {
                replicas: 3,
                auth: AuthMode::Kubernetes,
                audit_url: Err(("pg-audit", "dsn")),
                extra_reads: &[],
            },
        ),
        (
            "inside a kubernaut installation (docs/cutover.md): kubernaut's Service name, a CRD kind as target",
            vec![
                "service.name=gateway-service",
                "targets.extraReadableResources[0].apiGroups[0]=argoproj.io",
                "targets.extraReadableResources[0].resources[0]=rollouts",
            ],
            Expect {
                replicas: 3,
                auth: AuthMode::Kubernetes,
                audit_url: Err(("namegate-audit", "url")),
                extra_reads: &[("argoproj.io", "rollouts", "get")],
            },
        ),
        (
            "single replica on a PersistentVolumeClaim (SQLite kept across restarts) with the migration hook",
            vec![
                "replicaCount=1",
                "audit.url=sqlite:///var/lib/namegate/audit.db",
                "storage.persistence.enabled=true",
                "migration.enabled=true",
                "migration.dryRun=true",
            ],
            Expect {
                replicas: 1,
                auth: AuthMode::Kubernetes,
                audit_url: Ok(SQLITE_URL),
                extra_reads: &[],
            },
        ),
    ]
}

// ------------------------------------------------------------------------------- tests

#[tokio::test]
#[ignore = "needs helm and the real kube-apiserver: run scripts/test"]
async fn helm_lint_passes_strict() {
    let chart = chart_dir();
    let chart = chart.to_str().expect("a UTF-8 path");
    for extra in [
        vec![],
        vec!["--strict"],
        vec![
            "--strict",
            "--set",
            "replicaCount=1,auth=none,audit.url=sqlite:///var/lib/namegate/audit.db",
        ],
        vec![
            "--strict",
            "--set",
            "migration.enabled=true,metrics.serviceMonitor.enabled=true",
        ],
    ] {
        let mut args = vec!["lint", chart];
        args.extend(extra);
        let (ok, stdout, stderr) = run_helm(&args);
        assert!(ok, "helm {args:?} failed:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains("0 chart(s) failed")
                && !stdout.contains("[WARNING]")
                && !stdout.contains("[ERROR]"),
            "helm {args:?}:\n{stdout}"
        );
    }
}

#[tokio::test]
#[ignore = "needs helm and the real kube-apiserver: run scripts/test"]
async fn every_value_set_renders_and_passes_server_side_dry_run() {
    let client = client().await;
    let _ = helm();
    install_chart_crd(&client).await;
    for (what, sets, expect) in value_sets() {
        let ns = restricted_namespace(&client).await;
        let objects = render(&ns, &sets);
        assert_least_privilege_with(&objects, expect.auth, expect.extra_reads);
        assert_gateway(&objects, &expect);
        dry_run_all(&client, &ns, &objects).await;
        dry_run_pods(&client, &ns, &objects).await;
        eprintln!(
            "{what}: {} objects and their pods accepted by the API server",
            objects.len()
        );
    }
}

#[tokio::test]
#[ignore = "needs helm and the real kube-apiserver: run scripts/test"]
async fn defaults_are_production_shaped() {
    let objects = render("prod", &[]);
    // Kinds of the default release: no hooks, no ServiceMonitor, no PVC.
    let kinds: BTreeSet<&str> = objects.iter().map(kind).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ])
    );
    // The RR name lock is on by default, enforcing, for the release namespace only (docs/creators.md).
    let binding = one(&objects, "ValidatingAdmissionPolicyBinding");
    assert_eq!(
        binding["spec"]["policyName"],
        one(&objects, "ValidatingAdmissionPolicy")["metadata"]["name"]
    );
    assert_eq!(strs(&binding["spec"]["validationActions"]), ["Deny"]);
    assert_eq!(
        binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"],
        json!({"kubernetes.io/metadata.name": "prod"})
    );
    for o in &objects {
        assert!(
            o["metadata"]["annotations"]["helm.sh/hook"].is_null(),
            "{} {}: the migration hook is off by default",
            kind(o),
            name(o)
        );
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/instance"],
            RELEASE,
            "{} {} carries the release labels",
            kind(o),
            name(o)
        );
    }
    assert!(
        objects.iter().all(|o| kind(o) != "Secret"),
        "the chart never renders Secrets (the audit URL comes from an existing one)"
    );
    let pdb = one(&objects, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    // Secure by default: TokenReview + SubjectAccessReview on.
    let cm = one(&objects, "ConfigMap");
    let file =
        Settings::from_yaml(cm["data"]["config.yaml"].as_str().unwrap(), "c".into()).unwrap();
    assert_eq!(
        file.auth,
        Some(AuthMode::Kubernetes),
        "auth is on by default"
    );
    // The chart's auth defaults are the gateway's (one source of truth: config.rs).
    let defaults = Config::resolve(Settings {
        namespace: Some("prod".into()),
        ..Settings::default()
    })
    .unwrap();
    let resolved = Config::resolve(
        Settings {
            namespace: Some("prod".into()),
            ..Settings::default()
        }
        .over(file),
    )
    .unwrap();
    assert_eq!(
        (
            &resolved.auth_ingest_permission,
            &resolved.auth_lookup_permission,
            resolved.auth_cache_ttl,
            resolved.auth_negative_cache_ttl,
            resolved.auth_cache_max_entries,
            &resolved.auth_audience,
        ),
        (
            &defaults.auth_ingest_permission,
            &defaults.auth_lookup_permission,
            defaults.auth_cache_ttl,
            defaults.auth_negative_cache_ttl,
            defaults.auth_cache_max_entries,
            &defaults.auth_audience,
        ),
        "values.yaml's authorization defaults match config.rs"
    );
    // NetworkPolicy: ingestion open to the cluster, metrics from the monitoring namespace only, the
    // health port from no pod (kubelet probes come from the node).
    let np = one(&objects, "NetworkPolicy");
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"],
        one(&objects, "Deployment")["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(strs(&np["spec"]["policyTypes"]), ["Ingress"]);
    let rules = np["spec"]["ingress"].as_array().expect("ingress rules");
    let by_port: BTreeMap<&str, &Value> = rules
        .iter()
        .map(|r| {
            (
                r["ports"][0]["port"].as_str().expect("named port"),
                &r["from"],
            )
        })
        .collect();
    assert_eq!(
        by_port.keys().copied().collect::<Vec<_>>(),
        ["http", "metrics"]
    );
    for (port, from) in &by_port {
        assert!(
            from.as_array().is_some_and(|f| !f.is_empty()),
            "{port}: a rule without sources would admit everyone"
        );
    }
    assert_eq!(
        by_port["metrics"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    let c = &one(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert!(
        env_var(c, "NAMEGATE_AUDIT_URL")["value"].is_null(),
        "production reads the audit URL from a Secret, not from a value"
    );
}

#[tokio::test]
#[ignore = "needs helm and the real kube-apiserver: run scripts/test"]
async fn migration_job_is_a_pre_upgrade_hook_with_its_own_least_privilege() {
    let objects = render(
        "mig",
        &["migration.enabled=true", "audit.existingSecret=pg-audit"],
    );
    let job = one(&objects, "Job");
    assert_eq!(
        job["metadata"]["annotations"]["helm.sh/hook"],
        "pre-upgrade"
    );
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let c = &pod["containers"][0];
    assert_eq!(strs(&c["command"]), ["namegate-migrate"]);
    assert!(
        strs(&c["args"])
            .iter()
            .any(|a| a.starts_with("--audit-url=")),
        "namegate-migrate --audit-url …: {}",
        c["args"]
    );
    // Live legacy RRs of the release namespace get their attempt label (the Role's get/list/patch).
    assert!(
        strs(&c["args"]).contains(&"--live-rrs"),
        "namegate-migrate --live-rrs: {}",
        c["args"]
    );
    assert_eq!(
        env_var(c, "NAMEGATE_AUDIT_URL")["valueFrom"]["secretKeyRef"]["name"],
        "pg-audit"
    );
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    // The job's ServiceAccount, Role and RoleBinding exist before it runs (hooks of lower weight).
    let sa = pod["serviceAccountName"].as_str().expect("the job's SA");
    for k in ["ServiceAccount", "Role", "RoleBinding"] {
        let o = objects
            .iter()
            .find(|o| kind(o) == k && name(o) == sa)
            .unwrap_or_else(|| panic!("the migration {k}"));
        let ann = &o["metadata"]["annotations"];
        assert_eq!(ann["helm.sh/hook"], "pre-upgrade", "{k}");
        let weight: i64 = ann["helm.sh/hook-weight"]
            .as_str()
            .and_then(|w| w.parse().ok())
            .expect("hook weight");
        assert!(weight < 0, "{k} is created before the Job");
    }
    let role = objects
        .iter()
        .find(|o| kind(o) == "Role" && name(o) == sa)
        .expect("the migration Role");
    assert_eq!(
        grants(role),
        triples(&[
            ("kubernaut.ai", "remediationrequests", "get"),
            ("kubernaut.ai", "remediationrequests", "list"),
            ("kubernaut.ai", "remediationrequests", "patch"),
        ])
    );
    assert_least_privilege(&objects, AuthMode::Kubernetes);
}

#[tokio::test]
#[ignore = "needs helm and the real kube-apiserver: run scripts/test"]
async fn optional_service_monitor_renders() {
    let objects = render("mon", &["metrics.serviceMonitor.enabled=true"]);
    let sm = one(&objects, "ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    let metrics_svc = objects
        .iter()
        .find(|o| kind(o) == "Service" && name(o) == format!("{RELEASE}-namegate-metrics"))
        .expect("the metrics Service");
    let labels = metrics_svc["metadata"]["labels"]
        .as_object()
        .expect("labels");
    for (k, v) in sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("the ServiceMonitor selects by labels")
    {
        assert_eq!(
            labels.get(k),
            Some(v),
            "the ServiceMonitor selects the metrics Service ({k})"
        );
    }
    assert_eq!(metrics_svc["spec"]["ports"][0]["name"], "metrics");
    // It selects only the metrics Service, not the ingestion one.
    let ingestion = objects
        .iter()
        .find(|o| kind(o) == "Service" && name(o) == format!("{RELEASE}-namegate"))
        .expect("the ingestion Service");
    assert!(
        ingestion["metadata"]["labels"]["namegate.io/metrics"].is_null(),
        "the ingestion Service is not scraped"
    );
}

#[tokio::test]
#[ignore = "needs helm and the real kube-apiserver: run scripts/test"]
async fn invalid_values_are_refused_with_the_setting_named() {
    render_fails(&["auth=basic"], "auth must be");
    render_fails(&["audit.url=mysql://db/x"], "audit.url must start with");
    render_fails(&["audit.existingSecret="], "audit.existingSecret");
    render_fails(
        &["terminationGracePeriodSeconds=20"],
        "terminationGracePeriodSeconds (20) must exceed",
    );
    render_fails(
        &["storage.persistence.enabled=true"],
        "mounts on one pod only",
    );
    render_fails(
        &["gateway.extraConfig.listen=:1"],
        "gateway.extraConfig.listen",
    );
    render_fails(
        &[
            "migration.enabled=true",
            "audit.url=sqlite:///var/lib/namegate/audit.db",
        ],
        "migration.enabled",
    );
    render_fails(&["podAntiAffinity=always"], "podAntiAffinity must be");
    render_fails(
        &["lockPolicy.validationActions={Allow}"],
        "lockPolicy.validationActions: \"Allow\" is not Deny, Warn or Audit",
    );
    render_fails(
        &["lockPolicy.validationActions=null"],
        "lockPolicy.validationActions must list",
    );
}

#[tokio::test]
#[ignore = "needs helm and the real kube-apiserver: run scripts/test"]
async fn the_lock_policy_can_be_turned_off_or_made_to_warn() {
    let off = render("prod", &["lockPolicy.enabled=false"]);
    assert!(
        off.iter()
            .all(|o| !kind(o).starts_with("ValidatingAdmissionPolicy")),
        "lockPolicy.enabled=false renders neither the policy nor its binding"
    );
    let warn = render("prod", &["lockPolicy.validationActions={Warn,Audit}"]);
    assert_eq!(
        strs(&one(&warn, "ValidatingAdmissionPolicyBinding")["spec"]["validationActions"]),
        ["Warn", "Audit"]
    );
}

#[tokio::test]
#[ignore = "needs helm and the real kube-apiserver: run scripts/test"]
async fn helm_install_and_upgrade_on_the_real_api_server() {
    let client = client().await;
    install_chart_crd(&client).await;
    let ns = fresh_namespace(&client, "e2e-helm").await;
    let chart = chart_dir();
    let chart = chart.to_str().expect("a UTF-8 path");
    let (ok, stdout, stderr) = run_helm(&[
        "install",
        RELEASE,
        chart,
        "--namespace",
        &ns,
        "--set",
        "auth=none",
        "--set",
        "audit.url=sqlite:///var/lib/namegate/audit.db",
        "--set",
        "replicaCount=1",
    ]);
    assert!(ok, "helm install failed:\n{stderr}\n{stdout}");
    assert!(
        stdout.contains("auth is \"none\""),
        "NOTES warn about auth none:\n{stdout}"
    );

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let d = deployments
        .get(&format!("{RELEASE}-namegate"))
        .await
        .expect("helm created the Deployment");
    assert_eq!(d.spec.and_then(|s| s.replicas), Some(1));
    let roles: Api<Role> = Api::namespaced(client.clone(), &ns);
    roles
        .get(&format!("{RELEASE}-namegate"))
        .await
        .expect("helm created the Role");

    let (ok, stdout, stderr) = run_helm(&[
        "upgrade",
        RELEASE,
        chart,
        "--namespace",
        &ns,
        "--reuse-values",
        "--set",
        "replicaCount=3",
        "--set",
        "audit.url=",
    ]);
    assert!(ok, "helm upgrade failed:\n{stderr}\n{stdout}");
    let d = deployments
        .get(&format!("{RELEASE}-namegate"))
        .await
        .expect("the Deployment after the upgrade");
    assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(3));
    let env = d
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].env.clone().unwrap_or_default())
        .unwrap_or_default();
    let audit = env
        .iter()
        .find(|e| e.name == "NAMEGATE_AUDIT_URL")
        .expect("NAMEGATE_AUDIT_URL after the upgrade");
    assert!(
        audit.value.is_none() && audit.value_from.is_some(),
        "after switching to the Secret, the URL comes from secretKeyRef: {audit:?}"
    );
}
