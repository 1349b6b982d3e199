//! The tamper-evidence chain (docs/audit.md): canonical form of a stored event and its hash.
//!
//! Every correlation ID has its own chain. An event's hash is
//!
//! ```text
//! event_hash = hex(H(previous_event_hash || canonical(event)))
//! ```
//!
//! where `previous_event_hash` is the lowercase hex hash of the chain's preceding event (the empty string
//! for the first event of a chain) and `H` is SHA-256 (`hash_algorithm = "sha256"`) or HMAC-SHA256 with an
//! operator-held key (`hash_algorithm = "hmac-sha256"`). The canonical form is documented in
//! `docs/audit.md`; changing it invalidates every stored chain, so it is versioned by
//! [`CANONICAL_VERSION`] and must never change in place.
//!
//! Chain key rule for migrated rows (docs/migration.md): the chain an event belongs to is
//! `COALESCE(legacy_correlation_id, correlation_id)` — the ID the event was hashed under. The one-shot
//! migration rewrites `correlation_id` and keeps the old value in `legacy_correlation_id`, so a migrated row
//! stays in its original chain and its hash stays valid; events appended later under the new ID start a new
//! chain keyed by the new ID.

use std::fmt;
use std::fmt::Write as _;

use hmac::{Hmac, KeyInit, Mac};
use jiff::Timestamp;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::event::{AuditEvent, CATEGORY};
use super::store::RawEventRow;

/// Version of the canonical serialisation below; recorded in the docs, not in rows (rows carry
/// `event_version`, which is part of the canonical form).
pub const CANONICAL_VERSION: u32 = 1;

/// The `event_version` the gateway writes.
pub const EVENT_VERSION: &str = "1.0";

/// Which function produced `event_hash`; stored in the `hash_algorithm` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    Sha256,
    HmacSha256,
}

impl HashAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::HmacSha256 => "hmac-sha256",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sha256" => Some(Self::Sha256),
            "hmac-sha256" => Some(Self::HmacSha256),
            _ => None,
        }
    }
}

impl fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An HMAC key. Debug never prints the key material.
#[derive(Clone)]
pub struct HmacKey(Vec<u8>);

impl HmacKey {
    /// `None` for an empty key: an empty HMAC key would look keyed while adding no secret.
    pub fn new(bytes: Vec<u8>) -> Option<Self> {
        (!bytes.is_empty()).then_some(Self(bytes))
    }

    /// The key file's bytes with one trailing line ending removed (keys are usually written with `echo`).
    pub fn from_file_bytes(mut bytes: Vec<u8>) -> Option<Self> {
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        Self::new(bytes)
    }
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HmacKey(<{} bytes>)", self.0.len())
    }
}

/// Computes chain hashes: HMAC-SHA256 when a key is configured, plain SHA-256 otherwise.
#[derive(Clone, Debug, Default)]
pub struct ChainHasher {
    key: Option<HmacKey>,
}

impl ChainHasher {
    pub fn new(key: Option<HmacKey>) -> Self {
        Self { key }
    }

    /// The algorithm new events are hashed with.
    pub fn algorithm(&self) -> HashAlgorithm {
        if self.key.is_some() {
            HashAlgorithm::HmacSha256
        } else {
            HashAlgorithm::Sha256
        }
    }

    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// `hex(H(prev || canonical))` with the configured algorithm.
    pub fn hash(&self, prev: &str, canonical: &str) -> String {
        match &self.key {
            Some(key) => hmac_sha256(key, prev, canonical),
            None => sha256(prev, canonical),
        }
    }

    /// Recomputes a hash with `algorithm`; `None` when the algorithm needs a key this hasher lacks.
    pub fn rehash(&self, algorithm: HashAlgorithm, prev: &str, canonical: &str) -> Option<String> {
        match algorithm {
            HashAlgorithm::Sha256 => Some(sha256(prev, canonical)),
            HashAlgorithm::HmacSha256 => self.key.as_ref().map(|k| hmac_sha256(k, prev, canonical)),
        }
    }
}

fn sha256(prev: &str, canonical: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(canonical.as_bytes());
    crd_schema::fingerprint::hex32(&h.finalize().into())
}

