//! The admission pipeline: one decoded item in, a decided answer out, and — only once that answer is
//! certain — its occurrence recorded and its audit events queued (see `docs/architecture.md`,
//! "Request path").
//!
//! The HTTP layer (`http::ingest`) only decodes bodies and turns answers into responses; every
//! business decision is taken here, so unit tests (and the CLI) drive it without a socket.
//!
//! ```text
//!   Pipeline::decide(source, decoded, origin)   reserve audit slots → admit / reject / ignore
//!        │                                      (API calls happen here; nothing is recorded yet)
//!        ▼
//!   Decided ──commit(now)──▶ Answered           occurrence recorded, audit events queued, outcome counted
//!        └────abandon()────▶ (nothing)           the enclosing answer is a 503: slots released
//! ```
//!
//! A caller answers with exactly one of the two: `commit` when the item's line (or the whole
//! single-signal answer) is going to be sent, `abandon` when the request as a whole is answered
//! 503 and the client will re-deliver it. Dropping a [`Decided`] is `abandon`.

use std::sync::Arc;
use std::time::Duration;

use crd_schema::Target;
use jiff::Timestamp;
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use crate::admission::{Admission, AdmissionError, Decision};
use crate::audit::payload::{self, Actor, Failure, Resolved, RrRef};
use crate::audit::{AuditEvent, AuditSink, Permits};
use crate::resolve::namespaces::MANAGED_LABEL;
use crate::resolve::{Resolution, ResolveError, Resolver};
use crate::signal::{Decoded, InvalidSignal, Signal, Source};
use crate::telemetry::metrics::{AdapterLabels, AdmissionOutcome, Metrics, OutcomeLabels};

/// Audit events one item may queue: a new RR's `signal.received` + `crd.created` (a duplicate, a
/// failure, a rejection or a resolved alert queue one; the unused slot is released).
const EVENTS_PER_ITEM: usize = 2;
/// `Retry-After` when the audit queue cannot take an item's events.
const AUDIT_BACKLOG_RETRY: Duration = Duration::from_secs(5);
/// `Retry-After` when a target could not be resolved for a retryable reason.
pub const UNRESOLVED_RETRY: Duration = Duration::from_secs(1);

/// Who asked, and until when: carried onto every audit event of the request.
#[derive(Clone, Debug)]
pub struct Origin {
    pub request_id: String,
    pub actor_type: String,
    /// The authenticated caller's username, when there is one: audit events name it as
    /// `authenticated-service/<username>`, else `external/<adapter>` (docs/audit.md, "Events").
    pub actor_id: Option<String>,
    /// Every API call made for the request ends by then.
    pub deadline: Instant,
}

/// The line of an item in an answer (a 201/202 body, or one entry of a 207's `results`).
#[derive(Clone, Debug, Default, Serialize)]
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
    /// `true` for a duplicate, `false` for a created RR (kubernaut's field, `docs/compatibility.md`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<bool>,
    /// A human-readable summary (kubernaut's field); for unmanaged targets what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Unmanaged targets (kubernaut's rejection body): the resolved resource and the action.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<RejectedResource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'static str>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RejectedResource {
    pub namespace: String,
    pub kind: String,
    pub name: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DuplicateMetadata {
    pub count: i32,
    pub first_occurrence: Timestamp,
    pub last_occurrence: Timestamp,
    /// The RR's name, as the kubernaut gateway reports it (`docs/compatibility.md`).
    pub remediation_request_ref: String,
}

/// Why an item was not admitted. The HTTP layer turns it into a problem (`http::problem`).
#[derive(Debug)]
pub enum Refusal {
    /// The item is malformed: answered 400 alone, `rejected` inside a batch.
    Invalid(InvalidSignal),
    /// Admission failed (API server, collision, deleting RR…).
    Failed(AdmissionError),
    /// The audit queue cannot take the item's events: refused rather than admitted unaudited.
    AuditBacklogged { retry_after: Duration },
    /// The target could not be resolved yet (discovery or the namespace watch not synced, the API
    /// server unavailable): retryable.
    Unresolved(ResolveError),
}

impl Refusal {
    /// The client should re-deliver: the whole request is answered 503 + `Retry-After`.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Invalid(_) => false,
            Self::Failed(e) => e.is_retryable(),
            Self::AuditBacklogged { .. } | Self::Unresolved(_) => true,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Invalid(_) => None,
            Self::Failed(e) => e.is_retryable().then(|| e.retry_after()),
            Self::AuditBacklogged { retry_after } => Some(*retry_after),
            Self::Unresolved(_) => Some(UNRESOLVED_RETRY),
        }
    }
}

