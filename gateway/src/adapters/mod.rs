//! Wire formats in, [`Decoded`] out.
//!
//! Adapters are pure functions of `(body, headers, now, config)`: no I/O, no async, no clock of
//! their own, so every rule below is unit-tested and fuzzed directly.
//!
//! - [`decode_alertmanager`]: an Alertmanager webhook v4 body → one [`Decoded`] per alert.
//! - [`decode_kubernetes_event`]: one `core/v1` or `events.k8s.io/v1` Event → one [`Decoded`].
//!
//! # Two kinds of failure
//!
//! A [`RequestError`] rejects the whole request (400 with the field and a detail): the body is not
//! JSON, an envelope field is missing or mistyped, the batch is empty or too large, the replay
//! window is violated, an Event is `Normal`. A [`Decoded::Invalid`] rejects one signal and names
//! the precise field (`alerts[3].labels.namespace`); the rest of the batch is still admitted.
//!
//! # Why each alert is decoded on its own
//!
//! Alertmanager groups unrelated workloads into one webhook. If the batch were decoded as one
//! typed value, a single alert with a mistyped label would fail every other alert of the group —
//! and since a 400 is not retried by Alertmanager, those alerts would be lost. So the envelope is
//! parsed with each alert kept as raw JSON text ([`serde_json::value::RawValue`]), and each alert
//! is then decoded, validated and fingerprinted separately. The raw text doubles as the alert's
//! `spec.originalPayload`, verbatim as the sender wrote it: the signal's own JSON, not the batch.
//!
//! # Why adapters have no size cap of their own
//!
//! The HTTP layer applies one body limit (256 KiB, 413) before anything is parsed; it is the only
//! size limit on a request. The kubernaut gateway had a second, smaller cap (100 KiB) inside its
//! Prometheus adapter, so bodies between 100 and 256 KiB passed the HTTP layer and were then
//! refused with a misleading 400 (docs/compatibility.md). Here adapters bound what they produce — alerts
//! per batch, labels and annotations per signal, the bytes of each RR and of everything one request
//! decodes into ([`limits`], docs/limits.md) — never the bytes they are given.
//!
//! # Target identity
//!
//! Adapters produce the target as the signal names it (a Pod stays a Pod); owner resolution
//! (Pod → ReplicaSet → Deployment) happens later in admission, which recomputes the fingerprint.
//! Namespaces must be DNS-1123 labels and names at most 253 characters without `/` or control
//! characters: no resource can exist otherwise, and it keeps the `namespace:Kind:name`
//! fingerprint input unambiguous (a namespace can never contain `:`).
//!
//! [`Decoded`]: crate::signal::Decoded
//! [`Decoded::Invalid`]: crate::signal::Decoded::Invalid

pub mod alertmanager;
pub mod freshness;
pub mod kubernetes_event;
pub mod limits;

use std::sync::{Arc, RwLock};

use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::signal::InvalidSignal;

pub use alertmanager::{ResourceLabel, decode_alertmanager};
// `LabelTable` is defined below.
pub use freshness::FreshnessConfig;
pub use kubernetes_event::decode_kubernetes_event;
pub use limits::Limits;

use limits::quote;

/// Longest signal name and resource name (the CRD's `signalName`, and Kubernetes object names).
pub const MAX_NAME_LEN: usize = 253;
/// Longest severity (the CRD's `severity` maxLength); longer values are truncated.
pub const MAX_SEVERITY_LEN: usize = 50;
/// Longest cluster ID (the CRD's `clusterID`).
pub const MAX_CLUSTER_LEN: usize = 253;

/// What the adapters need to know; everything has a production default.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterConfig {
    /// Most alerts in one webhook (default 1000); more → 400.
    pub max_alerts_per_batch: usize,
    /// Label and annotation caps per signal.
    pub limits: Limits,
    /// Replay windows.
    pub freshness: FreshnessConfig,
    /// Resource label keys beyond the built-in ones (docs/compatibility.md: "any kind that API discovery
    /// maps from a label key"), filled from discovery by the caller. Consulted after the built-in
    /// workload labels and before `pod`/`node`. Keys that are never kinds (`job`, `service`,
    /// `instance`, `endpoint`, `container`, `namespace`, …) and keys already built in are ignored.
    pub extra_resource_labels: LabelTable,
}

