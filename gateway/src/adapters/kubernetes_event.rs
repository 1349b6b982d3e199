//! The Kubernetes Event adapter (`POST /api/v1/signals/kubernetes-event`, docs/api.md).
//!
//! Accepts one Event in either shape:
//!
//! | meaning            | `core/v1`                          | `events.k8s.io/v1`                         |
//! |--------------------|------------------------------------|--------------------------------------------|
//! | target             | `involvedObject`                   | `regarding`                                |
//! | text               | `message`                          | `note`                                     |
//! | first seen         | `firstTimestamp` (or `eventTime`)  | `eventTime` (or `deprecatedFirstTimestamp`)|
//! | last seen          | `lastTimestamp`, `series.lastObservedTime` | `series.lastObservedTime`, `deprecatedLastTimestamp` |
//! | reporter           | `source{component, host}`, `reportingComponent`, `reportingInstance` | `reportingController`, `reportingInstance`, `deprecatedSource` |
//!
//! The target reference is `regarding` when `apiVersion` is `events.k8s.io/…`, else
//! `involvedObject`, falling back to the other when the preferred one is absent.
//!
//! # Request-level rules ([`RequestError`], 400)
//!
//! - The body is a JSON object.
//! - `type` is `Warning` or `Error`; `Normal` → [`RequestError::NormalEvent`]; anything else
//!   (or absent) → malformed `type`.
//! - Timestamps, when present, are RFC 3339; the newest of them (the latest observation) must be
//!   at most [`super::FreshnessConfig::event_max_age`] old and at most `future` ahead; an Event
//!   with no timestamp at all is refused (replay protection cannot judge it).
//!
//! # Signal-level rules ([`Decoded::Invalid`], also 400 for a single Event)
//!
//! - `reason` is the signal name: required, at most 253 characters.
//! - The target reference is an object with a `kind` (an identifier), a `name` (a valid object
//!   name) and, for namespaced kinds, a `namespace` (a DNS-1123 label). Known cluster-scoped kinds
//!   (`Node`, `Namespace`, `PersistentVolume`, `StorageClass`) always get an empty namespace; known
//!   namespaced kinds without one are invalid; for other kinds the namespace is taken as sent.
//!   `apiVersion` is taken from the reference, else from the built-in kind table.
//!
//! # Mapping
//!
//! - severity: the Event's `type` verbatim (`Warning` or `Error`), as the kubernaut gateway passes it
//!   through; kubernaut's SignalProcessing normalises severities (docs/compatibility.md).
//! - cluster: none (an Event does not name its cluster; a forwarder serving a fleet would need its
//!   own endpoint or header, which namegate does not define yet).
//! - labels, the kubernaut gateway's keys (docs/compatibility.md): `kubernaut.ai/event-source`
//!   (`source.component`, `deprecatedSource.component`, `reportingController` or
//!   `reportingComponent`; left out when none), `kubernaut.ai/event-type` (the type, lower case),
//!   `kubernaut.ai/resource-kind` (the object's kind, lower case).
//! - annotations, the same keys: `kubernaut.ai/event-message` (`message` or `note`, when
//!   non-empty, truncated per the caps), `kubernaut.ai/event-count` (`count`, `deprecatedCount` or
//!   `series.count`, when > 0), `kubernaut.ai/source-host` (`source.host`, `deprecatedSource.host`
//!   or `reportingInstance`), `kubernaut.ai/first-timestamp` and `kubernaut.ai/last-timestamp`
//!   (the firing and latest observation times, RFC 3339 in whole seconds).
//! - firing time: the earliest of `firstTimestamp`, `deprecatedFirstTimestamp` and `eventTime`,
//!   else the latest observation; received time: `now`.
//! - provider data (JSON text, `null` when absent): `{"apiVersion", "eventName",
//!   "eventNamespace", "eventUID", "involvedObjectUID", "fieldPath", "count"}` where `count` is
//!   `count`, `series.count` or `deprecatedCount`.
//! - original payload: the body as sent.
//!
//! `count`, `message` and the timestamps never reach the fingerprint: it is computed from the
//! target alone, so every repetition of an Event about one object is the same identity.

