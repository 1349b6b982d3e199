//! `namegate create`: an operator's (or another tool's) manual trigger, admitted exactly like a signal
//! that reaches the gateway over HTTP (docs/creators.md, "`namegate create`").
//!
//! The command builds one [`Signal`] of source [`Source::Manual`] from its flags and runs it through
//! the same [`Pipeline`] as `namegate serve`: the target is resolved to its owning workload and checked
//! against the scope, the RR index is consulted, `name(fp, k+1)` is created or the duplicate counted on
//! the active RR, the occurrence is written to the RR's status, and the decision's audit events go to
//! the same trail. Only the transport differs: the answer is a line on stdout and an exit code
//! ([`Exit`]) instead of an HTTP status.
//!
//! Order, so that bad input and unavailable components change nothing: the flags are validated
//! first (no I/O); then the Kubernetes client, the audit store (pinged), the caller's identity
//! (SelfSubjectReview), the RR index and the resolver are made ready; only then is the decision
//! taken. Once it is taken it is committed (counted, audited), the occurrence flushed and the audit
//! writer drained before the process exits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crd_schema::{Target, TargetField};
use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::PostParams;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::adapters::{self, MAX_CLUSTER_LEN, MAX_SEVERITY_LEN};
use crate::admission::Admission;
use crate::apiserver::{Resilience, RrApi};
use crate::audit;
use crate::http::problem::Problem;
use crate::index::RrIndex;
use crate::occurrence::{Flusher, Occurrences};
use crate::pipeline::{Answered, ItemBody, Origin, Pipeline, Refusal};
use crate::resolve::objects::CacheConfig;
use crate::resolve::{ResolveMetrics, Resolver, Scope};
use crate::signal::{Decoded, InvalidSignal, Signal, Source};
use crate::telemetry::metrics::{AdmissionOutcome, Metrics};

/// Longest `--reason` (it becomes the `summary` annotation of the RR and of its audit events).
pub const MAX_REASON_BYTES: usize = 4096;
/// How long the occurrence write and the audit drain may take after the decision.
const DRAIN_FOR: Duration = Duration::from_secs(10);
/// How long a batch is retried against an audit store that stops answering after the ping, before
/// it goes to this invocation's spill file.
const AUDIT_SPILL_AFTER: Duration = Duration::from_secs(10);

/// The flags of `namegate create`.
#[derive(Clone, Debug, clap::Args)]
pub struct CreateArgs {
    /// Namespace of the target (empty for a cluster-scoped kind such as Node).
    #[arg(long, default_value = "")]
    pub namespace: String,
    /// Kind of the target (`Deployment`, `Pod`, …): resolved to its owning workload unless
    /// `--resolve-targets false`.
    #[arg(long)]
    pub kind: String,
    /// Name of the target.
    #[arg(long)]
    pub name: String,
    /// API version of the target's kind, when the kind exists in several groups.
    #[arg(long)]
    pub api_version: Option<String>,
    /// Cluster ID, when the gateway's signals carry one (it is part of the fingerprint).
    #[arg(long)]
    pub cluster: Option<String>,
    /// The signal name (`spec.signalName`), e.g. `ManualRemediation` or the alert being acted on.
    #[arg(long)]
    pub alert_name: String,
    /// Severity (`spec.severity`, 1 to 50 characters), e.g. `critical`: no default — an operator
    /// states it.
    #[arg(long)]
    pub severity: String,
    /// Why the remediation is triggered: the RR's `summary` annotation.
    #[arg(long)]
    pub reason: String,
    /// Namespace of the RemediationRequests (the gateway's `--namespace`).
    #[arg(long, env = "NAMEGATE_NAMESPACE")]
    pub rr_namespace: String,
    /// Kubeconfig file [default: $KUBECONFIG, ~/.kube/config, else the in-cluster ServiceAccount].
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context [default: the current context].
    #[arg(long)]
    pub context: Option<String>,
    /// The gateway's audit store: sqlite://<path>, postgres://…, or http(s)://<kubernaut DataStorage>.
    #[arg(long, env = "NAMEGATE_AUDIT_URL")]
    pub audit_url: String,
    /// HMAC key file of the audit hash chains: the gateway's, when it has one.
    #[arg(long, env = "NAMEGATE_AUDIT_HMAC_KEY_FILE")]
    pub audit_hmac_key_file: Option<PathBuf>,
    /// Bearer token file for kubernaut DataStorage (http(s) --audit-url)
    /// [default: /var/run/secrets/kubernetes.io/serviceaccount/token].
    #[arg(long, env = "NAMEGATE_AUDIT_TOKEN_FILE")]
    pub audit_token_file: Option<PathBuf>,
    /// Directory for this invocation's audit spill file, kept only if the audit store stops answering
    /// mid-run [default: the SQLite database's directory, else the current directory].
    #[arg(long)]
    pub audit_spill_dir: Option<PathBuf>,
    /// Which resolved targets are admitted: the gateway's `--scope`.
    #[arg(long, value_enum, default_value_t = Scope::Labelled)]
    pub scope: Scope,
    /// Resolve the target to its owner, check it exists and read its scope label (the gateway's
    /// `--resolve-targets`); `false` needs `--scope all`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub resolve_targets: bool,
    /// Everything before the answer (API server, audit store, index) must be done within this.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// `name`: the RR's name alone (created or duplicate); `json`: the gateway's answer body.
    #[arg(long, value_enum, default_value_t = Output::Name)]
    pub output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Name,
    Json,
}