/// The discovered resource label keys, replaced as a whole when discovery refreshes (the
/// `resolve::kinds` task writes it; adapters read a snapshot per alert).
#[derive(Clone, Debug, Default)]
pub struct LabelTable(Arc<RwLock<Arc<[ResourceLabel]>>>);

impl LabelTable {
    pub fn new(labels: Vec<ResourceLabel>) -> Self {
        Self(Arc::new(RwLock::new(labels.into())))
    }

    pub fn snapshot(&self) -> Arc<[ResourceLabel]> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, labels: Arc<[ResourceLabel]>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = labels;
    }
}

impl PartialEq for LabelTable {
    fn eq(&self, other: &Self) -> bool {
        self.snapshot() == other.snapshot()
    }
}

impl Default for AdapterConfig {
    fn default() -> Self {
        Self {
            max_alerts_per_batch: 1000,
            limits: Limits::default(),
            freshness: FreshnessConfig::default(),
            extra_resource_labels: LabelTable::default(),
        }
    }
}

/// Why a whole request is rejected (400). `field()` and `detail()` feed the RFC 7807 body; the
/// detail never contains internal error text, and client text in it is quoted and bounded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not JSON, not an object, or an envelope field missing or of the wrong type.
    #[error("{field}: {detail}")]
    Malformed { field: String, detail: String },
    /// More alerts than [`AdapterConfig::max_alerts_per_batch`].
    #[error("alerts: {count} alerts exceed the limit of {max} per request")]
    TooManyAlerts { count: usize, max: usize },
    /// A `Normal` Kubernetes Event: informational, nothing to remediate.
    #[error("type: Normal events are not accepted; only Warning and Error")]
    NormalEvent,
    /// The batch decodes into more bytes than [`Limits::max_request_decoded_bytes`] (common labels
    /// and annotations are merged into every alert): 413, see [`limits`].
    #[error(
        "alerts: the batch expands to more than {max} bytes once commonLabels and commonAnnotations are merged into its alerts"
    )]
    Expands { max: usize },
    /// Replay protection: `X-Timestamp`, `startsAt` or an Event time outside its window.
    #[error("{field}: {detail}")]
    Freshness { field: String, detail: String },
}

impl RequestError {
    pub(crate) fn malformed(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Malformed {
            field: field.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn freshness(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Freshness {
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// The offending field or header (`alerts`, `version`, `type`, `X-Timestamp`, …).
    pub fn field(&self) -> &str {
        match self {
            Self::Malformed { field, .. } | Self::Freshness { field, .. } => field,
            Self::TooManyAlerts { .. } | Self::Expands { .. } => "alerts",
            Self::NormalEvent => "type",
        }
    }

    /// What is wrong with [`Self::field`], for the problem document's `detail`.
    pub fn detail(&self) -> String {
        match self {
            Self::Malformed { detail, .. } | Self::Freshness { detail, .. } => detail.clone(),
            Self::TooManyAlerts { count, max } => {
                format!("{count} alerts exceed the limit of {max} per request")
            }
            Self::NormalEvent => "Normal events are not accepted; only Warning and Error".into(),
            Self::Expands { max } => format!(
                "the batch expands to more than {max} bytes once commonLabels and commonAnnotations \
                 are merged into its alerts; send fewer alerts or fewer common annotations per request"
            ),
        }
    }

    /// A bounded reason for metrics and audit: `malformed`, `too_many_alerts`, `normal_event`,
    /// `stale`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "malformed",
            Self::TooManyAlerts { .. } => "too_many_alerts",
            Self::NormalEvent => "normal_event",
            Self::Freshness { .. } => "stale",
            Self::Expands { .. } => "expands",
        }
    }

    pub fn is_expands(&self) -> bool {
        matches!(self, Self::Expands { .. })
    }

    pub fn is_malformed(&self) -> bool {
        matches!(self, Self::Malformed { .. })
    }

    pub fn is_too_many_alerts(&self) -> bool {
        matches!(self, Self::TooManyAlerts { .. })
    }

    pub fn is_normal_event(&self) -> bool {
        matches!(self, Self::NormalEvent)
    }

    pub fn is_freshness(&self) -> bool {
        matches!(self, Self::Freshness { .. })
    }
}

/// The body as text; valid JSON is always valid UTF-8, so a failure here is a malformed body.
fn body_text(body: &[u8]) -> Result<&str, RequestError> {
    std::str::from_utf8(body).map_err(|e| {
        RequestError::malformed(
            "body",
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )
    })
}

/// Describes a failed parse of the top-level body without echoing client text.
fn body_error(e: &serde_json::Error, what: &str) -> RequestError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => RequestError::malformed(
            "body",
            format!("not valid JSON (line {}, column {})", e.line(), e.column()),
        ),
        Category::Data => match duplicate_field(e) {
            Some(field) => RequestError::malformed(field, "appears more than once"),
            None => RequestError::malformed("body", format!("must be a JSON object ({what})")),
        },
    }
}

