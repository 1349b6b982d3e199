//! The bytes kubernaut DataStorage hashes, and the hash (docs/migration.md, "DataStorage's hash chain").
//!
//! `event_hash = hex(H(previous_event_hash ‖ C))` where `C` is Go's `encoding/json` output of the row
//! after DataStorage blanks the hash and legal-hold fields: a fixed top-level key order, `event_data`
//! re-encoded through a Go `map[string]interface{}` (keys sorted by bytes, every number a float64 printed
//! the ECMAScript way), Go's HTML-safe string escaping. `H` is SHA-256 or HMAC-SHA256 per row.

use std::fmt::Write as _;

use hmac::{Hmac, KeyInit, Mac};
use jiff::Timestamp;
use jiff::civil::Date;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// `hash_algorithm` of a DataStorage row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    /// `sha256-unkeyed` (also what DataStorage assumes for `''`).
    Sha256,
    /// `hmac-sha256`.
    HmacSha256,
}

impl Algorithm {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sha256-unkeyed" | "" => Some(Self::Sha256),
            "hmac-sha256" => Some(Self::HmacSha256),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256-unkeyed",
            Self::HmacSha256 => "hmac-sha256",
        }
    }
}

/// The HMAC key exactly as DataStorage uses it: the bytes of the `hmacKey` string (not base64-decoded).
#[derive(Clone)]
pub struct HmacKey(Vec<u8>);

impl HmacKey {
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        Self(key.into())
    }
}

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HmacKey(<{} bytes>)", self.0.len())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("row {event_id} is hmac-sha256 and no HMAC key was given (--hmac-key-file)")]
    MissingKey { event_id: String },
    #[error("row {event_id} has unknown hash_algorithm {algorithm:?}")]
    UnknownAlgorithm { event_id: String, algorithm: String },
}

impl HashError {
    pub fn is_missing_key(&self) -> bool {
        matches!(self, Self::MissingKey { .. })
    }
}

/// One `audit_events` row, as DataStorage's verifier reads it (NULL strings as `None`).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub event_id: String,
    pub event_timestamp: Timestamp,
    /// The partition key; not hashed, needed to address the row.
    pub event_date: Date,
    pub event_version: String,
    pub event_type: String,
    pub event_category: String,
    pub event_action: String,
    pub event_outcome: String,
    pub correlation_id: String,
    pub parent_event_id: Option<String>,
    pub parent_event_date: Option<Date>,
    pub resource_type: String,
    pub resource_id: String,
    pub namespace: Option<String>,
    pub cluster_id: Option<String>,
    pub actor_type: String,
    pub actor_id: String,
    /// PostgreSQL's `inet` output text.
    pub actor_ip: Option<String>,
    pub severity: Option<String>,
    pub duration_ms: Option<i32>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub retention_days: i32,
    pub is_sensitive: bool,
    pub event_data: Value,
    pub event_hash: Option<String>,
    pub previous_event_hash: Option<String>,
    /// The stored `hash_algorithm` text.
    pub hash_algorithm: String,
}

impl Row {
    /// Whether the row takes part in its chain (`event_hash IS NOT NULL`).
    pub fn is_hashed(&self) -> bool {
        self.event_hash.is_some()
    }

    /// The canonical JSON `C` of this row (its `correlation_id` as stored).
    pub fn canonical_json(&self) -> String {
        let mut o = String::with_capacity(1024);
        o.push('{');
        key(&mut o, "event_id", true);
        string(&mut o, &self.event_id);
        key(&mut o, "event_timestamp", false);
        string(&mut o, &go_time(self.event_timestamp));
        o.push_str(",\"event_date\":null");
        for (k, v) in [
            ("event_type", &self.event_type),
            ("version", &self.event_version),
            ("event_category", &self.event_category),
            ("event_action", &self.event_action),
            ("event_outcome", &self.event_outcome),
            ("correlation_id", &self.correlation_id),
        ] {
            key(&mut o, k, false);
            string(&mut o, v);
        }
        key(&mut o, "parent_event_id", false);
        match &self.parent_event_id {
            Some(p) => string(&mut o, p),
            None => o.push_str("null"),
        }
        key(&mut o, "parent_event_date", false);
        match self.parent_event_date {
            Some(d) => string(&mut o, &format!("{}T00:00:00Z", d.strftime("%Y-%m-%d"))),
            None => o.push_str("null"),
        }
        let opt = |s: &Option<String>| s.clone().unwrap_or_default();
        for (k, v) in [
            ("resource_type", self.resource_type.clone()),
            ("resource_id", self.resource_id.clone()),
            ("namespace", opt(&self.namespace)),
            ("cluster_id", opt(&self.cluster_id)),
            ("severity", opt(&self.severity)),
        ] {
            if !v.is_empty() {
                key(&mut o, k, false);
                string(&mut o, &v);
            }
        }
        if let Some(d) = self.duration_ms.filter(|d| *d != 0) {
            let _ = write!(o, ",\"duration_ms\":{d}");
        }
        for (k, v) in [
            ("error_code", opt(&self.error_code)),
            ("error_message", opt(&self.error_message)),
            ("actor_id", self.actor_id.clone()),
            ("actor_type", self.actor_type.clone()),
            ("actor_ip", opt(&self.actor_ip)),
        ] {
            if !v.is_empty() {
                key(&mut o, k, false);
                string(&mut o, &v);
            }
        }
        let _ = write!(
            o,
            ",\"retention_days\":{},\"is_sensitive\":{}",
            self.retention_days, self.is_sensitive
        );
        o.push_str(
            ",\"event_hash\":\"\",\"previous_event_hash\":\"\",\"legal_hold\":false,\
             \"legal_hold_reason\":\"\",\"legal_hold_placed_by\":\"\",\"legal_hold_placed_at\":null",
        );
        key(&mut o, "event_data", false);
        value(&mut o, &self.event_data);
        o.push('}');
        o
    }

