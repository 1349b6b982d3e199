//! Every event the gateway emits, validated against kubernaut DataStorage's published OpenAPI
//! specification with a JSON-schema validator (docs/audit.md, "Events").
//!
//! The specification is an unmodified copy of kubernaut's `api/openapi/data-storage-v1.yaml` in
//! `tests/fixtures/` (origin in `tests/fixtures/README.md`); `NAMEGATE_DATASTORAGE_SPEC` points the
//! test at another copy (e.g. a newer kubernaut release).
//!
//! OpenAPI 3.0 schemas are JSON Schema draft 4 plus `nullable`; the only conversion done here is the
//! standard one (`nullable: true` → `null` also allowed), in memory. `discriminator` is not a JSON
//! Schema keyword: `oneOf` then demands that the payload match exactly one of the listed schemas,
//! which is stricter than DataStorage's discriminator dispatch.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use crd_schema::{Fingerprint, Target};
use jiff::Timestamp;
use namegate::audit::datastorage;
use namegate::audit::payload::{self, Actor, Failure, Resolved, RrRef};
use namegate::audit::{AuditEvent, EventType};
use namegate::signal::{InvalidSignal, Signal, Source};
use serde_json::{Value, json};

const SPEC_ENV: &str = "NAMEGATE_DATASTORAGE_SPEC";

fn spec_path() -> PathBuf {
    match std::env::var_os(SPEC_ENV) {
        Some(p) => PathBuf::from(p),
        None => {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data-storage-v1.yaml")
        }
    }
}

/// The specification as JSON.
fn load_spec() -> Value {
    let path = spec_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "kubernaut DataStorage OpenAPI spec not readable at {} ({e})",
            path.display()
        )
    });
    let mut spec: Value = serde_yaml_ng::from_str(&text).expect("the spec is YAML");
    openapi_nullable_to_json_schema(&mut spec);
    spec
}

/// OpenAPI 3.0 `nullable: true` → JSON Schema: `null` is also a valid value.
fn openapi_nullable_to_json_schema(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::String(t)) = m.get("type").cloned() {
                    m.insert("type".into(), json!([t, "null"]));
                }
                if let Some(Value::Array(e)) = m.get_mut("enum")
                    && !e.contains(&Value::Null)
                {
                    e.push(Value::Null);
                }
            }
            m.values_mut().for_each(openapi_nullable_to_json_schema);
        }
        Value::Array(items) => items.iter_mut().for_each(openapi_nullable_to_json_schema),
        _ => {}
    }
}

/// A validator for the schema at `#/components/schemas/<name>` of `spec`, `$ref`s resolved within it.
fn validator(spec: &Value, name: &str) -> jsonschema::Validator {
    let mut root = spec.clone();
    root.as_object_mut()
        .unwrap()
        .insert("$ref".into(), json!(format!("#/components/schemas/{name}")));
    jsonschema::draft4::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("building a validator for {name}: {e}"))
}

fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn sample_signal(source: Source) -> Signal {
    let target = Target {
        cluster: Some("fleet-eu-1".into()),
        namespace: "payment".into(),
        kind: "Deployment".into(),
        name: "payment-api".into(),
        api_version: Some("apps/v1".into()),
    };
    let fingerprint: Fingerprint = target.fingerprint();
    Signal {
        source,
        name: "HighMemoryUsage".into(),
        severity: "Sev1-very-custom".into(),
        fingerprint,
        labels: BTreeMap::from([
            ("alertname".into(), "HighMemoryUsage".into()),
            ("namespace".into(), "payment".into()),
        ]),
        annotations: BTreeMap::from([("summary".into(), "memory <90%> & rising".into())]),
        firing_time: Timestamp::UNIX_EPOCH,
        received_time: Timestamp::now(),
        provider_data: None,
        original_payload: json!({
            "status": "firing",
            "labels": {"alertname": "HighMemoryUsage", "namespace": "payment"},
            "annotations": {},
            "startsAt": "2026-11-29T18:00:00Z",
            "values": [1.5, 3, null, true],
        })
        .to_string(),
        target,
    }
}

fn rr() -> RrRef<'static> {
    RrRef {
        namespace: "kubernaut-system",
        name: "rr-b157a3a9e42f-1",
        uid: Some("5f0c4a8e-8a3e-4f51-9d1b-0c2a6f8e9b10".into()),
        attempt: 1,
    }
}

