//! The audit event envelope (docs/audit.md). Field names follow kubernaut DataStorage's `audit_events`
//! table so operators and the migration meet one vocabulary.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::event_data::EventData;

pub const CATEGORY: &str = "gateway";

/// Every event type the gateway emits. The set is closed: it is also a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "gateway.signal.received")]
    SignalReceived,
    #[serde(rename = "gateway.signal.deduplicated")]
    SignalDeduplicated,
    #[serde(rename = "gateway.crd.created")]
    CrdCreated,
    #[serde(rename = "gateway.crd.failed")]
    CrdFailed,
    #[serde(rename = "gateway.signal.rejected")]
    SignalRejected,
    #[serde(rename = "gateway.signal.ignored")]
    SignalIgnored,
    #[serde(rename = "gateway.config.reloaded")]
    ConfigReloaded,
    #[serde(rename = "gateway.config.rejected")]
    ConfigRejected,
}

impl EventType {
    pub const ALL: [EventType; 8] = [
        Self::SignalReceived,
        Self::SignalDeduplicated,
        Self::CrdCreated,
        Self::CrdFailed,
        Self::SignalRejected,
        Self::SignalIgnored,
        Self::ConfigReloaded,
        Self::ConfigRejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SignalReceived => "gateway.signal.received",
            Self::SignalDeduplicated => "gateway.signal.deduplicated",
            Self::CrdCreated => "gateway.crd.created",
            Self::CrdFailed => "gateway.crd.failed",
            Self::SignalRejected => "gateway.signal.rejected",
            Self::SignalIgnored => "gateway.signal.ignored",
            Self::ConfigReloaded => "gateway.config.reloaded",
            Self::ConfigRejected => "gateway.config.rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The `event_action` column: the last segment of the type.
    pub fn action(self) -> &'static str {
        match self {
            Self::SignalReceived => "received",
            Self::SignalDeduplicated => "deduplicated",
            Self::CrdCreated => "created",
            Self::CrdFailed => "failed",
            Self::SignalRejected => "rejected",
            Self::SignalIgnored => "ignored",
            Self::ConfigReloaded => "reloaded",
            Self::ConfigRejected => "rejected",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventOutcome {
    Success,
    Failure,
}

impl EventOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

/// One audit event as the gateway emits it. The store adds the chain fields (`event_hash`,
/// `previous_event_hash`, `hash_algorithm`), `event_version` and `legacy_correlation_id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// UUIDv7: time-ordered, so ordering by ID within one correlation follows emission order.
    pub event_id: Uuid,
    pub event_timestamp: Timestamp,
    pub event_type: EventType,
    pub event_outcome: EventOutcome,
    /// The RR name; for decisions with no RR see `payload` (docs/audit.md, "Events").
    pub correlation_id: String,
    /// Lowercase hex fingerprint, when the decision is about one (indexed for lookups).
    pub fingerprint: Option<String>,
    pub actor_type: Option<String>,
    pub actor_id: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub namespace: Option<String>,
    pub cluster_id: Option<String>,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub severity: Option<String>,
    pub duration_ms: Option<i64>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// signal_name, fingerprint, attempt, rr_uid, severity, resource kind/name, occurrence_count,
    /// error details, and the original payload for received events; held as the canonical JSON text
    /// the store writes and the chain hashes, built once where the event is built ([`EventData`]).
    pub event_data: EventData,
}

impl AuditEvent {
    /// A new event of `event_type` now, with everything optional left empty.
    pub fn new(
        event_type: EventType,
        outcome: EventOutcome,
        correlation_id: impl Into<String>,
    ) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_timestamp: Timestamp::now(),
            event_type,
            event_outcome: outcome,
            correlation_id: correlation_id.into(),
            fingerprint: None,
            actor_type: None,
            actor_id: None,
            resource_type: None,
            resource_id: None,
            namespace: None,
            cluster_id: None,
            trace_id: None,
            span_id: None,
            severity: None,
            duration_ms: None,
            error_code: None,
            error_message: None,
            event_data: EventData::empty(),
        }
    }

    pub fn event_category(&self) -> &'static str {
        CATEGORY
    }

    /// Approximate memory the event holds (the struct, its strings and the text of `event_data`): what
    /// the writer's byte budget counts. Computed once, when the event is queued.
    pub fn approx_bytes(&self) -> u64 {
        let opt = |v: &Option<String>| v.as_ref().map_or(0, String::len);
        let strings = self.correlation_id.len()
            + opt(&self.fingerprint)
            + opt(&self.actor_type)
            + opt(&self.actor_id)
            + opt(&self.resource_type)
            + opt(&self.resource_id)
            + opt(&self.namespace)
            + opt(&self.cluster_id)
            + opt(&self.trace_id)
            + opt(&self.span_id)
            + opt(&self.severity)
            + opt(&self.error_code)
            + opt(&self.error_message);
        (std::mem::size_of::<Self>() + strings + self.event_data.len()) as u64
    }
}
