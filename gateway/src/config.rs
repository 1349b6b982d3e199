//! Configuration of `namegate serve` (docs/operations.md): every setting is a flag, an environment variable
//! `NAMEGATE_<FLAG>` and a key of the YAML file given by `--config`, in that order of precedence.
//! Everything is validated at start, with errors that name the setting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::{AuthMode, Permission};
use crate::resolve::Scope;
use crate::resolve::objects::CacheConfig;
use crate::telemetry::LogFormat;

/// The pod's projected ServiceAccount token: what DataStorage is authenticated with by default.
pub const DEFAULT_AUDIT_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The settings as given; `None` = not given at this level.
#[derive(Clone, Debug, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Ingestion address (`host:port` or `:port`) [default: 0.0.0.0:8080]
    #[arg(long, env = "NAMEGATE_LISTEN", value_parser = parse_listen)]
    #[serde(default, deserialize_with = "de_listen")]
    pub listen: Option<SocketAddr>,
    /// Health address: /healthz, /readyz [default: :8081]
    #[arg(long, env = "NAMEGATE_HEALTH_LISTEN", value_parser = parse_listen)]
    #[serde(default, deserialize_with = "de_listen")]
    pub health_listen: Option<SocketAddr>,
    /// Metrics address: /metrics [default: :9090]
    #[arg(long, env = "NAMEGATE_METRICS_LISTEN", value_parser = parse_listen)]
    #[serde(default, deserialize_with = "de_listen")]
    pub metrics_listen: Option<SocketAddr>,
    /// Namespace of the RemediationRequests [default: the pod's namespace, else `default`]
    #[arg(long, env = "NAMEGATE_NAMESPACE")]
    pub namespace: Option<String>,
    /// Audit store: sqlite://<path> (embedded), postgres://…, or http(s)://<kubernaut DataStorage>
    /// [default: sqlite://namegate-audit.db]
    #[arg(long, env = "NAMEGATE_AUDIT_URL")]
    pub audit_url: Option<String>,
    /// HMAC key file for the audit hash chains (optional).
    #[arg(long, env = "NAMEGATE_AUDIT_HMAC_KEY_FILE")]
    pub audit_hmac_key_file: Option<PathBuf>,
    /// Bearer token file sent to kubernaut DataStorage (http(s) --audit-url), re-read per request
    /// [default: /var/run/secrets/kubernetes.io/serviceaccount/token]
    #[arg(long, env = "NAMEGATE_AUDIT_TOKEN_FILE")]
    pub audit_token_file: Option<PathBuf>,
    /// Spill file used while the audit store is unreachable [default: <audit db dir>/audit-spill.jsonl]
    #[arg(long, env = "NAMEGATE_AUDIT_SPILL_PATH")]
    pub audit_spill_path: Option<PathBuf>,
    /// Audit chain-head checkpoint file; put it where the audit database's users cannot write
    /// (docs/audit.md) [default: <spill dir>/audit-checkpoints.jsonl]
    #[arg(long, env = "NAMEGATE_AUDIT_CHECKPOINT_PATH")]
    pub audit_checkpoint_path: Option<PathBuf>,
    /// Spill budget in bytes; past it ingestion answers 503 [default: 67108864]
    #[arg(long, env = "NAMEGATE_AUDIT_SPILL_BUDGET_BYTES")]
    pub audit_spill_budget_bytes: Option<u64>,
    /// Audit events queued in memory (each holds its signal's payload: ~2.5 KB) [default: 16384]
    #[arg(long, env = "NAMEGATE_AUDIT_QUEUE_CAPACITY")]
    pub audit_queue_capacity: Option<usize>,
    /// Bytes the queued audit events may hold; past it ingestion answers 503 [default: 33554432]
    #[arg(long, env = "NAMEGATE_AUDIT_QUEUE_BUDGET_BYTES")]
    pub audit_queue_budget_bytes: Option<u64>,
    /// Caller authentication: `none` (explicitly) or `kubernetes` (TokenReview + SAR) [default: kubernetes]
    #[arg(long, env = "NAMEGATE_AUTH", value_enum)]
    pub auth: Option<AuthMode>,
    /// The Service name that SubjectAccessReviews name (the resource name checked) [default: namegate]
    #[arg(long, env = "NAMEGATE_AUTH_SERVICE_NAME")]
    pub auth_service_name: Option<String>,
    /// Permission a sender needs, on `<auth-service-name>` in the gateway's namespace [default: create services]
    #[arg(long, env = "NAMEGATE_AUTH_INGEST_PERMISSION")]
    pub auth_ingest_permission: Option<String>,
    /// Permission an audit lookup needs, on `<auth-service-name>` in the gateway's namespace [default: get services/audit]
    #[arg(long, env = "NAMEGATE_AUTH_LOOKUP_PERMISSION")]
    pub auth_lookup_permission: Option<String>,
    /// How long an authenticated token and an allowed access stay cached [default: 30s]
    #[arg(long, env = "NAMEGATE_AUTH_CACHE_TTL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub auth_cache_ttl: Option<Duration>,
    /// How long a rejected token and a denied access stay cached [default: 5s]
    #[arg(long, env = "NAMEGATE_AUTH_NEGATIVE_CACHE_TTL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub auth_negative_cache_ttl: Option<Duration>,
    /// Most entries of each auth cache (tokens, access decisions) [default: 10000]
    #[arg(long, env = "NAMEGATE_AUTH_CACHE_MAX_ENTRIES")]
    pub auth_cache_max_entries: Option<usize>,
    /// Audience senders' tokens must be issued for (TokenReview `spec.audiences`), e.g. `namegate`;
    /// a token for the API server is then refused (docs/security.md) [default: none: the API server's]
    #[arg(long, env = "NAMEGATE_AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,
    /// PEM certificate chain for TLS on the ingestion port (with --tls-key-file); re-read when it changes [default: plain HTTP]
    #[arg(long, env = "NAMEGATE_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for TLS on the ingestion port (with --tls-cert-file)
    #[arg(long, env = "NAMEGATE_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// How often coalesced occurrence counts are written [default: 1s]
    #[arg(long, env = "NAMEGATE_FLUSH_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub flush_interval: Option<Duration>,
    /// Server-side timeout of each RR watch; a watch silent for this + 5 s is dead and the index stale
    /// until it is re-opened (docs/reliability.md) [default: 30s]
    #[arg(long, env = "NAMEGATE_INDEX_WATCH_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub index_watch_timeout: Option<Duration>,
    /// Deadline of one ingestion request; past it the answer is 503 [default: 15s]
    #[arg(long, env = "NAMEGATE_REQUEST_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub request_timeout: Option<Duration>,
    /// Time allowed to send request headers (slowloris protection) [default: 5s]
    #[arg(long, env = "NAMEGATE_HEADER_READ_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub header_read_timeout: Option<Duration>,
    /// Time allowed to send a request body, counted from the first byte after the headers: a slow body
    /// is cut off (408) and frees its concurrency slot long before the request deadline [default: 5s]
    #[arg(long, env = "NAMEGATE_BODY_READ_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub body_read_timeout: Option<Duration>,
    /// After SIGTERM, time /readyz reports 503 while still serving, so endpoints drop this pod [default: 5s]
    #[arg(long, env = "NAMEGATE_SHUTDOWN_DELAY", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub shutdown_delay: Option<Duration>,
    /// Time allowed for in-flight requests and the final flushes on shutdown [default: 20s]
    #[arg(long, env = "NAMEGATE_DRAIN_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub drain_timeout: Option<Duration>,
    /// Requests in flight before new ones are shed with 503 [default: 1024]
    #[arg(long, env = "NAMEGATE_MAX_CONCURRENCY")]
    pub max_concurrency: Option<usize>,
    /// Most alerts in one webhook [default: 1000]
    #[arg(long, env = "NAMEGATE_MAX_ALERTS_PER_BATCH")]
    pub max_alerts_per_batch: Option<usize>,
    /// Log format [default: json]
    #[arg(long, env = "NAMEGATE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter (tracing EnvFilter syntax; RUST_LOG wins) [default: info]
    #[arg(long, env = "NAMEGATE_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// OTLP/HTTP traces endpoint, e.g. http://otel-collector:4318/v1/traces [default: off]
    #[arg(long, env = "NAMEGATE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Which targets are admitted: `labelled` (kubernaut.ai/managed=true on the resolved resource or its namespace) or `all` [default: labelled]
    #[arg(long, env = "NAMEGATE_SCOPE", value_enum)]
    pub scope: Option<Scope>,
    /// Resolve targets through the API server (existence, controller owners, scope labels); `false` fingerprints the object as the signal names it and needs `scope: all` [default: true]
    #[arg(long, env = "NAMEGATE_RESOLVE_TARGETS")]
    pub resolve_targets: Option<bool>,
    /// How long an object's owner and scope label are cached [default: 60s]
    #[arg(long, env = "NAMEGATE_TARGET_CACHE_TTL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "humantime_serde")]
    pub target_cache_ttl: Option<Duration>,
    /// Most objects held by the owner-resolution cache [default: 16384]
    #[arg(long, env = "NAMEGATE_TARGET_CACHE_CAPACITY")]
    pub target_cache_capacity: Option<u64>,
    /// Fault injection for tests: freeze the RR index after its first sync. Never in production.
    #[arg(long, env = "NAMEGATE_FAULT_FREEZE_INDEX", hide = true)]
    pub fault_freeze_index: Option<bool>,
}

