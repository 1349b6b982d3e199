//! The Alertmanager webhook v4 adapter (`POST /api/v1/signals/prometheus`, docs/api.md, docs/compatibility.md).
//!
//! # Envelope
//!
//! `version, groupKey, truncatedAlerts, status, receiver, groupLabels, commonLabels,
//! commonAnnotations, externalURL, alerts[]`. The body must be a JSON object with a non-empty
//! `alerts` array of at most [`AdapterConfig::max_alerts_per_batch`] elements. `version`, when
//! present, must be `"4"` (Alertmanager always sends it; direct API clients may omit it).
//! `status` and `groupLabels` are not used: each alert carries its own status, and the group
//! labels are a subset of `commonLabels`. Anything wrong here rejects the whole request
//! ([`RequestError`]).
//!
//! # One alert
//!
//! Each element of `alerts[]` is decoded on its own; a problem yields [`Decoded::Invalid`] for that
//! alert only, with a path such as `alerts[3].labels.namespace`.
//!
//! - `status`: `"firing"` (also when absent) or `"resolved"`; resolved alerts become
//!   [`Decoded::Resolved`] — never a signal (the kubernaut gateway processed them as firing, docs/compatibility.md) —
//!   with the fingerprint when the target can be derived.
//! - labels = `commonLabels` overlaid by the alert's `labels` (the alert's value wins); the same
//!   for annotations. Caps per [`super::limits`].
//! - signal name = label `alertname` (required, at most 253 characters).
//! - severity = label `severity` passed through, `"unknown"` when absent or empty (as the kubernaut
//!   gateway does: its SignalProcessing normalises severities, docs/compatibility.md), truncated to
//!   50 characters at a character boundary.
//! - firing time = `startsAt` (RFC 3339); absent or Go's zero time `0001-01-01T00:00:00Z` → the
//!   received time. Received time = `now`.
//! - cluster = `commonLabels.cluster`, else the alert's `cluster` label; empty means none. It is
//!   used as is, with no fleet configuration required (the kubernaut gateway answered 500, docs/compatibility.md).
//! - provider data (JSON text, every key always present, `null` when absent):
//!   `{"groupKey", "receiver", "externalURL", "generatorURL", "alertFingerprint",
//!   "truncatedAlerts"}` — `alertFingerprint` is Alertmanager's own per-alert fingerprint.
//! - original payload = the alert's JSON exactly as sent, or its summary past the payload budget.
//! - Bytes: labels, annotations, payload and provider data fit per-RR budgets, and the whole batch
//!   must not decode into more than its budget (413) — see [`super::limits`].
//!
//! # Target (docs/compatibility.md)
//!
//! Namespace = label `exported_namespace`, else `namespace` (the `exported_` form is the one the
//! metric itself carried when Prometheus' target labels clashed with it, so it is the truth).
//! Kind and name come from the first resource label present with a non-empty value, in this
//! order; for each key `exported_<key>` is tried before `<key>` for the same reason:
//!
//! | label key      | kind          | apiVersion | scope          |
//! |----------------|---------------|------------|----------------|
//! | `deployment`   | `Deployment`  | `apps/v1`  | namespaced     |
//! | `statefulset`  | `StatefulSet` | `apps/v1`  | namespaced     |
//! | `daemonset`    | `DaemonSet`   | `apps/v1`  | namespaced     |
//! | `cronjob`      | `CronJob`     | `batch/v1` | namespaced     |
//! | `job_name`     | `Job`         | `batch/v1` | namespaced     |
//! | `replicaset`   | `ReplicaSet`  | `apps/v1`  | namespaced     |
//! | (discovered, [`AdapterConfig::extra_resource_labels`]) | | |   |
//! | `pod`          | `Pod`         | `v1`       | namespaced     |
//! | `node`         | `Node`        | `v1`       | cluster-scoped |
//!
//! `job` is Prometheus' scrape job (`job="kube-state-metrics"`), never a kind: kube-state-metrics
//! names Jobs with `job_name`. Likewise `service`, `instance`, `endpoint`, `container` and
//! `namespace` describe the scrape target or a sub-object and are never kinds. Workload labels
//! come before `pod` because a pod-level alert from kube-state-metrics also carries its
//! controller's label, and `pod` before `node` because pod metrics carry the node they run on.
//! A cluster-scoped target has an empty namespace whatever the namespace labels say. No resource
//! label → invalid (`alerts[i].labels`); a namespaced kind without a namespace → invalid
//! (`alerts[i].labels.namespace`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crd_schema::Target;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::freshness::{check_starts_at, check_x_timestamp};
use super::limits::{
    MapKind, RequestBudget, check_keys, fit_signal, max_value_len, quote, signal_bytes,
    truncate_chars, truncate_string, truncate_utf8,
};
use super::{
    AdapterConfig, MAX_CLUSTER_LEN, MAX_NAME_LEN, MAX_SEVERITY_LEN, RequestError, body_error,
    body_text, control_problem, duplicate_field, field_key, map_control_problem, namespace_problem,
    object_name_problem, parse_opt, parse_time, signal_name_problem, string_map_problem,
    target_problem,
};
use crate::audit::chain::write_string;
use crate::audit::event_data::push_uint;
use crate::signal::{Decoded, InvalidSignal, Signal, Source};

/// A label key that names a resource kind; used for [`AdapterConfig::extra_resource_labels`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceLabel {
    /// The label key, e.g. `horizontalpodautoscaler`.
    pub label: String,
    /// The kind it names, e.g. `HorizontalPodAutoscaler`.
    pub kind: String,
    pub api_version: Option<String>,
    pub cluster_scoped: bool,
}

/// One built-in row of the resource label table.
struct Builtin {
    label: &'static str,
    exported: &'static str,
    kind: &'static str,
    api_version: &'static str,
    cluster_scoped: bool,
}

const fn row(
    label: &'static str,
    exported: &'static str,
    kind: &'static str,
    api_version: &'static str,
    cluster_scoped: bool,
) -> Builtin {
    Builtin {
        label,
        exported,
        kind,
        api_version,
        cluster_scoped,
    }
}

/// Workload labels, checked first.
const WORKLOADS: [Builtin; 6] = [
    row(
        "deployment",
        "exported_deployment",
        "Deployment",
        "apps/v1",
        false,
    ),
    row(
        "statefulset",
        "exported_statefulset",
        "StatefulSet",
        "apps/v1",
        false,
    ),
    row(
        "daemonset",
        "exported_daemonset",
        "DaemonSet",
        "apps/v1",
        false,
    ),
    row("cronjob", "exported_cronjob", "CronJob", "batch/v1", false),
    row("job_name", "exported_job_name", "Job", "batch/v1", false),
    row(
        "replicaset",
        "exported_replicaset",
        "ReplicaSet",
        "apps/v1",
        false,
    ),
];

/// Leaf labels, checked after workloads and discovered kinds.
const LEAVES: [Builtin; 2] = [
    row("pod", "exported_pod", "Pod", "v1", false),
    row("node", "exported_node", "Node", "v1", true),
];

/// Label keys that describe the scrape target, the alert or a sub-object: never a kind.
const NEVER_KINDS: [&str; 11] = [
    "job",
    "service",
    "instance",
    "endpoint",
    "container",
    "namespace",
    "alertname",
    "severity",
    "cluster",
    "prometheus",
    "uid",
];

/// The label keys listed in "no resource label" details.
const EXPECTED_LABELS: &str =
    "deployment, statefulset, daemonset, cronjob, job_name, replicaset, pod or node";

/// Go's zero `time.Time`, which Alertmanager clients send for "unset".
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";
/// The severity of an alert without a `severity` label: the kubernaut gateway's default.
const UNKNOWN_SEVERITY: &str = "unknown";

// Two ways to decode the envelope and each alert (docs/api.md, "How a webhook is decoded"):
//
// - *typed*, one pass: the envelope's fields straight into their types, with the alerts kept as raw
//   text (each then decoded the same way). Valid webhooks, i.e. nearly all traffic, take only this
//   path;
// - *precise*: every field kept raw first and decoded on its own, so a problem is named by its exact
//   path (`alerts[3].labels.namespace`). Taken only when the typed pass fails, from the start of what
//   failed (the whole envelope, or that one alert).
//
// Both hand the same `Field`s to one set of rules, checked in one order, so a body gets the same
// answer whichever path decoded it (`typed_and_precise_decoding_agree` tests that on generated
// bodies).

/// Which passes decode a webhook: always both in service; the precise one alone only to test that
/// the two agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Passes {
    TypedFirst,
    #[cfg(test)]
    PreciseOnly,
}

/// The envelope, precise pass.
#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow)]
    version: Option<&'a RawValue>,
    #[serde(borrow, rename = "groupKey")]
    group_key: Option<&'a RawValue>,
    #[serde(borrow, rename = "truncatedAlerts")]
    truncated_alerts: Option<&'a RawValue>,
    #[serde(borrow)]
    receiver: Option<&'a RawValue>,
    #[serde(borrow, rename = "commonLabels")]
    common_labels: Option<&'a RawValue>,
    #[serde(borrow, rename = "commonAnnotations")]
    common_annotations: Option<&'a RawValue>,
    #[serde(borrow, rename = "externalURL")]
    external_url: Option<&'a RawValue>,
    #[serde(borrow)]
    alerts: Option<&'a RawValue>,
}

