//! The ingestion endpoints (contract §3): body → adapter → admission → audit → answer.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http_body_util::{BodyExt, Limited};
use jiff::Timestamp;
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use crate::adapters::{self, AdapterConfig};
use crate::admission::{Admission, AdmissionError, Decision};
use crate::audit::{AuditEvent, AuditSink, EventOutcome, EventType};
use crate::http::auth::Caller;
use crate::http::problem::Problem;
use crate::http::request_id::RequestId;
use crate::signal::{Decoded, InvalidSignal, Signal, Source};
use crate::telemetry::metrics::{AdapterLabels, AdmissionOutcome, Metrics, OutcomeLabels};

/// The one body limit, applied before parsing (contract §3).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Alerts of one batch admitted concurrently (order of results is kept).
const BATCH_CONCURRENCY: usize = 16;

#[derive(Debug)]
pub struct Ingest {
    pub admission: Admission,
    pub audit: AuditSink,
    pub metrics: Metrics,
    pub adapters: AdapterConfig,
    pub request_timeout: Duration,
}

/// Per-request context handed to every item.
struct Ctx<'a> {
    request_id: &'a RequestId,
    caller: &'a Caller,
    deadline: Instant,
}

/// One item's result: what the client is told and how it is counted.
#[derive(Debug)]
struct ItemResult {
    outcome: AdmissionOutcome,
    /// The decision, for occurrence recording once the response is certain.
    decision: Option<Decision>,
    body: ItemBody,
    /// For single-signal requests: the problem to answer instead of a body.
    problem: Option<Problem>,
    retryable: bool,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemBody {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remediation_request_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remediation_request_namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<DuplicateMetadata>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DuplicateMetadata {
    pub count: i32,
    pub first_occurrence: Timestamp,
    pub last_occurrence: Timestamp,
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub total: usize,
    pub created: usize,
    pub deduplicated: usize,
    pub rejected: usize,
    pub ignored: usize,
    pub failed: usize,
}

/// Reads the body under the one limit: `Content-Length` is checked before a byte is read, and a
/// chunked body is cut off at the limit.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, Problem> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(Problem::payload_too_large(MAX_BODY_BYTES));
    }
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(Problem::payload_too_large(MAX_BODY_BYTES))
        }
        Err(_) => Err(Problem::invalid("the request body could not be read")),
    }
}

pub async fn prometheus(
    State(ingest): State<Arc<Ingest>>,
    Extension(request_id): Extension<RequestId>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let bytes = read_body(&headers, body).await?;
    // A header that is present but not text must fail the replay check, not count as absent.
    let x_timestamp = headers
        .get("x-timestamp")
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let decoded =
        adapters::decode_alertmanager(&bytes, x_timestamp, Timestamp::now(), &ingest.adapters)
            .map_err(|e| Problem::from(&e))?;
    let ctx = Ctx {
        request_id: &request_id,
        caller: &caller,
        deadline: Instant::now() + ingest.request_timeout,
    };
    let single = decoded.len() == 1;
    let mut results: Vec<ItemResult> = futures::stream::iter(decoded)
        .map(|d| ingest.process(Source::Prometheus, d, &ctx))
        .buffered(BATCH_CONCURRENCY)
        .collect()
        .await;
    if single {
        let item = results
            .pop()
            .expect("a batch of one alert has exactly one result");
        return ingest.answer_single(item);
    }
    if let Some(failed) = results.iter().find(|r| r.retryable) {
        // Alertmanager retries 5xx only; re-delivery is safe because admission is idempotent.
        let retry_after = failed
            .problem
            .as_ref()
            .and_then(|p| p.retry_after)
            .unwrap_or(Duration::from_secs(1));
        return Err(Problem::unavailable(
            format!(
                "{} of {} alerts could not be admitted yet; retry the whole batch",
                results.iter().filter(|r| r.retryable).count(),
                results.len()
            ),
            retry_after,
        ));
    }
    let mut summary = Summary {
        total: results.len(),
        ..Summary::default()
    };
    let now = Timestamp::now();
    let mut bodies = Vec::with_capacity(results.len());
    for mut r in results {
        ingest.finish(&mut r, now);
        match r.outcome {
            AdmissionOutcome::created => summary.created += 1,
            AdmissionOutcome::duplicate => summary.deduplicated += 1,
            AdmissionOutcome::rejected => summary.rejected += 1,
            AdmissionOutcome::ignored => summary.ignored += 1,
            AdmissionOutcome::failed => summary.failed += 1,
        }
        bodies.push(r.body);
    }
    Ok((
        StatusCode::MULTI_STATUS,
        axum::Json(json!({ "results": bodies, "summary": summary })),
    )
        .into_response())
}

pub async fn kubernetes_event(
    State(ingest): State<Arc<Ingest>>,
    Extension(request_id): Extension<RequestId>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let bytes = read_body(&headers, body).await?;
    let decoded = adapters::decode_kubernetes_event(&bytes, Timestamp::now(), &ingest.adapters)
        .map_err(|e| Problem::from(&e))?;
    let ctx = Ctx {
        request_id: &request_id,
        caller: &caller,
        deadline: Instant::now() + ingest.request_timeout,
    };
    let item = ingest
        .process(Source::KubernetesEvents, decoded, &ctx)
        .await;
    ingest.answer_single(item)
}