/// The exit status of `namegate create` (docs/creators.md has the table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: a new RR was created under the lock.
    Created,
    /// 3: an active RR exists; this trigger was counted on it as a duplicate.
    Duplicate,
    /// 2: bad input — a flag, or a target the API server does not have. No RR was created.
    Invalid,
    /// 4: the resolved target is not managed (`--scope labelled`). No RR was created.
    Unmanaged,
    /// 75 (`EX_TEMPFAIL`): the API server or the audit store is unavailable, or the RR of the
    /// name is being deleted. No RR was created; run the same command again later.
    Retry,
    /// 1: a failure retrying cannot fix (hash collision, attempts exhausted, refused create), or the
    /// decision's occurrence or audit events could not be written (the answer says which).
    Failed,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Self::Created => 0,
            Self::Failed => 1,
            Self::Invalid => 2,
            Self::Duplicate => 3,
            Self::Unmanaged => 4,
            Self::Retry => 75,
        }
    }

    /// The exit status of a committed answer.
    pub fn of(answered: &Answered) -> Self {
        match (&answered.refusal, answered.outcome) {
            (Some(r), _) if r.is_retryable() => Self::Retry,
            (Some(Refusal::Invalid(_)), _) => Self::Invalid,
            (Some(_), _) => Self::Failed,
            (None, AdmissionOutcome::created) => Self::Created,
            (None, AdmissionOutcome::duplicate) => Self::Duplicate,
            (None, AdmissionOutcome::rejected) => Self::Unmanaged,
            (None, AdmissionOutcome::ignored | AdmissionOutcome::failed) => Self::Failed,
        }
    }
}

/// Why `namegate create` stopped before or after its decision.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("invalid --{}: {}", .0.field, .0.detail)]
    Invalid(InvalidSignal),
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("Kubernetes API server unavailable: {0}")]
    ApiUnavailable(String),
    #[error("audit store: {0}")]
    Audit(#[from] audit::store::StoreError),
    #[error("audit store unavailable: {0}")]
    AuditUnavailable(audit::store::StoreError),
    #[error("audit writer: {0}")]
    AuditWriter(String),
    #[error("{0} did not become ready within --timeout")]
    NotReady(&'static str),
}

impl CreateError {
    /// Nothing was changed and the same command may succeed later.
    pub fn is_retryable(&self) -> bool {
        self.exit() == Exit::Retry
    }

    pub fn exit(&self) -> Exit {
        match self {
            Self::Invalid(_) | Self::Kubeconfig(_) => Exit::Invalid,
            Self::Audit(e) if e.is_unavailable() => Exit::Retry,
            Self::Audit(_) | Self::AuditWriter(_) => Exit::Invalid,
            Self::ApiUnavailable(_) | Self::AuditUnavailable(_) | Self::NotReady(_) => Exit::Retry,
        }
    }
}

/// The manual trigger as validated from the flags: everything but the time and the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    pub target: Target,
    pub alert_name: String,
    pub severity: String,
    pub reason: String,
}

