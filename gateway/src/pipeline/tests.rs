//! The pipeline driven against a scripted, in-process API server (a `tower` service behind a real
//! `kube::Client`): every branch after a `409 AlreadyExists`, and when audit events are queued.
//! The real API server's behaviour is covered by the `e2e_*` tests; these pin the decisions.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use crd_schema::name::{self, Attempt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::*;
use crate::admission::{Admission, build_rr};
use crate::apiserver::{Resilience, RrApi};
use crate::audit::store::AuditStore;
use crate::audit::writer::{AuditWriter, WriterConfig, WriterHandle};
use crate::index::RrIndex;
use crate::occurrence::{Flusher, Occurrences};

const NS: &str = "ns";
const BASE: &str = "/apis/kubernaut.ai/v1alpha1/namespaces/ns/remediationrequests";

/// What the scripted API server answers to a request body.
type Answer = Box<dyn Fn(&Value) -> (StatusCode, Value) + Send>;

/// One expected API call and the answer the scripted API server gives.
struct Step {
    method: &'static str,
    /// The path after `BASE` ("" for the collection, "/<name>" for an object).
    path: String,
    answer: Answer,
}

fn step(
    method: &'static str,
    path: impl Into<String>,
    answer: impl Fn(&Value) -> (StatusCode, Value) + Send + 'static,
) -> Step {
    Step {
        method,
        path: path.into(),
        answer: Box::new(answer),
    }
}

/// A scripted API server: calls must come in the scripted order; anything else fails the test.
#[derive(Clone, Default)]
struct Script {
    steps: Arc<Mutex<VecDeque<Step>>>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Script {
    fn new(steps: Vec<Step>) -> Self {
        Self {
            steps: Arc::new(Mutex::new(steps.into())),
            seen: Arc::default(),
        }
    }

    fn client(&self) -> kube::Client {
        let script = self.clone();
        let svc = tower::service_fn(move |req: Request<kube::client::Body>| {
            let script = script.clone();
            async move {
                let method = req.method().to_string();
                let path = req.uri().path().to_owned();
                let body = req.into_body().collect().await?.to_bytes();
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                script.seen.lock().unwrap().push(format!("{method} {path}"));
                let next = script.steps.lock().unwrap().pop_front();
                let (status, answer) = match next {
                    Some(s) if s.method == method && format!("{BASE}{}", s.path) == path => {
                        (s.answer)(&body)
                    }
                    Some(s) => panic!(
                        "unexpected call {method} {path}; expected {} {BASE}{}",
                        s.method, s.path
                    ),
                    None => panic!("unexpected call {method} {path}; the script is done"),
                };
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                    Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(answer.to_string())))
                        .unwrap(),
                )
            }
        });
        kube::Client::new(svc, NS)
    }

    fn remaining(&self) -> usize {
        self.steps.lock().unwrap().len()
    }

    fn calls(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": reason, "reason": reason, "code": code})
}

fn already_exists() -> (StatusCode, Value) {
    (StatusCode::CONFLICT, status(409, "AlreadyExists"))
}

