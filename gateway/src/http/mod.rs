//! The HTTP surface: the ingestion port (signals and audit lookups), the health port and the metrics
//! port.
//!
//! Layers of the ingestion router, outermost first — the order is the design:
//! 1. request ID (every response carries `X-Request-ID`);
//! 2. problem rendering (every error leaves as RFC 7807 with that ID, and is counted), then panic
//!    catching (a panicking handler answers a counted 500 problem, the process keeps serving);
//! 3. the server span (W3C `traceparent` accepted as its parent);
//! 4. readiness gate (503 until the index has synced, and while draining);
//! 5. load shedding (a concurrency limit that answers 503 + `Retry-After` at once — never 429, which
//!    Alertmanager does not retry — instead of queueing);
//! 6. the request deadline (503 when it passes);
//! 7. authentication (before any byte of the body is read);
//! 8. content type (415), then the handler reads the body under the one 256 KiB limit (413).

pub mod auth;
pub mod ingest;
pub mod problem;
pub mod request_id;
pub mod server;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::Semaphore;

use crate::index::RrIndex;
use crate::telemetry::metrics::Metrics;
use problem::Problem;

/// Whether this replica should receive traffic.
#[derive(Debug)]
pub struct Readiness {
    index: Arc<RrIndex>,
    /// Discovery and the namespace watch, when targets are resolved.
    resolver: Option<Arc<crate::resolve::Resolver>>,
    draining: AtomicBool,
}

impl Readiness {
    pub fn new(index: Arc<RrIndex>) -> Arc<Self> {
        Self::with_resolver(index, None)
    }

    pub fn with_resolver(
        index: Arc<RrIndex>,
        resolver: Option<Arc<crate::resolve::Resolver>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            index,
            resolver,
            draining: AtomicBool::new(false),
        })
    }

    pub fn is_ready(&self) -> bool {
        self.can_serve() && !self.draining.load(Ordering::Acquire)
    }

    /// Whether ingestion is answered: the index is fresh (and the resolver synced). Draining does not
    /// stop it — during the shutdown delay the replica keeps serving whoever still routes here.
    pub fn can_serve(&self) -> bool {
        self.index.is_synced() && self.resolver.as_ref().is_none_or(|r| r.is_synced())
    }

    /// Readiness drops first on shutdown, so endpoints stop routing here before requests are refused.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

#[derive(Clone, Debug)]
pub struct Limits {
    pub max_concurrency: usize,
    pub request_timeout: Duration,
}

/// The server span of a request, child of the caller's W3C trace context when one is sent.
async fn trace_span(req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let request_id = req
        .extensions()
        .get::<request_id::RequestId>()
        .cloned()
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        otel.kind = "server",
        http.request.method = %req.method(),
        http.route = %route,
        request_id = %request_id.as_str(),
        http.response.status_code = tracing::field::Empty,
    );
    crate::telemetry::accept_trace_context(&span, req.headers());
    let resp = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", resp.status().as_u16());
    resp
}

async fn readiness_gate(State(ready): State<Arc<Readiness>>, req: Request, next: Next) -> Response {
    if !ready.can_serve() {
        return Problem::unavailable(
            "this replica is not ready (RR index, API discovery or namespace watch not synced, or shutting down)",
            Duration::from_secs(1),
        )
        .into_response();
    }
    next.run(req).await
}

async fn shed_load(State(permits): State<Arc<Semaphore>>, req: Request, next: Next) -> Response {
    let Ok(_permit) = permits.try_acquire() else {
        return Problem::unavailable(
            "too many requests in flight on this replica",
            Duration::from_secs(1),
        )
        .into_response();
    };
    next.run(req).await
}

async fn deadline(State(timeout): State<Duration>, req: Request, next: Next) -> Response {
    // Admission bounds its own API calls by the same deadline; this is the backstop that guarantees
    // an answer, with a grace period so admission normally answers first.
    match tokio::time::timeout(timeout + Duration::from_secs(1), next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => Problem::unavailable("the request deadline passed", Duration::from_secs(1))
            .into_response(),
    }
}