impl Ingest {
    fn answer_single(&self, mut item: ItemResult) -> Result<Response, Problem> {
        if let Some(problem) = item.problem.take() {
            return Err(problem);
        }
        self.finish(&mut item, Timestamp::now());
        let status = match item.outcome {
            AdmissionOutcome::created => StatusCode::CREATED,
            AdmissionOutcome::duplicate => StatusCode::ACCEPTED,
            _ => StatusCode::OK,
        };
        Ok((status, axum::Json(item.body)).into_response())
    }

    /// The response is now certain: count the occurrence and fill in the duplicate metadata.
    fn finish(&self, item: &mut ItemResult, now: Timestamp) {
        if let Some(decision) = item.decision.as_mut() {
            self.admission.record(decision, now);
            if let Decision::Duplicate(a) = decision {
                item.body.metadata = Some(DuplicateMetadata {
                    count: a.count,
                    first_occurrence: a.first_seen,
                    last_occurrence: a.last_seen,
                });
            }
        }
        self.metrics
            .admission_outcomes
            .get_or_create(&OutcomeLabels {
                outcome: item.outcome,
            })
            .inc();
    }

    async fn process(&self, source: Source, decoded: Decoded, ctx: &Ctx<'_>) -> ItemResult {
        self.metrics
            .signals_received
            .get_or_create(&AdapterLabels {
                adapter: source.as_str(),
            })
            .inc();
        // Reserve audit capacity before acting: a signal whose decision cannot be audited is refused
        // (503) rather than admitted (contract §8).
        let permits = match self.audit.try_reserve(2) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(request_id = ctx.request_id.as_str(), error = %e, "audit backlog full; shedding");
                return ItemResult::retryable(Problem::unavailable(
                    "the audit trail is backlogged; retry later",
                    Duration::from_secs(5),
                ));
            }
        };
        let started = std::time::Instant::now();
        let result = match decoded {
            Decoded::Signal(signal) => self.admit(&signal, ctx, permits).await,
            Decoded::Resolved {
                name,
                fingerprint,
                target,
            } => {
                let correlation = match &fingerprint {
                    Some(fp) => crd_schema::CorrelationId::for_fingerprint(fp),
                    None => format!("request:{}", ctx.request_id.as_str()),
                };
                let mut ev = self.event(
                    EventType::SignalIgnored,
                    EventOutcome::Success,
                    &correlation,
                    ctx,
                );
                ev.fingerprint = fingerprint.map(|f| f.to_hex());
                ev.namespace = target
                    .as_ref()
                    .map(|t| t.namespace.clone())
                    .filter(|n| !n.is_empty());
                ev.event_data = json!({
                    "signal_name": name, "reason": "resolved", "fingerprint": ev.fingerprint,
                    "resource_kind": target.as_ref().map(|t| &t.kind), "resource_name": target.as_ref().map(|t| &t.name),
                });
                permits.send(ev);
                ItemResult::plain(
                    AdmissionOutcome::ignored,
                    ItemBody {
                        status: "ignored",
                        fingerprint: fingerprint.map(|f| f.to_hex()),
                        correlation_id: Some(correlation),
                        reason: Some("resolved".into()),
                        ..ItemBody::default()
                    },
                )
            }
            Decoded::Invalid(invalid) => self.reject(&invalid, ctx, permits),
        };
        self.metrics
            .admission_duration
            .get_or_create(&OutcomeLabels {
                outcome: result.outcome,
            })
            .observe(started.elapsed().as_secs_f64());
        result
    }

    fn reject(
        &self,
        invalid: &InvalidSignal,
        ctx: &Ctx<'_>,
        permits: crate::audit::Permits<'_>,
    ) -> ItemResult {
        let correlation = format!("request:{}", ctx.request_id.as_str());
        let mut ev = self.event(
            EventType::SignalRejected,
            EventOutcome::Failure,
            &correlation,
            ctx,
        );
        ev.error_code = Some("invalid_signal".into());
        ev.error_message = Some(invalid.to_string());
        ev.event_data =
            json!({ "reason": "invalid", "field": invalid.field, "detail": invalid.detail });
        permits.send(ev);
        ItemResult {
            outcome: AdmissionOutcome::rejected,
            decision: None,
            body: ItemBody {
                status: "rejected",
                reason: Some(invalid.to_string()),
                ..ItemBody::default()
            },
            problem: Some(Problem::invalid_signal(invalid)),
            retryable: false,
        }
    }

    async fn admit(
        &self,
        signal: &Signal,
        ctx: &Ctx<'_>,
        permits: crate::audit::Permits<'_>,
    ) -> ItemResult {
        let fp_hex = signal.fingerprint.to_hex();
        let mut permits = permits;
        match self.admission.admit(signal, ctx.deadline).await {
            Ok(decision) => {
                let a = decision.admitted();
                let (event_type, outcome, status) = match &decision {
                    Decision::Created(_) => {
                        (EventType::CrdCreated, AdmissionOutcome::created, "created")
                    }
                    Decision::Duplicate(_) => (
                        EventType::SignalDeduplicated,
                        AdmissionOutcome::duplicate,
                        "duplicate",
                    ),
                };
                // Both events carry the RR's identity so the trail groups them by RR object.
                let rr_fields = |ev: &mut AuditEvent| {
                    ev.resource_type = Some("RemediationRequest".into());
                    ev.resource_id = Some(a.name.clone());
                    ev.event_data["attempt"] = json!(a.attempt);
                    ev.event_data["rr_uid"] = json!(a.uid.map(|u| u.to_string()));
                    ev.event_data["rr_namespace"] = json!(self.admission.namespace());
                };
                let mut received = self.signal_event(
                    EventType::SignalReceived,
                    EventOutcome::Success,
                    &a.name,
                    signal,
                    ctx,
                );
                rr_fields(&mut received);
                received.event_data["original_payload"] = json!(signal.original_payload);
                permits.send_one(received);
                let mut ev =
                    self.signal_event(event_type, EventOutcome::Success, &a.name, signal, ctx);
                rr_fields(&mut ev);
                ev.event_data["occurrence_count"] = json!(self.admission.expected_count(&decision));
                permits.send(ev);
                tracing::debug!(
                    request_id = ctx.request_id.as_str(), fingerprint = %fp_hex, rr = %a.name, outcome = status,
                    "admission decision"
                );
                ItemResult {
                    outcome,
                    body: ItemBody {
                        status,
                        fingerprint: Some(fp_hex),
                        remediation_request_name: Some(a.name.clone()),
                        remediation_request_namespace: Some(self.admission.namespace().to_owned()),
                        attempt: Some(a.attempt),
                        correlation_id: Some(a.name.clone()),
                        ..ItemBody::default()
                    },
                    decision: Some(decision),
                    problem: None,
                    retryable: false,
                }
            }
            Err(e) => self.failed(signal, e, ctx, permits),
        }
    }

    fn failed(
        &self,
        signal: &Signal,
        e: AdmissionError,
        ctx: &Ctx<'_>,
        permits: crate::audit::Permits<'_>,
    ) -> ItemResult {
        let correlation = crd_schema::CorrelationId::for_fingerprint(&signal.fingerprint);
        let mut ev = self.signal_event(
            EventType::CrdFailed,
            EventOutcome::Failure,
            &correlation,
            signal,
            ctx,
        );
        ev.error_code = Some(e.code().into());
        ev.error_message = Some(e.to_string());
        permits.send(ev);
        if e.is_hash_collision() {
            self.metrics.hash_collisions.inc();
            tracing::error!(request_id = ctx.request_id.as_str(), error = %e, "fingerprint hash collision");
        } else {
            tracing::warn!(request_id = ctx.request_id.as_str(), error = %e, "admission failed");
        }
        let problem = Problem::from(&e);
        ItemResult {
            outcome: AdmissionOutcome::failed,
            decision: None,
            body: ItemBody {
                status: "failed",
                fingerprint: Some(signal.fingerprint.to_hex()),
                correlation_id: Some(correlation),
                reason: Some(problem.detail.clone()),
                ..ItemBody::default()
            },
            retryable: e.is_retryable(),
            problem: Some(problem),
        }
    }

    fn event(&self, t: EventType, o: EventOutcome, correlation: &str, ctx: &Ctx<'_>) -> AuditEvent {
        let mut ev = AuditEvent::new(t, o, correlation);
        ev.actor_type = Some(ctx.caller.actor_type.clone());
        ev.actor_id = ctx.caller.actor_id.clone();
        let (trace_id, span_id) = crate::telemetry::trace_ids();
        ev.trace_id = trace_id;
        ev.span_id = span_id;
        ev
    }

    fn signal_event(
        &self,
        t: EventType,
        o: EventOutcome,
        correlation: &str,
        s: &Signal,
        ctx: &Ctx<'_>,
    ) -> AuditEvent {
        let mut ev = self.event(t, o, correlation, ctx);
        ev.fingerprint = Some(s.fingerprint.to_hex());
        ev.namespace = Some(s.target.namespace.clone()).filter(|n| !n.is_empty());
        ev.cluster_id = s.target.cluster.clone();
        ev.severity = Some(s.severity.clone());
        ev.event_data = json!({
            "signal_name": s.name,
            "signal_source": s.source.as_str(),
            "fingerprint": s.fingerprint.to_hex(),
            "severity": s.severity,
            "resource_kind": s.target.kind,
            "resource_name": s.target.name,
        });
        ev
    }
}

impl ItemResult {
    fn plain(outcome: AdmissionOutcome, body: ItemBody) -> Self {
        Self {
            outcome,
            decision: None,
            body,
            problem: None,
            retryable: false,
        }
    }

    fn retryable(problem: Problem) -> Self {
        Self {
            outcome: AdmissionOutcome::failed,
            decision: None,
            body: ItemBody {
                status: "failed",
                reason: Some(problem.detail.clone()),
                ..ItemBody::default()
            },
            problem: Some(problem),
            retryable: true,
        }
    }
}