/// A merge patch applied as the API server would: `patch` merged into `object`, a new resourceVersion.
fn merged(object: &Value, patch: &Value) -> Value {
    fn merge(into: &mut Value, patch: &Value) {
        match (into, patch) {
            (Value::Object(into), Value::Object(patch)) => {
                for (k, v) in patch {
                    merge(into.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
            (into, patch) => *into = patch.clone(),
        }
    }
    let mut v = object.clone();
    merge(&mut v, patch);
    v["metadata"]["resourceVersion"] = json!("101");
    v
}

/// The created object as the API server returns it: the request plus uid and resourceVersion.
fn created(body: &Value) -> (StatusCode, Value) {
    let mut rr = body.clone();
    rr["metadata"]["uid"] = json!("11111111-1111-1111-1111-111111111111");
    rr["metadata"]["resourceVersion"] = json!("100");
    (StatusCode::CREATED, rr)
}

fn signal() -> Signal {
    Signal::sample("2026-11-29T12:00:00Z".parse().unwrap())
}

/// The RR of `attempt` as a GET returns it, with `status` and metadata changes applied.
fn existing(s: &Signal, attempt: u32, status: Value, meta: Value) -> Value {
    let rr = build_rr(s, Attempt::new(attempt).unwrap());
    let mut v = serde_json::to_value(&rr).unwrap();
    v["metadata"]["uid"] = json!(format!("22222222-2222-2222-2222-2222222222{attempt:02}"));
    v["metadata"]["resourceVersion"] = json!("50");
    if let (Some(m), Some(extra)) = (v["metadata"].as_object_mut(), meta.as_object()) {
        m.extend(extra.clone());
    }
    v["status"] = status;
    v
}

fn terminal() -> Value {
    json!({"overallPhase": "Completed", "completionStatus": {"outcome": "Remediated"}})
}

fn rr_path(s: &Signal, attempt: u32) -> String {
    format!(
        "/{}",
        name::name(&s.fingerprint, Attempt::new(attempt).unwrap())
    )
}

struct Fixture {
    pipeline: Pipeline,
    /// Writes the pipeline's occurrences to the scripted API server (`flush`).
    flusher: Flusher,
    occurrences: Arc<Occurrences>,
    store: AuditStore,
    writer: WriterHandle,
    script: Script,
    _dir: tempfile::TempDir,
}

async fn fixture(steps: Vec<Step>) -> Fixture {
    fixture_with(steps, Resilience::default()).await
}

/// The admission's API client uses `resilience` (its retry timing always fast); the flusher has a
/// client of its own, so a breaker opened by the admission does not stop the flusher.
/// A fixture whose breaker opens at the first failure: a create whose answer is lost is answered
/// 503 at once instead of being re-read.
async fn fixture_giving_up_at_once(steps: Vec<Step>) -> Fixture {
    let resilience = Resilience {
        breaker_threshold: 1,
        breaker_cooldown: Duration::from_secs(3600),
        ..Resilience::default()
    };
    fixture_with(steps, resilience).await
}

async fn fixture_with(steps: Vec<Step>, resilience: Resilience) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let store = AuditStore::open(
        &format!("sqlite://{}", dir.path().join("a.db").display()),
        None,
    )
    .await
    .unwrap();
    let (sink, writer) = AuditWriter::spawn(
        store.clone(),
        WriterConfig {
            spill_path: dir.path().join("spill.jsonl"),
            ..WriterConfig::default()
        },
        &mut registry,
    )
    .await
    .unwrap();
    let index = RrIndex::new(metrics.clone(), false);
    index.apply(kube::runtime::watcher::Event::Init);
    index.apply(kube::runtime::watcher::Event::InitDone);
    let script = Script::new(steps);
    let fast = Resilience {
        initial_backoff: Duration::from_millis(1),
        ..Resilience::default()
    };
    let api = RrApi::new(
        script.client(),
        NS,
        metrics.clone(),
        Resilience {
            initial_backoff: fast.initial_backoff,
            ..resilience
        },
    );
    let occurrences = Occurrences::new(metrics.clone());
    let flusher = Flusher::new(
        occurrences.clone(),
        RrApi::new(script.client(), NS, metrics.clone(), fast),
        metrics.clone(),
        Duration::from_secs(1),
    );
    let admission = Admission::new(index, api, occurrences.clone(), NS.into());
    Fixture {
        flusher,
        occurrences,
        pipeline: Pipeline::new(admission, sink, metrics),
        store,
        writer,
        script,
        _dir: dir,
    }
}

fn origin() -> Origin {
    Origin {
        request_id: "req-1".into(),
        actor_type: "test".into(),
        actor_id: None,
        deadline: Instant::now() + Duration::from_secs(10),
    }
}

impl Fixture {
    /// Decides `s`, which must be refused as retryable (a 503, the signal re-sent later), and
    /// commits that answer.
    async fn refused_and_committed(&self, s: &Signal) {
        let d = self.decide(s).await;
        assert!(d.is_retryable(), "{:?}", d.refusal());
        d.commit(&self.pipeline, Timestamp::now());
    }
    async fn decide(&self, s: &Signal) -> Decided<'_> {
        self.pipeline
            .decide(
                Source::Prometheus,
                Decoded::Signal(Box::new(s.clone())),
                &origin(),
            )
            .await
    }

    /// Stops the writer and returns the event types it stored.
    async fn stored_events(self) -> Vec<String> {
        assert_eq!(
            self.script.remaining(),
            0,
            "calls: {:?}",
            self.script.calls()
        );
        self.writer.shutdown().await;
        let mut types = Vec::new();
        for corr in [
            name::name(&signal().fingerprint, Attempt::FIRST),
            name::name(&signal().fingerprint, Attempt::new(2).unwrap()),
            crate::audit::payload::readable_correlation_id(
                &signal().name,
                &signal().target.namespace,
                &signal().target.kind,
                &signal().target.name,
            ),
        ] {
            let trail = self
                .store
                .trail(&corr, crate::audit::store::Page::first(100))
                .await
                .unwrap();
            types.extend(trail.into_iter().map(|e| e.event_type));
        }
        types
    }
}

#[tokio::test]
async fn a_free_name_is_created() {
    let s = signal();
    let f = fixture(vec![step("POST", "", created)]).await;
    let d = f.decide(&s).await;
    assert_eq!(d.outcome(), AdmissionOutcome::created);
    let answered = d.commit(&f.pipeline, Timestamp::now());
    assert_eq!(answered.body.attempt, Some(1));
    assert_eq!(
        f.stored_events().await,
        ["gateway.signal.received", "gateway.crd.created"]
    );
}

#[tokio::test]
async fn after_409_another_fingerprint_is_a_collision_not_a_duplicate() {
    let s = signal();
    let f = fixture(vec![
        step("POST", "", |_| already_exists()),
        step("GET", rr_path(&s, 1), {
            let s = s.clone();
            move |_| {
                let mut v = existing(&s, 1, json!({"overallPhase": "Executing"}), json!({}));
                v["spec"]["signalFingerprint"] = json!("f".repeat(64));
                (StatusCode::OK, v)
            }
        }),
    ])
    .await;
    let d = f.decide(&s).await;
    assert_eq!(d.outcome(), AdmissionOutcome::failed);
    assert!(matches!(d.refusal(), Some(Refusal::Failed(e)) if e.is_hash_collision()));
    assert!(!d.is_retryable(), "a collision is a 500, never retried");
    d.commit(&f.pipeline, Timestamp::now());
    assert_eq!(f.stored_events().await, ["gateway.crd.failed"]);
}

#[tokio::test]
async fn after_409_a_suppressing_rr_makes_a_duplicate() {
    let s = signal();
    let f = fixture(vec![
        step("POST", "", |_| already_exists()),
        step("GET", rr_path(&s, 1), {
            let s = s.clone();
            move |_| {
                let dedup = json!({"firstSeenAt": "2026-11-29T11:00:00Z",
                    "lastSeenAt": "2026-11-29T11:30:00Z", "occurrenceCount": 4});
                (
                    StatusCode::OK,
                    existing(
                        &s,
                        1,
                        json!({"overallPhase": "Executing", "deduplication": dedup}),
                        json!({}),
                    ),
                )
            }
        }),
    ])
    .await;
    let d = f.decide(&s).await;
    assert_eq!(d.outcome(), AdmissionOutcome::duplicate);
    let answered = d.commit(&f.pipeline, Timestamp::now());
    let meta = answered
        .body
        .metadata
        .expect("a duplicate reports its count");
    assert_eq!(meta.count, 5, "the RR's 4 plus this one");
    assert_eq!(
        f.stored_events().await,
        ["gateway.signal.deduplicated"],
        "one event per duplicate"
    );
}

#[tokio::test]
async fn after_409_a_terminal_rr_moves_to_the_next_attempt() {
    let s = signal();
    let f = fixture(vec![
        step("POST", "", |_| already_exists()),
        step("GET", rr_path(&s, 1), {
            let s = s.clone();
            move |_| (StatusCode::OK, existing(&s, 1, terminal(), json!({})))
        }),
        step("POST", "", |body| {
            assert_eq!(body["metadata"]["labels"]["namegate.io/attempt"], "2");
            created(body)
        }),
    ])
    .await;
    let d = f.decide(&s).await;
    assert_eq!(d.outcome(), AdmissionOutcome::created);
    assert_eq!(d.decision().unwrap().admitted().attempt, 2);
}

#[tokio::test]
async fn after_409_a_name_freed_before_the_read_is_tried_again() {
    let s = signal();
    let f = fixture(vec![
        step("POST", "", |_| already_exists()),
        step("GET", rr_path(&s, 1), |_| {
            (StatusCode::NOT_FOUND, status(404, "NotFound"))
        }),
        step("POST", "", created),
    ])
    .await;
    let d = f.decide(&s).await;
    assert_eq!(d.outcome(), AdmissionOutcome::created);
    assert_eq!(d.decision().unwrap().admitted().attempt, 1);
}

#[tokio::test]
async fn after_409_an_rr_being_deleted_is_waited_for_then_503() {
    let s = signal();
    let deleting = |s: &Signal| {
        let s = s.clone();
        move |_: &Value| {
            (
                StatusCode::OK,
                existing(
                    &s,
                    1,
                    json!({"overallPhase": "Executing"}),
                    json!({"deletionTimestamp": "2026-11-29T11:59:00Z", "finalizers": ["x"]}),
                ),
            )
        }
    };
    // One try plus three waits, each a create answered 409 and a read of the deleting RR.
    let mut steps = Vec::new();
    for _ in 0..4 {
        steps.push(step("POST", "", |_| already_exists()));
        steps.push(step("GET", rr_path(&s, 1), deleting(&s)));
    }
    let f = fixture(steps).await;
    let d = f.decide(&s).await;
    assert!(
        matches!(
            d.refusal(),
            Some(Refusal::Failed(AdmissionError::BeingDeleted { .. }))
        ),
        "{:?}",
        d.refusal()
    );
    assert!(d.is_retryable(), "answered 503 + Retry-After");
}

#[tokio::test]
async fn after_409_terminal_rrs_are_skipped_a_bounded_number_of_times() {
    let s = signal();
    let mut steps = Vec::new();
    for attempt in 1..=16 {
        steps.push(step("POST", "", |_| already_exists()));
        steps.push(step("GET", rr_path(&s, attempt), {
            let s = s.clone();
            move |_| (StatusCode::OK, existing(&s, attempt, terminal(), json!({})))
        }));
    }
    let f = fixture(steps).await;
    let d = f.decide(&s).await;
    assert!(
        matches!(
            d.refusal(),
            Some(Refusal::Failed(AdmissionError::TooManyAttempts))
        ),
        "{:?}",
        d.refusal()
    );
    assert!(d.is_retryable());
}

fn types(d: &Decided<'_>) -> Vec<&'static str> {
    d.events().iter().map(|e| e.event_type.as_str()).collect()
}

#[tokio::test]
async fn events_wait_for_the_answer_and_carry_the_count_it_makes() {
    let s = signal();
    let f = fixture(vec![step("POST", "", created)]).await;
    let d = f.decide(&s).await;
    assert_eq!(
        types(&d),
        ["gateway.signal.received", "gateway.crd.created"],
        "built, not yet queued"
    );
    let before = f.pipeline.audit.queue_depth();
    assert_eq!(before, 2, "two slots reserved, nothing else");
    d.commit(&f.pipeline, Timestamp::now());
    let stored = f.stored_events().await;
    assert_eq!(stored, ["gateway.signal.received", "gateway.crd.created"]);
}

#[tokio::test]
async fn an_abandoned_item_records_and_audits_nothing() {
    let s = signal();
    let f = fixture(vec![step("POST", "", created)]).await;
    let d = f.decide(&s).await;
    assert_eq!(d.outcome(), AdmissionOutcome::created);
    let admitted = d.decision().unwrap().admitted().clone();
    // The batch it belongs to is answered 503: the client re-delivers it.
    d.abandon(&f.pipeline, Timestamp::now());
    assert_eq!(f.pipeline.audit.queue_depth(), 0, "its slots are released");
    assert_eq!(
        f.pipeline
            .admission()
            .expected_count(&Decision::Created(admitted)),
        1,
        "no occurrence recorded: the next answer for this RR is its first"
    );
    assert_eq!(f.stored_events().await, Vec::<String>::new());
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_answered_created_not_duplicate() {
    let s = signal();
    let landed: Arc<Mutex<Option<Value>>> = Arc::default();
    let f = fixture(vec![
        // The create lands, but its answer is lost (here: a 504 after the write).
        step("POST", "", {
            let landed = landed.clone();
            move |body| {
                *landed.lock().unwrap() = Some(created(body).1);
                (StatusCode::GATEWAY_TIMEOUT, status(504, "Timeout"))
            }
        }),
        // The retry meets the object the first try made...
        step("POST", "", |_| already_exists()),
        // ...which is active (suppressing) but carries this admission's identity.
        step("GET", rr_path(&s, 1), {
            let landed = landed.clone();
            move |_| {
                let mut v = landed.lock().unwrap().clone().unwrap();
                v["status"] = json!({"overallPhase": "Pending"});
                (StatusCode::OK, v)
            }
        }),
    ])
    .await;
    let d = f.decide(&s).await;
    assert_eq!(d.outcome(), AdmissionOutcome::created, "{:?}", d.refusal());
    assert_eq!(
        d.decision()
            .unwrap()
            .admitted()
            .uid
            .map(|u| u.to_string())
            .as_deref(),
        Some("11111111-1111-1111-1111-111111111111")
    );
    d.commit(&f.pipeline, Timestamp::now());
    assert_eq!(
        f.stored_events().await,
        ["gateway.signal.received", "gateway.crd.created"]
    );
}

#[tokio::test]
async fn another_admissions_create_is_a_duplicate() {
    let s = signal();
    let f = fixture(vec![
        step("POST", "", |_| already_exists()),
        step("GET", rr_path(&s, 1), {
            let s = s.clone();
            move |_| {
                let mut v = existing(&s, 1, json!({"overallPhase": "Pending"}), json!({}));
                v["metadata"]["annotations"]["namegate.io/created-by"] = json!("someone-else");
                (StatusCode::OK, v)
            }
        }),
    ])
    .await;
    let d = f.decide(&s).await;
    assert_eq!(d.outcome(), AdmissionOutcome::duplicate);
}

/// The index's view: RR attempt 1 of `s`, finished.
/// The index learns `rr` as from its watch.
fn index(f: &Fixture, rr: Value) {
    let indexed: crate::index::IndexedRr = serde_json::from_value(rr).unwrap();
    f.pipeline
        .admission()
        .index()
        .apply(kube::runtime::watcher::Event::Apply(indexed));
}

fn index_terminal_attempt_one(f: &Fixture, s: &Signal) {
    index(f, existing(s, 1, terminal(), json!({})));
}

#[tokio::test]
async fn a_failed_create_of_attempt_two_rereads_attempt_one_instead_of_retrying() {
    let s = signal();
    let f = fixture(vec![
        // The consistent read of attempt 1 the create of attempt 2 rests on.
        step("GET", rr_path(&s, 1), {
            let s = s.clone();
            move |_| (StatusCode::OK, existing(&s, 1, terminal(), json!({})))
        }),
        step("POST", "", |body| {
            assert_eq!(body["metadata"]["labels"]["namegate.io/attempt"], "2");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                status(503, "ServiceUnavailable"),
            )
        }),
        // Not a blind retry: attempt 1 is read again — and is gone now (retention deleted it).
        step("GET", rr_path(&s, 1), |_| {
            (StatusCode::NOT_FOUND, status(404, "NotFound"))
        }),
        step("GET", "", |_| {
            (
                StatusCode::OK,
                json!({"apiVersion": "kubernaut.ai/v1alpha1", "kind": "RemediationRequestList",
                "metadata": {"resourceVersion": "60"}, "items": []}),
            )
        }),
        // So the fingerprint starts again at attempt 1, like every replica that saw the deletion.
        step("POST", "", |body| {
            assert_eq!(body["metadata"]["labels"]["namegate.io/attempt"], "1");
            created(body)
        }),
    ])
    .await;
    index_terminal_attempt_one(&f, &s);
    let d = f.decide(&s).await;
    assert_eq!(d.outcome(), AdmissionOutcome::created, "{:?}", d.refusal());
    assert_eq!(d.decision().unwrap().admitted().attempt, 1);
}

#[tokio::test]
async fn an_unmanaged_target_is_rejected_with_kubernauts_body_and_an_audited_reason() {
    let s = signal();
    let f = fixture(Vec::new()).await;
    let d = f.pipeline.unmanaged(&s, &s.target, &origin());
    assert_eq!(d.outcome(), AdmissionOutcome::rejected);
    assert_eq!(types(&d), ["gateway.signal.rejected"]);
    let ev = &d.events()[0];
    assert_eq!(ev.error_code.as_deref(), Some("unmanaged_resource"));
    let data = ev.event_data.to_value();
    assert_eq!(data["reason"], "unmanaged_resource");
    assert_eq!(data["fingerprint"], s.fingerprint.to_hex());
    assert_eq!(data["namespace"], "prod");
    assert_eq!(data["resource_kind"], "Deployment");
    assert_eq!(data["resource_name"], "api");
    // The text stays canonical: what the chain hashes.
    assert_eq!(
        ev.event_data.as_str(),
        crate::audit::chain::canonical_json(&data)
    );
    let answered = d.commit(&f.pipeline, Timestamp::now());
    assert_eq!(answered.body.reason.as_deref(), Some("unmanaged_resource"));
}

/// The RR object the scripted API server holds, shared by the steps that read and patch it.
type Held = Arc<Mutex<Option<Value>>>;

/// Creates and holds the object.
fn create_held(held: &Held) -> impl Fn(&Value) -> (StatusCode, Value) + Send + 'static {
    let held = held.clone();
    move |body| {
        let (code, rr) = created(body);
        *held.lock().unwrap() = Some(rr.clone());
        (code, rr)
    }
}

/// The flush's annotation write (this process's total) on the held attempt-1 object.
fn write_total(s: &Signal, held: &Held) -> Step {
    step("PATCH", rr_path(s, 1), patch_held(held))
}

/// The flush's status write on the held attempt-1 object.
fn write_status(s: &Signal, held: &Held) -> Step {
    step(
        "PATCH",
        format!("{}/status", rr_path(s, 1)),
        patch_held(held),
    )
}

/// Applies a patch to the held object and answers it.
fn patch_held(held: &Held) -> impl Fn(&Value) -> (StatusCode, Value) + Send + 'static {
    let held = held.clone();
    move |patch| {
        let mut held = held.lock().unwrap();
        let rr = merged(held.as_ref().unwrap(), patch);
        *held = Some(rr.clone());
        (StatusCode::OK, rr)
    }
}