fn hmac_sha256(key: &HmacKey, prev: &str, canonical: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail; fall back to an impossible hash rather than
    // panic if a future hmac release ever changes that (verification would then report every row).
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&key.0) else {
        return String::from("invalid-hmac-key");
    };
    mac.update(prev.as_bytes());
    mac.update(canonical.as_bytes());
    crd_schema::fingerprint::hex32(&mac.finalize().into_bytes().into())
}

/// The timestamp precision both engines store exactly (PostgreSQL `timestamptz` has microseconds).
pub fn truncate_to_micros(ts: Timestamp) -> Timestamp {
    Timestamp::from_microsecond(ts.as_microsecond()).unwrap_or(ts)
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`: UTC, always six fractional digits, so the text is fixed-width (sorts
/// chronologically in SQLite) and round-trips through both engines without loss.
pub fn format_timestamp(ts: Timestamp) -> String {
    let mut buf = TimestampText::default();
    buf.set(ts).to_owned()
}

/// The text of [`format_timestamp`] in a buffer of its own, so the writer formats each event's
/// timestamp without an allocation and without `strftime`'s interpretation of a format string
/// (docs/benchmarks.md, "The audit writer's CPU per event and its floor").
#[derive(Clone, Copy, Debug)]
pub struct TimestampText([u8; 27]);

impl Default for TimestampText {
    fn default() -> Self {
        Self(*b"0000-00-00T00:00:00.000000Z")
    }
}

impl TimestampText {
    /// Writes `ts` (its microseconds; nanoseconds are cut, as [`truncate_to_micros`] does) and
    /// returns the text.
    pub fn set(&mut self, ts: Timestamp) -> &str {
        let dt = jiff::tz::Offset::UTC.to_datetime(ts);
        let year = i64::from(dt.year());
        if !(0..=9999).contains(&year) {
            // Outside four digits the form is not fixed-width anyway; strftime says what it says.
            let text = ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
            let n = text.len().min(self.0.len());
            self.0[..n].copy_from_slice(&text.as_bytes()[..n]);
            return self.as_str();
        }
        let b = &mut self.0;
        let mut put = |at: usize, digits: usize, mut v: i64| {
            for i in (at..at + digits).rev() {
                b[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, i64::from(dt.month()));
        put(8, 2, i64::from(dt.day()));
        put(11, 2, i64::from(dt.hour()));
        put(14, 2, i64::from(dt.minute()));
        put(17, 2, i64::from(dt.second()));
        put(20, 6, i64::from(dt.subsec_nanosecond() / 1_000));
        self.as_str()
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// The canonical serialisation hashed into the chain (version [`CANONICAL_VERSION`]).
///
/// A JSON object with exactly these keys, sorted bytewise, no insignificant whitespace:
/// `actor_id, actor_type, cluster_id, correlation_id, duration_ms, error_code, error_message,
/// event_action, event_category, event_data, event_id, event_outcome, event_timestamp, event_type,
/// event_version, fingerprint, namespace, parent_event_id, resource_id, resource_type, severity, span_id,
/// trace_id`. Absent values are `null`, text values JSON strings, `duration_ms` an integer.
/// `correlation_id` is the chain key (the legacy ID for migrated rows). `event_id`/`parent_event_id` are
/// lowercase hyphenated UUIDs and `event_timestamp` is [`format_timestamp`], as stored. `event_data` is
/// embedded verbatim as its stored JSON text, which the store writes as [`canonical_json`] (object keys
/// sorted recursively) and keeps byte for byte (PostgreSQL `json`, SQLite `TEXT`): verification never
/// re-parses numbers, so float formatting cannot break a chain. Storage-only columns (`seq`, the hash
/// columns, `legacy_correlation_id`) are not part of it.
pub fn canonical(row: &RawEventRow) -> String {
    let mut out = String::new();
    write_canonical(&mut out, &CanonicalFields::of_row(row));
    out
}

/// The hashed columns of one row, borrowed: what [`canonical`] serialises. The writer fills it
/// straight from an event's fields, so an appended event's text is not copied into a row first.
#[derive(Clone, Copy, Debug, Default)]
pub struct CanonicalFields<'a> {
    pub actor_id: Option<&'a str>,
    pub actor_type: Option<&'a str>,
    pub cluster_id: Option<&'a str>,
    /// The chain key ([`RawEventRow::chain_key`]).
    pub correlation_id: &'a str,
    pub duration_ms: Option<i64>,
    pub error_code: Option<&'a str>,
    pub error_message: Option<&'a str>,
    pub event_action: &'a str,
    pub event_category: &'a str,
    /// JSON text, embedded as is.
    pub event_data: &'a str,
    pub event_id: &'a str,
    pub event_outcome: &'a str,
    pub event_timestamp: &'a str,
    pub event_type: &'a str,
    pub event_version: &'a str,
    pub fingerprint: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub parent_event_id: Option<&'a str>,
    pub resource_id: Option<&'a str>,
    pub resource_type: Option<&'a str>,
    pub severity: Option<&'a str>,
    pub span_id: Option<&'a str>,
    pub trace_id: Option<&'a str>,
}

