//! kubernaut DataStorage as the audit store (docs/audit.md, "kubernaut DataStorage as the store"):
//! the writer against a small HTTP server, written here, that implements DataStorage's batch endpoint
//! contract — `POST /api/v1/audit/events/batch` (a JSON array; 201 with the event IDs it assigned; a
//! 400 RFC 7807 problem refusing the whole batch when one event is invalid; 401 without the bearer
//! token; 429/503 with `Retry-After`) and `GET /api/v1/audit/events?correlation_id=&limit=&offset=`
//! (`AuditEventsQueryResponse`: `data` newest first by `event_timestamp DESC, event_id DESC` — the
//! order of DataStorage's query builder — and `pagination {limit, offset, total, has_more}`; `limit`
//! 1–1000, default 50, `offset` ≥ 0, else 400). Outages are real: the server closes its listener and
//! every connection, then binds the port again. This fake is the only DataStorage the tests have (no
//! real kubernaut DataStorage runs in this project's test environment).
//!
//! The lookups (`namegate audit show`, `GET /api/v1/audit/correlations/{id}`) read DataStorage's query
//! API when it is the store: tested at the end of this file.
//!
//! DataStorage assigns event IDs itself and namegate's `event_id` is not on the wire, so the server's
//! rows are told apart by `event_data.n`, the number each test event carries (unique per event).
#![allow(clippy::unwrap_used)]

mod audit_support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use audit_support::{event, wait_until};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use namegate::audit::lookup;
use namegate::audit::store::{AuditStore, StoreConfig};
use namegate::audit::writer::{AuditMetrics, AuditSink, AuditWriter, WriterConfig, WriterHandle};
use namegate::audit::{AuditEvent, EventOutcome, EventType};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

const WAIT: Duration = Duration::from_secs(90);

/// What the fake DataStorage does with the next batch requests.
#[derive(Clone, Debug, Default)]
enum Mode {
    #[default]
    Normal,
    /// Answer `status` with `Retry-After: secs` to the next `left` batch requests.
    Throttle { status: u16, secs: u64, left: u32 },
    /// Store the next `left` batches, then answer 500 (the acknowledgement is lost).
    LoseAck { left: u32 },
}

#[derive(Debug, Default)]
struct Inner {
    mode: Mode,
    /// Stored rows, in arrival order, with the `event_id` the server assigned.
    rows: Vec<Value>,
    /// Every batch request: when, its `Authorization` header, its `event_data.n`s, the status answered.
    posts: Vec<(Instant, String, Vec<u64>, u16)>,
    /// The bearer token the server accepts.
    token: String,
    /// Answer queries with this status (and `Retry-After` seconds) instead.
    query_fails: Option<(u16, Option<u64>)>,
    /// Queries answered, with their `limit` and `offset`.
    queries: Vec<(usize, usize)>,
}

#[derive(Clone, Debug, Default)]
struct Fake(Arc<Mutex<Inner>>);

impl Fake {
    fn set_mode(&self, mode: Mode) {
        self.0.lock().unwrap().mode = mode;
    }
    fn set_token(&self, token: &str) {
        self.0.lock().unwrap().token = token.into();
    }
    /// `event_data.n` of the stored rows, in arrival order.
    fn stored_ns(&self) -> Vec<u64> {
        self.0
            .lock()
            .unwrap()
            .rows
            .iter()
            .filter_map(|r| r.pointer("/event_data/n").and_then(Value::as_u64))
            .collect()
    }
    fn posts(&self) -> Vec<(Instant, String, Vec<u64>, u16)> {
        self.0.lock().unwrap().posts.clone()
    }
    /// Stores rows as DataStorage's writer would (IDs and chain columns assigned here).
    fn insert(&self, rows: Vec<Value>) -> Vec<String> {
        store(&mut self.0.lock().unwrap(), rows)
    }
    fn fail_queries(&self, answer: Option<(u16, Option<u64>)>) {
        self.0.lock().unwrap().query_fails = answer;
    }
    fn queries(&self) -> Vec<(usize, usize)> {
        self.0.lock().unwrap().queries.clone()
    }
}