impl Trigger {
    /// Validates the flags (no I/O). The rules are the adapters' (docs/api.md): names, kinds and
    /// namespaces that can be Kubernetes objects, no control characters, the CRD's lengths.
    pub fn from_args(a: &CreateArgs) -> Result<Self, InvalidSignal> {
        let target = Target {
            cluster: a.cluster.clone().filter(|c| !c.is_empty()),
            namespace: a.namespace.clone(),
            kind: a.kind.clone(),
            name: a.name.clone(),
            api_version: a.api_version.clone().filter(|v| !v.is_empty()),
        };
        if let Some(c) = &target.cluster
            && (c.chars().count() > MAX_CLUSTER_LEN || c.chars().any(char::is_control))
        {
            return Err(InvalidSignal::new(
                "cluster",
                format!(
                    "a cluster ID is at most {MAX_CLUSTER_LEN} characters without control characters"
                ),
            ));
        }
        if !target.namespace.is_empty()
            && let Some(p) = adapters::namespace_problem(&target.namespace)
        {
            return Err(InvalidSignal::new("namespace", p));
        }
        if let Some(p) = adapters::object_name_problem(&target.name) {
            return Err(InvalidSignal::new("name", p));
        }
        adapters::target_problem(&target, |f| {
            match f {
                TargetField::Cluster => "cluster",
                TargetField::Namespace => "namespace",
                TargetField::Kind => "kind",
                TargetField::Name => "name",
            }
            .to_owned()
        })?;
        if let Some(p) = adapters::signal_name_problem(&a.alert_name) {
            return Err(InvalidSignal::new("alert-name", p));
        }
        let severity_chars = a.severity.chars().count();
        if severity_chars == 0 || severity_chars > MAX_SEVERITY_LEN {
            return Err(InvalidSignal::new(
                "severity",
                format!("1 to {MAX_SEVERITY_LEN} characters, got {severity_chars}"),
            ));
        }
        if let Some(p) = adapters::control_problem(&a.severity, false) {
            return Err(InvalidSignal::new("severity", p));
        }
        if a.reason.trim().is_empty() {
            return Err(InvalidSignal::new(
                "reason",
                "required and must not be empty",
            ));
        }
        if a.reason.len() > MAX_REASON_BYTES {
            return Err(InvalidSignal::new(
                "reason",
                format!(
                    "{} bytes long, over the limit of {MAX_REASON_BYTES}",
                    a.reason.len()
                ),
            ));
        }
        if let Some(p) = adapters::control_problem(&a.reason, true) {
            return Err(InvalidSignal::new("reason", p));
        }
        if !a.resolve_targets && a.scope == Scope::Labelled {
            return Err(InvalidSignal::new(
                "scope",
                "`labelled` reads scope labels while resolving targets; with --resolve-targets false set --scope all",
            ));
        }
        if !crd_schema::name::is_dns1123_label(&a.rr_namespace) {
            return Err(InvalidSignal::new(
                "rr-namespace",
                format!("{:?} is not a valid namespace name", a.rr_namespace),
            ));
        }
        Ok(Self {
            target,
            alert_name: a.alert_name.clone(),
            severity: a.severity.clone(),
            reason: a.reason.clone(),
        })
    }