impl<'a> CanonicalFields<'a> {
    /// The hashed columns of `ev` as the store writes them, with its ID and timestamp already
    /// formatted (`event_id` lowercase hyphenated, `event_timestamp` as [`TimestampText`] writes it).
    pub fn of_event(ev: &'a AuditEvent, event_id: &'a str, event_timestamp: &'a str) -> Self {
        Self {
            actor_id: ev.actor_id.as_deref(),
            actor_type: ev.actor_type.as_deref(),
            cluster_id: ev.cluster_id.as_deref(),
            correlation_id: &ev.correlation_id,
            duration_ms: ev.duration_ms,
            error_code: ev.error_code.as_deref(),
            error_message: ev.error_message.as_deref(),
            event_action: ev.event_type.action(),
            event_category: CATEGORY,
            event_data: ev.event_data.as_str(),
            event_id,
            event_outcome: ev.event_outcome.as_str(),
            event_timestamp,
            event_type: ev.event_type.as_str(),
            event_version: EVENT_VERSION,
            fingerprint: ev.fingerprint.as_deref(),
            namespace: ev.namespace.as_deref(),
            parent_event_id: None,
            resource_id: ev.resource_id.as_deref(),
            resource_type: ev.resource_type.as_deref(),
            severity: ev.severity.as_deref(),
            span_id: ev.span_id.as_deref(),
            trace_id: ev.trace_id.as_deref(),
        }
    }

    pub fn of_row(row: &'a RawEventRow) -> Self {
        Self {
            actor_id: row.actor_id.as_deref(),
            actor_type: row.actor_type.as_deref(),
            cluster_id: row.cluster_id.as_deref(),
            correlation_id: row.chain_key(),
            duration_ms: row.duration_ms,
            error_code: row.error_code.as_deref(),
            error_message: row.error_message.as_deref(),
            event_action: &row.event_action,
            event_category: &row.event_category,
            event_data: &row.event_data,
            event_id: &row.event_id,
            event_outcome: &row.event_outcome,
            event_timestamp: &row.event_timestamp,
            event_type: &row.event_type,
            event_version: &row.event_version,
            fingerprint: row.fingerprint.as_deref(),
            namespace: row.namespace.as_deref(),
            parent_event_id: row.parent_event_id.as_deref(),
            resource_id: row.resource_id.as_deref(),
            resource_type: row.resource_type.as_deref(),
            severity: row.severity.as_deref(),
            span_id: row.span_id.as_deref(),
            trace_id: row.trace_id.as_deref(),
        }
    }
}