/// The envelope, typed pass: `alerts` must be an array (else the precise pass names the problem).
#[derive(Deserialize)]
struct TypedEnvelope<'a> {
    #[serde(borrow)]
    version: Option<Text<'a>>,
    #[serde(borrow, rename = "groupKey")]
    group_key: Option<Text<'a>>,
    #[serde(rename = "truncatedAlerts")]
    truncated_alerts: Option<u64>,
    #[serde(borrow)]
    receiver: Option<Text<'a>>,
    #[serde(borrow, rename = "commonLabels")]
    common_labels: Option<Entries<'a>>,
    #[serde(borrow, rename = "commonAnnotations")]
    common_annotations: Option<Entries<'a>>,
    #[serde(borrow, rename = "externalURL")]
    external_url: Option<Text<'a>>,
    #[serde(borrow)]
    alerts: Vec<&'a RawValue>,
}

/// One alert, precise pass.
#[derive(Deserialize)]
struct RawAlert<'a> {
    #[serde(borrow)]
    status: Option<&'a RawValue>,
    #[serde(borrow)]
    labels: Option<&'a RawValue>,
    #[serde(borrow)]
    annotations: Option<&'a RawValue>,
    #[serde(borrow, rename = "startsAt")]
    starts_at: Option<&'a RawValue>,
    #[serde(borrow, rename = "generatorURL")]
    generator_url: Option<&'a RawValue>,
    #[serde(borrow)]
    fingerprint: Option<&'a RawValue>,
}

/// One alert, typed pass.
#[derive(Deserialize)]
struct TypedAlert<'a> {
    #[serde(borrow)]
    status: Option<Text<'a>>,
    #[serde(borrow)]
    labels: Option<Entries<'a>>,
    #[serde(borrow)]
    annotations: Option<Entries<'a>>,
    #[serde(borrow, rename = "startsAt")]
    starts_at: Option<Text<'a>>,
    #[serde(borrow, rename = "generatorURL")]
    generator_url: Option<Text<'a>>,
    #[serde(borrow)]
    fingerprint: Option<Text<'a>>,
}

/// A JSON string as the body holds it: borrowed from the body when it has no escapes (nearly
/// always), unescaped into its own buffer otherwise. Accepts what a `String` accepts.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_string(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> serde::de::Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(v)))
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Text<'de>, E> {
        std::str::from_utf8(v)
            .map(|s| Text(Cow::Owned(s.to_owned())))
            .map_err(|_| E::invalid_value(serde::de::Unexpected::Bytes(v), &self))
    }
}

/// A JSON object of strings (labels, annotations) as `BTreeMap<String, String>` would hold it —
/// entries sorted by key (bytewise), of a repeated key the last one — but its text borrowed from the
/// body: sorted once, instead of a B-tree insert and two allocations per entry. Accepts what that
/// map accepts.
#[derive(Default)]
struct Entries<'a>(Pairs<'a>);

/// The entries of an [`Entries`].
type Pairs<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

impl<'de: 'a, 'a> Deserialize<'de> for Entries<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EntriesVisitor)
    }
}

struct EntriesVisitor;

impl<'de> serde::de::Visitor<'de> for EntriesVisitor {
    type Value = Entries<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some((Text(k), Text(v))) = map.next_entry::<Text<'de>, Text<'de>>()? {
            entries.push((k, v));
        }
        // Stable: of equal keys, the later stays later, and its value is the one kept.
        entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        entries.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                std::mem::swap(&mut later.1, &mut earlier.1);
            }
            same
        });
        Ok(Entries(entries))
    }
}

/// The value of `key` in entries sorted by key.
fn get<'e, K: AsRef<str>, V: AsRef<str>>(entries: &'e [(K, V)], key: &str) -> Option<&'e str> {
    entries
        .binary_search_by(|(k, _)| k.as_ref().as_bytes().cmp(key.as_bytes()))
        .ok()
        .map(|i| entries[i].1.as_ref())
}

/// The value of `key` in merged entries.
fn label<'a>(labels: &[(&'a str, &'a str)], key: &str) -> Option<&'a str> {
    labels
        .binary_search_by(|(k, _)| k.as_bytes().cmp(key.as_bytes()))
        .ok()
        .map(|i| labels[i].1)
}

/// A field's path in a webhook, `alerts[i].field` (`alerts[i]` for the alert itself), formatted only
/// when a problem names it.
#[derive(Clone, Copy)]
struct At {
    i: usize,
    field: &'static str,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "alerts[{}]", self.i)
        } else {
            write!(f, "alerts[{}].{}", self.i, self.field)
        }
    }
}

/// A field as one of the passes left it: decoded, or raw text to decode now with a precise error.
/// JSON `null` counts as absent either way.
enum Field<'a, T> {
    Typed(Option<T>),
    Raw(Option<&'a RawValue>),
}

/// How a raw field is decoded, and what its error says.
trait FieldType<'a>: Sized + Deserialize<'a> {
    fn parse(
        raw: Option<&'a RawValue>,
        field: &(impl fmt::Display + ?Sized),
        expected: &str,
    ) -> Result<Option<Self>, InvalidSignal> {
        parse_opt(raw, field, expected)
    }
}

impl<'a> FieldType<'a> for Text<'a> {}
impl FieldType<'_> for u64 {}
impl<'a> FieldType<'a> for Entries<'a> {
    /// Names the first entry that is not a string.
    fn parse(
        raw: Option<&'a RawValue>,
        field: &(impl fmt::Display + ?Sized),
        _: &str,
    ) -> Result<Option<Self>, InvalidSignal> {
        let Some(raw) = raw else { return Ok(None) };
        serde_json::from_str::<Option<Entries<'a>>>(raw.get())
            .map_err(|_| string_map_problem(raw, field))
    }
}

impl<'a, T: FieldType<'a>> Field<'a, T> {
    /// The value; `expected` names the type in a raw field's error.
    fn value(
        self,
        field: &(impl fmt::Display + ?Sized),
        expected: &str,
    ) -> Result<Option<T>, InvalidSignal> {
        match self {
            Self::Typed(v) => Ok(v),
            Self::Raw(raw) => T::parse(raw, field, expected),
        }
    }
}

impl<'a> Field<'a, Text<'a>> {
    /// The text of a string field.
    fn text(
        self,
        field: &(impl fmt::Display + ?Sized),
        expected: &str,
    ) -> Result<Option<Cow<'a, str>>, InvalidSignal> {
        Ok(self.value(field, expected)?.map(|t| t.0))
    }
}

impl<'a> Field<'a, Entries<'a>> {
    /// The entries of a map field, none when absent.
    fn entries(self, field: &(impl fmt::Display + ?Sized)) -> Result<Pairs<'a>, InvalidSignal> {
        Ok(self.value(field, "")?.map(|e| e.0).unwrap_or_default())
    }
}

/// The envelope's fields, from either pass.
struct EnvelopeFields<'a> {
    version: Field<'a, Text<'a>>,
    group_key: Field<'a, Text<'a>>,
    truncated_alerts: Field<'a, u64>,
    receiver: Field<'a, Text<'a>>,
    common_labels: Field<'a, Entries<'a>>,
    common_annotations: Field<'a, Entries<'a>>,
    external_url: Field<'a, Text<'a>>,
    /// The `alerts` array, or why it is not one.
    alerts: Result<Vec<&'a RawValue>, RequestError>,
}

impl<'a> EnvelopeFields<'a> {
    fn decode(text: &'a str, passes: Passes) -> Result<Self, RequestError> {
        if passes == Passes::TypedFirst
            && let Ok(e) = serde_json::from_str::<TypedEnvelope<'a>>(text)
        {
            return Ok(Self {
                version: Field::Typed(e.version),
                group_key: Field::Typed(e.group_key),
                truncated_alerts: Field::Typed(e.truncated_alerts),
                receiver: Field::Typed(e.receiver),
                common_labels: Field::Typed(e.common_labels),
                common_annotations: Field::Typed(e.common_annotations),
                external_url: Field::Typed(e.external_url),
                alerts: Ok(e.alerts),
            });
        }
        let e: RawEnvelope<'a> =
            serde_json::from_str(text).map_err(|e| body_error(&e, "an Alertmanager webhook v4"))?;
        let alerts = match e.alerts {
            None => Err(RequestError::malformed(
                "alerts",
                "required: the webhook carries no alerts array",
            )),
            Some(raw) => serde_json::from_str::<Option<Vec<&RawValue>>>(raw.get())
                .ok()
                .flatten()
                .ok_or_else(|| RequestError::malformed("alerts", "must be an array of alerts")),
        };
        Ok(Self {
            version: Field::Raw(e.version),
            group_key: Field::Raw(e.group_key),
            truncated_alerts: Field::Raw(e.truncated_alerts),
            receiver: Field::Raw(e.receiver),
            common_labels: Field::Raw(e.common_labels),
            common_annotations: Field::Raw(e.common_annotations),
            external_url: Field::Raw(e.external_url),
            alerts,
        })
    }
}

/// One alert's fields, from either pass.
struct AlertFields<'a> {
    status: Field<'a, Text<'a>>,
    labels: Field<'a, Entries<'a>>,
    annotations: Field<'a, Entries<'a>>,
    starts_at: Field<'a, Text<'a>>,
    generator_url: Field<'a, Text<'a>>,
    fingerprint: Field<'a, Text<'a>>,
}