fn problem(status: StatusCode, detail: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        json!({ "type": "about:blank", "title": status.canonical_reason(), "status": status.as_u16(), "detail": detail })
            .to_string(),
    )
        .into_response()
}

fn authorised(fake: &Fake, headers: &HeaderMap) -> (bool, String) {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let ok = auth == format!("Bearer {}", fake.0.lock().unwrap().token);
    (ok, auth)
}

async fn batch(State(fake): State<Fake>, headers: HeaderMap, body: String) -> Response {
    let (ok, auth) = authorised(&fake, &headers);
    let Ok(Value::Array(events)) = serde_json::from_str::<Value>(&body) else {
        return problem(StatusCode::BAD_REQUEST, "request body must be a JSON array");
    };
    let ns: Vec<u64> = events
        .iter()
        .filter_map(|e| e.pointer("/event_data/n").and_then(Value::as_u64))
        .collect();
    let mut inner = fake.0.lock().unwrap();
    let answer = |status: u16, inner: &mut Inner| {
        inner
            .posts
            .push((Instant::now(), auth.clone(), ns.clone(), status));
    };
    if !ok {
        answer(401, &mut inner);
        return problem(StatusCode::UNAUTHORIZED, "token review failed");
    }
    if events.is_empty() || events.len() > 500 {
        answer(400, &mut inner);
        return problem(StatusCode::BAD_REQUEST, "batch-size-exceeded");
    }
    // DataStorage validates every event before storing any: one invalid event refuses the batch.
    if let Some(bad) = events
        .iter()
        .position(|e| e.pointer("/event_data/bad") == Some(&json!(true)))
    {
        answer(400, &mut inner);
        return problem(
            StatusCode::BAD_REQUEST,
            &format!("body[{bad}].event_data: invalid GatewayAuditPayload"),
        );
    }
    match inner.mode.clone() {
        Mode::Throttle { status, secs, left } if left > 0 => {
            inner.mode = Mode::Throttle {
                status,
                secs,
                left: left - 1,
            };
            answer(status, &mut inner);
            let status = StatusCode::from_u16(status).unwrap();
            let mut resp = problem(status, "slow down");
            resp.headers_mut()
                .insert(header::RETRY_AFTER, secs.to_string().parse().unwrap());
            return resp;
        }
        Mode::LoseAck { left } if left > 0 => {
            inner.mode = Mode::LoseAck { left: left - 1 };
            store(&mut inner, events);
            answer(500, &mut inner);
            return problem(StatusCode::INTERNAL_SERVER_ERROR, "acknowledgement lost");
        }
        _ => {}
    }
    let ids = store(&mut inner, events);
    answer(201, &mut inner);
    (
        StatusCode::CREATED,
        Json(json!({ "event_ids": ids, "message": format!("{} audit events created successfully", ids.len()) })),
    )
        .into_response()
}

