//! The HTTP surface that never reaches the API server: problems, limits, request IDs, readiness.
//! The router is the production one; the API server behind it is unreachable on purpose, so any
//! request that got as far as admission would fail these assertions.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use futures::StreamExt;
use http_body_util::BodyExt;
use kube::runtime::watcher;
use namegate::adapters::AdapterConfig;
use namegate::admission::Admission;
use namegate::apiserver::{Resilience, RrApi};
use namegate::audit::store::AuditStore;
use namegate::audit::writer::{AuditWriter, WriterConfig};
use namegate::http::{self, Readiness, auth::Auth, ingest::Ingest};
use namegate::index::RrIndex;
use namegate::occurrence::Occurrences;
use namegate::pipeline::Pipeline;
use namegate::telemetry::metrics::Metrics;
use serde_json::Value;
use tower::ServiceExt;

struct Fixture {
    router: Router,
    index: Arc<RrIndex>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let store = AuditStore::open(
        &format!("sqlite://{}", dir.path().join("a.db").display()),
        None,
    )
    .await
    .unwrap();
    let (sink, _writer) = AuditWriter::spawn(
        store.clone(),
        WriterConfig {
            spill_path: dir.path().join("spill.jsonl"),
            ..WriterConfig::default()
        },
        &mut registry,
    )
    .await
    .unwrap();
    // Port 9 (discard) on loopback: nothing listens, so an API call would fail, not hang.
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let index = RrIndex::new(metrics.clone(), false);
    let api = RrApi::new(client, "ns", metrics.clone(), Resilience::default());
    let ingest = Arc::new(Ingest {
        pipeline: Pipeline::new(
            Admission::new(
                index.clone(),
                api,
                Occurrences::new(metrics.clone()),
                "ns".into(),
            ),
            sink,
            metrics,
        ),
        adapters: AdapterConfig::default(),
        request_timeout: Duration::from_secs(2),
        body_read_timeout: BODY_READ_TIMEOUT,
    });
    let limits = http::Limits {
        max_concurrency: 8,
        request_timeout: Duration::from_secs(2),
    };
    let router = http::ingestion_router(
        ingest,
        namegate::audit::lookup::router(store),
        Readiness::new(index.clone()),
        Auth::None,
        &limits,
    );
    Fixture {
        router,
        index,
        _dir: dir,
    }
}

fn synced(f: &Fixture) {
    f.index.apply(watcher::Event::Init);
    f.index.apply(watcher::Event::InitDone);
}

async fn send(f: &Fixture, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let resp = f.router.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn post(path: &str, ct: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut b = Request::post(path);
    if let Some(ct) = ct {
        b = b.header("content-type", ct);
    }
    b.body(body.into()).unwrap()
}

fn assert_problem(
    status: StatusCode,
    headers: &axum::http::HeaderMap,
    body: &Value,
    expected: StatusCode,
) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert!(headers.contains_key("x-request-id"));
    for field in [
        "type",
        "title",
        "status",
        "detail",
        "instance",
        "request_id",
    ] {
        assert!(body.get(field).is_some(), "problem lacks {field}: {body}");
    }
    assert_eq!(body["status"], expected.as_u16());
    assert_eq!(
        body["request_id"],
        headers["x-request-id"].to_str().unwrap()
    );
}

const PROM: &str = "/api/v1/signals/prometheus";
const BODY_READ_TIMEOUT: Duration = Duration::from_millis(300);

/// A body that sends its first bytes and then stalls until the receiver gives up.
fn stalled_body() -> Body {
    stalled_body_reporting(None)
}