impl<'a> AlertFields<'a> {
    /// `at` is the alert's path, `alerts[i]`.
    fn decode(raw: &'a RawValue, at: At, passes: Passes) -> Result<Self, InvalidSignal> {
        if passes == Passes::TypedFirst
            && let Ok(a) = serde_json::from_str::<TypedAlert<'a>>(raw.get())
        {
            return Ok(Self {
                status: Field::Typed(a.status),
                labels: Field::Typed(a.labels),
                annotations: Field::Typed(a.annotations),
                starts_at: Field::Typed(a.starts_at),
                generator_url: Field::Typed(a.generator_url),
                fingerprint: Field::Typed(a.fingerprint),
            });
        }
        let a: RawAlert<'a> = serde_json::from_str(raw.get()).map_err(|e| {
            let detail = match duplicate_field(&e) {
                Some(field) => format!("field {field} appears more than once"),
                None => "must be an object".to_owned(),
            };
            InvalidSignal::new(at.to_string(), detail)
        })?;
        Ok(Self {
            status: Field::Raw(a.status),
            labels: Field::Raw(a.labels),
            annotations: Field::Raw(a.annotations),
            starts_at: Field::Raw(a.starts_at),
            generator_url: Field::Raw(a.generator_url),
            fingerprint: Field::Raw(a.fingerprint),
        })
    }
}

/// What every alert of a batch shares; borrows the body.
struct Batch<'a> {
    /// `spec.providerData` up to the alert's own members: `{"groupKey":…,"receiver":…,"externalURL":…,`.
    provider_head: String,
    /// `spec.providerData` after them: `,"truncatedAlerts":…}`.
    provider_tail: String,
    /// Sorted by key, unique (as [`Entries`]).
    common_labels: Pairs<'a>,
    common_annotations: Pairs<'a>,
    /// `commonLabels.cluster`, when non-empty.
    cluster: Option<String>,
    /// How its alerts are decoded.
    passes: Passes,
    /// The discovered resource labels, one snapshot for the whole batch.
    extra: Arc<[ResourceLabel]>,
}

impl Batch<'_> {
    /// `spec.providerData` of one alert: JSON text, every key always present, `null` when absent —
    /// `{"groupKey","receiver","externalURL","generatorURL","alertFingerprint","truncatedAlerts"}`,
    /// in that order, as serde_json writes a struct of those fields.
    fn provider_data(
        &self,
        generator_url: Option<&str>,
        alert_fingerprint: Option<&str>,
    ) -> String {
        let own = generator_url.map_or(0, str::len) + alert_fingerprint.map_or(0, str::len);
        let mut out =
            String::with_capacity(self.provider_head.len() + own + 40 + self.provider_tail.len());
        out.push_str(&self.provider_head);
        out.push_str("\"generatorURL\":");
        json_opt_str(&mut out, generator_url);
        out.push_str(",\"alertFingerprint\":");
        json_opt_str(&mut out, alert_fingerprint);
        out.push_str(&self.provider_tail);
        out
    }
}

/// `value` as a JSON string, `null` when absent.
fn json_opt_str(out: &mut String, value: Option<&str>) {
    match value {
        Some(v) => write_string(out, v),
        None => out.push_str("null"),
    }
}

/// Decodes an Alertmanager webhook v4 body into one [`Decoded`] per alert, in order.
///
/// `x_timestamp` is the `X-Timestamp` header, if the request had one; `now` is the gateway clock.
/// See the module documentation for every rule.
pub fn decode_alertmanager(
    body: &[u8],
    x_timestamp: Option<&str>,
    now: Timestamp,
    cfg: &AdapterConfig,
) -> Result<Vec<Decoded>, RequestError> {
    decode_with(body, x_timestamp, now, cfg, Passes::TypedFirst)
}

fn decode_with(
    body: &[u8],
    x_timestamp: Option<&str>,
    now: Timestamp,
    cfg: &AdapterConfig,
    passes: Passes,
) -> Result<Vec<Decoded>, RequestError> {
    if let Some(header) = x_timestamp {
        check_x_timestamp(header, now, &cfg.freshness)?;
    }
    let text = body_text(body)?;
    let mut envelope = EnvelopeFields::decode(text, passes)?;

    let envelope_field = |e: InvalidSignal| RequestError::malformed(e.field, e.detail);
    let version = std::mem::replace(&mut envelope.version, Field::Typed(None));
    if let Some(version) = version
        .text("version", "a string")
        .map_err(envelope_field)?
        && version != "4"
    {
        return Err(RequestError::malformed(
            "version",
            format!(
                "unsupported webhook version {}; only \"4\" is accepted",
                quote(&version)
            ),
        ));
    }
    let alerts = std::mem::replace(&mut envelope.alerts, Ok(Vec::new()))?;
    if alerts.is_empty() {
        return Err(RequestError::malformed(
            "alerts",
            "must contain at least one alert",
        ));
    }
    if alerts.len() > cfg.max_alerts_per_batch {
        return Err(RequestError::TooManyAlerts {
            count: alerts.len(),
            max: cfg.max_alerts_per_batch,
        });
    }

    let batch = decode_batch(envelope, passes, cfg)?;
    let mut newest: Option<(usize, Timestamp)> = None;
    // Bytes, not counts: decoding stops as soon as the batch has expanded past its budget, so a
    // crafted batch never holds more than that in memory (see `limits`).
    let mut budget = RequestBudget::new(&cfg.limits);
    let mut decoded = Vec::with_capacity(alerts.len());
    for (i, raw) in alerts.iter().enumerate() {
        let (d, starts_at) = decode_alert(i, raw, &batch, now, cfg);
        if let Some(t) = starts_at
            && newest.is_none_or(|(_, n)| t > n)
        {
            newest = Some((i, t));
        }
        let bytes = match &d {
            Decoded::Signal(s) => signal_bytes(s),
            Decoded::Resolved { name, .. } => name.len(),
            Decoded::Invalid(e) => e.field.len() + e.detail.len(),
        };
        if budget.take(bytes).is_err() {
            return Err(RequestError::Expands { max: budget.max() });
        }
        decoded.push(d);
    }

    if x_timestamp.is_none()
        && let Some((i, t)) = newest
    {
        check_starts_at(
            &At {
                i,
                field: "startsAt",
            },
            t,
            now,
            &cfg.freshness,
        )?;
    }
    Ok(decoded)
}

fn decode_batch<'a>(
    envelope: EnvelopeFields<'a>,
    passes: Passes,
    cfg: &AdapterConfig,
) -> Result<Batch<'a>, RequestError> {
    let to_request = |e: InvalidSignal| RequestError::malformed(e.field, e.detail);
    let common_labels = envelope
        .common_labels
        .entries("commonLabels")
        .map_err(to_request)?;
    check_entries(&common_labels, MapKind::Labels, &cfg.limits, "commonLabels")
        .map_err(to_request)?;
    let common_annotations = envelope
        .common_annotations
        .entries("commonAnnotations")
        .map_err(to_request)?;
    check_entries(
        &common_annotations,
        MapKind::Annotations,
        &cfg.limits,
        "commonAnnotations",
    )
    .map_err(to_request)?;
    let cluster = cluster_id(&common_labels, "commonLabels.cluster").map_err(to_request)?;
    // Copied into every alert's providerData: bounded once here.
    let provider_field = |f: Field<'a, Text<'a>>, field| {
        f.text(field, "a string").map_err(to_request).map(|v| {
            v.map(|v| match v {
                Cow::Borrowed(v) => {
                    Cow::Borrowed(truncate_utf8(v, cfg.limits.max_provider_field_bytes))
                }
                Cow::Owned(mut v) => {
                    truncate_string(&mut v, cfg.limits.max_provider_field_bytes);
                    Cow::Owned(v)
                }
            })
        })
    };
    let group_key = provider_field(envelope.group_key, "groupKey")?;
    let receiver = provider_field(envelope.receiver, "receiver")?;
    let external_url = provider_field(envelope.external_url, "externalURL")?;
    let truncated_alerts = envelope
        .truncated_alerts
        .value("truncatedAlerts", "a non-negative integer")
        .map_err(to_request)?;
    let mut provider_head = String::with_capacity(
        64 + [&group_key, &receiver, &external_url]
            .iter()
            .map(|v| v.as_ref().map_or(0, |v| v.len()))
            .sum::<usize>(),
    );
    provider_head.push_str("{\"groupKey\":");
    json_opt_str(&mut provider_head, group_key.as_deref());
    provider_head.push_str(",\"receiver\":");
    json_opt_str(&mut provider_head, receiver.as_deref());
    provider_head.push_str(",\"externalURL\":");
    json_opt_str(&mut provider_head, external_url.as_deref());
    provider_head.push(',');
    let mut provider_tail = String::with_capacity(44);
    provider_tail.push_str(",\"truncatedAlerts\":");
    match truncated_alerts {
        Some(n) => push_uint(&mut provider_tail, n),
        None => provider_tail.push_str("null"),
    }
    provider_tail.push('}');
    Ok(Batch {
        provider_head,
        provider_tail,
        common_labels,
        common_annotations,
        cluster,
        passes,
        extra: cfg.extra_resource_labels.snapshot(),
    })
}

/// The count and name caps of sorted, unique entries (as [`check_map`] for a map).
fn check_entries<K: AsRef<str>, V>(
    entries: &[(K, V)],
    kind: MapKind,
    limits: &crate::adapters::Limits,
    field: &(impl fmt::Display + ?Sized),
) -> Result<(), InvalidSignal> {
    check_keys(
        entries.len(),
        entries.iter().map(|(k, _)| k.as_ref()),
        kind,
        limits,
        field,
    )
}