/// The resolved configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub health_listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub namespace: String,
    pub audit_url: String,
    pub audit_hmac_key_file: Option<PathBuf>,
    pub audit_token_file: PathBuf,
    pub audit_spill_path: PathBuf,
    pub audit_checkpoint_path: PathBuf,
    pub audit_spill_budget_bytes: u64,
    pub audit_queue_capacity: usize,
    pub audit_queue_budget_bytes: u64,
    pub auth: AuthMode,
    pub auth_service_name: String,
    pub auth_ingest_permission: Permission,
    pub auth_lookup_permission: Permission,
    pub auth_cache_ttl: Duration,
    pub auth_negative_cache_ttl: Duration,
    pub auth_cache_max_entries: usize,
    /// The audience TokenReviews ask for; `None`: the API server's own audiences.
    pub auth_audience: Option<String>,
    /// TLS on the ingestion port: (certificate chain, private key).
    pub tls: Option<(PathBuf, PathBuf)>,
    pub flush_interval: Duration,
    pub index_watch_timeout: Duration,
    pub request_timeout: Duration,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub shutdown_delay: Duration,
    pub drain_timeout: Duration,
    pub max_concurrency: usize,
    pub max_alerts_per_batch: usize,
    pub log_format: LogFormat,
    pub log_level: String,
    pub otlp_endpoint: Option<String>,
    pub fault_freeze_index: bool,
    pub scope: Scope,
    pub resolve_targets: bool,
    pub target_cache: CacheConfig,
}