    /// The signal of this trigger, sent by `requested_by` at `now` (the target as given: the pipeline
    /// resolves it). Labels and annotations follow Alertmanager's (`alertname`, `severity`,
    /// `namespace`; `summary`), so the RR reads like the gateway's; `originalPayload` is the trigger
    /// itself as JSON.
    pub fn signal(&self, requested_by: Option<&str>, now: Timestamp) -> Signal {
        let t = &self.target;
        let mut labels = BTreeMap::from([
            ("alertname".to_owned(), self.alert_name.clone()),
            ("severity".to_owned(), self.severity.clone()),
        ]);
        if !t.namespace.is_empty() {
            labels.insert("namespace".into(), t.namespace.clone());
        }
        let annotations = BTreeMap::from([("summary".to_owned(), self.reason.clone())]);
        let original = json!({
            "trigger": Source::Manual.as_str(),
            "alertName": self.alert_name,
            "severity": self.severity,
            "reason": self.reason,
            "target": {
                "cluster": t.cluster,
                "namespace": t.namespace,
                "kind": t.kind,
                "name": t.name,
                "apiVersion": t.api_version,
            },
            "requestedBy": requested_by,
            "requestedAt": now.to_string(),
        });
        let provider = json!({"trigger": Source::Manual.as_str(), "requestedBy": requested_by});
        Signal {
            source: Source::Manual,
            name: self.alert_name.clone(),
            severity: self.severity.clone(),
            fingerprint: t.fingerprint(),
            target: t.clone(),
            labels,
            annotations,
            firing_time: now,
            received_time: now,
            provider_data: Some(provider.to_string()),
            original_payload: original.to_string(),
        }
    }
}

/// What `namegate create` prints and exits with.
#[derive(Debug)]
pub struct Report {
    pub exit: Exit,
    /// The gateway's answer body (status, RR name, attempt, count…).
    pub body: ItemBody,
    /// What went wrong, for stderr (refusals, and the occurrence or audit writes after a decision).
    pub problems: Vec<String>,
}

/// `namegate create` as a process: logs (warnings and errors, or `RUST_LOG`) to stderr, the answer to
/// stdout, the [`Exit`] code.
pub fn main(args: &CreateArgs) -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("namegate create: starting the runtime: {e}");
            return std::process::ExitCode::from(Exit::Failed.code());
        }
    };
    let exit = match runtime.block_on(run(args)) {
        Ok(report) => {
            match args.output {
                Output::Json => match serde_json::to_string(&report.body) {
                    Ok(line) => println!("{line}"),
                    Err(e) => eprintln!("namegate create: encoding the answer: {e}"),
                },
                Output::Name => {
                    if let Some(name) = &report.body.remediation_request_name {
                        println!("{name}");
                    }
                }
            }
            for p in &report.problems {
                eprintln!("namegate create: {p}");
            }
            report.exit
        }
        Err(e) => {
            eprintln!("namegate create: {e}");
            e.exit()
        }
    };
    std::process::ExitCode::from(exit.code())
}

/// Runs `namegate create`: see the module docs.
pub async fn run(args: &CreateArgs) -> Result<Report, CreateError> {
    let trigger = Trigger::from_args(args).map_err(CreateError::Invalid)?;
    let deadline = Instant::now() + args.timeout;
    let client = kube_client(args).await?;

    // The audit store first: a decision that cannot be audited is not taken.
    let mut store_cfg = audit::store::StoreConfig::new(&args.audit_url);
    store_cfg.hmac_key_file = args.audit_hmac_key_file.clone();
    store_cfg.token_file = Some(
        args.audit_token_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_AUDIT_TOKEN_FILE)),
    );
    let store = audit::store::AuditStore::open_with(&store_cfg).await?;
    within(deadline, "the audit store", store.ping())
        .await?
        .map_err(CreateError::AuditUnavailable)?;

    let requested_by = within(deadline, "the API server", who_am_i(&client)).await??;
    let metrics = Metrics::register(&mut Registry::default());
    let background = CancellationToken::new();
    let result = decide(
        args,
        &trigger,
        client,
        store,
        metrics,
        requested_by,
        deadline,
        &background,
    )
    .await;
    background.cancel();
    result
}