use std::collections::BTreeMap;

use crd_schema::Target;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::freshness::check_event_time;
use super::limits::{MapKind, cap_map, fit_signal, quote};
use super::{
    AdapterConfig, RequestError, body_error, body_text, entries, is_kind, known_kind,
    map_control_problem, namespace_problem, object_name_problem, parse_opt, parse_time,
    signal_name_problem, target_problem,
};
use crate::signal::{Decoded, InvalidSignal, Signal, Source};

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow, rename = "apiVersion")]
    api_version: Option<&'a RawValue>,
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow, rename = "involvedObject")]
    involved_object: Option<&'a RawValue>,
    #[serde(borrow)]
    regarding: Option<&'a RawValue>,
    #[serde(borrow)]
    reason: Option<&'a RawValue>,
    #[serde(borrow)]
    message: Option<&'a RawValue>,
    #[serde(borrow)]
    note: Option<&'a RawValue>,
    #[serde(borrow, rename = "type")]
    type_: Option<&'a RawValue>,
    #[serde(borrow)]
    count: Option<&'a RawValue>,
    #[serde(borrow, rename = "deprecatedCount")]
    deprecated_count: Option<&'a RawValue>,
    #[serde(borrow, rename = "firstTimestamp")]
    first_timestamp: Option<&'a RawValue>,
    #[serde(borrow, rename = "lastTimestamp")]
    last_timestamp: Option<&'a RawValue>,
    #[serde(borrow, rename = "deprecatedFirstTimestamp")]
    deprecated_first_timestamp: Option<&'a RawValue>,
    #[serde(borrow, rename = "deprecatedLastTimestamp")]
    deprecated_last_timestamp: Option<&'a RawValue>,
    #[serde(borrow, rename = "eventTime")]
    event_time: Option<&'a RawValue>,
    #[serde(borrow)]
    series: Option<&'a RawValue>,
    #[serde(borrow)]
    source: Option<&'a RawValue>,
    #[serde(borrow, rename = "deprecatedSource")]
    deprecated_source: Option<&'a RawValue>,
    #[serde(borrow, rename = "reportingController")]
    reporting_controller: Option<&'a RawValue>,
    #[serde(borrow, rename = "reportingComponent")]
    reporting_component: Option<&'a RawValue>,
    #[serde(borrow, rename = "reportingInstance")]
    reporting_instance: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ObjectRef {
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    uid: Option<String>,
    #[serde(rename = "fieldPath")]
    field_path: Option<String>,
}

#[derive(Deserialize)]
struct Series<'a> {
    #[serde(borrow, rename = "lastObservedTime")]
    last_observed_time: Option<&'a RawValue>,
    count: Option<i64>,
}

#[derive(Deserialize, Default)]
struct EventSource {
    component: Option<String>,
    host: Option<String>,
}

#[derive(Deserialize, Default)]
struct Metadata {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
}

/// `spec.providerData` of a Kubernetes Event signal.
#[derive(Serialize)]
struct ProviderData<'a> {
    #[serde(rename = "apiVersion")]
    api_version: Option<&'a str>,
    #[serde(rename = "eventName")]
    event_name: Option<&'a str>,
    #[serde(rename = "eventNamespace")]
    event_namespace: Option<&'a str>,
    #[serde(rename = "eventUID")]
    event_uid: Option<&'a str>,
    #[serde(rename = "involvedObjectUID")]
    involved_object_uid: Option<&'a str>,
    #[serde(rename = "fieldPath")]
    field_path: Option<&'a str>,
    count: Option<i64>,
}