/// How long an object found missing is remembered (a new object of that name may appear soon).
pub const TARGET_CACHE_MISSING_TTL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("{setting}: {detail}")]
    Invalid {
        setting: &'static str,
        detail: String,
    },
}

impl ConfigError {
    pub fn is_invalid(&self) -> bool {
        matches!(self, Self::Invalid { .. })
    }
    fn invalid(setting: &'static str, detail: impl Into<String>) -> Self {
        Self::Invalid {
            setting,
            detail: detail.into(),
        }
    }
}

macro_rules! overlay {
    ($hi:expr, $lo:expr; $($f:ident),+) => { Settings { $($f: $hi.$f.or($lo.$f)),+ } };
}

impl Settings {
    /// `self` (flags and env) over `file`.
    pub fn over(self, file: Settings) -> Settings {
        overlay!(self, file; listen, health_listen, metrics_listen, namespace, audit_url, audit_hmac_key_file, audit_token_file,
            audit_spill_path, audit_checkpoint_path, audit_spill_budget_bytes, audit_queue_capacity, audit_queue_budget_bytes,
            auth, auth_service_name, auth_ingest_permission, auth_lookup_permission, auth_cache_ttl,
            auth_negative_cache_ttl, auth_cache_max_entries, auth_audience, tls_cert_file, tls_key_file, flush_interval, index_watch_timeout,
            request_timeout, header_read_timeout, body_read_timeout, shutdown_delay, drain_timeout, max_concurrency,
            max_alerts_per_batch, log_format, log_level, otlp_endpoint, fault_freeze_index, scope,
            resolve_targets, target_cache_ttl, target_cache_capacity)
    }

