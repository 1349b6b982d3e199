//! The HTTP surface: the ingestion port (signals and audit lookups), the health port and the metrics
//! port.
//!
//! What every request of the ingestion port passes through before its handler, outermost first — the
//! order is the design. It is one middleware, [`edge`], a sequence of steps rather than a stack of
//! layers: axum clones a layer's whole inner stack and boxes it for every request, which cost the
//! duplicate path more CPU than these steps themselves (docs/benchmarks.md, "One edge middleware").
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

/// The gates of the ingestion port (steps 3–8 of the module docs), built once.
#[derive(Debug)]
struct Gates {
    readiness: Arc<Readiness>,
    /// Load shedding: one permit per request in flight.
    permits: Semaphore,
    request_timeout: Duration,
    auth: auth::Auth,
}

/// What [`edge`] holds: the metrics problems and panics are counted with, and the gates (`None` for
/// a router that only needs problems rendered, as in tests).
#[derive(Debug)]
struct Edge {
    metrics: Metrics,
    gates: Option<Gates>,
}

/// The ingestion port's one middleware: the steps of the module docs, in that order.
async fn edge(State(edge): State<Arc<Edge>>, mut req: Request, next: Next) -> Response {
    use futures::FutureExt;
    // 1. The request ID, on the request for handlers and audit events, and on every answer.
    let request_id = request_id::RequestId::of(req.headers());
    req.extensions_mut().insert(request_id.clone());
    // A `Uri` clone shares the bytes hyper parsed; the path is needed only to render a problem.
    let uri = req.uri().clone();
    let inner = async {
        match &edge.gates {
            Some(gates) => traced(gates, req, next).await,
            None => next.run(req).await,
        }
    };
    // 2. A panic anywhere inside becomes a counted 500 problem; the process keeps serving.
    let resp = match std::panic::AssertUnwindSafe(inner).catch_unwind().await {
        Ok(resp) => resp,
        Err(panic) => problem::panicked(&edge.metrics, &*panic),
    };
    // 2. Every problem is rendered here, with the path and the request ID, and counted.
    let mut resp = problem::render(resp, &edge.metrics, uri.path(), &request_id);
    request_id.stamp(&mut resp);
    resp
}

/// Step 3: the server span of the request, child of the caller's W3C trace context when one is
/// sent; the gates and the handler run inside it.
async fn traced(gates: &Gates, req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let span = {
        let route = req
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map_or("unmatched", |p| p.as_str());
        let request_id = req
            .extensions()
            .get::<request_id::RequestId>()
            .map_or("", |id| id.as_str());
        tracing::info_span!(
            "request",
            otel.kind = "server",
            http.request.method = %req.method(),
            http.route = %route,
            request_id = %request_id,
            http.response.status_code = tracing::field::Empty,
        )
    };
    crate::telemetry::accept_trace_context(&span, req.headers());
    let resp = gated(gates, req, next).instrument(span.clone()).await;
    span.record("http.response.status_code", resp.status().as_u16());
    resp
}

/// Steps 4–8: readiness, load shedding, the deadline, authentication, the content type.
async fn gated(gates: &Gates, mut req: Request, next: Next) -> Response {
    // 4. 503 until the index has synced (draining does not stop serving: `Readiness::can_serve`).
    if !gates.readiness.can_serve() {
        return Problem::unavailable(
            "this replica is not ready (RR index, API discovery or namespace watch not synced, or shutting down)",
            Duration::from_secs(1),
        )
        .into_response();
    }
    // 5. Shed at once (503 + Retry-After, never 429, which Alertmanager does not retry) instead of
    // queueing.
    let Ok(_permit) = gates.permits.try_acquire() else {
        return Problem::unavailable(
            "too many requests in flight on this replica",
            Duration::from_secs(1),
        )
        .into_response();
    };
    let guarded = async {
        // 7. Authentication, before any byte of the body is read.
        if let Err(refused) = auth::authenticate(&gates.auth, &mut req).await {
            return refused;
        }
        // 8. Content type; the handler reads the body under the one limit.
        if let Err(problem) = require_json(&req) {
            return problem.into_response();
        }
        next.run(req).await
    };
    // 6. The deadline. Admission bounds its own API calls by the same deadline; this is the backstop
    // that guarantees an answer, with a grace period so admission normally answers first.
    match tokio::time::timeout(gates.request_timeout + Duration::from_secs(1), guarded).await {
        Ok(resp) => resp,
        Err(_) => Problem::unavailable("the request deadline passed", Duration::from_secs(1))
            .into_response(),
    }
}

/// A POST must declare `application/json` (415 otherwise).
fn require_json(req: &Request) -> Result<(), Problem> {
    if req.method() != Method::POST {
        return Ok(());
    }
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let is_json = ct
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(Problem::unsupported_media_type(ct))
    }
}

/// The ingestion router with its edge.
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
        .fallback(|| async { Problem::not_found() });
    with_edge(
        router,
        Edge {
            metrics,
            gates: Some(Gates {
                readiness,
                permits: Semaphore::new(limits.max_concurrency),
                request_timeout: limits.request_timeout,
                auth,
            }),
        },
    )
}

/// The edge without the gates, shared with tests: a panic in anything inside becomes a counted 500
/// problem, every problem is rendered and counted, every answer carries `X-Request-ID`.
pub fn with_problem_layers(router: Router, metrics: &Metrics) -> Router {
    with_edge(
        router,
        Edge {
            metrics: metrics.clone(),
            gates: None,
        },
    )
}

fn with_edge(router: Router, edge: Edge) -> Router {
    // One layer: axum boxes and clones each layer's inner service per request.
    router.layer(middleware::from_fn_with_state(Arc::new(edge), self::edge))
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