/// One event of every type the gateway emits, from the builders the pipeline uses.
fn every_event() -> Vec<AuditEvent> {
    let am = sample_signal(Source::Prometheus);
    let ke = sample_signal(Source::KubernetesEvents);
    let sa = Actor::sender(
        Some("system:serviceaccount:monitoring:alertmanager"),
        Source::Prometheus,
    );
    let anon = Actor::sender(None, Source::KubernetesEvents);
    let invalid = InvalidSignal::new("alerts[3].labels.namespace", "must not be empty");
    // `namegate create` (docs/creators.md): the same builders with the manual source.
    let manual = sample_signal(Source::Manual);
    let operator = Actor::sender(Some("alice@example.com"), Source::Manual);
    vec![
        payload::signal_received(&manual, &operator, &rr()),
        payload::crd_created(&manual, &rr(), 1),
        payload::signal_deduplicated(&manual, &operator, &rr(), 3),
        payload::signal_deduplicated(&manual, &Actor::sender(None, Source::Manual), &rr(), 4),
        payload::signal_received(&am, &sa, &rr()),
        payload::signal_received(&ke, &anon, &rr()),
        payload::crd_created(&am, &rr(), 1),
        payload::signal_deduplicated(&am, &sa, &rr(), 42),
        payload::signal_deduplicated(&ke, &anon, &rr(), 2),
        payload::crd_failed(
            &am,
            &Failure {
                code: "apiserver_unavailable",
                message: "the API server did not answer within 5s".into(),
                retry_possible: true,
            },
        ),
        payload::signal_rejected("req-1", &sa, &invalid, Some("HighMemoryUsage")),
        payload::signal_rejected("req-2", &anon, &invalid, None),
        payload::signal_ignored(
            "req-3",
            &sa,
            Source::Prometheus,
            &Resolved {
                signal_name: "HighMemoryUsage",
                fingerprint: Some(am.fingerprint.to_hex()),
                namespace: Some("payment"),
                kind: Some("Deployment"),
                name: Some("payment-api"),
                cluster: None,
            },
        ),
        payload::signal_ignored(
            "req-4",
            &anon,
            Source::Prometheus,
            &Resolved {
                signal_name: "Watchdog",
                fingerprint: None,
                namespace: None,
                kind: None,
                name: None,
                cluster: None,
            },
        ),
        payload::config_reload("tls", Some("sha256:0f3c"), None),
        payload::config_reload("tls", None, Some("certificate and key do not match")),
    ]
}

#[test]
fn every_event_type_is_built() {
    let built: std::collections::BTreeSet<&str> = every_event()
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    let all: std::collections::BTreeSet<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(built, all, "a builder per event type, each exercised below");
}

#[test]
fn events_datastorage_accepts_are_valid_audit_event_requests() {
    let spec = load_spec();
    let request = validator(&spec, "AuditEventRequest");
    let mut checked = 0;
    for ev in every_event()
        .iter()
        .filter(|e| datastorage::accepts(e.event_type))
    {
        let body = datastorage::to_request(ev);
        let errs = errors(&request, &body);
        assert!(
            errs.is_empty(),
            "{} is not a valid AuditEventRequest:\n{}\n{body:#}",
            ev.event_type.as_str(),
            errs.join("\n")
        );
        checked += 1;
    }
    assert_eq!(checked, 12);
}

#[test]
fn gateway_payloads_match_gateway_audit_payload_exactly() {
    let spec = load_spec();
    let gateway = validator(&spec, "GatewayAuditPayload");
    for ev in every_event().iter().filter(|e| {
        matches!(
            e.event_type,
            EventType::SignalReceived
                | EventType::SignalDeduplicated
                | EventType::CrdCreated
                | EventType::CrdFailed
        )
    }) {
        let errs = errors(&gateway, &ev.event_data.to_value());
        assert!(errs.is_empty(), "{:?}: {}", ev.event_type, errs.join("\n"));
        assert_eq!(
            ev.event_data.to_value()["event_type"],
            ev.event_type.as_str()
        );
    }
}