/// The `cluster` label of `labels` (sorted by key), when present and non-empty.
fn cluster_id<K: AsRef<str>, V: AsRef<str>>(
    labels: &[(K, V)],
    field: &(impl fmt::Display + ?Sized),
) -> Result<Option<String>, InvalidSignal> {
    match get(labels, "cluster").filter(|c| !c.is_empty()) {
        None => Ok(None),
        Some(c) if c.chars().count() > MAX_CLUSTER_LEN || c.chars().any(char::is_control) => {
            Err(InvalidSignal::new(
                field.to_string(),
                format!(
                    "a cluster ID is at most {MAX_CLUSTER_LEN} characters without control characters"
                ),
            ))
        }
        Some(c) => Ok(Some(c.to_owned())),
    }
}

/// Decodes alert `i`; also returns its `startsAt` when it is a valid firing signal, for the
/// batch's freshness check.
fn decode_alert(
    i: usize,
    raw: &RawValue,
    batch: &Batch<'_>,
    now: Timestamp,
    cfg: &AdapterConfig,
) -> (Decoded, Option<Timestamp>) {
    match decode_alert_inner(i, raw, batch, now, cfg) {
        Ok(Alert::Firing(signal, starts_at)) => (Decoded::Signal(signal), starts_at),
        Ok(Alert::Resolved(decoded)) => (decoded, None),
        Err(invalid) => (Decoded::Invalid(invalid), None),
    }
}

enum Alert {
    Firing(Box<Signal>, Option<Timestamp>),
    Resolved(Decoded),
}

/// Merged labels or annotations as text: sorted by key, unique.
type Merged<'e> = Vec<(&'e str, &'e str)>;

fn decode_alert_inner(
    i: usize,
    raw: &RawValue,
    batch: &Batch<'_>,
    now: Timestamp,
    cfg: &AdapterConfig,
) -> Result<Alert, InvalidSignal> {
    // Paths are formatted only when a problem names them.
    let at = |field: &'static str| At { i, field };
    let alert = AlertFields::decode(raw, at(""), batch.passes)?;

    let status = alert.status.text(&at("status"), "a string")?;
    let resolved = match status.as_deref() {
        None | Some("firing") => false,
        Some("resolved") => true,
        Some(other) => {
            return Err(InvalidSignal::new(
                at("status").to_string(),
                format!("must be \"firing\" or \"resolved\", not {}", quote(other)),
            ));
        }
    };

    let own_labels = alert.labels.entries(&at("labels"));
    if resolved {
        return Ok(Alert::Resolved(resolved_alert(
            i,
            &own_labels.unwrap_or_default(),
            batch,
        )));
    }
    let own_labels = own_labels?;
    let cluster = match &batch.cluster {
        Some(c) => Some(c.clone()),
        None => cluster_id(&own_labels, &at("labels.cluster"))?,
    };
    let labels = merge(&batch.common_labels, &own_labels);
    check_entries(&labels, MapKind::Labels, &cfg.limits, &at("labels"))?;
    map_control_problem(labels.iter().copied(), &at("labels"))?;

    let name = get(&labels, "alertname").unwrap_or_default();
    if let Some(problem) = signal_name_problem(name) {
        return Err(InvalidSignal::new(
            at("labels.alertname").to_string(),
            problem,
        ));
    }
    let target = derive_target(&labels, cluster, &batch.extra, i)?;
    let fingerprint = target.fingerprint();
    let severity = get(&labels, "severity");
    if let Some(p) = severity.and_then(|s| control_problem(s, false)) {
        return Err(InvalidSignal::new(at("labels.severity").to_string(), p));
    }
    let severity = match severity.filter(|s| !s.is_empty()) {
        Some(s) => truncate_chars(s, MAX_SEVERITY_LEN).to_owned(),
        None => UNKNOWN_SEVERITY.to_owned(),
    };

    let starts_at = match alert
        .starts_at
        .text(&at("startsAt"), "an RFC 3339 timestamp")?
    {
        None => None,
        Some(text) if text == GO_ZERO_TIME => None,
        Some(text) => Some(parse_time(&text).ok_or_else(|| {
            InvalidSignal::new(
                at("startsAt").to_string(),
                format!("{} is not an RFC 3339 timestamp", quote(&text)),
            )
        })?),
    };
    let max_provider = cfg.limits.max_provider_field_bytes;
    let generator_url = alert.generator_url.text(&at("generatorURL"), "a string")?;
    let alert_fingerprint = alert.fingerprint.text(&at("fingerprint"), "a string")?;
    let own_annotations = alert.annotations.entries(&at("annotations"))?;
    let annotations = merge(&batch.common_annotations, &own_annotations);
    map_control_problem(annotations.iter().copied(), &at("annotations"))?;
    check_entries(
        &annotations,
        MapKind::Annotations,
        &cfg.limits,
        &at("annotations"),
    )?;

    let provider_data = batch.provider_data(
        generator_url
            .as_deref()
            .map(|v| truncate_utf8(v, max_provider)),
        alert_fingerprint
            .as_deref()
            .map(|v| truncate_utf8(v, max_provider)),
    );
    let mut signal = Signal {
        source: Source::Prometheus,
        name: name.to_owned(),
        severity,
        target,
        fingerprint,
        // Values are truncated only now: the target was derived from the untruncated labels.
        labels: owned(&labels, max_value_len(MapKind::Labels, &cfg.limits)),
        annotations: owned(
            &annotations,
            max_value_len(MapKind::Annotations, &cfg.limits),
        ),
        firing_time: starts_at.unwrap_or(now),
        received_time: now,
        provider_data: Some(provider_data),
        original_payload: raw.get().to_owned(),
    };
    fit_signal(&mut signal, &cfg.limits);
    Ok(Alert::Firing(Box::new(signal), starts_at))
}

/// Sorted, unique entries as the signal's map, each value cut to `max_value` bytes at a character
/// boundary. Built from sorted input, the map is filled in one bulk pass.
fn owned(entries: &Merged<'_>, max_value: usize) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), truncate_utf8(v, max_value).to_owned()))
        .collect()
}

/// A resolved alert: best effort name and target, never invalid once its status is known.
fn resolved_alert(
    i: usize,
    own_labels: &[(Cow<'_, str>, Cow<'_, str>)],
    batch: &Batch<'_>,
) -> Decoded {
    let cluster = batch
        .cluster
        .clone()
        .or_else(|| cluster_id(own_labels, "").ok().flatten());
    let labels = merge(&batch.common_labels, own_labels);
    let name = get(&labels, "alertname")
        .map_or("", |n| truncate_chars(n, MAX_NAME_LEN))
        .to_owned();
    let target = derive_target(&labels, cluster, &batch.extra, i).ok();
    Decoded::Resolved {
        name,
        fingerprint: target.as_ref().map(Target::fingerprint),
        target,
    }
}

/// `common` overlaid by `own` (both sorted by key, unique): the alert's value wins.
fn merge<'e>(
    common: &'e [(Cow<'_, str>, Cow<'_, str>)],
    own: &'e [(Cow<'_, str>, Cow<'_, str>)],
) -> Merged<'e> {
    let mut merged = Vec::with_capacity(common.len() + own.len());
    let (mut c, mut o) = (common.iter().peekable(), own.iter().peekable());
    loop {
        let next = match (c.peek(), o.peek()) {
            (None, None) => break,
            (Some(_), None) => c.next(),
            (None, Some(_)) => o.next(),
            (Some((ck, _)), Some((ok, _))) => match ck.as_bytes().cmp(ok.as_bytes()) {
                std::cmp::Ordering::Less => c.next(),
                std::cmp::Ordering::Greater => o.next(),
                std::cmp::Ordering::Equal => {
                    c.next();
                    o.next()
                }
            },
        };
        if let Some((k, v)) = next {
            merged.push((k.as_ref(), v.as_ref()));
        }
    }
    merged
}

/// A resource label found on an alert.
struct Found<'a> {
    key: &'a str,
    name: &'a str,
    kind: &'a str,
    api_version: Option<&'a str>,
    cluster_scoped: bool,
}

/// The value of `exported` or else `plain`, when non-empty, with the key it came from.
fn lookup<'a>(
    labels: &[(&'a str, &'a str)],
    plain: &'a str,
    exported: &'a str,
) -> Option<(&'a str, &'a str)> {
    [exported, plain].into_iter().find_map(|key| {
        label(labels, key)
            .filter(|v| !v.is_empty())
            .map(|v| (key, v))
    })
}

fn find_resource<'a>(
    labels: &[(&'a str, &'a str)],
    extra: &'a [ResourceLabel],
) -> Option<Found<'a>> {
    let builtin = |rows: &'a [Builtin]| {
        rows.iter().find_map(|r| {
            lookup(labels, r.label, r.exported).map(|(key, name)| Found {
                key,
                name,
                kind: r.kind,
                api_version: Some(r.api_version),
                cluster_scoped: r.cluster_scoped,
            })
        })
    };
    builtin(&WORKLOADS)
        .or_else(|| {
            extra.iter().filter(|e| usable_extra(e)).find_map(|e| {
                label(labels, &e.label)
                    .filter(|v| !v.is_empty())
                    .map(|name| Found {
                        key: &e.label,
                        name,
                        kind: &e.kind,
                        api_version: e.api_version.as_deref(),
                        cluster_scoped: e.cluster_scoped,
                    })
            })
        })
        .or_else(|| builtin(&LEAVES))
}

