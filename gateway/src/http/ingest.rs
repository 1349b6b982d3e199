//! The ingestion endpoints (docs/api.md): read and decode the body, hand each item to the
//! [`Pipeline`](crate::pipeline), and turn its answers into a response. Decisions, occurrences and
//! audit events are the pipeline's.

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
use crate::http::auth::Caller;
use crate::http::problem::Problem;
use crate::http::request_id::RequestId;
use crate::pipeline::{Answered, Decided, Origin, Pipeline};
use crate::signal::Source;
use crate::telemetry::metrics::AdmissionOutcome;

pub use crate::pipeline::{DuplicateMetadata, ItemBody};

/// The one body limit, applied before parsing (docs/api.md).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Alerts of one batch admitted concurrently (order of results is kept).
const BATCH_CONCURRENCY: usize = 16;

#[derive(Debug)]
pub struct Ingest {
    pub pipeline: Pipeline,
    pub adapters: AdapterConfig,
    pub request_timeout: Duration,
    /// The body's own deadline, shorter than the request's (docs/limits.md).
    pub body_read_timeout: Duration,
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
/// chunked body is cut off at the limit. A body that has not arrived within `timeout` is cut off
/// (408), so a slow sender holds its concurrency slot for that long, not for the request deadline.
async fn read_body(headers: &HeaderMap, body: Body, timeout: Duration) -> Result<Bytes, Problem> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(Problem::payload_too_large(MAX_BODY_BYTES));
    }
    let Ok(read) =
        tokio::time::timeout(timeout, Limited::new(body, MAX_BODY_BYTES).collect()).await
    else {
        return Err(Problem::body_timeout(timeout));
    };
    match read {
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
    let bytes = read_body(&headers, body, ingest.body_read_timeout).await?;
    // A header that is present but not text must fail the replay check, not count as absent.
    let x_timestamp = headers
        .get("x-timestamp")
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let mut decoded =
        adapters::decode_alertmanager(&bytes, x_timestamp, Timestamp::now(), &ingest.adapters)
            .map_err(|e| Problem::from(&e))?;
    let origin = ingest.origin(&request_id, &caller);
    let pipeline = &ingest.pipeline;
    if decoded.len() == 1
        && let Some(only) = decoded.pop()
    {
        // A webhook of one alert (the storm's shape) is answered like a single signal.
        let item = pipeline.decide(Source::Prometheus, only, &origin).await;
        return answer_single(pipeline, item);
    }
    let decided: Vec<Decided<'_>> = futures::stream::iter(decoded)
        .map(|d| pipeline.decide(Source::Prometheus, d, &origin))
        .buffered(BATCH_CONCURRENCY)
        .collect()
        .await;
    let retryable = decided.iter().filter(|d| d.is_retryable()).count();
    if retryable > 0 {
        // Alertmanager retries 5xx only; re-delivery is safe because admission is idempotent.
        let retry_after = decided
            .iter()
            .find_map(|d| d.refusal().and_then(|r| r.retry_after()))
            .unwrap_or(Duration::from_secs(1));
        let total = decided.len();
        // The failures that make the answer a 503 are certain and audited; every other item is
        // re-delivered with the batch and answered (and audited) then.
        let now = Timestamp::now();
        for d in decided {
            if d.is_retryable() {
                d.commit(pipeline, now);
            } else {
                d.abandon(pipeline, now);
            }
        }
        return Err(Problem::unavailable(
            format!(
                "{retryable} of {total} alerts could not be admitted yet; retry the whole batch"
            ),
            retry_after,
        ));
    }
    let mut summary = Summary {
        total: decided.len(),
        ..Summary::default()
    };
    let now = Timestamp::now();
    let mut bodies = Vec::with_capacity(decided.len());
    for d in decided {
        let r = line(d.commit(pipeline, now));
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
    let bytes = read_body(&headers, body, ingest.body_read_timeout).await?;
    let decoded = adapters::decode_kubernetes_event(&bytes, Timestamp::now(), &ingest.adapters)
        .map_err(|e| Problem::from(&e))?;
    let origin = ingest.origin(&request_id, &caller);
    let item = ingest
        .pipeline
        .decide(Source::KubernetesEvents, decoded, &origin)
        .await;
    answer_single(&ingest.pipeline, item)
}

impl Ingest {
    fn origin(&self, request_id: &RequestId, caller: &Caller) -> Origin {
        Origin {
            request_id: request_id.as_str().to_owned(),
            actor_type: caller.actor_type.clone(),
            actor_id: caller.actor_id.clone(),
            deadline: Instant::now() + self.request_timeout,
        }
    }
}

/// A single-signal request: 201 created, 202 duplicate, 200 ignored, or the item's problem.
fn answer_single(pipeline: &Pipeline, item: Decided<'_>) -> Result<Response, Problem> {
    let answered = item.commit(pipeline, Timestamp::now());
    if let Some(refusal) = &answered.refusal {
        return Err(Problem::from(refusal));
    }
    let status = match answered.outcome {
        AdmissionOutcome::created => StatusCode::CREATED,
        AdmissionOutcome::duplicate => StatusCode::ACCEPTED,
        _ => StatusCode::OK,
    };
    Ok((status, axum::Json(answered.body)).into_response())
}

/// An item's line in a 207: a refused item says why.
fn line(mut answered: Answered) -> Answered {
    if answered.body.reason.is_none()
        && let Some(refusal) = &answered.refusal
    {
        answered.body.reason = Some(Problem::from(refusal).detail);
    }
    answered
}
