//! Running real `namegate serve` processes against the real kube-apiserver.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crd_schema::RemediationRequest;
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::{Value, json};

pub mod fault_proxy;

pub use namegate_e2e::{client, fresh_namespace, install_crd};

/// A loopback port that was free a moment ago and that this test process has not handed out before:
/// the kernel may give a just-released ephemeral port again, which made two listeners of one
/// replica collide ("ingestion, health and metrics addresses must differ").
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// One `namegate serve` process.
#[derive(Debug)]
pub struct Replica {
    pub child: Child,
    pub port: u16,
    pub health_port: u16,
    pub metrics_port: u16,
    pub audit_url: String,
    pub log: PathBuf,
}

#[derive(Clone, Debug, Default)]
pub struct ReplicaOptions {
    pub freeze_index: bool,
    pub audit_url: Option<String>,
    pub extra_args: Vec<String>,
    /// `KUBECONFIG` for this replica (a private API server); `None` inherits the test's environment.
    pub kubeconfig: Option<PathBuf>,
    /// Resolve targets with the production defaults (owners, existence, `scope: labelled`). Off by
    /// default here: the admission tests name workloads that do not exist as objects, so they pass
    /// `--resolve-targets false --scope all` explicitly. `e2e_cutover.rs` turns it on.
    pub resolve: bool,
    /// `--shutdown-delay` [default here: 0s, so tests stop fast].
    pub shutdown_delay: Option<String>,
}

impl Replica {
    /// Starts a replica and waits until `/readyz` answers 200 (the index has synced).
    pub async fn start(
        namespace: &str,
        dir: &std::path::Path,
        idx: usize,
        opts: &ReplicaOptions,
    ) -> Replica {
        let (port, health_port, metrics_port) = (free_port(), free_port(), free_port());
        let audit_url = opts.audit_url.clone().unwrap_or_else(|| {
            format!("sqlite://{}", dir.join(format!("audit-{idx}.db")).display())
        });
        let log = dir.join(format!("replica-{idx}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_namegate"));
        cmd.arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--health-listen", &format!("127.0.0.1:{health_port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(["--namespace", namespace])
            .args(["--audit-url", &audit_url])
            .args([
                "--audit-spill-path",
                &dir.join(format!("spill-{idx}.jsonl")).display().to_string(),
            ])
            .args(if opts.extra_args.iter().any(|a| a == "--auth") {
                // The test chooses the auth mode itself.
                &[][..]
            } else {
                // These tests are not about authentication: explicitly off.
                &["--auth", "none"][..]
            })
            .args([
                "--shutdown-delay",
                opts.shutdown_delay.as_deref().unwrap_or("0s"),
                "--log-level",
                "info,namegate=debug",
            ])
            .args(if opts.resolve {
                &[][..]
            } else {
                &["--resolve-targets", "false", "--scope", "all"][..]
            })
            .args(&opts.extra_args)
            .stdout(Stdio::from(log_file.try_clone().unwrap()))
            .stderr(Stdio::from(log_file));
        if opts.freeze_index {
            cmd.args(["--fault-freeze-index", "true"]);
        }
        if let Some(kubeconfig) = &opts.kubeconfig {
            cmd.env("KUBECONFIG", kubeconfig);
        }
        let child = cmd.spawn().expect("spawning namegate serve");
        let mut r = Replica {
            child,
            port,
            health_port,
            metrics_port,
            audit_url,
            log,
        };
        r.wait_ready().await;
        r
    }

    async fn wait_ready(&mut self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.health_port);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(resp) = reqwest::get(&url).await
                && resp.status() == 200
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "replica exited with {status} before becoming ready; log:\n{}",
                    self.log_tail()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "replica not ready within 60 s:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGTERM, then wait for the exit (the graceful path flushes occurrences and audit).
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().unwrap()
    }

