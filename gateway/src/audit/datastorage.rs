//! kubernaut DataStorage's wire form of an event: one `AuditEventRequest` of its
//! `POST /api/v1/audit/events/batch` body (docs/audit.md, "kubernaut DataStorage").
//!
//! DataStorage assigns `event_id` and computes the hash chain itself, so neither is sent. Columns it
//! does not accept (`trace_id`, `span_id`, `fingerprint`) stay in namegate's own store only; the
//! envelope `severity` is not sent either (kubernaut's gateway leaves it to DataStorage's default and
//! puts the raw severity in `event_data`, and DataStorage's column is shorter than a signal's
//! severity may be).

use serde_json::{Map, Value, json};

use super::chain::{EVENT_VERSION, format_timestamp, truncate_to_micros};
use super::event::{AuditEvent, CATEGORY, EventType};

/// Whether DataStorage's schema has a payload for this event type. `gateway.signal.rejected` and
/// `gateway.signal.ignored` are namegate's own: DataStorage answers 400 to an `event_data.event_type` it
/// has no schema for, so they are kept in namegate's store only.
pub fn accepts(t: EventType) -> bool {
    !matches!(t, EventType::SignalRejected | EventType::SignalIgnored)
}

/// The `AuditEventRequest` JSON of `ev`.
pub fn to_request(ev: &AuditEvent) -> Value {
    let mut m = Map::new();
    m.insert("version".into(), json!(EVENT_VERSION));
    m.insert("event_type".into(), json!(ev.event_type.as_str()));
    m.insert(
        "event_timestamp".into(),
        json!(format_timestamp(truncate_to_micros(ev.event_timestamp))),
    );
    m.insert("event_category".into(), json!(CATEGORY));
    m.insert("event_action".into(), json!(ev.event_type.action()));
    m.insert("event_outcome".into(), json!(ev.event_outcome.as_str()));
    m.insert("correlation_id".into(), json!(ev.correlation_id));
    let optional = [
        ("actor_type", &ev.actor_type),
        ("actor_id", &ev.actor_id),
        ("resource_type", &ev.resource_type),
        ("resource_id", &ev.resource_id),
        ("namespace", &ev.namespace),
        ("cluster_id", &ev.cluster_id),
        ("error_code", &ev.error_code),
        ("error_message", &ev.error_message),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    }
    if let Some(ms) = ev.duration_ms {
        m.insert("duration_ms".into(), json!(ms));
    }
    // The wire form is a tree: parsed from the event's canonical text here, on the writer's side.
    m.insert("event_data".into(), ev.event_data.to_value());
    Value::Object(m)
}