    pub fn from_yaml(text: &str, path: PathBuf) -> Result<Settings, ConfigError> {
        serde_yaml_ng::from_str(text).map_err(|source| ConfigError::Parse { path, source })
    }
}

/// The pod's namespace, as Kubernetes mounts it for the service account.
fn pod_namespace() -> Option<String> {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
}

impl Config {
    /// Flags/env over the file (when `--config` names one) over defaults, validated.
    pub fn load(
        cli: Settings,
        config_file: Option<&std::path::Path>,
    ) -> Result<Config, ConfigError> {
        let file = match config_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Settings::from_yaml(&text, path.to_owned())?
            }
            None => Settings::default(),
        };
        Self::resolve(cli.over(file))
    }

    pub fn resolve(s: Settings) -> Result<Config, ConfigError> {
        let audit_url = s
            .audit_url
            .unwrap_or_else(|| "sqlite://namegate-audit.db".into());
        if !(audit_url.starts_with("sqlite://")
            || audit_url.starts_with("postgres://")
            || audit_url.starts_with("postgresql://"))
        {
            return Err(ConfigError::invalid(
                "audit-url",
                "must start with sqlite:// or postgres://",
            ));
        }
        let default_spill_dir = audit_url
            .strip_prefix("sqlite://")
            .map(|p| {
                std::path::Path::new(p)
                    .parent()
                    .map(|d| d.to_path_buf())
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        let namespace = s
            .namespace
            .or_else(pod_namespace)
            .unwrap_or_else(|| "default".into());
        if !crd_schema::name::is_dns1123_label(&namespace) {
            return Err(ConfigError::invalid(
                "namespace",
                format!("{namespace:?} is not a valid namespace name"),
            ));
        }
        let auth = s.auth.unwrap_or(AuthMode::Kubernetes);
        let tls = match (s.tls_cert_file, s.tls_key_file) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(ConfigError::invalid(
                    "tls-cert-file",
                    "tls-cert-file and tls-key-file go together",
                ));
            }
        };
        let auth_service_name = s.auth_service_name.unwrap_or_else(|| "namegate".into());
        if !crd_schema::name::is_dns1123_label(&auth_service_name) {
            return Err(ConfigError::invalid(
                "auth-service-name",
                format!("{auth_service_name:?} is not a valid Service name"),
            ));
        }
        // An empty audience is no audience (the chart's default value).
        let auth_audience = s.auth_audience.filter(|a| !a.is_empty());
        if let Some(a) = &auth_audience
            && (a.trim() != a || a.chars().any(char::is_control))
        {
            return Err(ConfigError::invalid(
                "auth-audience",
                format!("{a:?}: no surrounding spaces or control characters"),
            ));
        }
        let permission = |setting: &'static str, p: Option<String>, default: &str| {
            p.as_deref()
                .unwrap_or(default)
                .parse::<Permission>()
                .map_err(|e| ConfigError::invalid(setting, e))
        };
        let auth_ingest_permission = permission(
            "auth-ingest-permission",
            s.auth_ingest_permission,
            "create services",
        )?;
        let auth_lookup_permission = permission(
            "auth-lookup-permission",
            s.auth_lookup_permission,
            "get services/audit",
        )?;
        let positive = |setting: &'static str, d: Option<Duration>, default: Duration| match d
            .unwrap_or(default)
        {
            d if d.is_zero() => Err(ConfigError::invalid(setting, "must be greater than zero")),
            d => Ok(d),
        };
        let cfg = Config {
            listen: s
                .listen
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8080))),
            health_listen: s
                .health_listen
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8081))),
            metrics_listen: s
                .metrics_listen
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 9090))),
            namespace,
            audit_checkpoint_path: s.audit_checkpoint_path.unwrap_or_else(|| {
                s.audit_spill_path
                    .as_deref()
                    .and_then(std::path::Path::parent)
                    .unwrap_or(&default_spill_dir)
                    .join(crate::audit::checkpoint::CHECKPOINT_FILE_NAME)
            }),
            audit_spill_path: s
                .audit_spill_path
                .unwrap_or_else(|| default_spill_dir.join("audit-spill.jsonl")),
            audit_url,
            audit_hmac_key_file: s.audit_hmac_key_file,
            audit_token_file: s
                .audit_token_file
                .unwrap_or_else(|| PathBuf::from(DEFAULT_AUDIT_TOKEN_FILE)),
            audit_spill_budget_bytes: s.audit_spill_budget_bytes.unwrap_or(64 << 20),
            audit_queue_capacity: s.audit_queue_capacity.unwrap_or(16_384),
            audit_queue_budget_bytes: s.audit_queue_budget_bytes.unwrap_or(32 << 20),
            auth,
            auth_service_name,
            auth_ingest_permission,
            auth_lookup_permission,
            auth_cache_ttl: positive("auth-cache-ttl", s.auth_cache_ttl, Duration::from_secs(30))?,
            auth_negative_cache_ttl: positive(
                "auth-negative-cache-ttl",
                s.auth_negative_cache_ttl,
                Duration::from_secs(5),
            )?,
            auth_cache_max_entries: s.auth_cache_max_entries.unwrap_or(10_000),
            auth_audience,
            tls,
            flush_interval: positive("flush-interval", s.flush_interval, Duration::from_secs(1))?,
            index_watch_timeout: positive(
                "index-watch-timeout",
                s.index_watch_timeout,
                Duration::from_secs(30),
            )?,
            request_timeout: positive(
                "request-timeout",
                s.request_timeout,
                Duration::from_secs(15),
            )?,
            header_read_timeout: positive(
                "header-read-timeout",
                s.header_read_timeout,
                Duration::from_secs(5),
            )?,
            body_read_timeout: positive(
                "body-read-timeout",
                s.body_read_timeout,
                Duration::from_secs(5),
            )?,
            shutdown_delay: s.shutdown_delay.unwrap_or(Duration::from_secs(5)),
            drain_timeout: positive("drain-timeout", s.drain_timeout, Duration::from_secs(20))?,
            max_concurrency: s.max_concurrency.unwrap_or(1024),
            max_alerts_per_batch: s.max_alerts_per_batch.unwrap_or(1000),
            log_format: s.log_format.unwrap_or(LogFormat::Json),
            log_level: s.log_level.unwrap_or_else(|| "info".into()),
            otlp_endpoint: s.otlp_endpoint.filter(|e| !e.is_empty()),
            fault_freeze_index: s.fault_freeze_index.unwrap_or(false),
            scope: s.scope.unwrap_or(Scope::Labelled),
            resolve_targets: s.resolve_targets.unwrap_or(true),
            target_cache: CacheConfig {
                capacity: s.target_cache_capacity.unwrap_or(16_384),
                ttl: positive(
                    "target-cache-ttl",
                    s.target_cache_ttl,
                    Duration::from_secs(60),
                )?,
                missing_ttl: TARGET_CACHE_MISSING_TTL,
            },
        };
        if !cfg.resolve_targets && cfg.scope == Scope::Labelled {
            return Err(ConfigError::invalid(
                "scope",
                "`labelled` reads scope labels while resolving targets; with `resolve-targets: false` set `scope: all`",
            ));
        }
        if cfg.target_cache.capacity == 0 {
            return Err(ConfigError::invalid(
                "target-cache-capacity",
                "must be at least 1",
            ));
        }
        if cfg.auth_cache_max_entries == 0 {
            return Err(ConfigError::invalid(
                "auth-cache-max-entries",
                "must be at least 1",
            ));
        }
        if cfg.max_concurrency == 0 {
            return Err(ConfigError::invalid(
                "max-concurrency",
                "must be at least 1",
            ));
        }
        if cfg.max_alerts_per_batch == 0 {
            return Err(ConfigError::invalid(
                "max-alerts-per-batch",
                "must be at least 1",
            ));
        }
        if cfg.audit_queue_capacity < 2 {
            return Err(ConfigError::invalid(
                "audit-queue-capacity",
                "must be at least 2",
            ));
        }
        let ports = [cfg.listen, cfg.health_listen, cfg.metrics_listen];
        if ports[0] == ports[1] || ports[0] == ports[2] || ports[1] == ports[2] {
            return Err(ConfigError::invalid(
                "listen",
                "ingestion, health and metrics addresses must differ",
            ));
        }
        Ok(cfg)
    }
}