/// After a flush: the held object counts `count`, this process's total is `total`, and the script
/// was played to its end.
fn assert_written(f: &Fixture, held: &Held, count: i64, total: &str) {
    let (written, annotations) = held_count(held);
    assert_eq!(written, Some(count));
    assert_eq!(annotations[f.occurrences.annotation()], total);
    assert_eq!(f.script.remaining(), 0, "calls: {:?}", f.script.calls());
}

fn held_count(held: &Held) -> (Option<i64>, Value) {
    let held = held.lock().unwrap();
    let rr = held.as_ref().unwrap();
    (
        rr["status"]["deduplication"]["occurrenceCount"].as_i64(),
        rr["metadata"]["annotations"].clone(),
    )
}

#[tokio::test]
async fn a_new_rrs_create_carries_its_occurrence_and_its_first_flush_is_one_status_write() {
    let s = signal();
    let held = Held::default();
    let f = fixture(vec![
        step("POST", "", create_held(&held)),
        // No metadata patch: the create already holds this process's total.
        write_status(&s, &held),
    ])
    .await;
    let d = f.decide(&s).await;
    d.commit(&f.pipeline, Timestamp::now());
    let (_, annotations) = held_count(&held);
    assert_eq!(annotations[f.occurrences.annotation()], "1");
    assert_eq!(f.flusher.flush_once(1, None).await, 1);
    assert_written(&f, &held, 1, "1");
}

