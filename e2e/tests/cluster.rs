//! The chart for real, on the one-node cluster of `scripts/cluster-up` (docs/kube-harness.md, "The
//! one-node cluster"): `helm install` runs the gateway as three pods from the locally built image behind
//! its Service, and signals travel through the Service's ClusterIP (kube-proxy's iptables rules) — from
//! a real Alertmanager, and from a storm of direct requests while `helm upgrade` rolls the pods or a pod
//! is deleted. Nothing acknowledged may be lost (Σ occurrenceCount = 201/202 answers) and every workload
//! gets exactly one RR.
//!
//! The chart is installed with its default values (docs/kube-harness.md, "Default values"): caller
//! authentication by TokenReview + SubjectAccessReview, the PostgreSQL audit store read from the
//! Secret `namegate-audit`, the NetworkPolicy. The test does what an operator of a fresh cluster
//! does first — creates that Secret and binds its senders to the chart's sender ClusterRole — and sets
//! no value.
//!
//! Run by `scripts/cluster-test` (built only with the `cluster` feature): it starts the cluster and the PostgreSQL the pods reach
//! (`NAMEGATE_CLUSTER_AUDIT_URL`), builds and imports the image and helm, and exports `KUBECONFIG` (the
//! cluster's) and `HELM`. Without them every test fails, naming what is missing: none passes or
//! skips on a machine without the cluster.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crd_schema::{Attempt, Fingerprint, RemediationRequest, name};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use namegate_e2e::{client, fresh_namespace};
use serde_json::{Value, json};

const RELEASE: &str = "namegate";
const REPLICAS: usize = 3;
/// The Service's port (the chart's `service.port`).
const SERVICE_PORT: u16 = 8080;
/// The chart's default `audit.existingSecret` / `audit.existingSecretKey`: the Secret an operator
/// creates before installing, holding the PostgreSQL URL.
const AUDIT_SECRET: &str = "namegate-audit";
const AUDIT_SECRET_KEY: &str = "url";
/// The ServiceAccount that sends signals (Alertmanager's, in a real cluster).
const SENDER: &str = "alertmanager";
/// What the workloads of the test run: the locally built pause image (never pulled).
const WORKLOAD_IMAGE: &str = "namegate.local/pause:3.10";

// ------------------------------------------------------------------------------------------ tools

fn helm() -> PathBuf {
    let path = std::env::var_os("HELM").map(PathBuf::from).expect(
        "HELM is not set: run scripts/cluster-test (it builds helm with scripts/lib/helm.sh)",
    );
    assert!(path.is_file(), "HELM={} is not a file", path.display());
    path
}

fn run_helm(args: &[&str]) -> String {
    let out = Command::new(helm())
        .args(args)
        .output()
        .expect("running helm");
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn chart_dir() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/namegate")
        .display()
        .to_string()
}