/// Appends the canonical form of `c` to `out` (see [`canonical`]); the writer reuses one buffer for
/// every event of a batch.
pub fn write_canonical(out: &mut String, c: &CanonicalFields<'_>) {
    fn text(s: &str) -> Field<'_> {
        Field::Text(s)
    }
    fn opt(v: Option<&str>) -> Field<'_> {
        v.map_or(Field::Null, Field::Text)
    }
    let fields: [(&str, Field<'_>); 23] = [
        ("actor_id", opt(c.actor_id)),
        ("actor_type", opt(c.actor_type)),
        ("cluster_id", opt(c.cluster_id)),
        ("correlation_id", text(c.correlation_id)),
        ("duration_ms", c.duration_ms.map_or(Field::Null, Field::Int)),
        ("error_code", opt(c.error_code)),
        ("error_message", opt(c.error_message)),
        ("event_action", text(c.event_action)),
        ("event_category", text(c.event_category)),
        ("event_data", Field::Json(c.event_data)),
        ("event_id", text(c.event_id)),
        ("event_outcome", text(c.event_outcome)),
        ("event_timestamp", text(c.event_timestamp)),
        ("event_type", text(c.event_type)),
        ("event_version", text(c.event_version)),
        ("fingerprint", opt(c.fingerprint)),
        ("namespace", opt(c.namespace)),
        ("parent_event_id", opt(c.parent_event_id)),
        ("resource_id", opt(c.resource_id)),
        ("resource_type", opt(c.resource_type)),
        ("severity", opt(c.severity)),
        ("span_id", opt(c.span_id)),
        ("trace_id", opt(c.trace_id)),
    ];
    let text_len: usize = fields
        .iter()
        .map(|(k, v)| {
            k.len()
                + match v {
                    Field::Text(s) | Field::Json(s) => s.len(),
                    Field::Null | Field::Int(_) => 0,
                }
        })
        .sum();
    out.reserve(text_len + 8 * fields.len() + 32);
    out.push('{');
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, k);
        out.push(':');
        match v {
            Field::Null => out.push_str("null"),
            Field::Text(s) => write_string(out, s),
            Field::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Field::Json(raw) => out.push_str(raw),
        }
    }
    out.push('}');
}

enum Field<'a> {
    Null,
    Text(&'a str),
    Int(i64),
    /// Already JSON text, embedded as is.
    Json(&'a str),
}

/// Canonical JSON of any value: object keys sorted bytewise at every level. Written by hand rather than
/// relying on `serde_json::Map` ordering, which changes when any crate enables `preserve_order`.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v);
    out
}

pub(crate) fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

