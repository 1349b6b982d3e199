//! RFC 7807 problems: the one place where errors become HTTP answers.
//!
//! Handlers and middleware return a [`Problem`]; it travels as a response extension and is rendered
//! by [`render`] (the outermost layer), which knows the request's path and ID. So every problem —
//! from a handler, the body limit, the deadline or the router's 404 — has the same shape, and no
//! internal error text reaches a client: `detail` is always written here or by an adapter about the
//! client's own input.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::adapters::RequestError;
use crate::admission::AdmissionError;
use crate::http::request_id::RequestId;
use crate::pipeline::Refusal;
use crate::signal::InvalidSignal;
use crate::telemetry::metrics::{Metrics, ProblemLabels};

pub const CONTENT_TYPE: &str = "application/problem+json";
const TYPE_BASE: &str = "https://namegate.dev/problems/";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub status: StatusCode,
    /// The last segment of the problem type URI (`invalid-request`, …).
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub retry_after: Option<Duration>,
}

impl Problem {
    fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            title,
            detail: detail.into(),
            retry_after: None,
        }
    }

    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            "Invalid request",
            detail,
        )
    }

    pub fn invalid_signal(e: &InvalidSignal) -> Self {
        Self::invalid(format!("{}: {}", e.field, e.detail))
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            "no such endpoint",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "see the API reference",
        )
    }

    pub fn unsupported_media_type(got: Option<&str>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            match got {
                Some(ct) => format!(
                    "Content-Type must be application/json, got {:?}",
                    sanitize(ct)
                ),
                None => "Content-Type must be application/json".to_owned(),
            },
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            format!("request body exceeds {limit} bytes"),
        )
    }

    /// The body did not arrive within its own deadline; the connection's slot is freed.
    pub fn body_timeout(timeout: Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "body-timeout",
            "Request body timeout",
            format!(
                "the request body did not arrive within {} ms",
                timeout.as_millis()
            ),
        )
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    pub fn unavailable(detail: impl Into<String>, retry_after: Duration) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
                detail,
            )
        }
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            detail,
        )
    }

    pub fn type_uri(&self) -> String {
        format!("{TYPE_BASE}{}", self.kind)
    }
}

impl From<&RequestError> for Problem {
    fn from(e: &RequestError) -> Self {
        let detail = format!("{}: {}", e.field(), e.detail());
        if e.is_expands() {
            return Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
                detail,
            );
        }
        Self::invalid(detail)
    }
}

impl From<&AdmissionError> for Problem {
    fn from(e: &AdmissionError) -> Self {
        if e.is_retryable() {
            return Self::unavailable(
                match e {
                    AdmissionError::BeingDeleted { .. } => {
                        "the previous RemediationRequest of this signal is still being deleted"
                    }
                    _ => "the Kubernetes API server is unavailable; retry later",
                },
                e.retry_after(),
            );
        }
        match e {
            AdmissionError::HashCollision { .. } => Self::internal(
                "a RemediationRequest with this signal's name belongs to another fingerprint; operators have been alerted",
            ),
            _ => Self::internal("the signal could not be admitted"),
        }
    }
}

impl From<&Refusal> for Problem {
    fn from(r: &Refusal) -> Self {
        match r {
            Refusal::Invalid(e) => Self::invalid_signal(e),
            Refusal::Failed(e) => Self::from(e),
            Refusal::AuditBacklogged { retry_after } => {
                Self::unavailable("the audit trail is backlogged; retry later", *retry_after)
            }
            Refusal::Unresolved(e) => Self::unavailable(
                match e {
                    crate::resolve::ResolveError::NotReady(what) => {
                        format!("{what} has not synced yet; retry later")
                    }
                    _ => "the signal's target could not be read from the Kubernetes API server; retry later"
                        .to_owned(),
                },
                crate::pipeline::UNRESOLVED_RETRY,
            ),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut resp = (status, Body::empty()).into_response();
        resp.extensions_mut().insert(self);
        resp
    }
}

#[derive(Serialize)]
struct Rendered<'a> {
    #[serde(rename = "type")]
    type_: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    instance: &'a str,
    request_id: &'a str,
}

/// Event: a problem answer left the gateway (`namegate_http_problems_total{status}`).
#[derive(Debug)]
struct ProblemAnswered {
    status: StatusCode,
}

impl ProblemAnswered {
    fn emit(&self, m: &Metrics) {
        m.http_problems
            .get_or_create(&ProblemLabels {
                status: self.status.as_u16(),
            })
            .inc();
    }
}

/// Event: a handler panicked; the request is answered with a 500 problem.
#[derive(Debug)]
pub struct HandlerPanicked;

impl HandlerPanicked {
    pub fn emit(&self, m: &Metrics) {
        m.handler_panics.inc();
    }
}

/// The answer to a request whose handler panicked (caught by `http::edge`): a 500 problem,
/// rendered with the request ID by [`render`] like every other. The panic message is logged, never
/// sent.
pub fn panicked(metrics: &Metrics, panic: &(dyn std::any::Any + Send)) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %message, "request handler panicked");
    HandlerPanicked.emit(metrics);
    Problem::internal("the request failed unexpectedly; it has been logged").into_response()
}

/// Renders a response's [`Problem`] extension, if it carries one, into an `application/problem+json`
/// body naming the request's path (`instance`) and ID, and counts it; any other response is returned
/// as it is. Called once per request by the ingestion port's edge (`http::edge`).
pub fn render(
    mut resp: Response,
    metrics: &Metrics,
    path: &str,
    request_id: &RequestId,
) -> Response {
    let Some(problem) = resp.extensions_mut().remove::<Problem>() else {
        return resp;
    };
    ProblemAnswered {
        status: problem.status,
    }
    .emit(metrics);
    let body = Rendered {
        type_: problem.type_uri(),
        title: problem.title,
        status: problem.status.as_u16(),
        detail: &problem.detail,
        instance: &sanitize(path),
        request_id: request_id.as_str(),
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    let mut out = (problem.status, json).into_response();
    out.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if let Some(after) = problem.retry_after {
        let secs = after.as_secs_f64().ceil().max(1.0) as u64;
        out.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    // Keep headers set by inner layers (`WWW-Authenticate`).
    for (k, v) in resp.headers() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

/// Strips control characters so echoed client text can never break a log line or a header.
pub fn sanitize(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(256).collect()
}