/// The field named by a "duplicate field" error. Objects are decoded into structs of raw fields,
/// so a duplicate key is the only data error an object can raise; the name is one of our own
/// field names, never client text.
fn duplicate_field(e: &serde_json::Error) -> Option<String> {
    let msg = e.to_string();
    let (field, _) = msg.strip_prefix("duplicate field `")?.split_once('`')?;
    Some(field.to_owned())
}

/// Decodes an optional raw field; JSON `null` counts as absent. `expected` names the type in the
/// error detail. The field's path is only formatted when there is an error to report.
fn parse_opt<'a, T: Deserialize<'a>>(
    raw: Option<&'a RawValue>,
    field: &(impl fmt::Display + ?Sized),
    expected: &str,
) -> Result<Option<T>, InvalidSignal> {
    match raw {
        None => Ok(None),
        Some(raw) => serde_json::from_str::<Option<T>>(raw.get())
            .map_err(|_| InvalidSignal::new(field.to_string(), format!("must be {expected}"))),
    }
}

/// Names the first entry of a map of strings that is not a string (the error path of a map's
/// decoding, so never on the path of a valid body).
fn string_map_problem(raw: &RawValue, field: &(impl fmt::Display + ?Sized)) -> InvalidSignal {
    let value: Result<Option<serde_json::Map<String, serde_json::Value>>, _> =
        serde_json::from_str(raw.get());
    let Ok(value) = value else {
        return InvalidSignal::new(field.to_string(), "must be an object of string values");
    };
    match value.into_iter().flatten().find(|(_, v)| !v.is_string()) {
        Some((k, _)) => {
            InvalidSignal::new(format!("{field}.{}", field_key(&k)), "must be a string")
        }
        None => InvalidSignal::new(field.to_string(), "must be an object of string values"),
    }
}

/// A map key as it may appear in a field path: plain when it is an identifier-like name, quoted
/// and bounded otherwise.
fn field_key(key: &str) -> String {
    let plain = !key.is_empty()
        && key.len() <= 128
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'));
    if plain {
        key.to_owned()
    } else {
        format!("[{}]", quote(key))
    }
}

/// Parses an RFC 3339 timestamp (`2026-11-26T16:58:04.118Z`, any offset).
fn parse_time(text: &str) -> Option<jiff::Timestamp> {
    text.parse().ok()
}

/// A DNS-1123 label: the shape of every Kubernetes namespace.
fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Checks a target namespace; `None` when valid.
pub(crate) fn namespace_problem(ns: &str) -> Option<String> {
    (!is_dns1123_label(ns)).then(|| {
        format!(
            "{} is not a namespace name (lowercase letters, digits and '-', at most 63)",
            quote(ns)
        )
    })
}

/// Checks a target object name; `None` when valid. Kubernetes names of the kinds adapters see are
/// at most 253 characters and never contain `/`, `%` or control characters, nor are `.`/`..`.
pub(crate) fn object_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("empty resource name".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!(
            "resource name is {} bytes long, over the limit of {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if name == "." || name == ".." || name.chars().any(|c| c == '/' || c == '%' || c.is_control()) {
        return Some(format!("{} is not a valid resource name", quote(name)));
    }
    None
}

// A Kubernetes Kind: an identifier starting with a letter, at most 63 characters (one rule, in
// `crd_schema::fingerprint`).
use crd_schema::fingerprint::is_kind;