fn tool(name: &str) -> PathBuf {
    ["/usr/bin", "/usr/local/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found: install the Debian package prometheus-alertmanager")
        })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` every 250 ms until it returns `Some`, or panics with `what` after `secs`.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {secs} s; last state: {last}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What kube-proxy's iptables rules (nat and filter tables) do with new connections to a ClusterIP on
/// the release's Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KubeProxyState {
    /// No rule at all: a SYN leaves un-NATed and finds nobody (`No route to host`).
    Unknown,
    /// The Service is known without ready endpoints: REJECTed (`Connection refused`).
    Rejects,
    /// DNATed to the Service's endpoints.
    Routes,
}

async fn kube_proxy_state(cluster_ip: &str) -> Result<KubeProxyState, String> {
    let rules = |table: &'static str| async move {
        let out = tokio::process::Command::new("iptables")
            .args(["-w", "-t", table, "-S", "KUBE-SERVICES"])
            .output()
            .await
            .map_err(|e| format!("running iptables: {e}"))?;
        Ok::<_, String>(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let ours = |l: &&str| {
        l.contains(&format!("-d {cluster_ip}/32 -p tcp"))
            && l.contains(&format!("--dport {SERVICE_PORT} "))
    };
    if rules("nat")
        .await?
        .lines()
        .filter(ours)
        .any(|l| l.contains("-j KUBE-SVC-"))
    {
        Ok(KubeProxyState::Routes)
    } else if rules("filter")
        .await?
        .lines()
        .filter(ours)
        .any(|l| l.contains("-j REJECT"))
    {
        Ok(KubeProxyState::Rejects)
    } else {
        Ok(KubeProxyState::Unknown)
    }
}

// ---------------------------------------------------------------------------------------- release

/// A client for the cluster of `scripts/cluster-up`. `KUBECONFIG` could also name the bare API server of
/// `scripts/kube-up` (scripts/test exports it for the other tests), where no pod ever runs and
/// `helm install --wait` would only time out: fail at once, saying so, unless a node is Ready.
async fn cluster_client() -> Client {
    let client = client().await;
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("listing the nodes of the cluster KUBECONFIG names");
    let ready = nodes.items.iter().any(|n| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    });
    assert!(
        ready,
        "KUBECONFIG={} names an API server without a Ready node: the cluster tests need the \
         one-node cluster of scripts/cluster-up (run scripts/cluster-test)",
        std::env::var("KUBECONFIG").unwrap_or_default()
    );
    client
}

/// One `helm install` of the chart in a fresh namespace, with a workload namespace beside it.
struct Release {
    client: Client,
    ns: String,
    workloads_ns: String,
    token: String,
    cluster_ip: String,
    dir: tempfile::TempDir,
}

impl Release {
    async fn install(workloads: &[&str]) -> Release {
        let client = cluster_client().await;
        let ns = fresh_namespace(&client, "ngc").await;
        let workloads_ns = managed_namespace(&client).await;
        for w in workloads {
            create_workload(&client, &workloads_ns, w).await;
        }

        // What the chart's defaults expect to exist: the audit store's Secret.
        let url = std::env::var("NAMEGATE_CLUSTER_AUDIT_URL").expect(
            "NAMEGATE_CLUSTER_AUDIT_URL is not set: run scripts/cluster-test (it starts the PostgreSQL)",
        );
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(AUDIT_SECRET.into()),
                ..Default::default()
            },
            string_data: Some(BTreeMap::from([(AUDIT_SECRET_KEY.into(), url)])),
            ..Default::default()
        };
        Api::<Secret>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();

        // The chart with its default values: no `--set`, no values file.
        run_helm(&[
            "install",
            RELEASE,
            &chart_dir(),
            "--namespace",
            &ns,
            "--wait",
            "--timeout",
            "5m",
        ]);

        // The sender: a ServiceAccount bound to the chart's sender ClusterRole by a RoleBinding in the
        // release namespace, as the chart's notes tell an operator (`kubectl create rolebinding`).
        create_service_account(&client, &ns, SENDER).await;
        bind(&client, &ns, SENDER, &chart_role(&ns, "sender")).await;
        let token = bound_token(&client, &ns, SENDER).await;
        let svc: Service = Api::namespaced(client.clone(), &ns)
            .get(RELEASE)
            .await
            .unwrap();
        let cluster_ip = svc.spec.unwrap().cluster_ip.unwrap();
        let r = Release {
            client,
            ns,
            workloads_ns,
            token,
            cluster_ip,
            dir: tempfile::tempdir().unwrap(),
        };
        r.wait_serving(REPLICAS).await;
        r
    }

    /// `helm uninstall --wait` once a test has passed: the node has 2 CPUs and each release's three
    /// pods request 300m, so releases left running would soon leave the next test's pods Pending. A
    /// failed test keeps its release for inspection (`CLUSTER_TEST_KEEP=1`).
    fn uninstall(self) {
        run_helm(&["uninstall", RELEASE, "--namespace", &self.ns, "--wait"]);
    }

    fn signals_url(&self) -> String {
        format!(
            "http://{}:{SERVICE_PORT}/api/v1/signals/prometheus",
            self.cluster_ip
        )
    }

    fn rrs(&self) -> Api<RemediationRequest> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn selector() -> ListParams {
        ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}"))
    }

    /// The name of the RR of a workload of the workload namespace.
    fn rr_name(&self, workload: &str) -> String {
        let fp = Fingerprint::of_input(&format!("{}:Deployment:{workload}", self.workloads_ns));
        name::name(&fp, Attempt::FIRST)
    }

    async fn rr_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .rrs()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|rr| rr.metadata.name.unwrap())
            .collect();
        names.sort();
        names
    }

    /// Until `n` pods are Running and Ready and the Service's EndpointSlices list exactly those pods
    /// as ready: kube-proxy then routes the ClusterIP to each of them.
    async fn wait_serving(&self, n: usize) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.ns);
        eventually(
            180,
            "the pods Ready and the Service's endpoints populated",
            || async {
                let ready: Vec<String> = pods
                    .list(&Self::selector())
                    .await
                    .map_err(|e| e.to_string())?
                    .items
                    .into_iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none() && pod_ready(p))
                    .filter_map(|p| p.status.and_then(|s| s.pod_ip))
                    .collect();
                let mut endpoints: Vec<String> = slices
                    .list(
                        &ListParams::default()
                            .labels(&format!("kubernetes.io/service-name={RELEASE}")),
                    )
                    .await
                    .map_err(|e| e.to_string())?
                    .items
                    .into_iter()
                    .flat_map(|s| s.endpoints)
                    .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                    .flat_map(|e| e.addresses)
                    .collect();
                endpoints.sort();
                let mut want = ready.clone();
                want.sort();
                if ready.len() == n && endpoints == want {
                    Ok(())
                } else {
                    Err(format!(
                        "ready pod IPs {want:?}, ready endpoints {endpoints:?}"
                    ))
                }
            },
        )
        .await;
        // The EndpointSlice is the API's view; kube-proxy programs the node's rules from it a moment
        // later (0.1–1.1 s measured). No connection may be tried before that: a SYN sent while kube-proxy
        // does not know the Service yet leaves the ClusterIP un-NATed, finds no neighbour on the bridge,
        // and leaves an unreplied conntrack entry that lives 120 s; any later connection that happens to
        // get the same source port matches that entry instead of kube-proxy's rules and fails with
        // `No route to host`, however long the rules have existed (reproduced in docs/kube-harness.md,
        // "Flaky until 30 Nov"). So first kube-proxy's rule for this ClusterIP and port, then one TCP
        // connection through it (kube-proxy REJECTs a Service it knows no endpoint of: `Connection
        // refused`).
        let since_api = tokio::time::Instant::now();
        let lagged = std::sync::Mutex::new(Vec::new());
        eventually(
            60,
            "kube-proxy's iptables rule for the Service's ClusterIP",
            || async {
                let state = kube_proxy_state(&self.cluster_ip).await?;
                if state == KubeProxyState::Routes {
                    Ok(())
                } else {
                    let mut lagged = lagged.lock().unwrap();
                    if lagged.last() != Some(&state) {
                        lagged.push(state);
                    }
                    Err(format!(
                        "kube-proxy's rules for {}: {state:?}",
                        self.cluster_ip
                    ))
                }
            },
        )
        .await;
        // How far kube-proxy was behind the API, for the record (docs/kube-harness.md, "Flaky until
        // 30 Nov"): `Unknown` is the state in which a connection would have poisoned its source port.
        let lagged = lagged.into_inner().unwrap();
        if !lagged.is_empty() {
            eprintln!(
                "wait_serving: kube-proxy routed {} {:?} after the API listed the endpoints; before: {lagged:?}",
                self.cluster_ip,
                since_api.elapsed()
            );
        }
        eventually(
            60,
            "a TCP connection through the Service's ClusterIP",
            || async {
                tokio::net::TcpStream::connect((self.cluster_ip.as_str(), SERVICE_PORT))
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            },
        )
        .await
    }

    /// Σ occurrenceCount over the RRs named `names`.
    async fn occurrences(&self, names: &[String]) -> i64 {
        let mut sum = 0;
        for n in names {
            let rr = self.rrs().get(n).await.unwrap();
            sum += rr
                .status
                .and_then(|s| s.deduplication)
                .map(|d| i64::from(d.occurrence_count))
                .unwrap_or(0);
        }
        sum
    }

    /// Waits until the RRs are exactly `expected` and their occurrence counts add up to `answered`.
    async fn wait_counts(&self, expected: &[String], answered: u64) {
        eventually(90, "Σ occurrenceCount = acknowledged answers", || async {
            let names = self.rr_names().await;
            if names != expected {
                return Err(format!("RRs {names:?}, expected {expected:?}"));
            }
            let sum = self.occurrences(expected).await;
            assert!(
                sum <= answered as i64,
                "Σ occurrenceCount {sum} exceeds the {answered} acknowledged answers"
            );
            if sum == answered as i64 {
                Ok(())
            } else {
                Err(format!("Σ occurrenceCount {sum}, answered {answered}"))
            }
        })
        .await;
    }

    async fn pod_names(&self) -> Vec<String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        pods.list(&Self::selector())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| p.metadata.name.unwrap())
            .collect()
    }
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The name of one of the chart's per-release ClusterRoles (`sender`, `audit-reader`): as
/// `charts/namegate/templates/rbac.yaml` names them.
fn chart_role(ns: &str, what: &str) -> String {
    let mut name = format!("{ns}-{RELEASE}-{what}");
    name.truncate(63);
    name.trim_end_matches('-').to_owned()
}