#[tokio::test]
async fn a_slow_body_is_cut_off_by_its_own_timeout_and_frees_its_slot() {
    let f = fixture().await;
    synced(&f);
    // As many stalled bodies as the replica has slots (8): each is cut off after the body timeout,
    // far from the 2 s request deadline, and answered 408.
    let started = tokio::time::Instant::now();
    let stalled = (0..8).map(|_| send(&f, post(PROM, Some("application/json"), stalled_body())));
    for (s, h, b) in futures::future::join_all(stalled).await {
        assert_problem(s, &h, &b, StatusCode::REQUEST_TIMEOUT);
        assert!(b["detail"].as_str().unwrap().contains("300 ms"), "{b}");
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "stalled bodies held their slots for {took:?}, not the body timeout"
    );
    // Their slots are free again: the next request reaches the adapter (400), not the shedder (503).
    let (s, _, _) = send(&f, post(PROM, Some("application/json"), "{}")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

/// A body whose first bytes come and the rest never does; it reports on `reading` when the handler
/// first reads it (the request is then past the shedder and holds one of the replica's slots).
fn stalled_body_reporting(reading: Option<tokio::sync::mpsc::UnboundedSender<()>>) -> Body {
    let first = futures::stream::once(async move {
        if let Some(reading) = reading {
            let _ = reading.send(());
        }
        Ok::<_, std::io::Error>(b"{\"alerts\":[".to_vec())
    });
    Body::from_stream(first.chain(futures::stream::pending()))
}

#[tokio::test]
async fn a_request_beyond_the_concurrency_limit_is_shed_at_once_with_a_503() {
    let f = fixture().await;
    synced(&f);
    let (reading, mut read) = tokio::sync::mpsc::unbounded_channel();
    // Every one of the 8 slots is held by a stalled body (answered 408 after the 300 ms body timeout)…
    let holders = futures::future::join_all((0..8).map(|_| {
        send(
            &f,
            post(
                PROM,
                Some("application/json"),
                stalled_body_reporting(Some(reading.clone())),
            ),
        )
    }));
    // …and while they are, a ninth request is refused before its body is read.
    let ninth = async {
        for _ in 0..8 {
            read.recv().await.unwrap();
        }
        send(&f, post(PROM, Some("application/json"), "{}")).await
    };
    let (held, (s, h, b)) = tokio::join!(holders, ninth);
    assert_problem(s, &h, &b, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        b["detail"]
            .as_str()
            .unwrap()
            .contains("too many requests in flight"),
        "{b}"
    );
    assert_eq!(h["retry-after"], "1");
    for (s, _, _) in held {
        assert_eq!(s, StatusCode::REQUEST_TIMEOUT);
    }
}

#[tokio::test]
async fn a_batch_that_expands_past_its_byte_budget_is_a_413() {
    let f = fixture().await;
    synced(&f);
    // 15 common annotations of 16 KiB (the per-value cap), then many tiny alerts: each alert would
    // carry all of them once merged. The request is refused before anything is admitted.
    let common: serde_json::Map<String, Value> = (0..15)
        .map(|i| (format!("a{i}"), Value::String("x".repeat(16 * 1024 - 64))))
        .collect();
    let alerts: Vec<Value> = (0..200)
        .map(|i| serde_json::json!({"labels": {"deployment": format!("d{i}")}}))
        .collect();
    let body = serde_json::json!({
        "version": "4",
        "commonLabels": {"alertname": "A", "namespace": "ns"},
        "commonAnnotations": common,
        "alerts": alerts,
    })
    .to_string();
    assert!(body.len() < 256 * 1024, "{} bytes", body.len());
    let (s, h, b) = send(&f, post(PROM, Some("application/json"), body)).await;
    assert_problem(s, &h, &b, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        b["detail"]
            .as_str()
            .unwrap()
            .contains("commonLabels and commonAnnotations are merged"),
        "{b}"
    );
}

#[tokio::test]
async fn not_ready_until_the_index_has_synced() {
    let f = fixture().await;
    let (s, h, b) = send(&f, post(PROM, Some("application/json"), "{}")).await;
    assert_problem(s, &h, &b, StatusCode::SERVICE_UNAVAILABLE);
    assert!(h.contains_key("retry-after"));
    synced(&f);
    let (s, _, _) = send(&f, post(PROM, Some("application/json"), "{}")).await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "once synced, the request reaches the adapter"
    );
}

#[tokio::test]
async fn content_type_must_be_json() {
    let f = fixture().await;
    synced(&f);
    for ct in [None, Some("text/plain"), Some("application/jsonx")] {
        let (s, h, b) = send(&f, post(PROM, ct, "{}")).await;
        assert_problem(s, &h, &b, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let (s, _, _) = send(
        &f,
        post(PROM, Some("Application/JSON; charset=utf-8"), "{}"),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn one_body_limit_before_parsing() {
    let f = fixture().await;
    synced(&f);
    let big = vec![b' '; 256 * 1024 + 1];
    let (s, h, b) = send(&f, post(PROM, Some("application/json"), big.clone())).await;
    assert_problem(s, &h, &b, StatusCode::PAYLOAD_TOO_LARGE);
    // Chunked (no Content-Length): cut off at the limit all the same.
    let stream = futures::stream::iter(
        big.chunks(4096)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let (s, h, b) = send(
        &f,
        post(PROM, Some("application/json"), Body::from_stream(stream)),
    )
    .await;
    assert_problem(s, &h, &b, StatusCode::PAYLOAD_TOO_LARGE);
    // Exactly at the limit the body is parsed (and is not JSON → 400, not 413).
    let (s, _, _) = send(
        &f,
        post(PROM, Some("application/json"), vec![b' '; 256 * 1024]),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn malformed_bodies_get_a_precise_400() {
    let f = fixture().await;
    synced(&f);
    let (s, h, b) = send(
        &f,
        post(
            PROM,
            Some("application/json"),
            r#"{"version":"4","alerts":"nope"}"#,
        ),
    )
    .await;
    assert_problem(s, &h, &b, StatusCode::BAD_REQUEST);
    assert!(b["detail"].as_str().unwrap().starts_with("alerts"), "{b}");
    let ev = r#"{"type":"Normal","reason":"Scheduled","involvedObject":{"kind":"Pod","name":"p","namespace":"n"}}"#;
    let (s, h, b) = send(
        &f,
        post(
            "/api/v1/signals/kubernetes-event",
            Some("application/json"),
            ev,
        ),
    )
    .await;
    assert_problem(s, &h, &b, StatusCode::BAD_REQUEST);
    assert!(b["detail"].as_str().unwrap().contains("type"), "{b}");
}

#[tokio::test]
async fn routing_errors_are_problems_and_request_ids_are_safe() {
    let f = fixture().await;
    synced(&f);
    let (s, h, b) = send(&f, Request::get("/nope").body(Body::empty()).unwrap()).await;
    assert_problem(s, &h, &b, StatusCode::NOT_FOUND);
    let (s, h, b) = send(&f, Request::get(PROM).body(Body::empty()).unwrap()).await;
    assert_problem(s, &h, &b, StatusCode::METHOD_NOT_ALLOWED);

    let req = Request::post(PROM)
        .header("content-type", "text/plain")
        .header("x-request-id", "am-42")
        .body(Body::empty());
    let (_, h, b) = send(&f, req.unwrap()).await;
    assert_eq!(h["x-request-id"], "am-42");
    assert_eq!(b["request_id"], "am-42");
    let req = Request::post(PROM)
        .header("content-type", "text/plain")
        .header("x-request-id", "a b\"c")
        .body(Body::empty());
    let (_, h, _) = send(&f, req.unwrap()).await;
    assert_ne!(
        h["x-request-id"], "a b\"c",
        "an unsafe client ID is replaced"
    );
}

#[tokio::test]
async fn an_unreachable_api_server_is_a_503_with_retry_after_never_a_429() {
    let f = fixture().await;
    synced(&f);
    let now = jiff::Timestamp::now().to_string();
    let alert = serde_json::json!({
        "version": "4", "status": "firing", "receiver": "r", "groupKey": "g", "truncatedAlerts": 0,
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
        "alerts": [{"status": "firing", "startsAt": now, "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "",
            "fingerprint": "1", "annotations": {},
            "labels": {"alertname": "A", "namespace": "n", "deployment": "d"}}]
    });
    let (s, h, b) = send(&f, post(PROM, Some("application/json"), alert.to_string())).await;
    assert_problem(s, &h, &b, StatusCode::SERVICE_UNAVAILABLE);
    assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert!(
        !b["detail"].as_str().unwrap().contains("127.0.0.1"),
        "no internal error text: {b}"
    );
}

fn encode(registry: &prometheus_client::registry::Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
    out
}

#[tokio::test]
async fn a_panicking_handler_answers_a_counted_problem_with_the_request_id() {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let router = http::with_problem_layers(
        Router::new()
            .route(
                "/boom",
                axum::routing::get(|| async {
                    if true {
                        panic!("handler bug with a secret in it");
                    }
                    "unreachable"
                }),
            )
            .fallback(|| async { http::problem::Problem::not_found() }),
        &metrics,
    );
    let resp = router
        .clone()
        .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body: Value = serde_json::from_slice(&body.collect().await.unwrap().to_bytes()).unwrap();
    assert_problem(
        parts.status,
        &parts.headers,
        &body,
        StatusCode::INTERNAL_SERVER_ERROR,
    );
    assert_eq!(
        body["request_id"].as_str(),
        parts.headers["x-request-id"].to_str().ok()
    );
    assert!(!body.to_string().contains("secret"), "{body}");
    let text = encode(&registry);
    assert!(
        text.contains("namegate_http_handler_panics_total 1"),
        "{text}"
    );
    assert!(
        text.contains("namegate_http_problems_total{status=\"500\"} 1"),
        "{text}"
    );
    // The router still serves after the panic.
    let again = router
        .oneshot(Request::get("/nothing").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    assert!(
        encode(&registry).contains("namegate_http_problems_total{status=\"404\"} 1"),
        "every problem answer is counted"
    );
}

#[tokio::test]
async fn an_unreachable_api_server_makes_authentication_answer_503_never_500() {
    use namegate::auth::{AuthConfig, Authenticator, review::KubeReviewer};
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    // Port 9 (discard) on loopback: the TokenReview cannot be made.
    let client =
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
    let auth = Authenticator::new(
        Arc::new(KubeReviewer::new(client, metrics.clone(), None)),
        AuthConfig {
            namespace: "ns".into(),
            resource_name: "namegate".into(),
            ingest: "create services".parse().unwrap(),
            lookup: "get services/audit".parse().unwrap(),
            ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(5),
            max_entries: 16,
        },
        Some(metrics.clone()),
    );
    let router =
        http::with_problem_layers(
            Router::new()
                .route(
                    "/api/v1/signals/prometheus",
                    axum::routing::post(|| async { "admitted" }),
                )
                .layer(axum::middleware::from_fn_with_state(
                    Auth::Kubernetes(Arc::new(auth)),
                    // Step 7 of the ingestion port's edge, alone.
                    |State(auth): State<Auth>,
                     mut req: Request<Body>,
                     next: axum::middleware::Next| async move {
                        match http::auth::authenticate(&auth, &mut req).await {
                            Ok(()) => next.run(req).await,
                            Err(refused) => refused,
                        }
                    },
                )),
            &metrics,
        );
    for _ in 0..2 {
        let resp = router
            .clone()
            .oneshot(
                Request::post("/api/v1/signals/prometheus")
                    .header("authorization", "Bearer some-token")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let body: Value =
            serde_json::from_slice(&body.collect().await.unwrap().to_bytes()).unwrap();
        assert_problem(
            parts.status,
            &parts.headers,
            &body,
            StatusCode::SERVICE_UNAVAILABLE,
        );
        assert!(parts.headers.contains_key("retry-after"));
    }
    // Not cached: each request tried again.
    let text = encode(&registry);
    assert!(
        text.contains("namegate_auth_cache_lookups_total{cache=\"token\",result=\"miss\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("namegate_apiserver_requests_total{verb=\"tokenreview\",code=\"error\"} 2"),
        "{text}"
    );
}