/// Checks the target's parts against fingerprint forgery (`:` where no Kubernetes namespace, kind
/// or name can hold it, control characters, a kind that is not a Kind; see
/// `crd_schema::fingerprint` and `docs/compatibility.md`). `field_of` names the request field a
/// part came from.
pub(crate) fn target_problem(
    target: &crd_schema::Target,
    field_of: impl Fn(crd_schema::TargetField) -> String,
) -> Result<(), InvalidSignal> {
    target
        .validate()
        .map_err(|e| InvalidSignal::new(field_of(e.field()), e.to_string()))
}

/// Refuses control characters in text that lands in an RR or the audit store (`docs/api.md`,
/// "Control characters"). Keys, names and severities admit none; label and annotation values admit
/// only TAB, LF and CR (alert descriptions are multi-line). NUL is refused everywhere: PostgreSQL
/// cannot store it in text, and it has no meaning in any signal field.
pub(crate) fn control_problem(text: &str, multiline: bool) -> Option<&'static str> {
    // Control characters (Unicode `Cc`) are U+0000–U+001F, U+007F and U+0080–U+009F, which UTF-8
    // writes as 0xC2 0x80–0x9F: text with none of those bytes (nearly all) is not scanned by
    // character.
    if !has_control_byte(text.as_bytes()) {
        return None;
    }
    let bad = |c: char| c.is_control() && !(multiline && matches!(c, '\t' | '\n' | '\r'));
    text.chars().any(bad).then_some(if multiline {
        "contains a control character (only tab, line feed and carriage return are allowed)"
    } else {
        "contains a control character"
    })
}

/// Whether `bytes` holds a byte of a control character: below 0x20, 0x7F, or 0xC2 (the lead byte of
/// U+0080–U+00BF). Blocks of 32 bytes are tested without an early exit, which the compiler turns into
/// vector instructions.
fn has_control_byte(bytes: &[u8]) -> bool {
    let bad = |b: u8| b < 0x20 || b == 0x7f || b == 0xc2;
    let mut blocks = bytes.chunks_exact(32);
    for block in &mut blocks {
        if block.iter().fold(false, |found, &b| found | bad(b)) {
            return true;
        }
    }
    blocks.remainder().iter().any(|&b| bad(b))
}

/// A map's entries as text, in key order.
fn entries(
    map: &std::collections::BTreeMap<String, String>,
) -> impl Iterator<Item = (&str, &str)> + Clone {
    map.iter().map(|(k, v)| (k.as_str(), v.as_str()))
}

/// [`control_problem`] over every key and value of a label or annotation map, in key order; names
/// the entry.
fn map_control_problem<'m>(
    entries: impl IntoIterator<Item = (&'m str, &'m str)>,
    field: &(impl fmt::Display + ?Sized),
) -> Result<(), InvalidSignal> {
    for (k, v) in entries {
        if let Some(p) = control_problem(k, false) {
            return Err(InvalidSignal::new(field.to_string(), format!("a key {p}")));
        }
        if let Some(p) = control_problem(v, true) {
            return Err(InvalidSignal::new(format!("{field}.{}", field_key(k)), p));
        }
    }
    Ok(())
}

/// The API version and scope of a kind adapters know without discovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KnownKind {
    pub api_version: &'static str,
    pub cluster_scoped: bool,
}

/// Built-in kinds: the workload kinds of the Alertmanager label table and the kinds Kubernetes
/// Events commonly involve.
pub(crate) fn known_kind(kind: &str) -> Option<KnownKind> {
    let (api_version, cluster_scoped) = match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => ("apps/v1", false),
        "Job" | "CronJob" => ("batch/v1", false),
        "Pod" | "Service" | "ConfigMap" | "PersistentVolumeClaim" | "ReplicationController" => {
            ("v1", false)
        }
        "Node" | "Namespace" | "PersistentVolume" => ("v1", true),
        "HorizontalPodAutoscaler" => ("autoscaling/v2", false),
        "PodDisruptionBudget" => ("policy/v1", false),
        "StorageClass" => ("storage.k8s.io/v1", true),
        _ => return None,
    };
    Some(KnownKind {
        api_version,
        cluster_scoped,
    })
}