    /// `H(previous ‖ C)` with this row's own algorithm.
    pub fn compute_hash(&self, previous: &str, key: Option<&HmacKey>) -> Result<String, HashError> {
        let algorithm =
            Algorithm::parse(&self.hash_algorithm).ok_or_else(|| HashError::UnknownAlgorithm {
                event_id: self.event_id.clone(),
                algorithm: self.hash_algorithm.clone(),
            })?;
        let c = self.canonical_json();
        match algorithm {
            Algorithm::Sha256 => {
                let mut h = Sha256::new();
                h.update(previous.as_bytes());
                h.update(c.as_bytes());
                Ok(hex::encode(h.finalize()))
            }
            Algorithm::HmacSha256 => {
                let key = key.ok_or_else(|| HashError::MissingKey {
                    event_id: self.event_id.clone(),
                })?;
                // Any key length is valid for HMAC.
                let Ok(mut m) = Hmac::<Sha256>::new_from_slice(&key.0) else {
                    unreachable_hmac()
                };
                m.update(previous.as_bytes());
                m.update(c.as_bytes());
                Ok(hex::encode(m.finalize().into_bytes()))
            }
        }
    }
}

#[allow(clippy::panic)]
fn unreachable_hmac() -> ! {
    panic!("HMAC accepts keys of any length")
}

fn key(o: &mut String, k: &str, first: bool) {
    if !first {
        o.push(',');
    }
    o.push('"');
    o.push_str(k);
    o.push_str("\":");
}

/// Go's `time.Time` JSON: RFC 3339 in UTC, fraction without trailing zeros.
pub fn go_time(t: Timestamp) -> String {
    let mut s = t.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.subsec_nanosecond();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// A JSON string the way Go's `encoding/json` writes it (HTML-safe escaping on).
pub fn string(o: &mut String, s: &str) {
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            '\u{8}' => o.push_str("\\b"),
            '\u{c}' => o.push_str("\\f"),
            '<' => o.push_str("\\u003c"),
            '>' => o.push_str("\\u003e"),
            '&' => o.push_str("\\u0026"),
            '\u{2028}' => o.push_str("\\u2028"),
            '\u{2029}' => o.push_str("\\u2029"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
}

/// `event_data` through Go's `map[string]interface{}`: keys byte-sorted, numbers as float64.
fn value(o: &mut String, v: &Value) {
    match v {
        Value::Null => o.push_str("null"),
        Value::Bool(b) => o.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => o.push_str(&go_float(n.as_f64().unwrap_or(f64::NAN))),
        Value::String(s) => string(o, s),
        Value::Array(a) => {
            o.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    o.push(',');
                }
                value(o, x);
            }
            o.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            o.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    o.push(',');
                }
                string(o, k);
                o.push(':');
                if let Some(x) = m.get(k) {
                    value(o, x);
                }
            }
            o.push('}');
        }
    }
}

/// A float64 as Go's `encoding/json` prints it: shortest round-trip digits, plain notation for
/// 1e-6 ≤ |x| < 1e21, otherwise `d[.ddd]e±x` with no leading exponent zeros.
pub fn go_float(x: f64) -> String {
    if x == 0.0 {
        return if x.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    if !x.is_finite() {
        // jsonb cannot hold these; Go would refuse to marshal them.
        return "null".to_owned();
    }
    // Rust's `{:e}` prints the shortest round-trip digits: `d[.ddd]e<exp>`.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if x < 0.0 { "-" } else { "" };
    let abs = x.abs();
    if !(1e-6..1e21).contains(&abs) {
        let mut m = digits[..1].to_owned();
        if digits.len() > 1 {
            m.push('.');
            m.push_str(&digits[1..]);
        }
        let e = if exp < 0 {
            format!("e-{}", -exp)
        } else {
            format!("e+{exp:02}")
        };
        return format!("{sign}{m}{e}");
    }
    let k = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    let body = if exp >= 0 {
        let int_len = exp + 1;
        if k <= int_len {
            let zeros = usize::try_from(int_len - k).unwrap_or(0);
            format!("{digits}{}", "0".repeat(zeros))
        } else {
            let cut = usize::try_from(int_len).unwrap_or(0);
            format!("{}.{}", &digits[..cut], &digits[cut..])
        }
    } else {
        let zeros = usize::try_from(-exp - 1).unwrap_or(0);
        format!("0.{}{digits}", "0".repeat(zeros))
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_go() {
        for (x, want) in [
            (0.1, "0.1"),
            (1e-7, "1e-7"),
            (1e21, "1e+21"),
            (3.0, "3"),
            (-2.5e-3, "-0.0025"),
            (12_345_678_901_234_567_890.0, "12345678901234567000"),
            (1e-6, "0.000001"),
            (1.5e300, "1.5e+300"),
            (123.456, "123.456"),
            (-0.0, "-0"),
            (1e20, "100000000000000000000"),
            (1.2345e-10, "1.2345e-10"),
        ] {
            assert_eq!(go_float(x), want, "{x}");
        }
    }

    #[test]
    fn strings_escape_like_go() {
        let mut o = String::new();
        string(&mut o, "a\tb\u{8}c\u{c}d\u{1}e\u{7f}\"q\\/<>&\u{2028}é");
        assert_eq!(
            o,
            "\"a\\tb\\bc\\fd\\u0001e\u{7f}\\\"q\\\\/\\u003c\\u003e\\u0026\\u2028é\""
        );
    }
}