/// The Event's times: the latest observation (for freshness) and the first (the firing time).
struct Times {
    latest: (Timestamp, &'static str),
    first: Timestamp,
}

/// Decodes one Kubernetes Event (`core/v1` or `events.k8s.io/v1`). See the module documentation
/// for every rule.
pub fn decode_kubernetes_event(
    body: &[u8],
    now: Timestamp,
    cfg: &AdapterConfig,
) -> Result<Decoded, RequestError> {
    let text = body_text(body)?;
    let event: RawEvent<'_> =
        serde_json::from_str(text).map_err(|e| body_error(&e, "a Kubernetes Event"))?;
    let to_request = |e: InvalidSignal| RequestError::malformed(e.field, e.detail);

    let event_type = parse_opt::<String>(event.type_, "type", "a string").map_err(to_request)?;
    // The Event's type is the severity, verbatim, as the kubernaut gateway passes it through
    // (docs/compatibility.md, "Wire parity"): kubernaut's SignalProcessing normalises it.
    let severity = match event_type.as_deref() {
        Some("Warning") => "Warning",
        Some("Error") => "Error",
        Some("Normal") => return Err(RequestError::NormalEvent),
        Some(other) => {
            return Err(RequestError::malformed(
                "type",
                format!("must be \"Warning\" or \"Error\", not {}", quote(other)),
            ));
        }
        None => {
            return Err(RequestError::malformed(
                "type",
                "required: \"Warning\" or \"Error\"",
            ));
        }
    };
    let event_type = event_type.unwrap_or_default();

    let times = event_times(&event)?;
    check_event_time(times.latest.1, times.latest.0, now, &cfg.freshness)?;

    Ok(
        match decode_signal(&event, text, event_type, severity, &times, now, cfg) {
            Ok(signal) => Decoded::Signal(Box::new(signal)),
            Err(invalid) => Decoded::Invalid(invalid),
        },
    )
}

fn event_times(event: &RawEvent<'_>) -> Result<Times, RequestError> {
    let time = |raw: Option<&RawValue>,
                field: &'static str|
     -> Result<Option<(Timestamp, &'static str)>, RequestError> {
        let Some(text) = parse_opt::<String>(raw, field, "an RFC 3339 timestamp")
            .map_err(|e| RequestError::malformed(e.field, e.detail))?
        else {
            return Ok(None);
        };
        let at = parse_time(&text).ok_or_else(|| {
            RequestError::malformed(
                field,
                format!("{} is not an RFC 3339 timestamp", quote(&text)),
            )
        })?;
        Ok(Some((at, field)))
    };
    let series: Option<Series<'_>> = match event.series {
        None => None,
        Some(raw) => serde_json::from_str::<Option<Series<'_>>>(raw.get())
            .map_err(|_| RequestError::malformed("series", "must be an EventSeries object"))?,
    };
    let last_observed = series.as_ref().and_then(|s| s.last_observed_time);

    let firsts = [
        time(event.first_timestamp, "firstTimestamp")?,
        time(event.deprecated_first_timestamp, "deprecatedFirstTimestamp")?,
        time(event.event_time, "eventTime")?,
    ];
    let lasts = [
        time(last_observed, "series.lastObservedTime")?,
        time(event.last_timestamp, "lastTimestamp")?,
        time(event.deprecated_last_timestamp, "deprecatedLastTimestamp")?,
    ];
    let latest = lasts
        .iter()
        .chain(&firsts)
        .flatten()
        .copied()
        .max_by_key(|(at, _)| *at)
        .ok_or_else(|| {
            RequestError::malformed(
                "lastTimestamp",
                "required for replay protection: one of lastTimestamp, eventTime or \
                 series.lastObservedTime",
            )
        })?;
    let first = firsts
        .iter()
        .flatten()
        .map(|(at, _)| *at)
        .min()
        .unwrap_or(latest.0);
    Ok(Times { latest, first })
}