impl Config {
    /// The settings of `auth: kubernetes`: SubjectAccessReviews name the gateway's Service in its
    /// own namespace.
    pub fn auth_config(&self) -> crate::auth::AuthConfig {
        crate::auth::AuthConfig {
            namespace: self.namespace.clone(),
            resource_name: self.auth_service_name.clone(),
            ingest: self.auth_ingest_permission.clone(),
            lookup: self.auth_lookup_permission.clone(),
            ttl: self.auth_cache_ttl,
            negative_ttl: self.auth_negative_cache_ttl,
            max_entries: self.auth_cache_max_entries,
        }
    }
}

/// `host:port`, or `:port` for all interfaces (the default `:8081`, docs/operations.md).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_owned()
    };
    full.parse()
        .map_err(|_| format!("{s:?} is not host:port or :port"))
}

fn de_listen<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| parse_listen(&s).map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none_auth() -> Settings {
        Settings {
            auth: Some(AuthMode::None),
            namespace: Some("ns".into()),
            ..Settings::default()
        }
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = Config::resolve(none_auth()).unwrap();
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.health_listen, "0.0.0.0:8081".parse().unwrap());
        assert_eq!(c.metrics_listen, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(c.audit_url, "sqlite://namegate-audit.db");
        assert_eq!(c.flush_interval, Duration::from_secs(1));
        assert_eq!(c.request_timeout, Duration::from_secs(15));
        assert_eq!(c.max_alerts_per_batch, 1000);
        assert_eq!(c.scope, Scope::Labelled);
        assert!(c.resolve_targets);
        assert_eq!(c.target_cache.ttl, Duration::from_secs(60));
        assert_eq!(c.target_cache.capacity, 16_384);
        // Secure by default: TokenReview + SubjectAccessReview unless `auth: none` is explicit.
        let d = Config::resolve(Settings {
            namespace: Some("ns".into()),
            ..Settings::default()
        })
        .unwrap();
        assert_eq!(d.auth, AuthMode::Kubernetes);
        assert_eq!(d.auth_service_name, "namegate");
        assert_eq!(d.auth_ingest_permission.to_string(), "create services");
        assert_eq!(d.auth_lookup_permission.to_string(), "get services/audit");
        assert_eq!(d.auth_cache_ttl, Duration::from_secs(30));
        assert_eq!(d.auth_negative_cache_ttl, Duration::from_secs(5));
        assert_eq!(d.auth_cache_max_entries, 10_000);
        assert_eq!(d.auth_audience, None);
    }

    #[test]
    fn an_empty_audience_is_none_and_a_padded_one_is_refused() {
        let with = |a: &str| {
            Config::resolve(Settings {
                auth_audience: Some(a.into()),
                ..none_auth()
            })
        };
        assert_eq!(with("").unwrap().auth_audience, None);
        assert_eq!(
            with("namegate").unwrap().auth_audience.as_deref(),
            Some("namegate")
        );
        for bad in [" namegate", "name\ngate"] {
            let e = with(bad).unwrap_err();
            assert!(e.to_string().contains("auth-audience"), "{e}");
        }
    }

    #[test]
    fn unresolved_targets_need_scope_all() {
        let s = Settings {
            resolve_targets: Some(false),
            ..none_auth()
        };
        let err = Config::resolve(s.clone()).unwrap_err();
        assert!(err.to_string().starts_with("scope:"), "{err}");
        let c = Config::resolve(Settings {
            scope: Some(Scope::All),
            ..s
        })
        .unwrap();
        assert!(!c.resolve_targets);
        let file =
            Settings::from_yaml("scope: all\ntarget-cache-ttl: 2m\n", "f.yaml".into()).unwrap();
        assert_eq!(file.scope, Some(Scope::All));
        assert_eq!(file.target_cache_ttl, Some(Duration::from_secs(120)));
    }

    #[test]
    fn flags_win_over_the_file() {
        let file = Settings::from_yaml(
            "listen: \":7000\"\nflush-interval: 250ms\nnamespace: from-file\naudit-url: postgres://x/y\n",
            "f.yaml".into(),
        )
        .unwrap();
        let cli = Settings {
            listen: Some("127.0.0.1:9000".parse().unwrap()),
            ..none_auth()
        };
        let c = Config::resolve(cli.over(file)).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.flush_interval, Duration::from_millis(250));
        assert_eq!(c.namespace, "ns");
        assert_eq!(c.audit_url, "postgres://x/y");
    }

    #[test]
    fn invalid_settings_are_named() {
        let err = Settings::from_yaml("lisen: \":1\"\n", "f.yaml".into()).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        for (s, setting) in [
            (
                Settings {
                    auth_ingest_permission: Some("create".into()),
                    ..none_auth()
                },
                "auth-ingest-permission",
            ),
            (
                Settings {
                    tls_key_file: Some("k.pem".into()),
                    ..none_auth()
                },
                "tls-cert-file",
            ),
            (
                Settings {
                    auth_service_name: Some("Not A Name".into()),
                    ..none_auth()
                },
                "auth-service-name",
            ),
            (
                Settings {
                    namespace: Some("Not_Valid".into()),
                    ..none_auth()
                },
                "namespace",
            ),
            (
                Settings {
                    audit_url: Some("mysql://x".into()),
                    ..none_auth()
                },
                "audit-url",
            ),
            (
                Settings {
                    flush_interval: Some(Duration::ZERO),
                    ..none_auth()
                },
                "flush-interval",
            ),
            (
                Settings {
                    max_concurrency: Some(0),
                    ..none_auth()
                },
                "max-concurrency",
            ),
            (
                Settings {
                    metrics_listen: Some("0.0.0.0:8080".parse().unwrap()),
                    ..none_auth()
                },
                "listen",
            ),
        ] {
            match Config::resolve(s) {
                Err(ConfigError::Invalid { setting: got, .. }) => assert_eq!(got, setting),
                other => panic!("{setting}: expected an invalid-setting error, got {other:?}"),
            }
        }
        assert_eq!(
            parse_listen(":8081").unwrap(),
            "0.0.0.0:8081".parse().unwrap()
        );
        assert!(parse_listen("8081").is_err());
    }
}