/// Checks a signal name (`alertname`, Event `reason`): 1..=253 characters, no control character.
pub(crate) fn signal_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("required and must not be empty".into());
    }
    if let Some(p) = control_problem(name, false) {
        return Some(p.into());
    }
    let chars = name.chars().count();
    (chars > MAX_NAME_LEN)
        .then(|| format!("{chars} characters long, over the limit of {MAX_NAME_LEN}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_error_accessors() {
        let e = RequestError::malformed("alerts", "required");
        assert!(e.is_malformed() && !e.is_freshness());
        assert_eq!(
            (e.field(), e.detail().as_str(), e.reason()),
            ("alerts", "required", "malformed")
        );
        assert_eq!(e.to_string(), "alerts: required");
        let e = RequestError::TooManyAlerts {
            count: 1001,
            max: 1000,
        };
        assert!(e.is_too_many_alerts());
        assert_eq!(e.field(), "alerts");
        assert_eq!(e.to_string(), format!("alerts: {}", e.detail()));
        let e = RequestError::NormalEvent;
        assert!(e.is_normal_event());
        assert_eq!(e.field(), "type");
        assert_eq!(e.to_string(), format!("type: {}", e.detail()));
        assert_eq!(
            RequestError::freshness("X-Timestamp", "old").reason(),
            "stale"
        );
    }

    #[test]
    fn name_rules() {
        assert!(is_dns1123_label("payments"));
        assert!(!is_dns1123_label("Payments"));
        assert!(!is_dns1123_label("a:b"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(!is_dns1123_label("-a"));
        assert!(object_name_problem("ledger-writer-7d9c8b6f4-x2x9q").is_none());
        assert!(object_name_problem("system:controller:x").is_none());
        assert!(object_name_problem(&"a".repeat(254)).is_some());
        assert!(object_name_problem("a/b").is_some());
        assert!(object_name_problem("a\nb").is_some());
        assert!(is_kind("Deployment") && !is_kind("apps/Deployment") && !is_kind(""));
        assert!(signal_name_problem("Kube\0PodCrashLooping").is_some());
        assert!(control_problem("line one\nline two\ttab", true).is_none());
        assert!(control_problem("a\0b", true).is_some());
        assert!(control_problem("a\nb", false).is_some());
        let map =
            std::collections::BTreeMap::from([("summary".to_owned(), "x\u{1b}[31m".to_owned())]);
        assert_eq!(
            map_control_problem(entries(&map), "alerts[0].annotations")
                .unwrap_err()
                .field,
            "alerts[0].annotations.summary"
        );
        assert!(signal_name_problem(&"é".repeat(253)).is_none());
        assert!(signal_name_problem(&"é".repeat(254)).is_some());
        assert_eq!(
            field_key("app.kubernetes.io/name"),
            "app.kubernetes.io/name"
        );
        assert_eq!(field_key("a b"), "[\"a b\"]");
    }

    #[test]
    fn a_control_byte_is_found_at_any_offset_of_long_text() {
        let clean = "é-x".repeat(40);
        assert!(!has_control_byte(clean.as_bytes()));
        for at in 0..clean.len() {
            for bad in [0u8, 0x1f, 0x7f, 0xc2] {
                let mut bytes = clean.clone().into_bytes();
                bytes[at] = bad;
                assert!(has_control_byte(&bytes), "{bad:#x} at {at}");
            }
        }
    }

    proptest::proptest! {
        /// The byte pre-check only skips text that has no control character.
        #[test]
        fn control_problem_is_a_scan_by_character(s in "(\\PC|[\u{0}-\u{1f}\u{7f}-\u{a0}°«])*", multiline: bool) {
            let bad = |c: char| c.is_control() && !(multiline && matches!(c, '\t' | '\n' | '\r'));
            proptest::prop_assert_eq!(control_problem(&s, multiline).is_some(), s.chars().any(bad));
        }
    }

    #[test]
    fn body_errors_do_not_echo_input() {
        let syntax = serde_json::from_str::<serde_json::Value>("{\"secret").unwrap_err();
        let e = body_error(&syntax, "x");
        assert!(!e.detail().contains("secret"));
        assert_eq!(e.field(), "body");
        let data = serde_json::from_str::<std::collections::BTreeMap<String, String>>("\"secret\"")
            .unwrap_err();
        assert!(!body_error(&data, "x").detail().contains("secret"));
    }
}