async fn create_service_account(client: &Client, ns: &str, name: &str) {
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
}

/// A RoleBinding in `ns` of the ServiceAccount `sa` (of `ns`) to the ClusterRole `role`.
async fn bind(client: &Client, ns: &str, sa: &str, role: &str) {
    let rb = RoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("{sa}-{role}")),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: sa.into(),
            namespace: Some(ns.into()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &rb)
        .await
        .unwrap();
}

/// A bound token of the ServiceAccount (TokenRequest, one hour, the API server's default audience).
async fn bound_token(client: &Client, ns: &str, sa: &str) -> String {
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(
            sa,
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    audiences: vec![],
                    expiration_seconds: Some(3600),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .status
        .unwrap()
        .token
}

/// A namespace carrying `kubernaut.ai/managed=true`, as kubernaut marks the namespaces it remediates.
async fn managed_namespace(client: &Client) -> String {
    let name = format!("wl-{:08x}", rand::random::<u32>());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([(
                "kubernaut.ai/managed".into(),
                "true".into(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    name
}

/// A real Deployment named `name` (the workload the alerts name).
async fn create_workload(client: &Client, ns: &str, name: &str) {
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "automountServiceAccountToken": false,
                    "containers": [{"name": "app", "image": WORKLOAD_IMAGE,
                                    "imagePullPolicy": "Never"}]
                }
            }
        }
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
}

// ----------------------------------------------------------------------------------- alertmanager

/// A host `prometheus-alertmanager` whose webhook is the Service's ClusterIP, with the sender's
/// token; killed on drop.
struct Alertmanager {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Alertmanager {
    async fn start(r: &Release) -> Alertmanager {
        let dir = r.dir.path();
        let token = dir.join("token");
        std::fs::write(&token, &r.token).unwrap();
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: namegate\n  group_by: [alertname, namespace, deployment]\n  \
                 group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 4h\n\
                 receivers:\n- name: namegate\n  webhook_configs:\n  - url: {}\n    \
                 send_resolved: true\n    http_config:\n      authorization:\n        \
                 type: Bearer\n        credentials_file: {}\n",
                r.signals_url(),
                token.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let log = dir.join("alertmanager.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(tool("prometheus-alertmanager"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("am").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file.try_clone().unwrap()))
            .stderr(Stdio::from(log_file))
            .spawn()
            .unwrap();
        let mut am = Alertmanager {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let url = am.url.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("{url}/-/ready")).await
                && r.status() == 200
            {
                break am;
            }
            if let Ok(Some(status)) = am.child.try_wait() {
                panic!("alertmanager exited with {status}:\n{}", am.log_text());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "alertmanager not ready within 30 s:\n{}",
                am.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn fire(&self, ns: &str, deployment: &str) {
        let out = Command::new(tool("amtool"))
            .args(["alert", "add", "--alertmanager.url", &self.url])
            .arg("alertname=KubePodCrashLooping")
            .arg(format!("namespace={ns}"))
            .arg(format!("deployment={deployment}"))
            .arg("severity=critical")
            .arg("--annotation=summary=crash looping")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "amtool alert add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn metric(&self, family: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(family) && l.contains("integration=\"webhook\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----------------------------------------------------------------------------------------- storm

/// What a storm of single-alert webhooks through the ClusterIP got back.
#[derive(Debug, Default)]
struct StormResult {
    /// 201 and 202: acknowledged, each one an occurrence.
    acknowledged: u64,
    /// 503 with Retry-After: not acknowledged, to be retried (allowed).
    unavailable: u64,
    /// Anything else, with the reason: must stay empty.
    other: Vec<String>,
}

fn webhook(ns: &str, deployment: &str) -> Value {
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"KubePodCrashLooping\"}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "namegate",
        "groupLabels": {"alertname": "KubePodCrashLooping"},
        "commonLabels": {"severity": "critical"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.test:9093",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "KubePodCrashLooping", "namespace": ns,
                       "deployment": deployment, "severity": "critical"},
            "annotations": {"summary": "crash looping"},
            "startsAt": jiff::Timestamp::now().to_string(),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.test/graph",
            "fingerprint": "3b1f0c7e9a4d2f61",
        }],
    })
}

/// `workers` senders POST one alert for `deployment` each, back to back, until `stop` is set. A fresh
/// connection per request (no pooled keep-alive connection can race a pod's close), so every request
/// goes through kube-proxy's load balancing.
async fn storm(
    url: &str,
    token: &str,
    ns: &str,
    deployment: &str,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> StormResult {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let acknowledged = Arc::new(AtomicU64::new(0));
    let unavailable = Arc::new(AtomicU64::new(0));
    let other = Arc::new(std::sync::Mutex::new(Vec::new()));
    let body = webhook(ns, deployment);
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (http, body, url, token) =
            (http.clone(), body.clone(), url.to_owned(), token.to_owned());
        let (stop, acknowledged, unavailable, other) = (
            stop.clone(),
            acknowledged.clone(),
            unavailable.clone(),
            other.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let resp = http.post(&url).bearer_auth(&token).json(&body).send().await;
                match resp {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let retry_after = resp.headers().contains_key("retry-after");
                        let text = resp.text().await.unwrap_or_default();
                        match status {
                            201 | 202 => {
                                acknowledged.fetch_add(1, Ordering::Relaxed);
                            }
                            503 if retry_after => {
                                unavailable.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                            _ => other.lock().unwrap().push(format!("{status}: {text}")),
                        }
                    }
                    Err(e) => other.lock().unwrap().push(format!("transport: {e:?}")),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let other = std::mem::take(&mut *other.lock().unwrap());
    StormResult {
        acknowledged: acknowledged.load(Ordering::Relaxed),
        unavailable: unavailable.load(Ordering::Relaxed),
        other,
    }
}

// ------------------------------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the one-node cluster: run scripts/cluster-test"]
async fn helm_install_runs_three_ready_pods_behind_the_service_and_alertmanager_makes_one_rr_per_workload()
 {
    let r = Release::install(&["checkout", "billing"]).await;

    // The Deployment as declared: 3 ready replicas from the local image, probes passing.
    let deploy: Deployment = Api::namespaced(r.client.clone(), &r.ns)
        .get(RELEASE)
        .await
        .unwrap();
    let status = deploy.status.unwrap();
    assert_eq!(status.ready_replicas, Some(REPLICAS as i32), "{status:?}");
    let pods: Api<Pod> = Api::namespaced(r.client.clone(), &r.ns);
    let pods = pods.list(&Release::selector()).await.unwrap().items;
    assert_eq!(pods.len(), REPLICAS);
    for p in &pods {
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(
            spec.containers[0].image.as_deref(),
            Some("namegate/namegate:0.1.0"),
            "the chart's default image reference"
        );
        assert!(
            spec.topology_spread_constraints
                .as_ref()
                .is_some_and(|c| c.len() == 2),
            "spread constraints as declared"
        );
        assert_eq!(spec.node_name.as_deref(), Some("namegate-node"));
        let cs = &p
            .status
            .as_ref()
            .unwrap()
            .container_statuses
            .as_ref()
            .unwrap()[0];
        assert!(cs.ready && cs.started == Some(true), "{cs:?}");
    }
    // The PodDisruptionBudget as declared, computed by the real disruption controller.
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(r.client.clone(), &r.ns);
    eventually(60, "the PDB's status", || async {
        let pdb = pdbs.get(RELEASE).await.map_err(|e| e.to_string())?;
        let s = pdb.status.unwrap_or_default();
        if s.current_healthy == REPLICAS as i32
            && s.expected_pods == REPLICAS as i32
            && s.disruptions_allowed == 1
        {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;

    // A real Alertmanager sends through the Service's ClusterIP with the sender's token.
    let am = Alertmanager::start(&r).await;
    am.fire(&r.workloads_ns, "checkout");
    am.fire(&r.workloads_ns, "billing");
    let mut expected = vec![r.rr_name("checkout"), r.rr_name("billing")];
    expected.sort();
    eventually(90, "one RR per workload", || async {
        let names = r.rr_names().await;
        if names == expected {
            Ok(())
        } else {
            Err(format!(
                "RRs {names:?}; alertmanager log:\n{}",
                am.log_text()
            ))
        }
    })
    .await;
    // Every notification was delivered (none failed), and still exactly those two RRs.
    eventually(30, "the notifications counted", || async {
        let sent = am.metric("alertmanager_notifications_total").await;
        if sent >= 2.0 {
            Ok(())
        } else {
            Err(format!("{sent} sent"))
        }
    })
    .await;
    assert_eq!(
        am.metric("alertmanager_notifications_failed_total").await,
        0.0
    );
    assert_eq!(r.rr_names().await, expected);
    r.uninstall();
}

/// One request through the Service: status and the JSON body (a problem for 4xx).
async fn call(
    http: &reqwest::Client,
    req: reqwest::RequestBuilder,
    token: Option<&str>,
) -> (u16, String, Value) {
    let req = match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    let resp = http.execute(req.build().unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, content_type, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the one-node cluster: run scripts/cluster-test"]
async fn with_default_values_only_the_chart_roles_let_callers_through_the_service() {
    let r = Release::install(&["ledger", "intruded"]).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let post = |workload: &str| {
        http.post(r.signals_url())
            .json(&webhook(&r.workloads_ns, workload))
    };

    // No token, a token the API server never issued: 401 problems, nothing created.
    let garbage = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJub2JvZHkifQ.c2lnbmF0dXJl";
    for token in [None, Some(garbage)] {
        let (status, ct, body) = call(&http, post("intruded"), token).await;
        assert_eq!(status, 401, "token {token:?}: {body}");
        assert_eq!(ct, "application/problem+json", "{body}");
        assert_eq!(body["status"], 401, "{body}");
    }
    // A real ServiceAccount of the cluster without the sender role: 403.
    create_service_account(&r.client, &r.ns, "intruder").await;
    let intruder = bound_token(&r.client, &r.ns, "intruder").await;
    let (status, ct, body) = call(&http, post("intruded"), Some(&intruder)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(ct, "application/problem+json", "{body}");
    assert_eq!(body["status"], 403, "{body}");

    // The sender bound to the chart's sender role: admitted.
    let (status, _, body) = call(&http, post("ledger"), Some(&r.token)).await;
    assert_eq!(status, 201, "{body}");
    let rr = r.rr_name("ledger");
    assert_eq!(
        r.rr_names().await,
        vec![rr.clone()],
        "nothing but the sender's RR"
    );

    // Audit lookups need the audit-reader role: the sender may only ingest.
    let lookup = || {
        http.get(format!(
            "http://{}:{SERVICE_PORT}/api/v1/audit/correlations/{rr}",
            r.cluster_ip
        ))
    };
    let (status, _, body) = call(&http, lookup(), Some(&r.token)).await;
    assert_eq!(status, 403, "a sender reading the trail: {body}");
    create_service_account(&r.client, &r.ns, "auditor").await;
    bind(
        &r.client,
        &r.ns,
        "auditor",
        &chart_role(&r.ns, "audit-reader"),
    )
    .await;
    let auditor = bound_token(&r.client, &r.ns, "auditor").await;
    // The audit-reader role may not send.
    let (status, _, body) = call(&http, post("intruded"), Some(&auditor)).await;
    assert_eq!(status, 403, "an audit reader sending: {body}");
    // Whichever replica answers, the trail is the shared PostgreSQL's: the two events of the
    // admission, the signal's naming the sender.
    let sender_id = format!("system:serviceaccount:{}:{SENDER}", r.ns);
    eventually(
        60,
        "the RR's trail readable by the audit reader",
        || async {
            let (status, _, body) = call(&http, lookup(), Some(&auditor)).await;
            if status != 200 {
                return Err(format!("{status}: {body}"));
            }
            let events: Vec<&Value> = body["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["events"].as_array().into_iter().flatten())
                .collect();
            let types: Vec<&str> = events
                .iter()
                .filter_map(|e| e["event_type"].as_str())
                .collect();
            let by_sender = events
                .first()
                .is_some_and(|e| e["actor_id"] == sender_id.as_str());
            if types == ["gateway.signal.received", "gateway.crd.created"] && by_sender {
                Ok(())
            } else {
                Err(format!("{body}"))
            }
        },
    )
    .await;
    assert_eq!(
        r.rr_names().await,
        vec![rr],
        "the refused calls created nothing"
    );

    // The NetworkPolicy as the defaults render it. This node's CNI (the bridge plugin) does not
    // enforce NetworkPolicy, so only its presence and shape are checked (docs/kube-harness.md).
    let np: NetworkPolicy = Api::namespaced(r.client.clone(), &r.ns)
        .get(RELEASE)
        .await
        .unwrap();
    let spec = serde_json::to_value(np.spec.unwrap()).unwrap();
    assert_eq!(
        spec["ingress"],
        json!([
            {"ports": [{"port": "http", "protocol": "TCP"}], "from": [{"namespaceSelector": {}}]},
            {"ports": [{"port": "metrics", "protocol": "TCP"}],
             "from": [{"namespaceSelector":
                 {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
        ]),
        "{spec}"
    );
    assert_eq!(spec["policyTypes"], json!(["Ingress"]));
    r.uninstall();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the one-node cluster: run scripts/cluster-test"]
async fn helm_upgrade_rolling_the_pods_during_a_storm_loses_nothing_acknowledged() {
    let r = Release::install(&["orders"]).await;
    let before = r.pod_names().await;

    let stop = Arc::new(AtomicBool::new(false));
    let storm_task = {
        let stop = stop.clone();
        let r_ns = r.workloads_ns.clone();
        let (url, token) = (r.signals_url(), r.token.clone());
        let shadow = StormTarget {
            url,
            token,
            ns: r_ns,
        };
        tokio::spawn(async move { shadow.run("orders", 8, stop).await })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A new pod template: every pod is replaced, one at a time (maxSurge 1, maxUnavailable 0).
    run_helm(&[
        "upgrade",
        RELEASE,
        &chart_dir(),
        "--namespace",
        &r.ns,
        "--reuse-values",
        "--set",
        "podAnnotations.rolled=yes",
        "--wait",
        "--timeout",
        "5m",
    ]);
    r.wait_serving(REPLICAS).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let result = storm_task.await.unwrap();

    let after = r.pod_names().await;
    assert!(
        before.iter().all(|p| !after.contains(p)),
        "every pod was replaced: before {before:?}, after {after:?}"
    );
    assert!(
        result.other.is_empty(),
        "unexpected answers: {:?}",
        result.other
    );
    assert!(result.acknowledged > 0, "{result:?}");
    eprintln!(
        "upgrade storm: {} acknowledged, {} answered 503 + Retry-After",
        result.acknowledged, result.unavailable
    );
    r.wait_counts(&[r.rr_name("orders")], result.acknowledged)
        .await;
    r.uninstall();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the one-node cluster: run scripts/cluster-test"]
async fn deleting_a_pod_mid_storm_keeps_the_service_answering_with_one_rr() {
    let r = Release::install(&["payments-api"]).await;
    let victim = r.pod_names().await.remove(0);

    let stop = Arc::new(AtomicBool::new(false));
    let storm_task = {
        let stop = stop.clone();
        let shadow = StormTarget {
            url: r.signals_url(),
            token: r.token.clone(),
            ns: r.workloads_ns.clone(),
        };
        tokio::spawn(async move { shadow.run("payments-api", 8, stop).await })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pods: Api<Pod> = Api::namespaced(r.client.clone(), &r.ns);
    pods.delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    // The pod is gone (its final flushes done) and the Deployment's replacement serves.
    eventually(120, "the deleted pod gone", || async {
        match pods.get_opt(&victim).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err(format!("{victim} still exists")),
        }
    })
    .await;
    r.wait_serving(REPLICAS).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let result = storm_task.await.unwrap();

    assert!(!r.pod_names().await.contains(&victim));
    assert!(
        result.other.is_empty(),
        "unexpected answers: {:?}",
        result.other
    );
    assert!(result.acknowledged > 0, "{result:?}");
    eprintln!(
        "pod-deletion storm: {} acknowledged, {} answered 503 + Retry-After",
        result.acknowledged, result.unavailable
    );
    r.wait_counts(&[r.rr_name("payments-api")], result.acknowledged)
        .await;
    r.uninstall();
}

/// The parts of a [`Release`] a storm task needs (the release itself stays with the test).
struct StormTarget {
    url: String,
    token: String,
    ns: String,
}

impl StormTarget {
    async fn run(self, deployment: &str, workers: usize, stop: Arc<AtomicBool>) -> StormResult {
        storm(&self.url, &self.token, &self.ns, deployment, workers, stop).await
    }
}