    /// What this replica's index holds for a fingerprint (health port debug endpoint).
    pub async fn index_view(&self, fingerprint: &str) -> Value {
        reqwest::get(format!(
            "http://127.0.0.1:{}/debug/index/{fingerprint}",
            self.health_port
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A namespace with the CRD installed and N replicas serving it.
pub struct Cluster {
    pub client: Client,
    pub namespace: String,
    pub replicas: Vec<Replica>,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Cluster {
    pub async fn start(prefix: &str, n: usize) -> Cluster {
        Self::start_with(prefix, &vec![ReplicaOptions::default(); n]).await
    }

    pub async fn start_with(prefix: &str, opts: &[ReplicaOptions]) -> Cluster {
        let client = client().await;
        install_crd(&client).await;
        let namespace = fresh_namespace(&client, prefix).await;
        let dir = tempfile::tempdir().unwrap();
        let mut replicas = Vec::new();
        for (i, o) in opts.iter().enumerate() {
            replicas.push(Replica::start(&namespace, dir.path(), i, o).await);
        }
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap();
        Cluster {
            client,
            namespace,
            replicas,
            dir,
            http,
        }
    }

    pub fn rrs(&self) -> Api<RemediationRequest> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub async fn list(&self) -> Vec<RemediationRequest> {
        self.rrs().list(&ListParams::default()).await.unwrap().items
    }

    /// POSTs an Alertmanager webhook to replica `i`; returns status, headers and JSON body.
    pub async fn post_alerts(
        &self,
        i: usize,
        body: &Value,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let resp = self
            .http
            .post(self.replicas[i % self.replicas.len()].url("/api/v1/signals/prometheus"))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, headers, body)
    }

    pub fn terminate_all(&mut self) {
        for r in &mut self.replicas {
            let status = r.terminate();
            assert!(
                status.success(),
                "replica exited with {status}:\n{}",
                r.log_tail()
            );
        }
    }
}

/// An Alertmanager webhook with one firing alert per `(deployment, alertname)`.
pub fn webhook(alerts: &[(&str, &str)]) -> Value {
    let now = jiff::Timestamp::now().to_string();
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
        "alerts": alerts.iter().map(|(deployment, alertname)| json!({
            "status": "firing",
            "labels": {"alertname": alertname, "namespace": "payments", "deployment": deployment,
                       "pod": format!("{deployment}-7d9c8b6f4-x2x9q"), "severity": "critical"},
            "annotations": {"summary": format!("{deployment} is crash looping")},
            "startsAt": now,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.test/graph",
            "fingerprint": "3b1f0c7e9a4d2f61",
        })).collect::<Vec<_>>(),
    })
}

/// The fingerprint the gateway computes for `payments/Deployment/<deployment>`.
pub fn fingerprint_of(deployment: &str) -> crd_schema::Fingerprint {
    crd_schema::Fingerprint::of_input(&format!("payments:Deployment:{deployment}"))
}

/// The harness binary built by `scripts/kube-up` (override with `NAMEGATE_KUBE_APISERVER_BIN`).
pub fn kube_apiserver_bin() -> PathBuf {
    let bin = std::env::var_os("NAMEGATE_KUBE_APISERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/kube-apiserver/namegate-kube-apiserver"
            ))
        });
    assert!(
        bin.is_file(),
        "{} is missing: these tests need the real kube-apiserver; run scripts/test (or scripts/kube-up, \
         which builds it)",
        bin.display()
    );
    bin
}

/// A private real API server (`namegate-kube-apiserver --dir <dir> --keep-data --exit-with-parent`),
/// for tests that stop and restart it. `--keep-data` makes a restart resume the same cluster on the
/// same port with the same credentials, so clients that loaded the kubeconfig before keep working.
/// Killed on drop.
pub struct PrivateApiServer {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:<port>` from the kubeconfig.
    pub server: String,
    child: Option<Child>,
    log: PathBuf,
}

impl PrivateApiServer {
    /// Starts it and blocks until it prints its `KUBECONFIG=` line (about 3 s).
    pub fn start(dir: &std::path::Path) -> PrivateApiServer {
        std::fs::create_dir_all(dir).unwrap();
        let mut s = PrivateApiServer {
            dir: dir.to_owned(),
            kubeconfig: dir.join("kubeconfig"),
            server: String::new(),
            child: None,
            log: dir.with_extension("log"),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        use std::io::BufRead;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(kube_apiserver_bin())
            .args(["--dir", &self.dir.display().to_string()])
            .args(["--keep-data", "--exit-with-parent"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawning namegate-kube-apiserver");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Keeps reading after the line so the child never writes into a closed pipe.
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) if line.starts_with("KUBECONFIG=") => {
                    self.kubeconfig = PathBuf::from(&line["KUBECONFIG=".len()..]);
                    break;
                }
                Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {}
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "namegate-kube-apiserver exited with {status} before it was ready:\n{}",
                    self.log_tail()
                );
            }
            assert!(
                !left.is_zero(),
                "namegate-kube-apiserver not ready within 120 s:\n{}",
                self.log_tail()
            );
        }
        let text = std::fs::read_to_string(&self.kubeconfig).unwrap();
        self.server = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .unwrap()
            .to_owned();
        self.child = Some(child);
    }

    /// SIGKILL: the API server disappears at once, mid-request (its data stays in `dir`).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same `dir`: same cluster state, same port (asserted), same credentials.
    pub fn restart(&mut self) {
        self.kill();
        let before = self.server.clone();
        self.spawn();
        assert_eq!(
            self.server, before,
            "the restarted API server must keep its port so existing kubeconfigs stay valid"
        );
    }

    /// A client from this server's kubeconfig.
    pub async fn client(&self) -> Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        Client::try_from(config).unwrap()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for PrivateApiServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The sum of one counter family's samples whose label set contains `labels` (e.g.
/// `outcome="created"`), from Prometheus text.
pub fn metric_sum(text: &str, family: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            let (fam, rest) = name.split_once('{').unwrap_or((name, ""));
            (fam == family && rest.contains(labels)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}
