//! A real Alertmanager (Debian `prometheus-alertmanager` 0.25) as the client, alerts fired with
//! `amtool`, its webhook receiver pointing at `namegate serve` replicas on the real kube-apiserver
//! (docs/api.md, docs/kube-harness.md): one RR per workload, end to end, also with two Alertmanager HA peers that
//! both deliver every notification.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crd_schema::{Attempt, RemediationRequest, name};
use serde_json::Value;
use support::{Cluster, fingerprint_of, free_port, metric_sum};

const NEEDS: &str = "these tests need the real Alertmanager: run scripts/test (it installs the Debian \
                     package prometheus-alertmanager, which provides prometheus-alertmanager and amtool)";

fn tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found: {NEEDS}"))
}

/// One `prometheus-alertmanager` process; killed on drop.
struct Alertmanager {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Alertmanager {
    /// Starts it with a webhook receiver per URL in `webhooks` and waits for `/-/ready`.
    /// `cluster` are the `--cluster.*` flags (`--cluster.listen-address=` disables clustering).
    async fn start(dir: &Path, id: &str, webhooks: &[String], cluster: &[String]) -> Alertmanager {
        let config = dir.join(format!("{id}.yml"));
        let configs: String = webhooks
            .iter()
            .map(|url| format!("  - url: {url}\n    send_resolved: true\n"))
            .collect();
        // One group per workload; short waits so the test is quick; no repeats during the test.
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: namegate\n  group_by: [alertname, namespace, deployment]\n  \
                 group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 4h\n\
                 receivers:\n- name: namegate\n  webhook_configs:\n{configs}"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = dir.join(format!("{id}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(tool("prometheus-alertmanager"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join(id).display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(cluster)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file.try_clone().unwrap()))
            .stderr(Stdio::from(log_file))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning prometheus-alertmanager: {e}; {NEEDS}"));
        let mut am = Alertmanager {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/-/ready", am.url)).await
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
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `amtool alert add` with these labels.
    fn fire(&self, labels: &[&str]) {
        let out = Command::new(tool("amtool"))
            .args(["alert", "add", "--alertmanager.url", &self.url])
            .args(labels)
            .arg("--annotation=summary=crash looping")
            .output()
            .unwrap_or_else(|e| panic!("running amtool: {e}; {NEEDS}"));
        assert!(
            out.status.success(),
            "amtool alert add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
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

/// A second webhook receiver that records what Alertmanager sends, to compare with the RRs.
struct Capture {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Capture {
    async fn start() -> Capture {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/capture", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let sink = bodies.clone();
        let app = axum::Router::new().route(
            "/capture",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push(body);
                    "ok"
                }
            }),
        );
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Capture { url, bodies, task }
    }

    /// The alert Alertmanager sent for `deployment`, as it sent it.
    fn alert_for(&self, deployment: &str) -> Option<Value> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| b["alerts"].as_array().cloned().unwrap_or_default())
            .find(|a| a["labels"]["deployment"] == deployment)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn labels(deployment: &str) -> [String; 4] {
    [
        "alertname=KubePodCrashLooping".into(),
        "namespace=payments".into(),
        format!("deployment={deployment}"),
        "severity=critical".into(),
    ]
}

fn fire(am: &Alertmanager, deployment: &str) {
    let l = labels(deployment);
    am.fire(&l.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Polls the API server until the namespace holds the RRs named `expected` (and no others).
async fn wait_for_rrs(c: &Cluster, expected: &[String], ams: &[&Alertmanager]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut names: Vec<String> = c
            .list()
            .await
            .into_iter()
            .map(|rr| rr.metadata.name.unwrap())
            .collect();
        names.sort();
        if names == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after 60 s the RRs are {names:?}, expected {expected:?}; alertmanager log:\n{}\n\
             replica 0 log:\n{}",
            ams.iter().map(|a| a.log_text()).collect::<String>(),
            c.replicas[0].log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn expected_names(deployments: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = deployments
        .iter()
        .map(|d| name::name(&fingerprint_of(d), Attempt::FIRST))
        .collect();
    v.sort();
    v
}

/// `created + duplicate` answers over all replicas (each one is an occurrence, docs/admission.md).
async fn admitted(c: &Cluster) -> (f64, f64) {
    let mut created = 0.0;
    let mut duplicate = 0.0;
    for r in &c.replicas {
        let m = r.metrics().await;
        created += metric_sum(
            &m,
            "namegate_admission_outcomes_total",
            "outcome=\"created\"",
        );
        duplicate += metric_sum(
            &m,
            "namegate_admission_outcomes_total",
            "outcome=\"duplicate\"",
        );
    }
    (created, duplicate)
}

fn occurrences(rr: &RemediationRequest) -> i32 {
    rr.status
        .as_ref()
        .and_then(|s| s.deduplication.as_ref())
        .map(|d| d.occurrence_count)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver and Alertmanager: run scripts/test"]
async fn alertmanager_webhook_creates_one_rr_per_workload() {
    let mut c = Cluster::start("e2e-am", 2).await;
    let capture = Capture::start().await;
    let am = Alertmanager::start(
        c.dir.path(),
        "am",
        &[
            c.replicas[0].url("/api/v1/signals/prometheus"),
            capture.url.clone(),
        ],
        &["--cluster.listen-address=".into()],
    )
    .await;

    fire(&am, "ledger-writer");
    fire(&am, "ledger-writer");
    fire(&am, "checkout-api");

    let workloads = ["checkout-api", "ledger-writer"];
    wait_for_rrs(&c, &expected_names(&workloads), &[&am]).await;

    for workload in workloads {
        let rr_name = name::name(&fingerprint_of(workload), Attempt::FIRST);
        let rr = c.rrs().get(&rr_name).await.unwrap();
        let spec = &rr.spec;
        assert_eq!(spec.signal_fingerprint, fingerprint_of(workload).to_hex());
        assert_eq!(spec.signal_source.as_deref(), Some("prometheus"));
        assert_eq!(spec.signal_name, "KubePodCrashLooping");
        assert_eq!(spec.severity, "critical");
        assert_eq!(spec.target_resource.kind, "Deployment");
        assert_eq!(spec.target_resource.name, workload);
        assert_eq!(spec.target_resource.namespace.as_deref(), Some("payments"));
        // originalPayload is the alert's own JSON exactly as Alertmanager sent it, not the batch.
        let payload: Value =
            serde_json::from_str(spec.original_payload.as_deref().unwrap()).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let sent = loop {
            if let Some(a) = capture.alert_for(workload) {
                break a;
            }
            assert!(tokio::time::Instant::now() < deadline, "nothing captured");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(payload, sent, "originalPayload of {rr_name}");
        assert_eq!(payload["labels"]["deployment"], workload);
        assert_eq!(payload["status"], "firing");
    }

    // Alertmanager saw only successes from the gateway (it retries anything else): two groups, two
    // webhook configs, four notifications.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let am_metrics = loop {
        let m = am.metrics().await;
        if metric_sum(
            &m,
            "alertmanager_notifications_total",
            "integration=\"webhook\"",
        ) >= 4.0
        {
            break m;
        }
        assert!(tokio::time::Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        metric_sum(
            &am_metrics,
            "alertmanager_notifications_failed_total",
            "integration=\"webhook\""
        ),
        0.0
    );

    // Quiescence: no sender left; then a graceful stop flushes every occurrence.
    drop(am);
    let (created, duplicate) = admitted(&c).await;
    assert_eq!(created, 2.0, "one create per workload");
    c.terminate_all();
    let rrs = c.list().await;
    assert_eq!(rrs.len(), 2);
    let counted: i32 = rrs.iter().map(occurrences).sum();
    assert_eq!(
        f64::from(counted),
        created + duplicate,
        "occurrenceCount sums to the 201/202 answers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver and Alertmanager: run scripts/test"]
async fn two_alertmanager_peers_in_ha_both_delivering_make_one_rr_per_workload() {
    let mut c = Cluster::start("e2e-am-ha", 2).await;
    let (gossip_a, gossip_b) = (free_port(), free_port());
    // A real HA pair (`--cluster.peer`), each peer's receiver on a different replica. Gossip is made
    // slow (10 s) and the peer wait short (1 ms), so the notification log does not reach the second
    // peer in time and both peers deliver every notification — what happens in production during a
    // gossip partition or lag, and the worst case the gateway has to absorb.
    let cluster = |own: u16, peer: u16| {
        vec![
            format!("--cluster.listen-address=127.0.0.1:{own}"),
            format!("--cluster.advertise-address=127.0.0.1:{own}"),
            format!("--cluster.peer=127.0.0.1:{peer}"),
            "--cluster.peer-timeout=1ms".into(),
            "--cluster.gossip-interval=10s".into(),
            "--cluster.settle-timeout=1s".into(),
        ]
    };
    let am_a = Alertmanager::start(
        c.dir.path(),
        "am-a",
        &[c.replicas[0].url("/api/v1/signals/prometheus")],
        &cluster(gossip_a, gossip_b),
    )
    .await;
    let am_b = Alertmanager::start(
        c.dir.path(),
        "am-b",
        &[c.replicas[1].url("/api/v1/signals/prometheus")],
        &cluster(gossip_b, gossip_a),
    )
    .await;

    // Prometheus sends every alert to every Alertmanager.
    for am in [&am_a, &am_b] {
        fire(am, "ledger-writer");
        fire(am, "checkout-api");
    }
    let workloads = ["checkout-api", "ledger-writer"];
    wait_for_rrs(&c, &expected_names(&workloads), &[&am_a, &am_b]).await;

    // Both peers deliver both groups: each replica admits both alerts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for (i, r) in c.replicas.iter().enumerate() {
        loop {
            let m = r.metrics().await;
            let answered = metric_sum(
                &m,
                "namegate_admission_outcomes_total",
                "outcome=\"created\"",
            ) + metric_sum(
                &m,
                "namegate_admission_outcomes_total",
                "outcome=\"duplicate\"",
            );
            if answered >= 2.0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "replica {i} admitted {answered} signals; alertmanager logs:\n{}\n{}",
                am_a.log_text(),
                am_b.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop((am_a, am_b));
    let (created, duplicate) = admitted(&c).await;
    assert_eq!(created, 2.0, "one create per workload over both replicas");
    assert!(duplicate >= 2.0, "the other peer's copies are duplicates");
    c.terminate_all();
    let rrs = c.list().await;
    assert_eq!(rrs.len(), 2, "still one RR per workload");
    let counted: i32 = rrs.iter().map(occurrences).sum();
    assert_eq!(f64::from(counted), created + duplicate);
}