/// An item decided but not yet answered: it holds the audit slots reserved for it and the events
/// it will queue. See the module docs for `commit` / `abandon`.
#[must_use = "a decided item is either committed (answered) or abandoned (503)"]
#[derive(Debug)]
pub struct Decided<'a> {
    outcome: AdmissionOutcome,
    body: ItemBody,
    refusal: Option<Refusal>,
    decision: Option<Decision>,
    events: Vec<AuditEvent>,
    permits: Option<Permits<'a>>,
}

/// A committed item: what the client is told.
#[derive(Debug)]
pub struct Answered {
    pub outcome: AdmissionOutcome,
    pub body: ItemBody,
    /// Set when the item was not admitted; a single-signal request answers this problem.
    pub refusal: Option<Refusal>,
}

impl Decided<'_> {
    pub fn outcome(&self) -> AdmissionOutcome {
        self.outcome
    }

    pub fn refusal(&self) -> Option<&Refusal> {
        self.refusal.as_ref()
    }

    pub fn decision(&self) -> Option<&Decision> {
        self.decision.as_ref()
    }

    /// The audit events this item queues when committed, in order.
    pub fn events(&self) -> &[AuditEvent] {
        &self.events
    }

    /// Whether the request this item belongs to must be answered 503 (and re-delivered).
    pub fn is_retryable(&self) -> bool {
        self.refusal.as_ref().is_some_and(Refusal::is_retryable)
    }

    /// The answer is certain: counts the occurrence (contract of `Admission::record`), queues the
    /// audit events on the reserved slots, counts the outcome. Returns what the client is told.
    pub fn commit(mut self, pipeline: &Pipeline, now: Timestamp) -> Answered {
        if let Some(decision) = self.decision.as_mut() {
            pipeline.admission.record(decision, now);
            // The decision's event reports the count this answer makes, as far as this replica knows.
            let count = decision.admitted().count;
            if let Some(ev) = self.events.last_mut() {
                ev.event_data
                    .set_int(payload::OCCURRENCE_COUNT, i64::from(count));
            }
            if let Decision::Duplicate(a) = decision {
                self.body.metadata = Some(DuplicateMetadata {
                    count: a.count,
                    first_occurrence: a.first_seen,
                    last_occurrence: a.last_seen,
                    remediation_request_ref: a.name.clone(),
                });
            }
        }
        self.queue_events();
        pipeline
            .metrics
            .admission_outcomes
            .get_or_create(&OutcomeLabels {
                outcome: self.outcome,
            })
            .inc();
        Answered {
            outcome: self.outcome,
            body: std::mem::take(&mut self.body),
            refusal: self.refusal.take(),
        }
    }

    /// The enclosing request is answered 503: nothing is counted or audited, the slots are
    /// released. The client re-delivers the item, and that delivery is answered and audited. (An RR
    /// this item created stays; the occurrence its create carried is taken back, `Admission::abandon`.)
    pub fn abandon(mut self, pipeline: &Pipeline, now: Timestamp) {
        if let Some(decision) = self.decision.as_mut() {
            pipeline.admission.abandon(decision, now);
        }
    }

    fn queue_events(&mut self) {
        let events = std::mem::take(&mut self.events);
        let Some(permits) = self.permits.as_mut() else {
            return;
        };
        for ev in events {
            permits.send_one(ev);
        }
    }
}

/// The admission pipeline of one gateway: admission, its occurrence accounting, and the audit queue.
#[derive(Debug)]
pub struct Pipeline {
    admission: Admission,
    audit: AuditSink,
    metrics: Metrics,
    /// Target resolution (owners, existence, scope); `None` with `resolve-targets: false`.
    resolver: Option<Arc<Resolver>>,
}