/// `s` as a JSON string, escaped as serde_json escapes it.
pub(crate) fn write_string(out: &mut String, s: &str) {
    // serde_json's string escaping is deterministic (minimal escapes, \uXXXX for other controls): it
    // escapes exactly `"`, `\` and the controls U+0000–U+001F. A string with none of them (nearly all)
    // is copied between quotes as is, without serde_json's intermediate allocation.
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.reserve(s.len() + 2);
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        // Serialising a &str cannot fail; keep the output deterministic even if it ever did.
        Err(_) => out.push_str("\"\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> RawEventRow {
        RawEventRow {
            seq: 7,
            event_id: "01937e1c-7a4b-7c3d-8e5f-0123456789ab".into(),
            event_version: EVENT_VERSION.into(),
            event_timestamp: "2025-01-17T18:32:01.123456Z".into(),
            event_type: "gateway.crd.created".into(),
            event_category: "gateway".into(),
            event_action: "created".into(),
            event_outcome: "success".into(),
            correlation_id: "rr-new".into(),
            legacy_correlation_id: None,
            fingerprint: Some("ab".repeat(32)),
            parent_event_id: None,
            actor_type: Some("ServiceAccount".into()),
            actor_id: Some("system:serviceaccount:monitoring:alertmanager".into()),
            resource_type: Some("RemediationRequest".into()),
            resource_id: Some("rr-new".into()),
            namespace: Some("prod".into()),
            cluster_id: None,
            trace_id: None,
            span_id: None,
            severity: Some("critical".into()),
            duration_ms: Some(12),
            error_code: None,
            error_message: None,
            event_data: canonical_json(
                &json!({"z": 1, "a": {"y": [1.5, "x\u{1}"], "b": null}, "rr_uid": "u"}),
            ),
            event_hash: String::new(),
            previous_event_hash: None,
            hash_algorithm: "sha256".into(),
        }
    }

    #[test]
    fn canonical_is_sorted_and_stable() {
        let c = canonical(&sample());
        assert!(c.starts_with(r#"{"actor_id":"system:serviceaccount:monitoring:alertmanager","#));
        assert!(
            c.contains(r#""event_data":{"a":{"b":null,"y":[1.5,"x\u0001"]},"rr_uid":"u","z":1}"#)
        );
        assert!(c.contains(r#""event_timestamp":"2025-01-17T18:32:01.123456Z""#));
        assert!(c.contains(r#""duration_ms":12,"#));
        assert!(c.contains(r#""parent_event_id":null"#));
        let keys: Vec<String> = serde_json::from_str::<serde_json::Map<String, Value>>(&c)
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys.len(), 23);
        // Identical input, identical bytes; a changed field, a changed form.
        assert_eq!(c, canonical(&sample()));
        let mut other = sample();
        other.event_outcome = "failure".into();
        assert_ne!(c, canonical(&other));
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut samples: Vec<String> = (0u32..0x3000)
            .filter_map(char::from_u32)
            .map(|c| format!("a{c}b"))
            .collect();
        samples.extend(
            [
                "",
                "plain",
                "ünï ✓ 日本語 🔥",
                "q\"b\\s/",
                "\u{7f}\u{80}\u{2028}",
                "\u{10ffff}",
            ]
            .map(str::to_owned),
        );
        for s in samples {
            let mut out = String::from("x");
            write_string(&mut out, &s);
            assert_eq!(out[1..], serde_json::to_string(&s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn migrated_rows_hash_under_their_legacy_id() {
        let mut migrated = sample();
        migrated.correlation_id = "rr-b157a3a9e42f-1c2b5576".into();
        let original = canonical(&migrated);
        migrated.legacy_correlation_id = Some(migrated.correlation_id.clone());
        migrated.correlation_id = "rr-somethingnew".into();
        assert_eq!(canonical(&migrated), original);
    }

    #[test]
    fn timestamps_are_fixed_width_micros() {
        let ts: Timestamp = "1970-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(format_timestamp(ts), "1970-01-01T00:00:00.000000Z");
        let ts: Timestamp = "2024-02-29T23:59:59.999999999Z".parse().unwrap();
        assert_eq!(
            format_timestamp(truncate_to_micros(ts)),
            "2024-02-29T23:59:59.999999Z"
        );
        let back: Timestamp = format_timestamp(ts).parse().unwrap();
        assert_eq!(back, truncate_to_micros(ts));
    }

    /// The hand-written formatter writes what `strftime` wrote before it, for every kind of date.
    #[test]
    fn timestamp_text_is_what_strftime_writes() {
        let strftime = |ts: Timestamp| ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        let mut samples: Vec<Timestamp> = [
            "0000-01-01T00:00:00Z",
            "1970-01-01T00:00:00Z",
            "1999-12-31T23:59:59.999999999Z",
            "2000-02-29T12:00:00.000001Z",
            "2024-02-29T23:59:59.999999Z",
            "2026-11-30T10:15:00.123456789Z",
            "9999-12-30T21:59:59.999999999Z",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        // Spread over 0000–9999 with odd sub-second parts.
        let (lo, hi) = (samples[0].as_second(), samples[6].as_second());
        let mut x: i64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = lo + x.rem_euclid(hi - lo);
            let nanos = (x >> 11).rem_euclid(1_000_000_000) as i32;
            samples.push(Timestamp::new(secs, nanos).unwrap());
        }
        let mut buf = TimestampText::default();
        for ts in samples {
            assert_eq!(buf.set(ts), strftime(ts), "{ts:?}");
            assert_eq!(format_timestamp(ts), strftime(ts));
        }
    }

    #[test]
    fn hashes_chain_and_key_matters() {
        let plain = ChainHasher::default();
        let keyed = ChainHasher::new(HmacKey::from_file_bytes(b"secret\n".to_vec()));
        assert_eq!(plain.algorithm(), HashAlgorithm::Sha256);
        assert_eq!(keyed.algorithm(), HashAlgorithm::HmacSha256);
        // sha256("") of the empty input, a well-known vector.
        assert_eq!(
            plain.hash("", ""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let a = keyed.hash("", "{}");
        assert_ne!(a, plain.hash("", "{}"));
        assert_ne!(keyed.hash(&a, "{}"), a);
        assert_eq!(plain.rehash(HashAlgorithm::HmacSha256, "", "{}"), None);
        assert_eq!(keyed.rehash(HashAlgorithm::HmacSha256, "", "{}"), Some(a));
        assert!(HmacKey::from_file_bytes(b"\n".to_vec()).is_none());
        assert_eq!(
            format!("{:?}", HmacKey::new(b"k".to_vec()).unwrap()),
            "HmacKey(<1 bytes>)"
        );
    }
}
