//! The events the gateway emits, in kubernaut's shapes (docs/audit.md, "Events").
//!
//! kubernaut's DataStorage validates every event's `event_data` against its OpenAPI schema, chosen by
//! `event_data.event_type`: the four signal/RR events use `GatewayAuditPayload`, config reloads
//! `GatewayConfigReloadedPayload` / `GatewayConfigRejectedPayload`. The builders here are the one place
//! that knows those shapes and kubernaut's envelope conventions (actor, resource, correlation ID), so
//! the admission pipeline only says *what* happened. `gateway/tests/audit_datastorage_schema.rs`
//! validates every builder's output against DataStorage's published specification.
//!
//! Per decision:
//!
//! | decision | events |
//! |---|---|
//! | new RR | `gateway.signal.received` + `gateway.crd.created` |
//! | duplicate | one `gateway.signal.deduplicated`, carrying everything needed to rebuild the RR spec |
//! | admission failed | `gateway.crd.failed` |
//! | invalid / out of scope | `gateway.signal.rejected` (namegate's) |
//! | resolved alert | `gateway.signal.ignored` (namegate's) |
//!
//! namegate-only keys (`rr_uid`, `attempt`, `signal_source`, `reason`, `field`) sit beside the
//! schema's: the schema allows extra keys, namegate's own store keeps them (lookups group by
//! `rr_uid`), and DataStorage drops them on decode.

use super::event::{AuditEvent, EventOutcome, EventType};
use super::event_data::{EventData, ObjectBuilder};
use crate::signal::{InvalidSignal, Signal, Source};

/// `event_data.signal_type`: kubernaut normalises every adapter to `alert`; the adapter is in the actor.
pub const SIGNAL_TYPE: &str = "alert";
/// `error_details.component` of the gateway's failures.
pub const ERROR_COMPONENT: &str = "gateway";
/// DataStorage's column limit for `correlation_id` and `resource_id`.
pub const MAX_ID_LEN: usize = 255;
/// The `event_data` key of the occurrence count the decision's event reports; the pipeline rewrites it
/// when the answer is committed ([`crate::audit::event_data::EventData::set_int`]).
pub const OCCURRENCE_COUNT: &str = "occurrence_count";

/// Who caused an event (`actor_type`, `actor_id`), kubernaut's convention:
/// `authenticated-service/<username>` when the caller was authenticated, else `external/<adapter>`;
/// `gateway/crd-creator` for the RR events the gateway itself causes; `service/gateway` for config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub actor_type: String,
    pub actor_id: String,
}

impl Actor {
    /// The sender of a signal: its authenticated username, else the adapter it came through.
    pub fn sender(username: Option<&str>, source: Source) -> Self {
        match username.filter(|u| !u.is_empty()) {
            Some(user) => Self {
                actor_type: "authenticated-service".into(),
                actor_id: user.to_owned(),
            },
            None => Self {
                actor_type: "external".into(),
                actor_id: source.as_str().to_owned(),
            },
        }
    }

    /// The gateway's RR writer (`gateway.crd.*`).
    pub fn crd_creator() -> Self {
        Self {
            actor_type: "gateway".into(),
            actor_id: "crd-creator".into(),
        }
    }

    /// The gateway itself (config events).
    pub fn service() -> Self {
        Self {
            actor_type: "service".into(),
            actor_id: "gateway".into(),
        }
    }
}

/// The RR a decision is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RrRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: Option<String>,
    pub attempt: u32,
}