impl Pipeline {
    /// The gateway's metrics (the HTTP layers count problems and panics with them).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn new(admission: Admission, audit: AuditSink, metrics: Metrics) -> Self {
        Self {
            admission,
            audit,
            metrics,
            resolver: None,
        }
    }

    /// Resolves every signal's target before admission (`docs/compatibility.md`).
    pub fn with_resolver(mut self, resolver: Option<Arc<Resolver>>) -> Self {
        self.resolver = resolver;
        self
    }

    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// Decides one decoded item: reserves its audit slots (refusing with 503 when the audit queue is
    /// full — a decision that cannot be audited is not taken), then admits, rejects or ignores it and
    /// builds its audit events. Nothing is recorded or queued until [`Decided::commit`].
    pub async fn decide(&self, source: Source, decoded: Decoded, origin: &Origin) -> Decided<'_> {
        self.metrics
            .signals_received
            .get_or_create(&AdapterLabels {
                adapter: source.as_str(),
            })
            .inc();
        let permits = match self.audit.try_reserve(EVENTS_PER_ITEM) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(request_id = %origin.request_id, error = %e, "audit backlog full; shedding");
                return Decided::refused(
                    ItemBody::default(),
                    Refusal::AuditBacklogged {
                        retry_after: AUDIT_BACKLOG_RETRY,
                    },
                    Vec::new(),
                    None,
                );
            }
        };
        let started = std::time::Instant::now();
        let mut decided = match decoded {
            Decoded::Signal(mut signal) => match self.resolve(&mut signal).await {
                Ok(Resolution::InScope(_)) => self.admit(&signal, origin).await,
                Ok(Resolution::Unmanaged(target)) => self.unmanaged(&signal, &target, origin),
                Err(e) if e.is_retryable() => {
                    tracing::warn!(request_id = %origin.request_id, error = %e, "target resolution failed; answering 503");
                    Decided::refused(
                        ItemBody::default(),
                        Refusal::Unresolved(e),
                        Vec::new(),
                        None,
                    )
                }
                Err(e) => {
                    let mut d =
                        self.reject(InvalidSignal::new("target", e.to_string()), source, origin);
                    for ev in &mut d.events {
                        ev.error_code = Some(e.code().into());
                    }
                    d
                }
            },
            Decoded::Resolved {
                name,
                fingerprint,
                target,
            } => {
                let ev = payload::signal_ignored(
                    &origin.request_id,
                    &sender(origin, source),
                    source,
                    &Resolved {
                        signal_name: &name,
                        fingerprint: fingerprint.map(|f| f.to_hex()),
                        namespace: target.as_ref().map(|t| t.namespace.as_str()),
                        kind: target.as_ref().map(|t| t.kind.as_str()),
                        name: target.as_ref().map(|t| t.name.as_str()),
                        cluster: target.as_ref().and_then(|t| t.cluster.as_deref()),
                    },
                );
                let correlation = ev.correlation_id.clone();
                Decided {
                    outcome: AdmissionOutcome::ignored,
                    body: ItemBody {
                        status: "ignored",
                        fingerprint: fingerprint.map(|f| f.to_hex()),
                        correlation_id: Some(correlation),
                        reason: Some("resolved".into()),
                        ..ItemBody::default()
                    },
                    refusal: None,
                    decision: None,
                    events: vec![ev],
                    permits: None,
                }
            }
            Decoded::Invalid(invalid) => self.reject(invalid, source, origin),
        };
        decided.permits = Some(permits);
        self.metrics
            .admission_duration
            .get_or_create(&OutcomeLabels {
                outcome: decided.outcome,
            })
            .observe(started.elapsed().as_secs_f64());
        decided
    }

    /// Resolves the signal's target in place (owner, fingerprint); a no-op without a resolver.
    async fn resolve(&self, signal: &mut Signal) -> Result<Resolution, ResolveError> {
        let Some(resolver) = &self.resolver else {
            return Ok(Resolution::InScope(signal.target.clone()));
        };
        let resolution = resolver.resolve(&signal.target).await?;
        signal.target = resolution.target().clone();
        signal.fingerprint = signal.target.fingerprint();
        Ok(resolution)
    }

    /// 200 `rejected` / `unmanaged_resource`, kubernaut's body; audited as a rejection.
    fn unmanaged(&self, signal: &Signal, target: &Target, origin: &Origin) -> Decided<'_> {
        let invalid = InvalidSignal::new("target", "unmanaged_resource");
        let mut ev = payload::signal_rejected(
            &origin.request_id,
            &sender(origin, signal.source),
            &invalid,
            Some(&signal.name),
        );
        ev.error_code = Some("unmanaged_resource".into());
        ev.event_data.extend([
            ("reason", json!("unmanaged_resource")),
            ("fingerprint", json!(signal.fingerprint.to_hex())),
            ("namespace", json!(target.namespace)),
            ("resource_kind", json!(target.kind)),
            ("resource_name", json!(target.name)),
        ]);
        let message = if target.namespace.is_empty() {
            format!(
                "Resource {}/{} is not managed by Kubernaut. Add label '{MANAGED_LABEL}=true' to the resource to enable remediation.",
                target.kind.to_lowercase(),
                target.name
            )
        } else {
            format!(
                "Resource {}/{}/{} is not managed by Kubernaut. Add label '{MANAGED_LABEL}=true' to namespace '{}' or the resource to enable remediation.",
                target.namespace,
                target.kind.to_lowercase(),
                target.name,
                target.namespace
            )
        };
        Decided {
            outcome: AdmissionOutcome::rejected,
            body: ItemBody {
                status: "rejected",
                fingerprint: Some(signal.fingerprint.to_hex()),
                reason: Some("unmanaged_resource".into()),
                message: Some(message),
                resource: Some(RejectedResource {
                    namespace: target.namespace.clone(),
                    kind: target.kind.clone(),
                    name: target.name.clone(),
                }),
                action: Some("Add label kubernaut.ai/managed=true to namespace or resource"),
                ..ItemBody::default()
            },
            refusal: None,
            decision: None,
            events: vec![ev],
            permits: None,
        }
    }

    fn reject(&self, invalid: InvalidSignal, source: Source, origin: &Origin) -> Decided<'_> {
        let ev =
            payload::signal_rejected(&origin.request_id, &sender(origin, source), &invalid, None);
        let body = ItemBody {
            status: "rejected",
            reason: Some(invalid.to_string()),
            ..ItemBody::default()
        };
        Decided {
            outcome: AdmissionOutcome::rejected,
            body,
            refusal: Some(Refusal::Invalid(invalid)),
            decision: None,
            events: vec![ev],
            permits: None,
        }
    }

    async fn admit(&self, signal: &Signal, origin: &Origin) -> Decided<'_> {
        let fp_hex = signal.fingerprint.to_hex();
        let decision = match self.admission.admit(signal, origin.deadline).await {
            Ok(d) => d,
            Err(e) => return self.failed(signal, e, origin),
        };
        let a = decision.admitted();
        // Every event names the RR object (`rr_uid`), so the trail groups by it.
        let rr = RrRef {
            namespace: self.admission.namespace(),
            name: &a.name,
            uid: a.uid.map(|u| u.to_string()),
            attempt: a.attempt,
        };
        let count = self.admission.expected_count(&decision);
        let sender = sender(origin, signal.source);
        let (outcome, status, events) = match &decision {
            Decision::Created(_) => (
                AdmissionOutcome::created,
                "created",
                vec![
                    payload::signal_received(signal, &sender, &rr),
                    payload::crd_created(signal, &rr, count),
                ],
            ),
            // One event per duplicate, carrying what rebuilds the RR.
            Decision::Duplicate(_) => (
                AdmissionOutcome::duplicate,
                "duplicate",
                vec![payload::signal_deduplicated(signal, &sender, &rr, count)],
            ),
        };
        tracing::debug!(
            request_id = %origin.request_id, fingerprint = %fp_hex, rr = %a.name, outcome = status,
            "admission decision"
        );
        Decided {
            outcome,
            body: ItemBody {
                status,
                fingerprint: Some(fp_hex),
                remediation_request_name: Some(a.name.clone()),
                remediation_request_namespace: Some(self.admission.namespace().to_owned()),
                attempt: Some(a.attempt),
                correlation_id: Some(a.name.clone()),
                duplicate: Some(matches!(decision, Decision::Duplicate(_))),
                message: Some(
                    match &decision {
                        Decision::Created(_) => "RemediationRequest created",
                        Decision::Duplicate(_) => {
                            "Duplicate signal: counted on the active RemediationRequest"
                        }
                    }
                    .to_owned(),
                ),
                ..ItemBody::default()
            },
            refusal: None,
            events,
            decision: Some(decision),
            permits: None,
        }
    }

    fn failed(&self, signal: &Signal, e: AdmissionError, origin: &Origin) -> Decided<'_> {
        let ev = payload::crd_failed(
            signal,
            &Failure {
                code: e.code(),
                message: e.to_string(),
                retry_possible: e.is_retryable(),
            },
        );
        let correlation = ev.correlation_id.clone();
        if e.is_hash_collision() {
            self.metrics.hash_collisions.inc();
            tracing::error!(request_id = %origin.request_id, error = %e, "fingerprint hash collision");
        } else {
            tracing::warn!(request_id = %origin.request_id, error = %e, "admission failed");
        }
        let body = ItemBody {
            status: "failed",
            fingerprint: Some(signal.fingerprint.to_hex()),
            correlation_id: Some(correlation),
            ..ItemBody::default()
        };
        Decided::refused(body, Refusal::Failed(e), vec![ev], None)
    }
}

impl<'a> Decided<'a> {
    fn refused(
        body: ItemBody,
        refusal: Refusal,
        events: Vec<AuditEvent>,
        permits: Option<Permits<'a>>,
    ) -> Self {
        Self {
            outcome: AdmissionOutcome::failed,
            body: ItemBody {
                status: "failed",
                ..body
            },
            refusal: Some(refusal),
            decision: None,
            events,
            permits,
        }
    }
}

/// Who sent the signal, as audit events name it.
fn sender(origin: &Origin, source: Source) -> Actor {
    Actor::sender(origin.actor_id.as_deref(), source)
}

#[cfg(test)]
mod tests;