#[tokio::test]
async fn duplicates_before_the_first_flush_raise_the_carried_total_once() {
    let s = signal();
    let held = Held::default();
    let f = fixture(vec![
        step("POST", "", create_held(&held)),
        write_total(&s, &held),
        write_status(&s, &held),
    ])
    .await;
    f.decide(&s).await.commit(&f.pipeline, Timestamp::now());
    // Two duplicates answered before the flush (the index learns the RR from the create).
    let mut v = held.lock().unwrap().clone().unwrap();
    v["status"] = json!({"overallPhase": "Pending"});
    index(&f, v);
    for _ in 0..2 {
        let d = f.decide(&s).await;
        assert_eq!(d.outcome(), AdmissionOutcome::duplicate);
        d.commit(&f.pipeline, Timestamp::now());
    }
    assert_eq!(f.flusher.flush_once(1, None).await, 1);
    // 1 created + 2 duplicates: the creating signal is not counted twice.
    assert_written(&f, &held, 3, "3");
}

#[tokio::test]
async fn an_unanswered_create_takes_its_carried_occurrence_back() {
    let s = signal();
    let held = Held::default();
    let f = fixture(vec![
        step("POST", "", create_held(&held)),
        write_total(&s, &held),
        write_status(&s, &held),
    ])
    .await;
    // Its batch is answered 503: the RR stays, but no answer reported it.
    f.decide(&s).await.abandon(&f.pipeline, Timestamp::now());
    assert_eq!(f.flusher.flush_once(1, None).await, 1);
    assert_written(&f, &held, 0, "0");
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_counted_once() {
    let s = signal();
    let held = Held::default();
    let f = fixture(vec![
        step("POST", "", {
            let create = create_held(&held);
            move |body| {
                create(body);
                (StatusCode::GATEWAY_TIMEOUT, status(504, "Timeout"))
            }
        }),
        step("POST", "", |_| already_exists()),
        step("GET", rr_path(&s, 1), {
            let held = held.clone();
            move |_| (StatusCode::OK, held.lock().unwrap().clone().unwrap())
        }),
        // The flush reads the object (no create response to start from), then writes only the status.
        step("GET", rr_path(&s, 1), {
            let held = held.clone();
            move |_| (StatusCode::OK, held.lock().unwrap().clone().unwrap())
        }),
        write_status(&s, &held),
    ])
    .await;
    let d = f.decide(&s).await;
    assert_eq!(d.outcome(), AdmissionOutcome::created, "{:?}", d.refusal());
    d.commit(&f.pipeline, Timestamp::now());
    assert_eq!(f.flusher.flush_once(1, None).await, 1);
    assert_written(&f, &held, 1, "1");
}

#[tokio::test]
async fn a_create_that_landed_unseen_and_was_answered_503_takes_its_occurrence_back() {
    let s = signal();
    let held = Held::default();
    let read_held = || {
        let held = held.clone();
        move |_: &Value| (StatusCode::OK, held.lock().unwrap().clone().unwrap())
    };
    let f = fixture_giving_up_at_once(vec![
        // The create lands, its answer is lost, and the API server is given up on (the breaker
        // opens at the first failure here): the signal is answered 503 and will be re-sent.
        step("POST", "", {
            let create = create_held(&held);
            move |body| {
                create(body);
                (StatusCode::GATEWAY_TIMEOUT, status(504, "Timeout"))
            }
        }),
        // The flusher checks the name: this admission's object, holding the 1 its create carried.
        step("GET", rr_path(&s, 1), read_held()),
        // It writes this process's total for the object back to 0, then the derived status.
        step("GET", rr_path(&s, 1), read_held()),
        write_total(&s, &held),
        write_status(&s, &held),
    ])
    .await;
    f.refused_and_committed(&s).await;
    let (_, annotations) = held_count(&held);
    assert_eq!(
        annotations[f.occurrences.annotation()],
        "1",
        "the create landed"
    );
    assert_eq!(f.flusher.flush_once(1, None).await, 1);
    // No answer reported this RR.
    assert_written(&f, &held, 0, "0");
    assert!(f.occurrences.is_empty());
}

#[tokio::test]
async fn a_create_that_did_not_land_leaves_nothing_to_take_back() {
    let s = signal();
    let f = fixture_giving_up_at_once(vec![
        step("POST", "", |_| {
            (StatusCode::GATEWAY_TIMEOUT, status(504, "Timeout"))
        }),
        // The flusher checks the name once: nothing there, nothing to write.
        step("GET", rr_path(&s, 1), |_| {
            (StatusCode::NOT_FOUND, status(404, "NotFound"))
        }),
    ])
    .await;
    f.refused_and_committed(&s).await;
    assert!(
        !f.occurrences.is_empty(),
        "the create's outcome is to be checked"
    );
    assert_eq!(f.flusher.flush_once(1, None).await, 0);
    assert!(f.occurrences.is_empty());
    assert_eq!(f.script.remaining(), 0, "calls: {:?}", f.script.calls());
}

#[tokio::test]
async fn a_name_held_back_for_an_unchecked_create_stays_pending_once() {
    let s = signal();
    let f = fixture_giving_up_at_once(vec![
        step("POST", "", |_| {
            (StatusCode::GATEWAY_TIMEOUT, status(504, "Timeout"))
        }),
        // The check of the name fails: the create stays unchecked for the next round.
        step("GET", rr_path(&s, 1), |_| {
            (StatusCode::UNPROCESSABLE_ENTITY, status(422, "Invalid"))
        }),
    ])
    .await;
    f.refused_and_committed(&s).await;
    // An occurrence of that name waits too: it is held back, not written.
    let name = name::name(&s.fingerprint, Attempt::FIRST);
    f.occurrences
        .record(s.fingerprint, &name, None, Timestamp::now(), None);
    assert_eq!(f.flusher.flush_once(1, None).await, 0);
    assert_eq!(f.occurrences.pending(&name, None), 1);
    assert_eq!(
        f.pipeline.metrics().occurrence_pending.get(),
        1,
        "the held occurrence is counted once, not also as in flight"
    );
    assert_eq!(f.script.remaining(), 0, "calls: {:?}", f.script.calls());
}