/// Discovered label keys may not shadow built-in ones nor name a never-kind.
fn usable_extra(e: &ResourceLabel) -> bool {
    let key = e.label.as_str();
    super::is_kind(&e.kind)
        && !key.is_empty()
        && !key.starts_with("exported_")
        && !NEVER_KINDS.contains(&key)
        && !WORKLOADS.iter().chain(&LEAVES).any(|r| r.label == key)
}

fn derive_target(
    labels: &[(&str, &str)],
    cluster: Option<String>,
    extra: &[ResourceLabel],
    i: usize,
) -> Result<Target, InvalidSignal> {
    let found = find_resource(labels, extra).ok_or_else(|| {
        InvalidSignal::new(
            format!("alerts[{i}].labels"),
            format!(
                "no resource label: expected one of {EXPECTED_LABELS} (or their exported_ forms)"
            ),
        )
    })?;
    if let Some(problem) = object_name_problem(found.name) {
        return Err(InvalidSignal::new(
            format!("alerts[{i}].labels.{}", field_key(found.key)),
            problem,
        ));
    }
    let namespace = if found.cluster_scoped {
        String::new()
    } else {
        let (key, ns) = lookup(labels, "namespace", "exported_namespace").ok_or_else(|| {
            InvalidSignal::new(
                format!("alerts[{i}].labels.namespace"),
                format!(
                    "{} {} is namespaced but the alert has no namespace or exported_namespace label",
                    found.kind,
                    quote(found.name)
                ),
            )
        })?;
        if let Some(problem) = namespace_problem(ns) {
            return Err(InvalidSignal::new(
                format!("alerts[{i}].labels.{key}"),
                problem,
            ));
        }
        ns.to_owned()
    };
    let target = Target {
        cluster,
        namespace,
        kind: found.kind.to_owned(),
        name: found.name.to_owned(),
        api_version: found.api_version.map(str::to_owned),
    };
    let ns_key = lookup(labels, "namespace", "exported_namespace").map_or("namespace", |(k, _)| k);
    target_problem(&target, |field| match field {
        crd_schema::TargetField::Cluster => format!("alerts[{i}].labels.cluster"),
        crd_schema::TargetField::Namespace => format!("alerts[{i}].labels.{ns_key}"),
        crd_schema::TargetField::Kind | crd_schema::TargetField::Name => {
            format!("alerts[{i}].labels.{}", field_key(found.key))
        }
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

    fn cfg() -> AdapterConfig {
        AdapterConfig::default()
    }

    fn decode(body: &serde_json::Value) -> Result<Vec<Decoded>, RequestError> {
        decode_alertmanager(body.to_string().as_bytes(), None, now(), &cfg())
    }

    fn alert(labels: serde_json::Value) -> serde_json::Value {
        json!({"status": "firing", "labels": labels, "annotations": {},
               "startsAt": "2026-11-26T16:59:00Z", "endsAt": GO_ZERO_TIME,
               "generatorURL": "http://prom/graph", "fingerprint": "abc"})
    }

    fn webhook(alerts: Vec<serde_json::Value>) -> serde_json::Value {
        json!({"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing",
               "receiver": "namegate", "groupLabels": {}, "commonLabels": {},
               "commonAnnotations": {}, "externalURL": "http://am", "alerts": alerts})
    }

    fn signal(d: &Decoded) -> &Signal {
        match d {
            Decoded::Signal(s) => s,
            other => panic!("expected a signal, got {other:?}"),
        }
    }

    fn invalid(d: &Decoded) -> &InvalidSignal {
        match d {
            Decoded::Invalid(e) => e,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    fn one(labels: serde_json::Value) -> Decoded {
        let mut out = decode(&webhook(vec![alert(labels)])).unwrap();
        assert_eq!(out.len(), 1);
        out.remove(0)
    }

    fn target_of(labels: serde_json::Value) -> Target {
        signal(&one(labels)).target.clone()
    }

    #[test]
    fn forged_separators_and_control_characters_are_refused() {
        // `ns:Kind:name` as a pod name would make namespace `a`, kind `Pod` hash the same input as
        // another target: refused, naming the label.
        let e = invalid(&one(
            json!({"alertname": "A", "namespace": "a", "pod": "Kind:name"}),
        ))
        .clone();
        assert_eq!(e.field, "alerts[0].labels.pod");
        assert!(e.detail.contains("':'"), "{e}");
        // A cluster ID may contain ':' (an ARN); the target stays valid.
        let t = target_of(json!({"alertname": "A", "namespace": "a", "pod": "p",
                                 "cluster": "arn:aws:eks:eu-west-1:1:cluster/prod"}));
        assert_eq!(
            t.fingerprint_input(),
            "arn:aws:eks:eu-west-1:1:cluster/prod:a:Pod:p"
        );
        // NUL anywhere that lands in an RR or the audit store.
        for (labels, field) in [
            (
                json!({"alertname": "A\u{0}", "namespace": "a", "pod": "p"}),
                "alerts[0].labels.alertname",
            ),
            (
                json!({"alertname": "A", "namespace": "a", "pod": "p", "team": "x\u{0}"}),
                "alerts[0].labels.team",
            ),
            (
                json!({"alertname": "A", "namespace": "a", "pod": "p", "severity": "crit\ncal"}),
                "alerts[0].labels.severity",
            ),
            (
                json!({"alertname": "A", "namespace": "a", "pod": "p\u{0}"}),
                "alerts[0].labels.pod",
            ),
        ] {
            let e = invalid(&one(labels)).clone();
            assert_eq!(e.field, field, "{e}");
            assert!(e.detail.contains("control character"), "{e}");
        }
        let mut a = alert(json!({"alertname": "A", "namespace": "a", "pod": "p"}));
        a["annotations"] = json!({"description": "line one\nline two", "summary": "bad\u{0}"});
        let out = decode(&webhook(vec![a])).unwrap();
        assert_eq!(invalid(&out[0]).field, "alerts[0].annotations.summary");
    }

    #[test]
    fn kind_priority_and_api_versions() {
        let base = |extra: serde_json::Value| {
            let mut l = json!({"alertname": "A", "namespace": "ns", "job": "kube-state-metrics",
                               "instance": "1.2.3.4:8080", "service": "ksm", "container": "c",
                               "endpoint": "http"});
            l.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            l
        };
        let t = target_of(base(json!({"pod": "p", "deployment": "d", "node": "n"})));
        assert_eq!(
            (t.kind.as_str(), t.name.as_str(), t.api_version.as_deref()),
            ("Deployment", "d", Some("apps/v1"))
        );
        let t = target_of(base(json!({"statefulset": "s", "pod": "p"})));
        assert_eq!(
            (t.kind.as_str(), t.api_version.as_deref()),
            ("StatefulSet", Some("apps/v1"))
        );
        let t = target_of(base(json!({"daemonset": "x", "cronjob": "c"})));
        assert_eq!(t.kind, "DaemonSet");
        let t = target_of(base(json!({"cronjob": "c", "job_name": "c-123"})));
        assert_eq!(
            (t.kind.as_str(), t.api_version.as_deref()),
            ("CronJob", Some("batch/v1"))
        );
        let t = target_of(base(json!({"job_name": "c-123", "pod": "c-123-xyz"})));
        assert_eq!(
            (t.kind.as_str(), t.name.as_str(), t.api_version.as_deref()),
            ("Job", "c-123", Some("batch/v1"))
        );
        let t = target_of(base(json!({"replicaset": "r", "pod": "p"})));
        assert_eq!(t.kind, "ReplicaSet");
        let t = target_of(base(json!({"pod": "p", "node": "n"})));
        assert_eq!(
            (
                t.kind.as_str(),
                t.namespace.as_str(),
                t.api_version.as_deref()
            ),
            ("Pod", "ns", Some("v1"))
        );
        // `job`, `service`, `instance`, `endpoint`, `container` alone are never kinds.
        let e = invalid(&one(base(json!({})))).clone();
        assert_eq!(e.field, "alerts[0].labels");
        assert!(e.detail.starts_with("no resource label"), "{}", e.detail);
    }

    #[test]
    fn nodes_are_cluster_scoped() {
        let t = target_of(
            json!({"alertname": "NodeDown", "node": "worker-7", "namespace": "monitoring"}),
        );
        assert_eq!(
            (t.namespace.as_str(), t.kind.as_str(), t.name.as_str()),
            ("", "Node", "worker-7")
        );
        assert_eq!(t.fingerprint_input(), ":Node:worker-7");
    }

    #[test]
    fn exported_labels_win() {
        let t = target_of(
            json!({"alertname": "A", "namespace": "monitoring", "exported_namespace": "payments",
                                 "pod": "kube-state-metrics-0", "exported_pod": "api-1"}),
        );
        assert_eq!(
            (t.namespace.as_str(), t.name.as_str()),
            ("payments", "api-1")
        );
        // An empty value is absent (Prometheus drops empty labels).
        let t = target_of(
            json!({"alertname": "A", "namespace": "ns", "exported_namespace": "",
                                 "deployment": "", "pod": "p"}),
        );
        assert_eq!((t.namespace.as_str(), t.kind.as_str()), ("ns", "Pod"));
    }

    #[test]
    fn discovered_labels_come_before_pod_and_cannot_shadow() {
        let mut cfg = cfg();
        cfg.extra_resource_labels = super::super::LabelTable::new(vec![
            ResourceLabel {
                label: "horizontalpodautoscaler".into(),
                kind: "HorizontalPodAutoscaler".into(),
                api_version: Some("autoscaling/v2".into()),
                cluster_scoped: false,
            },
            ResourceLabel {
                label: "job".into(),
                kind: "Job".into(),
                api_version: None,
                cluster_scoped: false,
            },
            ResourceLabel {
                label: "deployment".into(),
                kind: "Rollout".into(),
                api_version: None,
                cluster_scoped: false,
            },
        ]);
        let body = webhook(vec![
            alert(
                json!({"alertname": "A", "namespace": "ns", "horizontalpodautoscaler": "h", "pod": "ksm-0"}),
            ),
            alert(json!({"alertname": "A", "namespace": "ns", "job": "kube-state-metrics"})),
            alert(
                json!({"alertname": "A", "namespace": "ns", "deployment": "d", "horizontalpodautoscaler": "h"}),
            ),
        ]);
        let out = decode_alertmanager(body.to_string().as_bytes(), None, now(), &cfg).unwrap();
        assert_eq!(signal(&out[0]).target.kind, "HorizontalPodAutoscaler");
        assert_eq!(invalid(&out[1]).field, "alerts[1].labels");
        assert_eq!(signal(&out[2]).target.kind, "Deployment");
    }

    #[test]
    fn namespace_rules() {
        let e = invalid(&one(json!({"alertname": "A", "deployment": "d"}))).clone();
        assert_eq!(e.field, "alerts[0].labels.namespace");
        assert!(
            e.detail.contains("Deployment \"d\" is namespaced"),
            "{}",
            e.detail
        );
        let e = invalid(&one(
            json!({"alertname": "A", "deployment": "d", "namespace": "Bad:NS"}),
        ))
        .clone();
        assert_eq!(e.field, "alerts[0].labels.namespace");
        let e = invalid(&one(
            json!({"alertname": "A", "deployment": "d", "exported_namespace": "x y"}),
        ))
        .clone();
        assert_eq!(e.field, "alerts[0].labels.exported_namespace");
    }

    #[test]
    fn resource_name_rules() {
        let long = "a".repeat(254);
        let e = invalid(&one(
            json!({"alertname": "A", "namespace": "ns", "deployment": long}),
        ))
        .clone();
        assert_eq!(e.field, "alerts[0].labels.deployment");
        assert!(e.detail.contains("254 bytes"), "{}", e.detail);
        let ok = "a".repeat(253);
        assert_eq!(
            target_of(json!({"alertname": "A", "namespace": "ns", "deployment": ok}))
                .name
                .len(),
            253
        );
        let e = invalid(&one(
            json!({"alertname": "A", "namespace": "ns", "exported_pod": "a/b"}),
        ))
        .clone();
        assert_eq!(e.field, "alerts[0].labels.exported_pod");
    }

    #[test]
    fn alertname_and_severity() {
        let e = invalid(&one(json!({"namespace": "ns", "pod": "p"}))).clone();
        assert_eq!(e.field, "alerts[0].labels.alertname");
        let e = invalid(&one(
            json!({"alertname": "x".repeat(254), "namespace": "ns", "pod": "p"}),
        ))
        .clone();
        assert_eq!(e.field, "alerts[0].labels.alertname");
        assert!(e.detail.contains("254 characters"));
        let s = signal(&one(
            json!({"alertname": "A", "namespace": "ns", "pod": "p"}),
        ))
        .clone();
        assert_eq!(s.severity, "unknown");
        let s = signal(&one(
            json!({"alertname": "A", "namespace": "ns", "pod": "p", "severity": ""}),
        ))
        .clone();
        assert_eq!(s.severity, "unknown");
        let s = signal(&one(
            json!({"alertname": "A", "namespace": "ns", "pod": "p", "severity": "é".repeat(60)}),
        ))
        .clone();
        assert_eq!(s.severity, "é".repeat(50));
        let s = signal(&one(
            json!({"alertname": "A", "namespace": "ns", "pod": "p", "severity": "Sev1"}),
        ))
        .clone();
        assert_eq!(s.severity, "Sev1");
    }

    #[test]
    fn per_alert_values_win_over_common() {
        let mut body = webhook(vec![
            alert(
                json!({"alertname": "A", "namespace": "ns", "pod": "p", "severity": "critical", "team": "own"}),
            ),
            alert(json!({"alertname": "A", "namespace": "ns", "pod": "q"})),
        ]);
        body["commonLabels"] = json!({"severity": "info", "team": "common", "region": "eu"});
        body["commonAnnotations"] = json!({"runbook_url": "common", "summary": "common"});
        body["alerts"][0]["annotations"] = json!({"summary": "own"});
        let out = decode(&body).unwrap();
        let a = signal(&out[0]);
        assert_eq!(
            (
                a.severity.as_str(),
                a.labels["team"].as_str(),
                a.labels["region"].as_str()
            ),
            ("critical", "own", "eu")
        );
        assert_eq!(
            (
                a.annotations["summary"].as_str(),
                a.annotations["runbook_url"].as_str()
            ),
            ("own", "common")
        );
        let b = signal(&out[1]);
        assert_eq!(
            (b.severity.as_str(), b.labels["team"].as_str()),
            ("info", "common")
        );
        assert_eq!(b.annotations["summary"], "common");
    }

    #[test]
    fn cluster_from_common_then_alert() {
        let mut body = webhook(vec![alert(
            json!({"alertname": "A", "namespace": "ns", "pod": "p", "cluster": "own"}),
        )]);
        let s = signal(&decode(&body).unwrap()[0]).clone();
        assert_eq!(s.target.cluster.as_deref(), Some("own"));
        assert_eq!(
            s.fingerprint,
            Target {
                cluster: Some("own".into()),
                ..s.target.clone()
            }
            .fingerprint()
        );
        body["commonLabels"] = json!({"cluster": "east-1"});
        let s = signal(&decode(&body).unwrap()[0]).clone();
        assert_eq!(s.target.cluster.as_deref(), Some("east-1"));
        assert_eq!(s.target.fingerprint_input(), "east-1:ns:Pod:p");
        body["commonLabels"] = json!({"cluster": ""});
        body["alerts"][0]["labels"]["cluster"] = json!("");
        let s = signal(&decode(&body).unwrap()[0]).clone();
        assert_eq!(s.target.cluster, None);
        body["commonLabels"] = json!({"cluster": "x".repeat(254)});
        assert_eq!(decode(&body).unwrap_err().field(), "commonLabels.cluster");
    }

    #[test]
    fn resolved_is_never_a_signal() {
        let mut resolved = alert(json!({"alertname": "A", "namespace": "ns", "deployment": "d"}));
        resolved["status"] = json!("resolved");
        let mut broken = alert(json!("not labels"));
        broken["status"] = json!("resolved");
        let out = decode(&webhook(vec![resolved, broken])).unwrap();
        match &out[0] {
            Decoded::Resolved {
                name,
                fingerprint,
                target,
            } => {
                assert_eq!(name, "A");
                assert_eq!(
                    *fingerprint,
                    Some(Target::fingerprint(target.as_ref().unwrap()))
                );
                assert_eq!(
                    target.as_ref().unwrap().fingerprint_input(),
                    "ns:Deployment:d"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            out[1],
            Decoded::Resolved {
                name: String::new(),
                fingerprint: None,
                target: None
            }
        );
    }

    #[test]
    fn malformed_alert_does_not_fail_the_batch() {
        let mut alerts: Vec<_> = (0..10)
            .map(|n| alert(json!({"alertname": "A", "namespace": "ns", "pod": format!("p-{n}")})))
            .collect();
        alerts[6]["labels"] = json!({"alertname": "A", "pod": "p-6"});
        let out = decode(&webhook(alerts)).unwrap();
        assert_eq!(out.len(), 10);
        assert_eq!(
            out.iter()
                .filter(|d| matches!(d, Decoded::Signal(_)))
                .count(),
            9
        );
        let e = invalid(&out[6]);
        assert_eq!(e.field, "alerts[6].labels.namespace");
        assert_eq!(
            e.detail,
            "Pod \"p-6\" is namespaced but the alert has no namespace or exported_namespace label"
        );
    }

    #[test]
    fn alert_field_types() {
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (json!(42), "alerts[0]"),
            (json!({"labels": "x"}), "alerts[0].labels"),
            (
                json!({"labels": {"alertname": 1}}),
                "alerts[0].labels.alertname",
            ),
            (
                json!({"status": "pending", "labels": {}}),
                "alerts[0].status",
            ),
            (
                json!({"labels": {"alertname": "A", "namespace": "ns", "pod": "p"}, "startsAt": "yesterday"}),
                "alerts[0].startsAt",
            ),
            (
                json!({"labels": {"alertname": "A", "namespace": "ns", "pod": "p"}, "startsAt": 5}),
                "alerts[0].startsAt",
            ),
            (
                json!({"labels": {"alertname": "A", "namespace": "ns", "pod": "p"}, "annotations": []}),
                "alerts[0].annotations",
            ),
            (
                json!({"labels": {"alertname": "A", "namespace": "ns", "pod": "p"}, "generatorURL": {}}),
                "alerts[0].generatorURL",
            ),
        ];
        for (a, field) in cases {
            let out = decode(&webhook(vec![a.clone()])).unwrap();
            assert_eq!(invalid(&out[0]).field, field, "{a}");
        }
        let dup = br#"{"alerts":[{"labels":{},"labels":{}}]}"#;
        let out = decode_alertmanager(dup, None, now(), &cfg()).unwrap();
        assert_eq!(
            invalid(&out[0]).detail,
            "field labels appears more than once"
        );
    }

    #[test]
    fn starts_at_defaults_and_firing_time() {
        let mut a = alert(json!({"alertname": "A", "namespace": "ns", "pod": "p"}));
        a.as_object_mut().unwrap().remove("startsAt");
        let mut zero = alert(json!({"alertname": "A", "namespace": "ns", "pod": "q"}));
        zero["startsAt"] = json!(GO_ZERO_TIME);
        let out = decode(&webhook(vec![a, zero])).unwrap();
        assert_eq!(signal(&out[0]).firing_time, now());
        assert_eq!(signal(&out[1]).firing_time, now());
        let s = signal(&one(
            json!({"alertname": "A", "namespace": "ns", "pod": "p"}),
        ))
        .clone();
        assert_eq!(
            s.firing_time,
            "2026-11-26T16:59:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(s.received_time, now());
        assert_eq!(s.source, Source::Prometheus);
    }

    #[test]
    fn envelope_errors() {
        let err = |body: &[u8]| decode_alertmanager(body, None, now(), &cfg()).unwrap_err();
        for (body, field) in [
            (&b"not json"[..], "body"),
            (b"[]", "body"),
            (b"\"x\"", "body"),
            (b"{}", "alerts"),
            (b"{\"alerts\": null}", "alerts"),
            (b"{\"alerts\": {}}", "alerts"),
            (b"{\"alerts\": []}", "alerts"),
            (b"{\"alerts\": [{}], \"version\": \"3\"}", "version"),
            (b"{\"alerts\": [{}], \"version\": 4}", "version"),
            (b"{\"alerts\": [{}], \"commonLabels\": []}", "commonLabels"),
            (
                b"{\"alerts\": [{}], \"commonLabels\": {\"a\": 1}}",
                "commonLabels.a",
            ),
            (b"{\"alerts\": [{}], \"receiver\": 1}", "receiver"),
            (
                b"{\"alerts\": [{}], \"truncatedAlerts\": -1}",
                "truncatedAlerts",
            ),
            (b"{\"alerts\": [], \"alerts\": []}", "alerts"),
            (b"\xff\xfe", "body"),
        ] {
            let e = err(body);
            assert!(e.is_malformed(), "{e}");
            assert_eq!(e.field(), field, "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(
            err(b"{\"alerts\": []}").detail(),
            "must contain at least one alert"
        );
        // Version absent is accepted (direct API clients).
        let ok = br#"{"alerts":[{"labels":{"alertname":"A","namespace":"ns","pod":"p"}}]}"#;
        assert_eq!(
            decode_alertmanager(ok, None, now(), &cfg()).unwrap().len(),
            1
        );
    }

    #[test]
    fn too_many_alerts() {
        let mut cfg = cfg();
        cfg.max_alerts_per_batch = 3;
        let body = |n: usize| {
            webhook(vec![
                alert(
                    json!({"alertname": "A", "namespace": "ns", "pod": "p"})
                );
                n
            ])
            .to_string()
        };
        assert_eq!(
            decode_alertmanager(body(3).as_bytes(), None, now(), &cfg)
                .unwrap()
                .len(),
            3
        );
        let e = decode_alertmanager(body(4).as_bytes(), None, now(), &cfg).unwrap_err();
        assert!(e.is_too_many_alerts());
        assert_eq!(
            (e.field(), e.detail().as_str()),
            ("alerts", "4 alerts exceed the limit of 3 per request")
        );
    }

    #[test]
    fn x_timestamp_and_starts_at_freshness() {
        let body = webhook(vec![alert(
            json!({"alertname": "A", "namespace": "ns", "pod": "p"}),
        )])
        .to_string();
        let at = |offset: i64| (now().as_second() + offset).to_string();
        let run = |h: Option<&str>| decode_alertmanager(body.as_bytes(), h, now(), &cfg());
        assert!(run(Some(&at(-300))).is_ok());
        assert!(run(Some(&at(120))).is_ok());
        let e = run(Some(&at(-301))).unwrap_err();
        assert!(e.is_freshness());
        assert_eq!(e.field(), "X-Timestamp");
        assert_eq!(run(Some(&at(121))).unwrap_err().field(), "X-Timestamp");
        assert_eq!(run(Some("soon")).unwrap_err().field(), "X-Timestamp");

        let future = |secs: i64| {
            let mut a = alert(json!({"alertname": "A", "namespace": "ns", "pod": "p"}));
            a["startsAt"] = json!(
                Timestamp::from_second(now().as_second() + secs)
                    .unwrap()
                    .to_string()
            );
            a
        };
        let old = alert(json!({"alertname": "A", "namespace": "ns", "pod": "q"}));
        let mut very_old = old.clone();
        very_old["startsAt"] = json!("2020-01-01T00:00:00Z");
        assert!(decode(&webhook(vec![very_old.clone(), future(120)])).is_ok());
        let e = decode(&webhook(vec![old.clone(), future(121)])).unwrap_err();
        assert!(e.is_freshness());
        assert_eq!(e.field(), "alerts[1].startsAt");
        // A resolved alert's startsAt does not count, and with X-Timestamp the header decides.
        let mut resolved = future(3600);
        resolved["status"] = json!("resolved");
        assert!(decode(&webhook(vec![old, resolved])).is_ok());
        let body = webhook(vec![future(3600)]).to_string();
        assert!(decode_alertmanager(body.as_bytes(), Some(&at(0)), now(), &cfg()).is_ok());
    }

    #[test]
    fn label_caps() {
        let mut cfg = cfg();
        cfg.limits.max_labels = 4;
        cfg.limits.max_label_key_len = 10;
        cfg.limits.max_label_value_len = 9;
        let run = |labels: serde_json::Value, common: serde_json::Value| {
            let mut body = webhook(vec![alert(labels)]);
            body["commonLabels"] = common;
            decode_alertmanager(body.to_string().as_bytes(), None, now(), &cfg)
        };
        let out = run(
            json!({"alertname": "A", "namespace": "ns", "pod": "p", "x": "1"}),
            json!({"y": "2"}),
        )
        .unwrap();
        let e = invalid(&out[0]);
        assert_eq!(
            (e.field.as_str(), e.detail.as_str()),
            ("alerts[0].labels", "5 labels exceed the limit of 4")
        );
        let out = run(
            json!({"alertname": "A", "namespace": "ns", "pod": "p", "k".repeat(11): "1"}),
            json!({}),
        )
        .unwrap();
        assert_eq!(invalid(&out[0]).field, "alerts[0].labels");
        let e = run(
            json!({"alertname": "A", "namespace": "ns", "pod": "p"}),
            json!({"k".repeat(11): "1"}),
        )
        .unwrap_err();
        assert_eq!(e.field(), "commonLabels");

        // Values are truncated at a character boundary; the target keeps the full name.
        let out = run(
            json!({"alertname": "A", "namespace": "ns", "pod": "pod-name-longer"}),
            json!({"d": "é".repeat(8)}),
        )
        .unwrap();
        let s = signal(&out[0]);
        assert_eq!(s.labels["d"], "éééé");
        assert_eq!(s.labels["pod"], "pod-name-");
        assert_eq!(s.target.name, "pod-name-longer");
        assert_eq!(s.fingerprint, Target::fingerprint(&s.target));
    }

    /// `spec.providerData` is the text serde_json writes for this struct (how it was built before it
    /// was written by hand): same members, same order, same escapes, `null` for absent fields.
    #[test]
    fn provider_data_is_the_text_serde_json_writes() {
        #[derive(serde::Serialize)]
        struct Oracle<'a> {
            #[serde(rename = "groupKey")]
            group_key: Option<&'a str>,
            receiver: Option<&'a str>,
            #[serde(rename = "externalURL")]
            external_url: Option<&'a str>,
            #[serde(rename = "generatorURL")]
            generator_url: Option<&'a str>,
            #[serde(rename = "alertFingerprint")]
            alert_fingerprint: Option<&'a str>,
            #[serde(rename = "truncatedAlerts")]
            truncated_alerts: Option<u64>,
        }
        let mut cfg = cfg();
        cfg.limits.max_provider_field_bytes = 9;
        let labels = json!({"alertname": "A", "namespace": "ns", "pod": "p"});
        let weird = "{}:{a=\"\u{7}\\\"}é✓";
        for (envelope, alert, oracle) in [
            (
                json!({"groupKey": weird, "receiver": "r", "externalURL": "ééééé", "truncatedAlerts": 3}),
                json!({"labels": labels, "generatorURL": "http://x/\u{1f}", "fingerprint": "0123456789"}),
                Oracle {
                    group_key: Some(truncate_utf8(weird, 9)),
                    receiver: Some("r"),
                    external_url: Some("éééé"),
                    generator_url: Some("http://x/"),
                    alert_fingerprint: Some("012345678"),
                    truncated_alerts: Some(3),
                },
            ),
            (
                json!({"groupKey": null}),
                json!({"labels": labels, "generatorURL": null}),
                Oracle {
                    group_key: None,
                    receiver: None,
                    external_url: None,
                    generator_url: None,
                    alert_fingerprint: None,
                    truncated_alerts: None,
                },
            ),
        ] {
            let mut body = envelope;
            body["alerts"] = json!([alert]);
            let out = decode_alertmanager(body.to_string().as_bytes(), None, now(), &cfg).unwrap();
            assert_eq!(
                signal(&out[0]).provider_data.as_deref(),
                serde_json::to_string(&oracle).ok().as_deref(),
                "{body}"
            );
        }
    }

    /// Labels and annotations are the maps a `BTreeMap<String, String>` decoding would give: common
    /// entries overlaid by the alert's, of a repeated key the last, escaped keys and values unescaped.
    #[test]
    fn merged_maps_are_what_btree_maps_would_hold() {
        let body = r#"{"commonLabels":{"severity":"warning","z\"q":"common","team":"a","team":"b"},
            "commonAnnotations":{"summary":"common","runbook":"r"},
            "alerts":[{"labels":{"alertname":"A","namespace":"ns","pod":"p","severity":"critical",
                "pod":"p2","k\u00e9y":"v\n\"x\"","team":"c"},
                "annotations":{"summary":"own","summary":"own2","a":"\t"}}]}"#;
        let out = decode_alertmanager(body.as_bytes(), None, now(), &cfg()).unwrap();
        let s = signal(&out[0]);
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            s.labels,
            map(&[
                ("alertname", "A"),
                ("namespace", "ns"),
                ("pod", "p2"),
                ("severity", "critical"),
                ("kéy", "v\n\"x\""),
                ("team", "c"),
                ("z\"q", "common"),
            ])
        );
        assert_eq!(s.target.name, "p2");
        assert_eq!(
            s.annotations,
            map(&[("a", "\t"), ("runbook", "r"), ("summary", "own2")])
        );
    }

    #[test]
    fn provider_data_and_original_payload() {
        let body = webhook(vec![
            alert(json!({"alertname": "A", "namespace": "ns", "pod": "p"})),
            alert(json!({"alertname": "B", "namespace": "ns", "pod": "q"})),
        ]);
        let out = decode(&body).unwrap();
        let s = signal(&out[1]);
        let pd: serde_json::Value =
            serde_json::from_str(s.provider_data.as_deref().unwrap()).unwrap();
        assert_eq!(
            pd,
            json!({"groupKey": "{}:{}", "receiver": "namegate", "externalURL": "http://am",
                              "generatorURL": "http://prom/graph", "alertFingerprint": "abc", "truncatedAlerts": 0})
        );
        let original: serde_json::Value = serde_json::from_str(&s.original_payload).unwrap();
        assert_eq!(original, body["alerts"][1]);
        let minimal = br#"{"alerts":[{"labels":{"alertname":"A","namespace":"ns","pod":"p"}}]}"#;
        let out = decode_alertmanager(minimal, None, now(), &cfg()).unwrap();
        let pd: serde_json::Value =
            serde_json::from_str(signal(&out[0]).provider_data.as_deref().unwrap()).unwrap();
        assert_eq!(pd["groupKey"], serde_json::Value::Null);
        assert_eq!(
            signal(&out[0]).original_payload,
            r#"{"labels":{"alertname":"A","namespace":"ns","pod":"p"}}"#
        );
    }

    mod passes {
        //! The typed pass and the precise pass give every body the same answer.
        use proptest::prelude::*;
        use serde_json::{Map, Value, json};

        use super::super::{GO_ZERO_TIME, Passes, decode_with};
        use super::{cfg, now};

        /// A field that should be a string: mostly one of `valid`, sometimes another type.
        fn string(valid: &'static [&'static str]) -> BoxedStrategy<Value> {
            prop_oneof![
                40 => prop::sample::select(valid).prop_map(|s| json!(s)),
                1 => Just(Value::Null),
                1 => Just(json!(4)),
                1 => Just(json!(["a"])),
            ]
            .boxed()
        }

        /// A map of labels or annotations: mostly one that names a target, with extra entries,
        /// sometimes an entry or the whole map of the wrong type.
        fn map() -> BoxedStrategy<Value> {
            let key = prop::sample::select(vec![
                "alertname",
                "namespace",
                "exported_namespace",
                "pod",
                "deployment",
                "node",
                "job",
                "severity",
                "cluster",
                "x",
            ]);
            let value = prop_oneof![
                30 => prop::sample::select(vec!["ns", "web", "A", "", "critical", "a/b", "x\u{7}"])
                    .prop_map(|s| json!(s)),
                1 => Just(Value::Null),
                1 => Just(json!(1)),
            ];
            let base = prop::bool::weighted(0.7).prop_map(|named| {
                if named {
                    json!({"alertname": "A", "namespace": "ns", "pod": "p"})
                } else {
                    json!({})
                }
            });
            prop_oneof![
                40 => (base, prop::collection::btree_map(key, value, 0..3)).prop_map(|(mut m, extra)| {
                    if let Value::Object(m) = &mut m {
                        m.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
                    }
                    m
                }),
                1 => Just(Value::Null),
                1 => Just(json!([1])),
            ]
            .boxed()
        }

        /// An object with each of `fields` present or not.
        fn object(
            fields: Vec<(&'static str, BoxedStrategy<Value>)>,
        ) -> impl Strategy<Value = Value> {
            fields
                .into_iter()
                .map(|(k, v)| prop::option::weighted(0.85, v).prop_map(move |v| (k, v)))
                .collect::<Vec<_>>()
                .prop_map(|fields| {
                    Value::Object(
                        fields
                            .into_iter()
                            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
                            .collect::<Map<_, _>>(),
                    )
                })
        }

        fn alert() -> impl Strategy<Value = Value> {
            prop_oneof![
                12 => object(vec![
                    ("status", string(&["firing", "resolved", "pending"])),
                    ("labels", map()),
                    ("annotations", map()),
                    ("startsAt", string(&["2026-11-26T16:59:00Z", GO_ZERO_TIME, "yesterday"])),
                    ("generatorURL", string(&["http://prom/graph", ""])),
                    ("fingerprint", string(&["abc"])),
                ]),
                1 => Just(json!("not an alert")),
                1 => Just(Value::Null),
            ]
        }

        fn webhook() -> impl Strategy<Value = Value> {
            let truncated = prop_oneof![
                40 => Just(json!(0)),
                1 => Just(json!(-1)),
                1 => Just(json!(2.5)),
                1 => Just(json!("0")),
            ];
            let alerts = prop_oneof![
                24 => prop::collection::vec(alert(), 1..4).prop_map(Value::Array),
                1 => Just(json!([])),
                1 => Just(Value::Null),
                1 => Just(json!({})),
            ];
            object(vec![
                ("version", string(&["4"])),
                ("groupKey", string(&["{}:{}"])),
                ("truncatedAlerts", truncated.boxed()),
                ("receiver", string(&["namegate"])),
                ("commonLabels", map()),
                ("commonAnnotations", map()),
                ("externalURL", string(&["http://am"])),
                ("alerts", alerts.boxed()),
            ])
        }

        fn both(body: &[u8]) -> (String, String) {
            let typed = decode_with(body, None, now(), &cfg(), Passes::TypedFirst);
            let precise = decode_with(body, None, now(), &cfg(), Passes::PreciseOnly);
            (format!("{typed:?}"), format!("{precise:?}"))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn typed_and_precise_decoding_agree(body in webhook()) {
                let (typed, precise) = both(body.to_string().as_bytes());
                prop_assert_eq!(typed, precise);
            }
        }

        /// The generator reaches valid signals, invalid alerts and rejected requests alike, so the
        /// property above compares both passes on all three.
        #[test]
        fn generated_bodies_cover_signals_invalid_alerts_and_rejections() {
            use proptest::strategy::ValueTree;
            use proptest::test_runner::TestRunner;

            use super::super::Decoded;

            let mut runner = TestRunner::deterministic();
            let (mut signals, mut invalid, mut rejected) = (0, 0, 0);
            for _ in 0..1000 {
                let body = webhook()
                    .new_tree(&mut runner)
                    .unwrap_or_else(|e| panic!("{e}"))
                    .current();
                match decode_with(
                    body.to_string().as_bytes(),
                    None,
                    now(),
                    &cfg(),
                    Passes::TypedFirst,
                ) {
                    Err(_) => rejected += 1,
                    Ok(decoded) => {
                        signals += decoded
                            .iter()
                            .filter(|d| matches!(d, Decoded::Signal(_)))
                            .count();
                        invalid += decoded
                            .iter()
                            .filter(|d| matches!(d, Decoded::Invalid(_)))
                            .count();
                    }
                }
            }
            assert!(
                signals >= 100 && invalid >= 100 && rejected >= 100,
                "{signals} signals, {invalid} invalid alerts, {rejected} rejected bodies"
            );
        }

        #[test]
        fn repeated_fields_get_the_precise_answer() {
            for body in [
                r#"{"alerts":[],"alerts":[]}"#,
                r#"{"version":"4","version":"4","alerts":[{}]}"#,
                r#"{"alerts":[{"labels":{"alertname":"A","namespace":"ns","pod":"p"},"status":"firing","status":"firing"}]}"#,
                r#"{"alerts":[{"labels":{"alertname":"A","alertname":"B","namespace":"ns","pod":"p"}}]}"#,
            ] {
                let (typed, precise) = both(body.as_bytes());
                assert_eq!(typed, precise, "{body}");
            }
        }
    }
}