impl RrRef<'_> {
    /// `namespace/name`: the payload's `remediation_request` and the crd events' resource ID.
    pub fn qualified(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Why admission failed, as `error_details` and the envelope's error columns carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure<'a> {
    /// Machine-readable, e.g. `apiserver_unavailable`; written as `ERR_APISERVER_UNAVAILABLE` in
    /// `error_details.code` (kubernaut's `ERR_[CATEGORY]_[SPECIFIC]` style) and as is in `error_code`.
    pub code: &'a str,
    pub message: String,
    pub retry_possible: bool,
}

/// `{signal_name}:{namespace}:{Kind}:{name}`: kubernaut's readable correlation ID of a decision that has
/// no RR, cut to DataStorage's 255 characters (at a character boundary).
pub fn readable_correlation_id(
    signal_name: &str,
    namespace: &str,
    kind: &str,
    name: &str,
) -> String {
    truncate(
        format!("{signal_name}:{namespace}:{kind}:{name}"),
        MAX_ID_LEN,
    )
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

fn signal_correlation_without_rr(s: &Signal) -> String {
    readable_correlation_id(&s.name, &s.target.namespace, &s.target.kind, &s.target.name)
}

/// The five fields `GatewayAuditPayload` requires, plus the signal's source. `event_data` is written
/// as canonical JSON text as it is built (docs/audit.md, "The event's representation"); `extra` is a
/// hint for the bytes the caller adds (the original payload, labels, annotations).
fn base_payload(t: EventType, s: &Signal, fingerprint: &str, extra: usize) -> ObjectBuilder {
    let mut m = ObjectBuilder::with_capacity(256 + extra);
    m.str("event_type", t.as_str())
        .str("signal_type", SIGNAL_TYPE)
        .str("signal_name", &s.name)
        .str("namespace", &s.target.namespace)
        .str("fingerprint", fingerprint)
        .str("signal_source", s.source.as_str());
    m
}

fn target_fields(m: &mut ObjectBuilder, s: &Signal) {
    m.str("severity", &s.severity)
        .str("resource_kind", &s.target.kind)
        .str("resource_name", &s.target.name);
}

/// Bytes the original payload, labels and annotations add to a signal's event, about.
fn reconstruction_bytes(s: &Signal) -> usize {
    let map = |m: &std::collections::BTreeMap<String, String>| {
        m.iter().map(|(k, v)| k.len() + v.len() + 6).sum::<usize>()
    };
    s.original_payload.len() + map(&s.labels) + map(&s.annotations)
}

fn rr_fields(m: &mut ObjectBuilder, rr: &RrRef<'_>) {
    m.str_joined("remediation_request", &[rr.namespace, "/", rr.name])
        .opt_str("rr_uid", rr.uid.as_deref())
        .int("attempt", i64::from(rr.attempt));
}

fn envelope(
    t: EventType,
    outcome: EventOutcome,
    correlation: String,
    actor: &Actor,
    s: Option<&Signal>,
) -> AuditEvent {
    let mut ev = AuditEvent::new(t, outcome, correlation);
    ev.actor_type = Some(actor.actor_type.clone());
    ev.actor_id = Some(actor.actor_id.clone());
    if let Some(s) = s {
        ev.fingerprint = Some(s.fingerprint.to_hex());
        ev.namespace = Some(s.target.namespace.clone()).filter(|n| !n.is_empty());
        ev.cluster_id = s.target.cluster.clone();
        ev.severity = Some(s.severity.clone());
    }
    let (trace_id, span_id) = crate::telemetry::trace_ids();
    ev.trace_id = trace_id;
    ev.span_id = span_id;
    ev
}

/// The signal as the event's resource: its fingerprint, which [`envelope`] already wrote.
fn signal_resource(ev: &mut AuditEvent) {
    ev.resource_type = Some("Signal".into());
    ev.resource_id = ev.fingerprint.clone();
}

/// `gateway.signal.received`: a signal that created a new RR (emitted just before `crd.created`).
pub fn signal_received(s: &Signal, sender: &Actor, rr: &RrRef<'_>) -> AuditEvent {
    let t = EventType::SignalReceived;
    let mut ev = envelope(
        t,
        EventOutcome::Success,
        rr.name.to_owned(),
        sender,
        Some(s),
    );
    signal_resource(&mut ev);
    ev.event_data = signal_event_data(t, s, fingerprint_of(&ev), rr, "new", None);
    ev
}

/// The envelope's fingerprint (set from the signal by [`envelope`]): the payload repeats it.
fn fingerprint_of(ev: &AuditEvent) -> &str {
    ev.fingerprint.as_deref().unwrap_or_default()
}

/// `gateway.signal.deduplicated`: the one event of a duplicate. It carries the signal's full content
/// (original payload, labels, annotations, severity, target) so DataStorage can rebuild the RR from it
/// alone, and the occurrence count this replica knows.
pub fn signal_deduplicated(
    s: &Signal,
    sender: &Actor,
    rr: &RrRef<'_>,
    occurrence_count: i32,
) -> AuditEvent {
    let t = EventType::SignalDeduplicated;
    let mut ev = envelope(
        t,
        EventOutcome::Success,
        rr.name.to_owned(),
        sender,
        Some(s),
    );
    signal_resource(&mut ev);
    ev.event_data = signal_event_data(
        t,
        s,
        fingerprint_of(&ev),
        rr,
        "duplicate",
        Some(occurrence_count),
    );
    ev
}

/// The `event_data` of [`signal_received`] and [`signal_deduplicated`]: the members of
/// [`base_payload`], [`target_fields`] and [`rr_fields`]; what DataStorage needs to rebuild the RR
/// spec — the signal's own JSON (when it is an object, as kubernaut sends it), labels and annotations
/// (`{}` when empty); the deduplication status and, for a duplicate, the occurrence count. On the
/// request path of every signal, so its members are written in ascending key order: the builder's
/// text is then canonical as written, with no sort and no copy (docs/audit.md, "The event's
/// representation").
fn signal_event_data(
    t: EventType,
    s: &Signal,
    fingerprint: &str,
    rr: &RrRef<'_>,
    deduplication_status: &str,
    occurrence_count: Option<i32>,
) -> EventData {
    let mut m = ObjectBuilder::with_capacity(640 + reconstruction_bytes(s));
    m.int("attempt", i64::from(rr.attempt))
        .str("deduplication_status", deduplication_status)
        .str("event_type", t.as_str())
        .str("fingerprint", fingerprint)
        .str("namespace", &s.target.namespace);
    if let Some(count) = occurrence_count {
        m.int_slot(OCCURRENCE_COUNT, i64::from(count));
    }
    m.json_object("original_payload", &s.original_payload)
        .str_joined("remediation_request", &[rr.namespace, "/", rr.name])
        .str("resource_kind", &s.target.kind)
        .str("resource_name", &s.target.name)
        .opt_str("rr_uid", rr.uid.as_deref())
        .str("severity", &s.severity)
        .string_map("signal_annotations", &s.annotations)
        .string_map("signal_labels", &s.labels)
        .str("signal_name", &s.name)
        .str("signal_source", s.source.as_str())
        .str("signal_type", SIGNAL_TYPE);
    debug_assert!(m.in_key_order(), "signal event members out of key order");
    m.finish()
}

/// `gateway.crd.created`: the RR `create` succeeded.
pub fn crd_created(s: &Signal, rr: &RrRef<'_>, occurrence_count: i32) -> AuditEvent {
    let t = EventType::CrdCreated;
    let mut ev = envelope(
        t,
        EventOutcome::Success,
        rr.name.to_owned(),
        &Actor::crd_creator(),
        Some(s),
    );
    ev.resource_type = Some("RemediationRequest".into());
    ev.resource_id = Some(truncate(rr.qualified(), MAX_ID_LEN));
    let mut m = base_payload(t, s, fingerprint_of(&ev), 0);
    target_fields(&mut m, s);
    rr_fields(&mut m, rr);
    m.int_slot(OCCURRENCE_COUNT, i64::from(occurrence_count));
    ev.event_data = m.finish();
    ev
}

/// `gateway.crd.failed`: admission failed; no RR exists, so the correlation ID (and resource ID) is
/// the readable `{signal_name}:{namespace}:{Kind}:{name}`.
pub fn crd_failed(s: &Signal, failure: &Failure<'_>) -> AuditEvent {
    let t = EventType::CrdFailed;
    let correlation = signal_correlation_without_rr(s);
    let mut ev = envelope(
        t,
        EventOutcome::Failure,
        correlation.clone(),
        &Actor::crd_creator(),
        Some(s),
    );
    ev.resource_type = Some("RemediationRequest".into());
    ev.resource_id = Some(correlation);
    ev.error_code = Some(failure.code.to_owned());
    ev.error_message = Some(failure.message.clone());
    let mut m = base_payload(t, s, fingerprint_of(&ev), 0);
    target_fields(&mut m, s);
    m.object("error_details", error_details(failure));
    ev.event_data = m.finish();
    ev
}

fn error_details(f: &Failure<'_>) -> ObjectBuilder {
    let mut m = ObjectBuilder::with_capacity(64 + f.message.len());
    m.str("message", &f.message)
        .str("code", &format!("ERR_{}", f.code.to_ascii_uppercase()))
        .str("component", ERROR_COMPONENT)
        .bool("retry_possible", f.retry_possible);
    m
}

/// `gateway.signal.rejected` (namegate's): the element was invalid. Nothing about it can be trusted, so
/// the correlation ID is the request's (`request:<request-id>`) and the payload names the field.
pub fn signal_rejected(
    request_id: &str,
    sender: &Actor,
    invalid: &InvalidSignal,
    signal_name: Option<&str>,
) -> AuditEvent {
    let t = EventType::SignalRejected;
    let mut ev = envelope(
        t,
        EventOutcome::Failure,
        format!("request:{request_id}"),
        sender,
        None,
    );
    ev.resource_type = Some("Signal".into());
    ev.resource_id = Some(format!("request:{request_id}"));
    ev.error_code = Some("invalid_signal".into());
    ev.error_message = Some(invalid.to_string());
    let mut m = ObjectBuilder::with_capacity(256);
    m.str("event_type", t.as_str())
        .str("signal_type", SIGNAL_TYPE)
        .str("signal_name", signal_name.unwrap_or(""))
        .str("namespace", "")
        .str("fingerprint", "")
        .str("reason", "invalid")
        .str("field", &invalid.field)
        .object(
            "error_details",
            error_details(&Failure {
                code: "invalid_signal",
                message: invalid.to_string(),
                retry_possible: false,
            }),
        );
    ev.event_data = m.finish();
    ev
}

/// A resolved alert as [`signal_ignored`] needs it: what the adapter could determine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved<'a> {
    pub signal_name: &'a str,
    pub fingerprint: Option<String>,
    pub namespace: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub name: Option<&'a str>,
    pub cluster: Option<&'a str>,
}

/// `gateway.signal.ignored` (namegate's): a resolved alert, which creates nothing. Correlated like a
/// failure (`{signal_name}:{namespace}:{Kind}:{name}`) when the target is known, else by request.
pub fn signal_ignored(
    request_id: &str,
    sender: &Actor,
    source: Source,
    r: &Resolved<'_>,
) -> AuditEvent {
    let t = EventType::SignalIgnored;
    let correlation = match (r.namespace, r.kind, r.name) {
        (Some(ns), Some(kind), Some(name)) => {
            readable_correlation_id(r.signal_name, ns, kind, name)
        }
        _ => format!("request:{request_id}"),
    };
    let mut ev = envelope(t, EventOutcome::Success, correlation, sender, None);
    ev.fingerprint = r.fingerprint.clone();
    ev.namespace = r.namespace.map(str::to_owned).filter(|n| !n.is_empty());
    ev.cluster_id = r.cluster.map(str::to_owned);
    if let Some(fp) = &r.fingerprint {
        ev.resource_type = Some("Signal".into());
        ev.resource_id = Some(fp.clone());
    }
    let mut m = ObjectBuilder::with_capacity(256);
    m.str("event_type", t.as_str())
        .str("signal_type", SIGNAL_TYPE)
        .str("signal_name", r.signal_name)
        .str("namespace", r.namespace.unwrap_or(""))
        .str("fingerprint", r.fingerprint.as_deref().unwrap_or(""))
        .str("signal_source", source.as_str());
    if let Some(kind) = r.kind {
        m.str("resource_kind", kind);
    }
    if let Some(name) = r.name {
        m.str("resource_name", name);
    }
    m.str("reason", "resolved");
    ev.event_data = m.finish();
    ev
}

/// `gateway.config.reloaded` / `gateway.config.rejected`: a hot-reloadable component (`tls`,
/// `log_level`, …) was reloaded or its new version refused (the previous one is kept). Correlated as
/// kubernaut does: `config-reload-{component}-{unix nanos}`.
pub fn config_reload(
    component: &str,
    config_version: Option<&str>,
    rejection: Option<&str>,
) -> AuditEvent {
    let now = jiff::Timestamp::now();
    let correlation = truncate(
        format!("config-reload-{component}-{}", now.as_nanosecond()),
        MAX_ID_LEN,
    );
    let (t, outcome) = match rejection {
        None => (EventType::ConfigReloaded, EventOutcome::Success),
        Some(_) => (EventType::ConfigRejected, EventOutcome::Failure),
    };
    let mut ev = envelope(t, outcome, correlation, &Actor::service(), None);
    ev.event_timestamp = now;
    ev.resource_type = Some("Config".into());
    ev.resource_id = Some(truncate(component.to_owned(), MAX_ID_LEN));
    let mut m = ObjectBuilder::with_capacity(128);
    m.str("event_type", t.as_str()).str("component", component);
    match rejection {
        None => {
            if let Some(v) = config_version {
                m.str("config_version", v);
            }
        }
        Some(reason) => {
            ev.error_code = Some("config_rejected".into());
            ev.error_message = Some(reason.to_owned());
            m.str("rejection_reason", reason);
        }
    }
    ev.event_data = m.finish();
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_follows_kubernaut() {
        assert_eq!(
            Actor::sender(
                Some("system:serviceaccount:monitoring:alertmanager"),
                Source::Prometheus
            ),
            Actor {
                actor_type: "authenticated-service".into(),
                actor_id: "system:serviceaccount:monitoring:alertmanager".into()
            }
        );
        assert_eq!(
            Actor::sender(None, Source::KubernetesEvents),
            Actor {
                actor_type: "external".into(),
                actor_id: "kubernetes-events".into()
            }
        );
        assert_eq!(
            Actor::sender(Some(""), Source::Prometheus).actor_type,
            "external"
        );
    }

    /// The builders as they were before `event_data` became text: the same members as a
    /// `serde_json::Value` tree, canonicalised later by the store (`chain::canonical_json`). The oracle
    /// for the bytes the builders write now.
    mod tree {
        use std::collections::BTreeMap;

        use serde_json::{Map, Value, json};

        use super::super::{ERROR_COMPONENT, Failure, RrRef, SIGNAL_TYPE};
        use crate::audit::event::EventType;
        use crate::signal::{InvalidSignal, Signal, Source};

        fn base_payload(t: EventType, s: &Signal) -> Map<String, Value> {
            let mut m = Map::new();
            m.insert("event_type".into(), json!(t.as_str()));
            m.insert("signal_type".into(), json!(SIGNAL_TYPE));
            m.insert("signal_name".into(), json!(s.name));
            m.insert("namespace".into(), json!(s.target.namespace));
            m.insert("fingerprint".into(), json!(s.fingerprint.to_hex()));
            m.insert("signal_source".into(), json!(s.source.as_str()));
            m
        }

        fn target_fields(m: &mut Map<String, Value>, s: &Signal) {
            m.insert("severity".into(), json!(s.severity));
            m.insert("resource_kind".into(), json!(s.target.kind));
            m.insert("resource_name".into(), json!(s.target.name));
        }

        fn reconstruction_fields(m: &mut Map<String, Value>, s: &Signal) {
            if let Ok(Value::Object(original)) = serde_json::from_str::<Value>(&s.original_payload)
            {
                m.insert("original_payload".into(), Value::Object(original));
            }
            m.insert("signal_labels".into(), string_map(&s.labels));
            m.insert("signal_annotations".into(), string_map(&s.annotations));
        }

        fn string_map(m: &BTreeMap<String, String>) -> Value {
            Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            )
        }

        fn rr_fields(m: &mut Map<String, Value>, rr: &RrRef<'_>) {
            m.insert("remediation_request".into(), json!(rr.qualified()));
            m.insert("rr_uid".into(), json!(rr.uid));
            m.insert("attempt".into(), json!(rr.attempt));
        }

        pub fn signal_received(s: &Signal, rr: &RrRef<'_>) -> Value {
            let mut m = base_payload(EventType::SignalReceived, s);
            reconstruction_fields(&mut m, s);
            target_fields(&mut m, s);
            rr_fields(&mut m, rr);
            m.insert("deduplication_status".into(), json!("new"));
            Value::Object(m)
        }

        pub fn signal_deduplicated(s: &Signal, rr: &RrRef<'_>, count: i32) -> Value {
            let mut m = base_payload(EventType::SignalDeduplicated, s);
            reconstruction_fields(&mut m, s);
            target_fields(&mut m, s);
            rr_fields(&mut m, rr);
            m.insert("deduplication_status".into(), json!("duplicate"));
            m.insert("occurrence_count".into(), json!(count));
            Value::Object(m)
        }

        pub fn crd_created(s: &Signal, rr: &RrRef<'_>, count: i32) -> Value {
            let mut m = base_payload(EventType::CrdCreated, s);
            target_fields(&mut m, s);
            rr_fields(&mut m, rr);
            m.insert("occurrence_count".into(), json!(count));
            Value::Object(m)
        }

        pub fn crd_failed(s: &Signal, f: &Failure<'_>) -> Value {
            let mut m = base_payload(EventType::CrdFailed, s);
            target_fields(&mut m, s);
            m.insert("error_details".into(), error_details(f));
            Value::Object(m)
        }

        fn error_details(f: &Failure<'_>) -> Value {
            json!({
                "message": f.message,
                "code": format!("ERR_{}", f.code.to_ascii_uppercase()),
                "component": ERROR_COMPONENT,
                "retry_possible": f.retry_possible,
            })
        }

        pub fn signal_rejected(invalid: &InvalidSignal, signal_name: Option<&str>) -> Value {
            json!({
                "event_type": EventType::SignalRejected.as_str(),
                "signal_type": SIGNAL_TYPE,
                "signal_name": signal_name.unwrap_or(""),
                "namespace": "",
                "fingerprint": "",
                "reason": "invalid",
                "field": invalid.field,
                "error_details": error_details(&Failure {
                    code: "invalid_signal",
                    message: invalid.to_string(),
                    retry_possible: false,
                }),
            })
        }

        pub fn signal_ignored(source: Source, r: &super::super::Resolved<'_>) -> Value {
            let mut m = Map::new();
            m.insert(
                "event_type".into(),
                json!(EventType::SignalIgnored.as_str()),
            );
            m.insert("signal_type".into(), json!(SIGNAL_TYPE));
            m.insert("signal_name".into(), json!(r.signal_name));
            m.insert("namespace".into(), json!(r.namespace.unwrap_or("")));
            m.insert(
                "fingerprint".into(),
                json!(r.fingerprint.as_deref().unwrap_or("")),
            );
            m.insert("signal_source".into(), json!(source.as_str()));
            if let Some(kind) = r.kind {
                m.insert("resource_kind".into(), json!(kind));
            }
            if let Some(name) = r.name {
                m.insert("resource_name".into(), json!(name));
            }
            m.insert("reason".into(), json!("resolved"));
            Value::Object(m)
        }

        pub fn config_reload(
            t: EventType,
            component: &str,
            version: Option<&str>,
            rejection: Option<&str>,
        ) -> Value {
            let mut m = Map::new();
            m.insert("event_type".into(), json!(t.as_str()));
            m.insert("component".into(), json!(component));
            match rejection {
                None => {
                    if let Some(v) = version {
                        m.insert("config_version".into(), json!(v));
                    }
                }
                Some(reason) => {
                    m.insert("rejection_reason".into(), json!(reason));
                }
            }
            Value::Object(m)
        }
    }

    fn signals() -> Vec<Signal> {
        let now: jiff::Timestamp = "2026-11-29T12:00:00Z".parse().unwrap_or_default();
        let plain = Signal::sample(now);
        let mut rich = plain.clone();
        rich.source = Source::KubernetesEvents;
        rich.name = "Høj\"latens\" – «prod» ✓ 日本語 \u{1}\t\u{7f}".into();
        rich.severity = "Sev1 ☠".into();
        rich.target.namespace = "ñamespace".into();
        rich.target.name = "api-\\x".into();
        rich.target.cluster = Some("eu/west".into());
        rich.labels = [
            ("alertname", "HighLatency"),
            ("Zone", "eu-west-1"),
            ("émoji", "🔥 \"hot\""),
            ("a/b", "\u{0}\u{1f}"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        rich.annotations = [
            ("summary", "p99 > 2 s\nsince 12:00"),
            ("runbook_url", "https://x/y?a=1&b=2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        rich.original_payload = r#"{"status":"firing","labels":{"z":"1","a":"ünï"},"values":[1,-2,3.5,1e21,0.1,-0.0,12345678901234567890,-9223372036854775808,2.5e-8],"startsAt":"2026-11-29T12:00:00Z","nested":{"b":[{"y":null,"x":true}],"a":"\u00e9\ud83d\ude00\u0007"},"fingerprint":"abc"}"#.into();
        let mut not_object = plain.clone();
        not_object.original_payload = "[1,2]".into();
        let mut unparseable = plain.clone();
        unparseable.original_payload = "{not json".into();
        vec![plain, rich, not_object, unparseable]
    }

    #[test]
    fn signal_events_name_the_signal_by_its_fingerprint() {
        let s = &signals()[0];
        let sender = Actor::sender(None, Source::Prometheus);
        let rr = RrRef {
            namespace: "kubernaut-system",
            name: "rr-b157a3a9e42f",
            uid: None,
            attempt: 0,
        };
        for ev in [
            signal_received(s, &sender, &rr),
            signal_deduplicated(s, &sender, &rr, 2),
        ] {
            assert_eq!(ev.resource_type.as_deref(), Some("Signal"));
            assert_eq!(ev.resource_id, Some(s.fingerprint.to_hex()));
            assert_eq!(ev.fingerprint, ev.resource_id);
        }
    }

    #[test]
    fn event_data_text_is_the_old_trees_canonical_form() {
        use crate::audit::chain::canonical_json;
        let same = |built: &AuditEvent, tree: serde_json::Value| {
            assert_eq!(
                built.event_data.as_str(),
                canonical_json(&tree),
                "{}",
                built.event_type.as_str()
            );
        };
        let sender = Actor::sender(
            Some("system:serviceaccount:monitoring:alertmanager"),
            Source::Prometheus,
        );
        for s in signals() {
            for (uid, attempt, count) in
                [(Some("8b6f…-uid ✓".to_owned()), 3, 41), (None, 0, i32::MAX)]
            {
                let rr = RrRef {
                    namespace: "kubernaut-system",
                    name: "rr-b157a3a9e42f",
                    uid,
                    attempt,
                };
                same(
                    &signal_received(&s, &sender, &rr),
                    tree::signal_received(&s, &rr),
                );
                same(
                    &signal_deduplicated(&s, &sender, &rr, count),
                    tree::signal_deduplicated(&s, &rr, count),
                );
                same(
                    &crd_created(&s, &rr, count),
                    tree::crd_created(&s, &rr, count),
                );
                // The pipeline rewrites the count at commit.
                let mut dup = signal_deduplicated(&s, &sender, &rr, count);
                dup.event_data.set_int(OCCURRENCE_COUNT, 1_000_000_007);
                same(&dup, tree::signal_deduplicated(&s, &rr, 1_000_000_007));
            }
            for retry_possible in [true, false] {
                let f = Failure {
                    code: "apiserver_unavailable",
                    message: format!("the API server said \"no\" ✗ to {}", s.name),
                    retry_possible,
                };
                same(&crd_failed(&s, &f), tree::crd_failed(&s, &f));
            }
            let invalid = InvalidSignal::new("labels.älertname", "must not be empty \"\"");
            same(
                &signal_rejected("req-1", &sender, &invalid, Some(&s.name)),
                tree::signal_rejected(&invalid, Some(&s.name)),
            );
            same(
                &signal_rejected("req-1", &sender, &invalid, None),
                tree::signal_rejected(&invalid, None),
            );
            let fp = s.fingerprint.to_hex();
            for r in [
                Resolved {
                    signal_name: &s.name,
                    fingerprint: Some(fp.clone()),
                    namespace: Some(&s.target.namespace),
                    kind: Some(&s.target.kind),
                    name: Some(&s.target.name),
                    cluster: s.target.cluster.as_deref(),
                },
                Resolved {
                    signal_name: &s.name,
                    fingerprint: None,
                    namespace: None,
                    kind: None,
                    name: None,
                    cluster: None,
                },
            ] {
                same(
                    &signal_ignored("req-2", &sender, s.source, &r),
                    tree::signal_ignored(s.source, &r),
                );
            }
        }
        same(
            &config_reload("tls", Some("v2 ✓"), None),
            tree::config_reload(EventType::ConfigReloaded, "tls", Some("v2 ✓"), None),
        );
        same(
            &config_reload("log_level", None, Some("unknown level \"loud\"")),
            tree::config_reload(
                EventType::ConfigRejected,
                "log_level",
                None,
                Some("unknown level \"loud\""),
            ),
        );
    }

    #[test]
    fn readable_ids_are_bounded_at_char_boundaries() {
        assert_eq!(
            readable_correlation_id("HighMemory", "prod", "Pod", "api-1"),
            "HighMemory:prod:Pod:api-1"
        );
        let long = readable_correlation_id(&"é".repeat(200), "ns", "Pod", "p");
        assert!(long.len() <= MAX_ID_LEN);
        assert!(long.chars().all(|c| c == 'é'));
    }
}