#[allow(clippy::too_many_arguments)]
async fn decide(
    args: &CreateArgs,
    trigger: &Trigger,
    client: kube::Client,
    store: audit::store::AuditStore,
    metrics: Metrics,
    requested_by: Option<String>,
    deadline: Instant,
    background: &CancellationToken,
) -> Result<Report, CreateError> {
    let ns = &args.rr_namespace;
    let index = RrIndex::new(metrics.clone(), false);
    tokio::spawn(index.clone().run(
        client.clone(),
        ns.clone(),
        Duration::from_secs(30),
        background.clone(),
    ));
    let resolver = if args.resolve_targets {
        Some(Arc::new(
            ready_resolver(&client, args.scope, background, deadline).await?,
        ))
    } else {
        None
    };
    within(deadline, "the RR index", index.wait_synced()).await?;

    let spill_path = spill_path(args);
    let writer_cfg = audit::writer::WriterConfig {
        spill_path: spill_path.clone(),
        spill_after: AUDIT_SPILL_AFTER,
        ..audit::writer::WriterConfig::default()
    };
    let (sink, writer) =
        audit::writer::AuditWriter::spawn(store, writer_cfg.clone(), &mut Registry::default())
            .await
            .map_err(|e| CreateError::AuditWriter(e.to_string()))?;

    let occurrences = Occurrences::new(metrics.clone());
    let api = || RrApi::new(client.clone(), ns, metrics.clone(), Resilience::default());
    let pipeline = Pipeline::new(
        Admission::new(index, api(), occurrences.clone(), ns.clone()),
        sink,
        metrics.clone(),
    )
    .with_resolver(resolver);
    let origin = Origin {
        request_id: format!("create-{}", uuid::Uuid::now_v7()),
        actor_type: match requested_by.as_deref() {
            Some(u) if u.starts_with("system:serviceaccount:") => "ServiceAccount".into(),
            Some(_) => "User".into(),
            None => "anonymous".into(),
        },
        actor_id: requested_by.clone(),
        deadline,
    };
    let signal = trigger.signal(requested_by.as_deref(), Timestamp::now());
    let decided = pipeline
        .decide(Source::Manual, Decoded::Signal(Box::new(signal)), &origin)
        .await;
    // Answered exactly like a single signal over HTTP: committed whatever it is.
    let answered = decided.commit(&pipeline, Timestamp::now());
    let mut exit = Exit::of(&answered);
    let mut problems = Vec::new();
    if let Some(refusal) = &answered.refusal {
        let p = Problem::from(refusal);
        problems.push(format!("{}: {}", p.title, p.detail));
    } else if let Some(message) = &answered.body.message
        && exit == Exit::Unmanaged
    {
        problems.push(message.clone());
    }

    // The occurrence (a created RR's first count, or the duplicate's) is written before exiting.
    let flush_stop = CancellationToken::new();
    flush_stop.cancel();
    Flusher::new(occurrences.clone(), api(), metrics, Duration::from_secs(1))
        .run(flush_stop, DRAIN_FOR)
        .await;
    let unwritten = occurrences.pending_total();
    if unwritten > 0 {
        exit = Exit::Failed;
        problems.push(format!(
            "the decision stands, but its occurrence could not be written to {} within {}s",
            answered
                .body
                .remediation_request_name
                .as_deref()
                .unwrap_or("the RR"),
            DRAIN_FOR.as_secs()
        ));
    }
    drop(pipeline);
    let stats = writer.shutdown().await;
    if stats.spilled > 0 || stats.rejected > 0 || stats.dropped > 0 {
        exit = Exit::Failed;
        problems.push(format!(
            "the decision stands, but its audit events are not all in the store: {} spilled to {}, \
             {} refused (kept in {}), {} dropped",
            stats.spilled,
            spill_path.display(),
            stats.rejected,
            writer_cfg.rejected_path().display(),
            stats.dropped
        ));
    } else {
        remove_if_empty(&spill_path);
        remove_if_empty(&writer_cfg.rejected_path());
    }
    Ok(Report {
        exit,
        body: answered.body,
        problems,
    })
}

