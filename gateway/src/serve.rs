//! `namegate serve`: wires the parts together and runs them until SIGTERM.
//!
//! Shutdown order (each step waits for the previous one): readiness drops (endpoints stop routing
//! here) → `shutdown-delay` while still serving → stop accepting and drain in-flight requests →
//! final occurrence flush → audit writer flush → exit. Nothing acknowledged is lost on SIGTERM.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::adapters::AdapterConfig;
use crate::admission::Admission;
use crate::apiserver::{Resilience, RrApi};
use crate::audit;
use crate::config::Config;
use crate::http::{self, Readiness, ingest::Ingest};
use crate::index::RrIndex;
use crate::occurrence::{Flusher, Occurrences};
use crate::pipeline::Pipeline;
use crate::resolve::{ResolveMetrics, Resolver};
use crate::telemetry::{self, metrics::Metrics};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("telemetry: {0}")]
    Telemetry(#[from] telemetry::TelemetryError),
    #[error("Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("audit store: {0}")]
    Audit(#[from] audit::store::StoreError),
    #[error("audit writer: {0}")]
    AuditWriter(String),
    #[error("binding {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] http::tls::TlsError),
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
}

async fn bind(what: &'static str, addr: std::net::SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { what, addr, source })
}

pub async fn run(cfg: Config) -> Result<(), ServeError> {
    let _telemetry = telemetry::init(cfg.log_format, &cfg.log_level, cfg.otlp_endpoint.as_deref())?;
    tracing::info!(namespace = %cfg.namespace, listen = %cfg.listen, audit = %redact(&cfg.audit_url), "starting namegate");

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let client = kube::Client::try_default().await?;

    let mut store_cfg = audit::store::StoreConfig::new(&cfg.audit_url).with_checkpoints(
        &cfg.audit_checkpoint_path,
        audit::checkpoint::DEFAULT_INTERVAL,
    );
    store_cfg.hmac_key_file = cfg.audit_hmac_key_file.clone();
    store_cfg.token_file = Some(cfg.audit_token_file.clone());
    // This store serves the lookup API (and applies the migrations); the writer opens its own on its
    // own thread and runtime, where its pool's connections are driven (docs/audit.md, "The writer's
    // thread"). Only the writer appends, so only its store keeps chain-head checkpoints.
    let store = audit::store::AuditStore::open_with(&audit::store::StoreConfig {
        checkpoint_path: None,
        ..store_cfg.clone()
    })
    .await?;
    let writer_cfg = audit::writer::WriterConfig {
        queue_capacity: cfg.audit_queue_capacity,
        queue_budget_bytes: cfg.audit_queue_budget_bytes,
        spill_path: cfg.audit_spill_path.clone(),
        spill_budget_bytes: cfg.audit_spill_budget_bytes,
        ..audit::writer::WriterConfig::default()
    };
    let (sink, writer) = audit::writer::AuditWriter::spawn_dedicated(
        store_cfg.without_migrations(),
        writer_cfg,
        audit::writer::AuditMetrics::register(&mut registry),
    )
    .await
    .map_err(|e| ServeError::AuditWriter(e.to_string()))?;

    let background = CancellationToken::new();
    let index = RrIndex::new(metrics.clone(), cfg.fault_freeze_index);
    let index_task = tokio::spawn(index.clone().run(
        client.clone(),
        cfg.namespace.clone(),
        cfg.index_watch_timeout,
        background.clone(),
    ));

    let api = RrApi::new(
        client.clone(),
        &cfg.namespace,
        metrics.clone(),
        Resilience::default(),
    );
    let occurrences = Occurrences::new(metrics.clone());
    let flusher = Flusher::new(
        occurrences.clone(),
        // Its own API handle and breaker: slow status writes must not open the breaker that admission's
        // creates depend on.
        RrApi::new(
            client.clone(),
            &cfg.namespace,
            metrics.clone(),
            Resilience::default(),
        ),
        metrics.clone(),
        cfg.flush_interval,
    );
    let flush_stop = CancellationToken::new();
    let flusher_task = tokio::spawn(flusher.run(flush_stop.clone(), cfg.drain_timeout));

    let labels = crate::adapters::LabelTable::default();
    let (resolver, resolve_tasks) = if cfg.resolve_targets {
        let resolve_metrics = ResolveMetrics::register(&mut registry);
        let (kinds, namespaces, tasks) =
            crate::resolve::spawn_watches(&client, labels.clone(), &background);
        let resolver = Resolver::new(
            client.clone(),
            kinds,
            namespaces,
            cfg.scope,
            cfg.target_cache,
            resolve_metrics,
        );
        (Some(Arc::new(resolver)), tasks)
    } else {
        (None, Vec::new())
    };
    let readiness = Readiness::with_resolver(index.clone(), resolver.clone());
    let ingest = Arc::new(Ingest {
        pipeline: Pipeline::new(
            Admission::new(index.clone(), api, occurrences, cfg.namespace.clone()),
            sink,
            metrics.clone(),
        )
        .with_resolver(resolver),
        adapters: AdapterConfig {
            max_alerts_per_batch: cfg.max_alerts_per_batch,
            extra_resource_labels: labels,
            ..AdapterConfig::default()
        },
        request_timeout: cfg.request_timeout,
        body_read_timeout: cfg.body_read_timeout,
    });
    let limits = http::Limits {
        max_concurrency: cfg.max_concurrency,
        request_timeout: cfg.request_timeout,
    };
    let auth = match cfg.auth {
        crate::auth::AuthMode::None => {
            tracing::warn!("auth: none — every caller is accepted as anonymous");
            http::auth::Auth::None
        }
        crate::auth::AuthMode::Kubernetes => {
            http::auth::Auth::Kubernetes(Arc::new(crate::auth::Authenticator::new(
                Arc::new(crate::auth::review::KubeReviewer::new(
                    client.clone(),
                    metrics.clone(),
                    cfg.auth_audience.clone(),
                )),
                cfg.auth_config(),
                Some(metrics.clone()),
            )))
        }
    };
    let ingestion = http::ingestion_router(
        ingest,
        audit::lookup::router(store.clone()),
        readiness.clone(),
        auth,
        &limits,
    );

    let tls = match &cfg.tls {
        Some((cert, key)) => Some(http::tls::acceptor(cert, key)?),
        None => None,
    };
    let ingest_listener = bind("ingestion", cfg.listen).await?;
    let health_listener = bind("health", cfg.health_listen).await?;
    let metrics_listener = bind("metrics", cfg.metrics_listen).await?;

    let stop_ingest = CancellationToken::new();
    let ingest_task = tokio::spawn(http::server::serve_with_tls(
        ingest_listener,
        tls,
        ingestion,
        cfg.header_read_timeout,
        stop_ingest.clone(),
        cfg.drain_timeout,
    ));
    let aux_task = {
        let stop = background.clone();
        let health = http::health_router(readiness.clone());
        let metrics_router = http::metrics_router(Arc::new(registry));
        let timeout = cfg.header_read_timeout;
        tokio::spawn(async move {
            tokio::join!(
                http::server::serve(
                    health_listener,
                    health,
                    timeout,
                    stop.clone(),
                    std::time::Duration::from_secs(1)
                ),
                http::server::serve(
                    metrics_listener,
                    metrics_router,
                    timeout,
                    stop,
                    std::time::Duration::from_secs(1)
                ),
            )
        })
    };
    tracing::info!("serving; /readyz turns ready once the RR index has synced");

    wait_for_termination().await?;
    tracing::info!(delay = ?cfg.shutdown_delay, "shutting down: readiness dropped");
    readiness.start_draining();
    tokio::time::sleep(cfg.shutdown_delay).await;
    stop_ingest.cancel();
    let _ = ingest_task.await;
    tracing::info!("in-flight requests drained; flushing occurrences");
    flush_stop.cancel();
    let _ = flusher_task.await;
    tracing::info!("flushing the audit trail");
    // Also closes the writer's store, which writes its pending chain-head checkpoint.
    writer.shutdown().await;
    background.cancel();
    let _ = tokio::join!(
        index_task,
        aux_task,
        futures::future::join_all(resolve_tasks)
    );
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_termination() -> Result<(), ServeError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Signal)?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}

/// The audit URL without a password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redact("sqlite://a.db"), "sqlite://a.db");
    }
}