/// namegate's own events are "of the same style": valid `GatewayAuditPayload`s except for the
/// discriminator value, which DataStorage's schema does not list (so they are not sent there).
#[test]
fn namegate_only_events_are_gateway_audit_payloads_but_for_their_type() {
    let mut spec = load_spec();
    let request = validator(&spec, "AuditEventRequest");
    let enum_path = "/components/schemas/GatewayAuditPayload/properties/event_type/enum";
    let extra = [EventType::SignalRejected, EventType::SignalIgnored];
    for t in extra {
        assert!(!datastorage::accepts(t));
        spec.pointer_mut(enum_path)
            .and_then(Value::as_array_mut)
            .expect("GatewayAuditPayload.event_type has an enum")
            .push(json!(t.as_str()));
    }
    let widened = validator(&spec, "GatewayAuditPayload");
    let mut checked = 0;
    for ev in every_event()
        .iter()
        .filter(|e| extra.contains(&e.event_type))
    {
        let errs = errors(&widened, &ev.event_data.to_value());
        assert!(errs.is_empty(), "{:?}: {}", ev.event_type, errs.join("\n"));
        // And the published schema really does refuse them: the reason they stay local.
        assert!(
            !request.is_valid(&datastorage::to_request(ev)),
            "{:?} would be accepted by DataStorage; send it",
            ev.event_type
        );
        checked += 1;
    }
    assert_eq!(checked, 4);
}

#[test]
fn kubernaut_envelope_conventions() {
    let am = sample_signal(Source::Prometheus);
    let fp = am.fingerprint.to_hex();
    let sa = Actor::sender(Some("system:serviceaccount:mon:am"), Source::Prometheus);
    let received = payload::signal_received(&am, &sa, &rr());
    assert_eq!(
        (received.actor_type.as_deref(), received.actor_id.as_deref()),
        (
            Some("authenticated-service"),
            Some("system:serviceaccount:mon:am")
        )
    );
    assert_eq!(
        (
            received.resource_type.as_deref(),
            received.resource_id.as_deref()
        ),
        (Some("Signal"), Some(fp.as_str()))
    );
    assert_eq!(received.correlation_id, "rr-b157a3a9e42f-1");
    assert_eq!(
        received.event_data.to_value()["deduplication_status"],
        "new"
    );
    assert_eq!(
        received.event_data.to_value()["remediation_request"],
        "kubernaut-system/rr-b157a3a9e42f-1"
    );

    let created = payload::crd_created(&am, &rr(), 1);
    assert_eq!(
        (created.actor_type.as_deref(), created.actor_id.as_deref()),
        (Some("gateway"), Some("crd-creator"))
    );
    assert_eq!(
        created.resource_id.as_deref(),
        Some("kubernaut-system/rr-b157a3a9e42f-1")
    );
    assert_eq!(created.event_data.to_value()["occurrence_count"], 1);

    // A duplicate's one event carries what rebuilds the RR spec.
    let dup = payload::signal_deduplicated(&am, &sa, &rr(), 7);
    let d = &dup.event_data.to_value();
    assert_eq!(d["deduplication_status"], "duplicate");
    assert_eq!(d["occurrence_count"], 7);
    assert_eq!(d["original_payload"]["startsAt"], "2026-11-29T18:00:00Z");
    assert_eq!(d["signal_labels"]["alertname"], "HighMemoryUsage");
    assert_eq!(d["signal_annotations"]["summary"], "memory <90%> & rising");
    assert_eq!(d["severity"], "Sev1-very-custom");
    assert_eq!(
        (d["resource_kind"].as_str(), d["resource_name"].as_str()),
        (Some("Deployment"), Some("payment-api"))
    );
    assert_eq!(d["rr_uid"], "5f0c4a8e-8a3e-4f51-9d1b-0c2a6f8e9b10");

    let failed = payload::crd_failed(
        &am,
        &Failure {
            code: "apiserver_unavailable",
            message: "down".into(),
            retry_possible: true,
        },
    );
    assert_eq!(
        failed.correlation_id,
        "HighMemoryUsage:payment:Deployment:payment-api"
    );
    assert_eq!(
        failed.resource_id.as_deref(),
        Some(failed.correlation_id.as_str())
    );
    assert_eq!(
        failed.event_data.to_value()["error_details"]["code"],
        "ERR_APISERVER_UNAVAILABLE"
    );
    assert!(
        failed
            .event_data
            .to_value()
            .get("remediation_request")
            .is_none()
    );

    let anon = Actor::sender(None, Source::KubernetesEvents);
    assert_eq!(
        (anon.actor_type.as_str(), anon.actor_id.as_str()),
        ("external", "kubernetes-events")
    );
}