async fn require_json(req: Request, next: Next) -> Response {
    if req.method() == Method::POST {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let is_json = ct
            .and_then(|ct| ct.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Problem::unsupported_media_type(ct).into_response();
        }
    }
    next.run(req).await
}

/// The ingestion router with all its layers.
pub fn ingestion_router(
    ingest: Arc<ingest::Ingest>,
    lookups: Router,
    readiness: Arc<Readiness>,
    auth: auth::Auth,
    limits: &Limits,
) -> Router {
    let metrics = ingest.pipeline.metrics().clone();
    let router = Router::new()
        .route("/api/v1/signals/prometheus", post(ingest::prometheus))
        .route(
            "/api/v1/signals/kubernetes-event",
            post(ingest::kubernetes_event),
        )
        .with_state(ingest)
        .merge(lookups)
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        .fallback(|| async { Problem::not_found() })
        .layer(middleware::from_fn(require_json))
        .layer(middleware::from_fn_with_state(auth, auth::layer))
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            deadline,
        ))
        .layer(middleware::from_fn_with_state(
            Arc::new(Semaphore::new(limits.max_concurrency)),
            shed_load,
        ))
        .layer(middleware::from_fn_with_state(readiness, readiness_gate))
        .layer(middleware::from_fn(trace_span));
    with_problem_layers(router, &metrics)
}

/// The outermost layers of the ingestion port, shared with tests: a panic in anything inside
/// becomes a counted 500 problem (2.), every problem is rendered and counted (1.), every answer
/// carries `X-Request-ID`.
pub fn with_problem_layers(router: Router, metrics: &Metrics) -> Router {
    // Both layers clone what they hold for every request: an `Arc` is one counter, where `Metrics`
    // itself is a few dozen (docs/benchmarks.md, "The writer on its own thread").
    let metrics = Arc::new(metrics.clone());
    let on_panic = {
        let metrics = metrics.clone();
        move |panic: Box<dyn std::any::Any + Send + 'static>| problem::panicked(&metrics, &*panic)
    };
    router
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .layer(middleware::from_fn_with_state(metrics, problem::render))
        .layer(middleware::from_fn(request_id::layer))
}

/// `/healthz` (the process serves), `/readyz` (it should receive traffic), and
/// `/debug/index/{fingerprint}`: what this replica's index holds for a fingerprint, so an operator can
/// see why a replica answers "duplicate" (the health port is not exposed through the Service).
pub fn health_router(readiness: Arc<Readiness>) -> Router {
    let index = readiness.index.clone();
    let debug = Router::new()
        .route(
            "/debug/index/{fingerprint}",
            get(
                |State(index): State<Arc<RrIndex>>,
                 axum::extract::Path(fp): axum::extract::Path<String>| async move {
                    match fp.parse::<crd_schema::Fingerprint>() {
                        Ok(fp) => axum::Json(serde_json::json!({
                            "synced": index.is_synced(),
                            "lookup": index.lookup(&fp, jiff::Timestamp::now()),
                            "entries": index.entries(&fp),
                        }))
                        .into_response(),
                        Err(_) => (
                            axum::http::StatusCode::BAD_REQUEST,
                            "not a fingerprint (64 lowercase hex)",
                        )
                            .into_response(),
                    }
                },
            ),
        )
        .with_state(index);
    Router::new()
        .merge(debug)
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(r): State<Arc<Readiness>>| async move {
                if r.is_ready() {
                    (axum::http::StatusCode::OK, "ready")
                } else {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
        .with_state(readiness)
}

/// `/metrics` in the Prometheus text format.
pub fn metrics_router(registry: Arc<prometheus_client::registry::Registry>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(
                |State(reg): State<Arc<prometheus_client::registry::Registry>>| async move {
                    let mut out = String::new();
                    match prometheus_client::encoding::text::encode(&mut out, &reg) {
                        Ok(()) => (
                            [(
                                header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            out,
                        )
                            .into_response(),
                        Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    }
                },
            ),
        )
        .with_state(registry)
}