/// Go's `time.RFC3339` rendering (whole seconds, `Z`), as the kubernaut gateway writes timestamps.
fn rfc3339_seconds(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn decode_signal(
    event: &RawEvent<'_>,
    text: &str,
    event_type: String,
    severity: &str,
    times: &Times,
    now: Timestamp,
    cfg: &AdapterConfig,
) -> Result<Signal, InvalidSignal> {
    let api_version = parse_opt::<String>(event.api_version, "apiVersion", "a string")?;
    let prefer_regarding = api_version
        .as_deref()
        .is_some_and(|v| v.starts_with("events.k8s.io/"));
    let (ref_field, raw_ref) = match (event.involved_object, event.regarding, prefer_regarding) {
        (_, Some(r), true) | (None, Some(r), false) => ("regarding", r),
        (Some(io), _, _) => ("involvedObject", io),
        (None, None, _) => {
            return Err(InvalidSignal::new(
                "involvedObject",
                "required: the object the Event is about (involvedObject or regarding)",
            ));
        }
    };
    let object: ObjectRef = parse_opt(Some(raw_ref), ref_field, "an object reference")?
        .ok_or_else(|| InvalidSignal::new(ref_field, "required: the object the Event is about"))?;

    let reason = parse_opt::<String>(event.reason, "reason", "a string")?.unwrap_or_default();
    if let Some(problem) = signal_name_problem(&reason) {
        return Err(InvalidSignal::new("reason", problem));
    }
    let target = event_target(&object, ref_field)?;
    let fingerprint = target.fingerprint();

    let text_field = |raw, field| parse_opt::<String>(raw, field, "a string");
    let message = match text_field(event.message, "message")? {
        Some(m) => Some(("message", m)),
        None => text_field(event.note, "note")?.map(|m| ("note", m)),
    };
    // Checked here so the problem names the field the sender wrote, not the annotation key.
    if let Some((field, p)) = message
        .as_ref()
        .and_then(|(field, m)| Some((*field, super::control_problem(m, true)?)))
    {
        return Err(InvalidSignal::new(field, p));
    }
    let message = message.map(|(_, m)| m);
    // Reporter details are informational: a mistyped one is dropped rather than refused.
    let source: EventSource = parse_opt(event.source, "source", "")
        .ok()
        .flatten()
        .unwrap_or_default();
    let deprecated_source: EventSource = parse_opt(event.deprecated_source, "deprecatedSource", "")
        .ok()
        .flatten()
        .unwrap_or_default();
    let lenient = |raw| parse_opt::<String>(raw, "", "").ok().flatten();
    let component = [
        source.component,
        deprecated_source.component,
        lenient(event.reporting_controller),
        lenient(event.reporting_component),
    ]
    .into_iter()
    .flatten()
    .find(|c| !c.is_empty());
    let host = [
        source.host,
        deprecated_source.host,
        lenient(event.reporting_instance),
    ]
    .into_iter()
    .flatten()
    .find(|h| !h.is_empty());

    // The kubernaut gateway's keys and values (docs/compatibility.md, "Signals").
    let mut labels = BTreeMap::new();
    if let Some(c) = component {
        labels.insert("kubernaut.ai/event-source".to_owned(), c);
    }
    labels.insert(
        "kubernaut.ai/event-type".to_owned(),
        event_type.to_ascii_lowercase(),
    );
    labels.insert(
        "kubernaut.ai/resource-kind".to_owned(),
        target.kind.to_ascii_lowercase(),
    );
    map_control_problem(entries(&labels), "labels")?;
    cap_map(&mut labels, MapKind::Labels, &cfg.limits, "labels")?;

    let metadata: Metadata = parse_opt(event.metadata, "metadata", "")
        .ok()
        .flatten()
        .unwrap_or_default();
    let series_count = event
        .series
        .and_then(|raw| {
            serde_json::from_str::<Option<Series<'_>>>(raw.get())
                .ok()
                .flatten()
        })
        .and_then(|s| s.count);
    let count = [event.count, event.deprecated_count]
        .into_iter()
        .find_map(|raw| parse_opt::<i64>(raw, "", "").ok().flatten())
        .or(series_count);
    let mut annotations = BTreeMap::new();
    if let Some(m) = message.filter(|m| !m.is_empty()) {
        annotations.insert("kubernaut.ai/event-message".to_owned(), m);
    }
    if let Some(n) = count.filter(|n| *n > 0) {
        annotations.insert("kubernaut.ai/event-count".to_owned(), n.to_string());
    }
    if let Some(h) = host {
        annotations.insert("kubernaut.ai/source-host".to_owned(), h);
    }
    annotations.insert(
        "kubernaut.ai/first-timestamp".to_owned(),
        rfc3339_seconds(times.first),
    );
    annotations.insert(
        "kubernaut.ai/last-timestamp".to_owned(),
        rfc3339_seconds(times.latest.0),
    );
    map_control_problem(entries(&annotations), "annotations")?;
    cap_map(
        &mut annotations,
        MapKind::Annotations,
        &cfg.limits,
        "annotations",
    )?;
    let provider_data = serde_json::to_string(&ProviderData {
        api_version: api_version.as_deref(),
        event_name: metadata.name.as_deref(),
        event_namespace: metadata.namespace.as_deref(),
        event_uid: metadata.uid.as_deref(),
        involved_object_uid: object.uid.as_deref(),
        field_path: object.field_path.as_deref(),
        count,
    })
    .ok();

    let mut signal = Signal {
        source: Source::KubernetesEvents,
        name: reason,
        severity: severity.to_owned(),
        target,
        fingerprint,
        labels,
        annotations,
        firing_time: times.first,
        received_time: now,
        provider_data,
        original_payload: text.to_owned(),
    };
    fit_signal(&mut signal, &cfg.limits);
    Ok(signal)
}

fn event_target(object: &ObjectRef, ref_field: &str) -> Result<Target, InvalidSignal> {
    let at = |field: &str| format!("{ref_field}.{field}");
    let kind = object.kind.as_deref().unwrap_or_default();
    if !is_kind(kind) {
        return Err(InvalidSignal::new(
            at("kind"),
            if kind.is_empty() {
                "required".to_owned()
            } else {
                format!("{} is not a Kubernetes kind", quote(kind))
            },
        ));
    }
    let name = object.name.as_deref().unwrap_or_default();
    if let Some(problem) = object_name_problem(name) {
        return Err(InvalidSignal::new(at("name"), problem));
    }
    let known = known_kind(kind);
    let sent_ns = object.namespace.as_deref().unwrap_or_default();
    let namespace = match known {
        Some(k) if k.cluster_scoped => "",
        Some(_) if sent_ns.is_empty() => {
            return Err(InvalidSignal::new(
                at("namespace"),
                format!(
                    "{kind} {} is namespaced but the Event names no namespace",
                    quote(name)
                ),
            ));
        }
        _ => sent_ns,
    };
    if !namespace.is_empty()
        && let Some(problem) = namespace_problem(namespace)
    {
        return Err(InvalidSignal::new(at("namespace"), problem));
    }
    let api_version = object
        .api_version
        .clone()
        .filter(|v| !v.is_empty())
        .or_else(|| known.map(|k| k.api_version.to_owned()));
    let target = Target {
        cluster: None,
        namespace: namespace.to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
        api_version,
    };
    target_problem(&target, |field| match field {
        crd_schema::TargetField::Cluster => ref_field.to_owned(),
        crd_schema::TargetField::Namespace => at("namespace"),
        crd_schema::TargetField::Kind => at("kind"),
        crd_schema::TargetField::Name => at("name"),
    })?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2026-11-26T17:00:00Z".parse().unwrap()
    }

    fn core_event() -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web-1.17f2", "namespace": "shop", "uid": "e-uid"},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": "shop", "name": "web-1",
                               "uid": "p-uid", "fieldPath": "spec.containers{app}"},
            "reason": "BackOff", "message": "Back-off restarting failed container",
            "source": {"component": "kubelet", "host": "worker-1"},
            "firstTimestamp": "2026-11-26T16:50:00Z", "lastTimestamp": "2026-11-26T16:59:30Z",
            "count": 3, "type": "Warning"
        })
    }

    fn new_event() -> serde_json::Value {
        json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "web-1.17f3", "namespace": "shop"},
            "regarding": {"kind": "Pod", "namespace": "shop", "name": "web-1"},
            "reason": "BackOff", "note": "Back-off restarting failed container",
            "reportingController": "kubelet", "reportingInstance": "worker-1",
            "eventTime": "2026-11-26T16:50:00.123456Z",
            "series": {"count": 9, "lastObservedTime": "2026-11-26T16:59:30.000001Z"},
            "action": "Restarting", "type": "Error"
        })
    }

    fn decode(v: &serde_json::Value) -> Result<Decoded, RequestError> {
        decode_kubernetes_event(v.to_string().as_bytes(), now(), &AdapterConfig::default())
    }

    fn signal(d: Decoded) -> Signal {
        match d {
            Decoded::Signal(s) => *s,
            other => panic!("expected a signal, got {other:?}"),
        }
    }

    fn invalid(d: Decoded) -> InvalidSignal {
        match d {
            Decoded::Invalid(e) => e,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn forged_targets_and_control_characters_are_refused() {
        let mut e = core_event();
        e["involvedObject"]["name"] = json!("Kind:name");
        let inv = invalid(decode(&e).unwrap());
        assert_eq!(inv.field, "involvedObject.name");
        assert!(inv.detail.contains("':'"), "{inv}");
        let mut e = core_event();
        e["involvedObject"]["kind"] = json!("apps/Deployment");
        assert_eq!(invalid(decode(&e).unwrap()).field, "involvedObject.kind");
        let mut e = core_event();
        e["message"] = json!("back-off\u{0}");
        assert_eq!(invalid(decode(&e).unwrap()).field, "message");
        let mut e = core_event();
        e["reason"] = json!("Back\u{0}Off");
        assert_eq!(invalid(decode(&e).unwrap()).field, "reason");
        // Multi-line messages are fine.
        let mut e = core_event();
        e["message"] = json!("line one\nline two");
        assert!(matches!(decode(&e).unwrap(), Decoded::Signal(_)));
    }

    #[test]
    fn core_event_maps_fields() {
        let s = signal(decode(&core_event()).unwrap());
        assert_eq!(
            (s.name.as_str(), s.severity.as_str(), s.source),
            ("BackOff", "Warning", Source::KubernetesEvents)
        );
        assert_eq!(s.target.fingerprint_input(), "shop:Pod:web-1");
        assert_eq!(s.target.api_version.as_deref(), Some("v1"));
        assert_eq!(s.target.cluster, None);
        // The kubernaut gateway's label and annotation keys (docs/compatibility.md).
        let labels: Vec<_> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            labels,
            [
                "kubernaut.ai/event-source=kubelet",
                "kubernaut.ai/event-type=warning",
                "kubernaut.ai/resource-kind=pod",
            ]
        );
        let annotations: Vec<_> = s
            .annotations
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(
            annotations,
            [
                "kubernaut.ai/event-count=3",
                "kubernaut.ai/event-message=Back-off restarting failed container",
                "kubernaut.ai/first-timestamp=2026-11-26T16:50:00Z",
                "kubernaut.ai/last-timestamp=2026-11-26T16:59:30Z",
                "kubernaut.ai/source-host=worker-1",
            ]
        );
        assert_eq!(
            s.firing_time,
            "2026-11-26T16:50:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(s.received_time, now());
        let pd: serde_json::Value =
            serde_json::from_str(s.provider_data.as_deref().unwrap()).unwrap();
        assert_eq!(
            pd,
            json!({"apiVersion": "v1", "eventName": "web-1.17f2", "eventNamespace": "shop",
                              "eventUID": "e-uid", "involvedObjectUID": "p-uid",
                              "fieldPath": "spec.containers{app}", "count": 3})
        );
        assert_eq!(s.original_payload, core_event().to_string());
    }

    #[test]
    fn events_k8s_io_shape() {
        let s = signal(decode(&new_event()).unwrap());
        assert_eq!((s.name.as_str(), s.severity.as_str()), ("BackOff", "Error"));
        assert_eq!(s.target.fingerprint_input(), "shop:Pod:web-1");
        assert_eq!(
            s.annotations["kubernaut.ai/event-message"],
            "Back-off restarting failed container"
        );
        assert_eq!(s.labels["kubernaut.ai/event-source"], "kubelet");
        assert_eq!(s.annotations["kubernaut.ai/source-host"], "worker-1");
        assert_eq!(
            s.firing_time,
            "2026-11-26T16:50:00.123456Z".parse::<Timestamp>().unwrap()
        );
        let pd: serde_json::Value =
            serde_json::from_str(s.provider_data.as_deref().unwrap()).unwrap();
        assert_eq!(pd["count"], 9);
        // Same object, same identity, whichever shape reported it.
        assert_eq!(
            s.fingerprint,
            signal(decode(&core_event()).unwrap()).fingerprint
        );
    }

    #[test]
    fn fingerprint_ignores_count_message_and_times() {
        let base = signal(decode(&core_event()).unwrap()).fingerprint;
        let mut e = core_event();
        e["count"] = json!(4711);
        e["message"] = json!("something else entirely");
        e["firstTimestamp"] = json!("2026-11-26T10:00:00Z");
        e["lastTimestamp"] = json!("2026-11-26T16:58:00Z");
        e["reason"] = json!("Unhealthy");
        e["metadata"]["name"] = json!("web-1.other");
        assert_eq!(signal(decode(&e).unwrap()).fingerprint, base);
        e["involvedObject"]["name"] = json!("web-2");
        assert_ne!(signal(decode(&e).unwrap()).fingerprint, base);
    }

    #[test]
    fn event_types() {
        let mut e = core_event();
        e["type"] = json!("Normal");
        let err = decode(&e).unwrap_err();
        assert!(err.is_normal_event());
        assert_eq!(err.field(), "type");
        e["type"] = json!("Fatal");
        assert_eq!(decode(&e).unwrap_err().field(), "type");
        e.as_object_mut().unwrap().remove("type");
        assert_eq!(decode(&e).unwrap_err().field(), "type");
        e["type"] = json!(1);
        assert_eq!(decode(&e).unwrap_err().field(), "type");
    }

    #[test]
    fn freshness_window() {
        let at = |offset: i64| {
            Timestamp::from_second(now().as_second() + offset)
                .unwrap()
                .to_string()
        };
        let mut e = core_event();
        e["lastTimestamp"] = json!(at(-300));
        assert!(decode(&e).is_ok());
        e["lastTimestamp"] = json!(at(-301));
        let err = decode(&e).unwrap_err();
        assert!(err.is_freshness());
        assert_eq!(err.field(), "lastTimestamp");
        e["lastTimestamp"] = json!(at(120));
        assert!(decode(&e).is_ok());
        e["lastTimestamp"] = json!(at(121));
        assert_eq!(decode(&e).unwrap_err().field(), "lastTimestamp");

        // events.k8s.io: an old eventTime is fine while the series is still observed.
        let mut n = new_event();
        n["eventTime"] = json!("2026-11-26T09:00:00Z");
        assert!(decode(&n).is_ok());
        n["series"]["lastObservedTime"] = json!(at(-301));
        assert_eq!(decode(&n).unwrap_err().field(), "series.lastObservedTime");
        n.as_object_mut().unwrap().remove("series");
        assert_eq!(decode(&n).unwrap_err().field(), "eventTime");
        n["eventTime"] = json!(null);
        n["deprecatedLastTimestamp"] = json!(at(-10));
        assert!(decode(&n).is_ok());

        let mut none = core_event();
        for k in ["firstTimestamp", "lastTimestamp"] {
            none.as_object_mut().unwrap().remove(k);
        }
        none["eventTime"] = json!(null);
        let err = decode(&none).unwrap_err();
        assert!(err.is_malformed());
        assert_eq!(err.field(), "lastTimestamp");
        let mut bad = core_event();
        bad["lastTimestamp"] = json!("recently");
        assert_eq!(decode(&bad).unwrap_err().field(), "lastTimestamp");
        bad["lastTimestamp"] = json!(at(0));
        bad["series"] = json!("x");
        assert_eq!(decode(&bad).unwrap_err().field(), "series");
    }

    #[test]
    fn target_rules() {
        let mut node = core_event();
        node["involvedObject"] =
            json!({"kind": "Node", "name": "worker-7", "namespace": "default"});
        let s = signal(decode(&node).unwrap());
        assert_eq!(s.target.fingerprint_input(), ":Node:worker-7");
        assert_eq!(s.target.api_version.as_deref(), Some("v1"));
        assert!(!s.labels.contains_key("namespace"));

        let cases = [
            (
                json!({"kind": "Pod", "name": "web-1"}),
                "involvedObject.namespace",
            ),
            (
                json!({"kind": "Pod", "namespace": "shop"}),
                "involvedObject.name",
            ),
            (
                json!({"name": "web-1", "namespace": "shop"}),
                "involvedObject.kind",
            ),
            (
                json!({"kind": "apps/Pod", "name": "web-1", "namespace": "shop"}),
                "involvedObject.kind",
            ),
            (
                json!({"kind": "Pod", "name": "web-1", "namespace": "Shop"}),
                "involvedObject.namespace",
            ),
            (
                json!({"kind": "Pod", "name": "x".repeat(254), "namespace": "shop"}),
                "involvedObject.name",
            ),
            (json!("web-1"), "involvedObject"),
        ];
        for (object, field) in cases {
            let mut e = core_event();
            e["involvedObject"] = object.clone();
            assert_eq!(invalid(decode(&e).unwrap()).field, field, "{object}");
        }
        let mut e = core_event();
        e.as_object_mut().unwrap().remove("involvedObject");
        assert_eq!(invalid(decode(&e).unwrap()).field, "involvedObject");
        // A custom kind keeps what was sent.
        e["involvedObject"] = json!({"kind": "Rollout", "name": "r", "namespace": "shop", "apiVersion": "argoproj.io/v1alpha1"});
        let s = signal(decode(&e).unwrap());
        assert_eq!(
            s.target.api_version.as_deref(),
            Some("argoproj.io/v1alpha1")
        );
        assert_eq!(s.target.fingerprint_input(), "shop:Rollout:r");
    }

    #[test]
    fn reason_rules() {
        let mut e = core_event();
        e.as_object_mut().unwrap().remove("reason");
        assert_eq!(invalid(decode(&e).unwrap()).field, "reason");
        e["reason"] = json!("r".repeat(254));
        assert_eq!(invalid(decode(&e).unwrap()).field, "reason");
        e["reason"] = json!(5);
        assert_eq!(invalid(decode(&e).unwrap()).field, "reason");
    }

    #[test]
    fn body_errors() {
        let cfg = AdapterConfig::default();
        for body in [&b"nope"[..], b"[]", b"null", b"\xff"] {
            let e = decode_kubernetes_event(body, now(), &cfg).unwrap_err();
            assert!(e.is_malformed());
            assert_eq!(e.field(), "body");
        }
        let dup = br#"{"type":"Warning","type":"Normal"}"#;
        assert_eq!(
            decode_kubernetes_event(dup, now(), &cfg)
                .unwrap_err()
                .field(),
            "type"
        );
    }

    #[test]
    fn message_is_truncated_at_a_char_boundary() {
        let mut cfg = AdapterConfig::default();
        cfg.limits.max_annotation_value_len = 5;
        let mut e = core_event();
        e["message"] = json!("é".repeat(10));
        let d = decode_kubernetes_event(e.to_string().as_bytes(), now(), &cfg).unwrap();
        assert_eq!(signal(d).annotations["kubernaut.ai/event-message"], "éé");
    }
}