/// The client of `--kubeconfig`/`--context`, else kube's defaults.
async fn kube_client(args: &CreateArgs) -> Result<kube::Client, CreateError> {
    let options = kube::config::KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| CreateError::Kubeconfig(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| CreateError::Kubeconfig(e.to_string()))?
        }
        None if args.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| CreateError::Kubeconfig(e.to_string()))?,
        None => kube::Config::infer()
            .await
            .map_err(|e| CreateError::Kubeconfig(e.to_string()))?,
    };
    kube::Client::try_from(config).map_err(|e| CreateError::Kubeconfig(e.to_string()))
}

/// The caller's username as the API server authenticates it (SelfSubjectReview): the audit events'
/// actor. `None` when the API server does not serve or allow the review (then the actor is
/// `external/manual`).
async fn who_am_i(client: &kube::Client) -> Result<Option<String>, CreateError> {
    let api: kube::Api<SelfSubjectReview> = kube::Api::all(client.clone());
    match api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
    {
        Ok(review) => Ok(review
            .status
            .and_then(|s| s.user_info)
            .and_then(|u| u.username)
            .filter(|u| !u.is_empty())),
        Err(kube::Error::Api(s)) if s.code == 403 || s.code == 404 => {
            tracing::warn!(
                code = s.code,
                "SelfSubjectReview refused; the audit actor is external/manual"
            );
            Ok(None)
        }
        Err(kube::Error::Api(s)) if s.code == 401 => Err(CreateError::Kubeconfig(format!(
            "the API server does not accept these credentials: {}",
            s.message
        ))),
        Err(e) => Err(CreateError::ApiUnavailable(e.to_string())),
    }
}

/// A resolver whose discovery and (with `scope: labelled`) namespace watch have synced.
async fn ready_resolver(
    client: &kube::Client,
    scope: Scope,
    background: &CancellationToken,
    deadline: Instant,
) -> Result<Resolver, CreateError> {
    let (kinds, namespaces, _tasks) =
        crate::resolve::spawn_watches(client, adapters::LabelTable::default(), background);
    let resolver = Resolver::new(
        client.clone(),
        kinds,
        namespaces,
        scope,
        CacheConfig {
            capacity: 64,
            ttl: Duration::from_secs(60),
            missing_ttl: crate::config::TARGET_CACHE_MISSING_TTL,
        },
        ResolveMetrics::default(),
    );
    // Discovery and the namespace list have no completion signal of their own: poll, bounded.
    while !resolver.is_synced() {
        if Instant::now() >= deadline {
            return Err(CreateError::NotReady(
                "API discovery and the namespace watch",
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(resolver)
}

async fn within<F: std::future::Future>(
    deadline: Instant,
    what: &'static str,
    fut: F,
) -> Result<F::Output, CreateError> {
    tokio::time::timeout_at(deadline, fut)
        .await
        .map_err(|_| CreateError::NotReady(what))
}

/// This invocation's own spill file: concurrent invocations never share one.
fn spill_path(args: &CreateArgs) -> PathBuf {
    let dir = args.audit_spill_dir.clone().unwrap_or_else(|| {
        args.audit_url
            .strip_prefix("sqlite://")
            .and_then(|p| Path::new(p).parent())
            .map(Path::to_path_buf)
            .unwrap_or_default()
    });
    dir.join(format!(
        "namegate-create-{}.audit-spill.jsonl",
        uuid::Uuid::now_v7()
    ))
}

fn remove_if_empty(path: &Path) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests;