/// Stores events as DataStorage does: a random v4 `event_id`, `event_date`, and the chain columns
/// (`previous_event_hash` the newest row's of the same correlation ID; the hash itself is not
/// DataStorage's, which these tests do not verify), legal hold off.
fn store(inner: &mut Inner, events: Vec<Value>) -> Vec<String> {
    use sha2::Digest;
    let mut ids = Vec::new();
    for mut e in events {
        let id = uuid::Uuid::new_v4().to_string();
        let cid = e["correlation_id"].clone();
        let prev = inner
            .rows
            .iter()
            .rev()
            .find(|r| r["correlation_id"] == cid)
            .map(|r| r["event_hash"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let hash = hex::encode(sha2::Sha256::digest(format!("{prev}{id}")));
        let ts: jiff::Timestamp = e["event_timestamp"].as_str().unwrap().parse().unwrap();
        e["event_id"] = json!(id);
        e["event_date"] = json!(ts.to_zoned(jiff::tz::TimeZone::UTC).date().to_string());
        e["event_hash"] = json!(hash);
        e["previous_event_hash"] = json!(prev);
        e["legal_hold"] = json!(false);
        inner.rows.push(e);
        ids.push(id);
    }
    ids
}

async fn query(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !authorised(&fake, &headers).0 {
        return problem(StatusCode::UNAUTHORIZED, "token review failed");
    }
    if let Some((status, retry)) = fake.0.lock().unwrap().query_fails {
        let mut resp = problem(StatusCode::from_u16(status).unwrap(), "query refused");
        if let Some(secs) = retry {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, secs.to_string().parse().unwrap());
        }
        return resp;
    }
    let cid = q.get("correlation_id").cloned().unwrap_or_default();
    let limit: i64 = match q.get("limit").map(|l| l.parse()) {
        None => 50,
        Some(Ok(l)) if (1..=1000).contains(&l) => l,
        Some(_) => return problem(StatusCode::BAD_REQUEST, "limit must be between 1 and 1000"),
    };
    let offset: i64 = match q.get("offset").map(|o| o.parse()) {
        None => 0,
        Some(Ok(o)) if o >= 0 => o,
        Some(_) => return problem(StatusCode::BAD_REQUEST, "offset must be non-negative"),
    };
    let (limit, offset) = (limit as usize, offset as usize);
    let mut inner = fake.0.lock().unwrap();
    inner.queries.push((limit, offset));
    let mut all: Vec<&Value> = inner
        .rows
        .iter()
        .filter(|r| r["correlation_id"] == json!(cid))
        .collect();
    // DataStorage's order: newest first, ties by event_id (both descending).
    let key = |r: &Value| {
        let ts: jiff::Timestamp = r["event_timestamp"].as_str().unwrap().parse().unwrap();
        (ts, r["event_id"].as_str().unwrap().to_owned())
    };
    all.sort_by_key(|r| std::cmp::Reverse(key(r)));
    let page: Vec<&Value> = all.iter().skip(offset).take(limit).copied().collect();
    Json(json!({
        "data": page,
        "pagination": { "limit": limit, "offset": offset, "total": all.len(), "has_more": offset + page.len() < all.len() },
    }))
    .into_response()
}

/// The fake DataStorage, listening on 127.0.0.1; `down()` closes the listener and every connection,
/// `up()` binds the same port again.
struct Server {
    fake: Fake,
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Server {
    async fn start(token: &str) -> Self {
        let fake = Fake::default();
        fake.set_token(token);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut s = Self {
            fake,
            addr,
            task: None,
        };
        s.serve(listener);
        s
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn serve(&mut self, listener: TcpListener) {
        let router = axum::Router::new()
            .route("/api/v1/audit/events/batch", post(batch))
            .route("/api/v1/audit/events", get(query))
            .with_state(self.fake.clone());
        self.task = Some(tokio::spawn(async move {
            // Connections live in this set: aborting the task drops it, which aborts them all.
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let svc = TowerToHyperService::new(router.clone());
                conns.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        }));
    }

    async fn down(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    async fn up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(Instant::now() < deadline, "rebinding {}: {e}", self.addr);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        self.serve(listener);
    }
}

struct Rig {
    server: Server,
    dir: tempfile::TempDir,
    token_file: PathBuf,
    sink: AuditSink,
    writer: WriterHandle,
}

async fn rig() -> Rig {
    audit_support::init_logging();
    let server = Server::start("token-1").await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "token-1\n").unwrap();
    let mut store_cfg = StoreConfig::new(server.url());
    store_cfg.token_file = Some(token_file.clone());
    store_cfg.acquire_timeout = Duration::from_millis(500);
    let store = AuditStore::open_with(&store_cfg).await.unwrap();
    let cfg = WriterConfig {
        batch_interval: Duration::from_millis(10),
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(300),
        spill_after: Duration::from_millis(500),
        probe_timeout: Duration::from_millis(500),
        insert_timeout: Duration::from_secs(5),
        ..WriterConfig::in_data_dir(dir.path())
    };
    let (sink, writer) = AuditWriter::spawn_with_metrics(store, cfg, AuditMetrics::default())
        .await
        .unwrap();
    Rig {
        server,
        dir,
        token_file,
        sink,
        writer,
    }
}

/// Events `from..to`, round-robin over five correlation IDs, through reservations as the request path
/// does.
fn send(sink: &AuditSink, sent: &mut Vec<AuditEvent>, from: u64, to: u64) {
    for n in from..to {
        let ev = event(&format!("rr-{}", n % 5), n, Some("uid-1"));
        sink.try_reserve(1)
            .expect("room in the queue")
            .send(ev.clone());
        sent.push(ev);
    }
}

/// Every sent event is stored exactly once, and per correlation ID in emission order.
fn assert_exactly_once_in_order(fake: &Fake, sent: &[AuditEvent]) {
    let stored = fake.stored_ns();
    let unique: HashSet<u64> = stored.iter().copied().collect();
    assert_eq!(unique.len(), stored.len(), "an event was stored twice");
    let want: HashSet<u64> = sent
        .iter()
        .filter_map(|e| e.event_data.to_value()["n"].as_u64())
        .collect();
    assert_eq!(unique, want, "stored vs sent");
    for cid in 0..5u64 {
        let order: Vec<u64> = stored.iter().copied().filter(|n| n % 5 == cid).collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "rr-{cid} out of order"
        );
    }
}

#[tokio::test]
async fn batches_carry_the_rotating_token_and_local_only_events_stay_out() {
    let r = rig().await;
    let mut sent = Vec::new();
    send(&r.sink, &mut sent, 0, 300);
    wait_until("the first 300 events", WAIT, || async {
        r.server.fake.stored_ns().len() == 300
    })
    .await;
    // The kubelet rotates the projected token in place: the next request carries the new one.
    std::fs::write(&r.token_file, "token-2\n").unwrap();
    r.server.fake.set_token("token-2");
    send(&r.sink, &mut sent, 300, 600);
    // namegate's own type: DataStorage's schema refuses it, so it is logged and counted, not sent.
    let mut own = AuditEvent::new(
        EventType::SignalRejected,
        EventOutcome::Failure,
        "request:x",
    );
    own.event_data = json!({ "event_type": "gateway.signal.rejected", "n": 10_000 }).into();
    r.sink.try_reserve(1).unwrap().send(own);
    let stats = r.writer.shutdown().await;
    assert_exactly_once_in_order(&r.server.fake, &sent);
    let posts = r.server.fake.posts();
    assert!(posts.iter().all(|p| p.3 == 201), "{posts:?}");
    assert!(posts.iter().all(|p| p.2.len() <= 500));
    assert!(posts.iter().any(|p| p.1 == "Bearer token-1"));
    assert_eq!(posts.last().unwrap().1, "Bearer token-2");
    assert_eq!(stats.local_only, 1, "{stats:?}");
    assert_eq!((stats.rejected, stats.dropped), (0, 0), "{stats:?}");
    assert_eq!(stats.written, 600, "{stats:?}");
}

#[tokio::test]
async fn a_refused_event_goes_to_the_rejected_file_once_and_the_rest_is_stored() {
    let r = rig().await;
    let mut sent = Vec::new();
    send(&r.sink, &mut sent, 0, 20);
    let mut bad = event("rr-bad", 20, None);
    bad.event_data.insert("bad", json!(true));
    r.sink.try_reserve(1).unwrap().send(bad.clone());
    send(&r.sink, &mut sent, 21, 50);
    let stats = r.writer.shutdown().await;
    assert_exactly_once_in_order(&r.server.fake, &sent);
    assert_eq!((stats.rejected, stats.dropped), (1, 0), "{stats:?}");
    // Refused with its batch, then alone; never again.
    let tries = r
        .server
        .fake
        .posts()
        .iter()
        .filter(|p| p.2.contains(&20))
        .count();
    assert!(
        (1..=2).contains(&tries),
        "the bad event was sent {tries} times"
    );
    let rejected =
        std::fs::read_to_string(r.dir.path().join("audit-spill.jsonl.rejected.jsonl")).unwrap();
    let lines: Vec<Value> = rejected
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{rejected}");
    assert_eq!(lines[0]["event"]["event_id"], json!(bad.event_id));
    let reason = lines[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("400") && reason.contains("invalid GatewayAuditPayload"),
        "{reason}"
    );
}

async fn honours_retry_after(status: u16) {
    let r = rig().await;
    r.server.fake.set_mode(Mode::Throttle {
        status,
        secs: 2,
        left: 1,
    });
    let mut sent = Vec::new();
    send(&r.sink, &mut sent, 0, 100);
    wait_until("all events stored", WAIT, || async {
        r.server.fake.stored_ns().len() == 100
    })
    .await;
    let posts = r.server.fake.posts();
    assert_eq!(posts[0].3, status, "{posts:?}");
    let gap = posts[1].0 - posts[0].0;
    assert!(
        gap >= Duration::from_secs(2),
        "retried after {gap:?}, before Retry-After"
    );
    let stats = r.writer.shutdown().await;
    assert_exactly_once_in_order(&r.server.fake, &sent);
    assert_eq!((stats.rejected, stats.dropped), (0, 0), "{stats:?}");
}

#[tokio::test]
async fn too_many_requests_honours_retry_after() {
    honours_retry_after(429).await;
}

#[tokio::test]
async fn service_unavailable_honours_retry_after() {
    honours_retry_after(503).await;
}

#[tokio::test]
async fn a_lost_acknowledgement_is_not_stored_twice() {
    let r = rig().await;
    r.server.fake.set_mode(Mode::LoseAck { left: 2 });
    let mut sent = Vec::new();
    send(&r.sink, &mut sent, 0, 400);
    let stats = r.writer.shutdown().await;
    let posts = r.server.fake.posts();
    assert_eq!(posts[0].3, 500, "{posts:?}");
    assert_exactly_once_in_order(&r.server.fake, &sent);
    assert!(stats.written >= 400, "{stats:?}");
    assert_eq!((stats.rejected, stats.dropped), (0, 0), "{stats:?}");
}

#[tokio::test]
async fn refused_credentials_spill_until_fixed() {
    let r = rig().await;
    r.server.fake.set_token("someone-else");
    let mut sent = Vec::new();
    send(&r.sink, &mut sent, 0, 50);
    wait_until("the batch spilled", WAIT, || async {
        r.sink.metrics().spilled.get() > 0
    })
    .await;
    assert!(r.server.fake.stored_ns().is_empty());
    r.server.fake.set_token("token-1");
    wait_until("the spill replayed", WAIT, || async {
        r.server.fake.stored_ns().len() == 50
    })
    .await;
    let stats = r.writer.shutdown().await;
    assert_exactly_once_in_order(&r.server.fake, &sent);
    assert_eq!((stats.rejected, stats.dropped), (0, 0), "{stats:?}");
    assert!(r.server.fake.posts().iter().any(|p| p.3 == 401));
}

/// DataStorage is gone for `NAMEGATE_AUDIT_OUTAGE_SECS` (default 30) seconds — listener closed, open
/// connections cut — while 500 events/s arrive. Nothing is lost, nothing stored twice, order per
/// correlation ID kept, and no request is refused (the spill holds the outage).
#[tokio::test]
#[ignore = "30 s outage; run with --include-ignored"]
async fn outage_under_load_loses_nothing_and_duplicates_nothing() {
    let outage = Duration::from_secs(
        std::env::var("NAMEGATE_AUDIT_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30),
    );
    let mut r = rig().await;
    let sink = r.sink.clone();
    let load_for = outage + Duration::from_secs(4);
    let producer = tokio::spawn(async move {
        let mut sent = Vec::new();
        let mut n = 0;
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        while started.elapsed() < load_for {
            tick.tick().await;
            send(&sink, &mut sent, n, n + 5);
            n += 5;
        }
        sent
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    r.server.down().await;
    let went_down = Instant::now();
    wait_until("events spilled", WAIT, || async {
        r.sink.metrics().spilled.get() > 0
    })
    .await;
    tokio::time::sleep(outage.saturating_sub(went_down.elapsed())).await;
    r.server.up().await;
    let sent = producer.await.unwrap();
    let want = sent.len();
    wait_until("every event stored", WAIT, || async {
        r.server.fake.stored_ns().len() >= want
    })
    .await;
    let stats = r.writer.shutdown().await;
    eprintln!(
        "datastorage outage {outage:?}: sent {want}, stored {}, spilled {}, replayed {}",
        r.server.fake.stored_ns().len(),
        stats.spilled,
        stats.replayed
    );
    assert_exactly_once_in_order(&r.server.fake, &sent);
    assert!(stats.replayed > 0, "{stats:?}");
    assert_eq!((stats.rejected, stats.dropped), (0, 0), "{stats:?}");
}

// ---- Lookups from DataStorage (docs/audit.md, "Lookups") ----

const FP: &str = "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12";

/// A DataStorage row as the batch endpoint receives it, `secs` after a fixed time (whole seconds, as
/// kubernaut's services send them, so several events share a second).
fn ds_row(cid: &str, secs: i64, n: u64, uid: &str, padding: usize) -> Value {
    let at = jiff::Timestamp::from_second(1_780_000_000 + secs).unwrap();
    json!({
        "version": "1.0",
        "event_type": "gateway.signal.deduplicated",
        "event_timestamp": at.to_string(),
        "event_category": "gateway",
        "event_action": "deduplicated",
        "event_outcome": "success",
        "correlation_id": cid,
        "actor_type": "external",
        "actor_id": "alertmanager",
        "resource_type": "RemediationRequest",
        "resource_id": format!("kubernaut-system/{cid}"),
        "namespace": "prod",
        "event_data": {
            "event_type": "gateway.signal.deduplicated",
            "signal_type": "alert",
            "signal_name": "HighMemory",
            "namespace": "prod",
            "fingerprint": FP,
            "rr_uid": uid,
            "n": n,
            "pad": "x".repeat(padding),
        },
    })
}

/// The fake's rows of `cid` in DataStorage's own order, oldest first: `(event_timestamp, event_id)`.
fn oldest_first(fake: &Fake, cid: &str) -> Vec<String> {
    let inner = fake.0.lock().unwrap();
    let mut rows: Vec<(jiff::Timestamp, String)> = inner
        .rows
        .iter()
        .filter(|r| r["correlation_id"] == json!(cid))
        .map(|r| {
            (
                r["event_timestamp"].as_str().unwrap().parse().unwrap(),
                r["event_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    rows.sort();
    rows.into_iter().map(|(_, id)| id).collect()
}

async fn ds_store(server: &Server, dir: &tempfile::TempDir, token: &str) -> AuditStore {
    audit_support::init_logging();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let mut cfg = StoreConfig::new(server.url());
    cfg.token_file = Some(token_file);
    cfg.acquire_timeout = Duration::from_millis(500);
    AuditStore::open_with(&cfg).await.unwrap()
}

/// Every page of `cid` with `limit`, calling `between` after each page.
async fn all_pages(
    store: &AuditStore,
    cid: &str,
    limit: u32,
    mut between: impl FnMut(usize),
) -> Vec<lookup::TrailPage> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = lookup::correlation_trail(store, cid, cursor.as_deref(), limit)
            .await
            .unwrap();
        between(pages.len());
        cursor = page.next_cursor.clone();
        pages.push(page);
        if cursor.is_none() {
            return pages;
        }
        assert!(pages.len() < 1000, "paging does not end");
    }
}

#[tokio::test]
async fn lookups_read_datastorage_oldest_first_in_pages_and_appends_do_not_disturb_them() {
    let server = Server::start("token-1").await;
    let dir = tempfile::tempdir().unwrap();
    // 40 events of rr-a, three per second (ties ordered by event_id, as DataStorage orders them),
    // two RR objects; other IDs' events around them. The RR object changes on a second boundary
    // (n = 18 starts second 6): event IDs are random, so within one second the order of the ties
    // is, and a change of object inside a second would make the grouping random too.
    let mut rows = Vec::new();
    for n in 0..40u64 {
        let uid = if n < 18 { "uid-1" } else { "uid-2" };
        rows.push(ds_row("rr-a", n as i64 / 3, n, uid, 0));
        rows.push(ds_row("rr-b", n as i64, 100 + n, "uid-9", 0));
    }
    server.fake.insert(rows);
    let store = ds_store(&server, &dir, "token-1").await;

    let fake = server.fake.clone();
    let pages = all_pages(&store, "rr-a", 7, |i| {
        // DataStorage keeps writing while the trail is paged: newer events of rr-a arrive.
        if i == 1 {
            fake.insert(vec![
                ds_row("rr-a", 100, 40, "uid-2", 0),
                ds_row("rr-a", 101, 41, "uid-2", 0),
            ]);
        }
    })
    .await;
    let events: Vec<&namegate::audit::store::StoredEvent> =
        pages.iter().flat_map(|p| p.events()).collect();
    let ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(
        ids,
        oldest_first(&server.fake, "rr-a"),
        "order or completeness"
    );
    assert_eq!(ids.len(), 42);
    assert!(
        pages
            .iter()
            .all(|p| p.count <= 7 && p.count == p.events().count())
    );
    // seq is the position in the trail; the columns DataStorage returns are mapped.
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=42).collect::<Vec<i64>>()
    );
    let first = events[0];
    assert_eq!(first.correlation_id, "rr-a");
    assert_eq!(first.event_type, "gateway.signal.deduplicated");
    assert_eq!(first.event_version, "1.0");
    assert_eq!(first.fingerprint.as_deref(), Some(FP));
    assert_eq!(first.actor_id.as_deref(), Some("alertmanager"));
    assert_eq!(first.resource_id.as_deref(), Some("kubernaut-system/rr-a"));
    // DataStorage's "" (first row of a chain) reads as no previous hash.
    let unlinked = events
        .iter()
        .filter(|e| e.previous_event_hash.is_none())
        .count();
    assert_eq!(unlinked, 1, "one first row of the chain");
    assert_eq!(first.event_hash.len(), 64);
    assert_eq!(first.hash_algorithm, "", "not in DataStorage's answer");
    assert_eq!(pages[0].resolved_ids, vec!["rr-a".to_owned()]);
    // Grouped by RR object within each page.
    let uids: Vec<Option<&str>> = pages
        .iter()
        .flat_map(|p| p.groups.iter().map(|g| g.rr_uid.as_deref()))
        .collect();
    assert!(
        uids.iter().all(|u| matches!(u, Some("uid-1" | "uid-2"))),
        "{uids:?}"
    );
    let page3 = pages
        .iter()
        .find(|p| p.events().any(|e| e.seq == 18))
        .unwrap();
    assert_eq!(
        page3.groups.len(),
        2,
        "uid-1 ends at 18, uid-2 starts at 19"
    );
    // No request asked DataStorage for more than one chunk of events plus the overlap.
    let queries = server.fake.queries();
    assert!(queries.iter().all(|(limit, _)| *limit <= 17), "{queries:?}");
}

#[tokio::test]
async fn a_page_of_large_datastorage_events_ends_at_the_byte_bound() {
    let server = Server::start("token-1").await;
    let dir = tempfile::tempdir().unwrap();
    // 30 events of 300 KiB each (DataStorage takes up to 256 KiB of event_data; the bound is what
    // matters here): 9 MB in all, more than two pages of 4 MiB.
    let rows = (0..30u64)
        .map(|n| ds_row("rr-big", n as i64, n, "uid-1", 300 * 1024))
        .collect();
    server.fake.insert(rows);
    let store = ds_store(&server, &dir, "token-1").await;
    let pages = all_pages(&store, "rr-big", lookup::MAX_LIMIT, |_| {}).await;
    assert!(pages.len() >= 3, "{} pages", pages.len());
    for p in &pages {
        let bytes: usize = p.events().map(|e| e.event_data.to_string().len()).sum();
        assert!(p.count >= 1);
        assert!(bytes <= lookup::MAX_PAGE_BYTES, "a page of {bytes} bytes");
    }
    let ids: Vec<String> = pages
        .iter()
        .flat_map(|p| p.events().map(|e| e.event_id.to_string()))
        .collect();
    assert_eq!(ids, oldest_first(&server.fake, "rr-big"));
}

async fn http_get(router: &axum::Router, uri: &str) -> Response {
    use tower::ServiceExt;
    router
        .clone()
        .oneshot(
            axum::http::Request::get(uri)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap()
}

async fn json_body(resp: Response) -> Value {
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn problem_of(resp: &Response) -> &namegate::http::problem::Problem {
    resp.extensions()
        .get::<namegate::http::problem::Problem>()
        .expect("a problem answer")
}

#[tokio::test]
async fn the_lookup_route_and_audit_show_read_datastorage() {
    let mut server = Server::start("token-1").await;
    let dir = tempfile::tempdir().unwrap();
    server.fake.insert(
        (0..12u64)
            .map(|n| ds_row("rr-a", n as i64, n, "uid-1", 0))
            .collect(),
    );
    let store = ds_store(&server, &dir, "token-1").await;
    let router = lookup::router(store.clone());

    let resp = http_get(&router, "/api/v1/audit/correlations/rr-a?limit=5").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let page = json_body(resp).await;
    assert_eq!(page["count"], json!(5));
    assert_eq!(page["groups"][0]["rr_uid"], json!("uid-1"));
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let resp = http_get(
        &router,
        &format!("/api/v1/audit/correlations/rr-a?limit=100&cursor={cursor}"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let rest = json_body(resp).await;
    assert_eq!(rest["count"], json!(7));
    assert_eq!(rest["next_cursor"], Value::Null);
    assert_eq!(rest["groups"][0]["events"][0]["seq"], json!(6));

    // No events: 404. A cursor this API did not return (or the SQL stores' form): 400.
    let resp = http_get(&router, "/api/v1/audit/correlations/rr-none").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    for bad in ["x", "2025-01-17T18:32:01.123456Z~42", "ds~0~x", "ds~3"] {
        let resp = http_get(
            &router,
            &format!("/api/v1/audit/correlations/rr-a?cursor={bad}"),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    // A cursor whose event is no longer where it was (an older event arrived late): 400, restart.
    server.fake.insert(vec![ds_row("rr-a", -5, 99, "uid-1", 0)]);
    let resp = http_get(
        &router,
        &format!("/api/v1/audit/correlations/rr-a?cursor={cursor}"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(problem_of(&resp).detail.contains("start again"));

    // `namegate audit show` against DataStorage, with its token file.
    let mut out = Vec::new();
    namegate::audit::cli::show_with(
        &server.url(),
        Some(&dir.path().join("token")),
        "rr-a",
        &mut out,
    )
    .await
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.starts_with("audit trail of rr-a"), "{out}");
    assert!(out.contains("RR object uid uid-1:"), "{out}");
    assert!(out.trim_end().ends_with("13 event(s)"), "{out}");
    let err = namegate::audit::cli::show_with(
        &server.url(),
        Some(&dir.path().join("token")),
        "rr-none",
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(err.is_not_found(), "{err}");

    // Upstream conditions never answer 500: unavailable → 503 with DataStorage's Retry-After (or
    // 5 s), refused credentials → 502 of their own type, an unusable answer → 502.
    for (status, retry, want, kind, after) in [
        (503, Some(7), 503, "unavailable", Some(7)),
        (429, Some(3), 503, "unavailable", Some(3)),
        (500, None, 503, "unavailable", Some(5)),
        (401, None, 502, "audit-store-credentials-refused", None),
        (403, None, 502, "audit-store-credentials-refused", None),
        (400, None, 502, "audit-store-bad-answer", None),
    ] {
        server.fake.fail_queries(Some((status, retry)));
        let resp = http_get(&router, "/api/v1/audit/correlations/rr-a").await;
        assert_eq!(
            resp.status().as_u16(),
            want,
            "DataStorage answered {status}"
        );
        let p = problem_of(&resp);
        assert_eq!(p.kind, kind, "DataStorage answered {status}");
        assert_eq!(p.retry_after, after.map(Duration::from_secs), "{status}");
    }
    server.fake.fail_queries(None);
    let token_file = dir.path().join("token");
    namegate::audit::cli::show_with(&server.url(), Some(&token_file), "rr-a", &mut Vec::new())
        .await
        .unwrap();
    // DataStorage gone: 503.
    server.down().await;
    let resp = http_get(&router, "/api/v1/audit/correlations/rr-a").await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(problem_of(&resp).retry_after.is_some());
}

#[tokio::test]
async fn verify_against_datastorage_points_to_its_own_verification() {
    let server = Server::start("token-1").await;
    let dir = tempfile::tempdir().unwrap();
    let store = ds_store(&server, &dir, "token-1").await;
    let err = store.verify().await.unwrap_err();
    assert!(err.to_string().contains("verify-chain"), "{err}");
}
