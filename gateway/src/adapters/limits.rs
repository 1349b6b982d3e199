//! Label and annotation caps, and truncation that never splits a UTF-8 character.
//!
//! The kubernaut gateway truncated label values by byte count and could cut a multi-byte
//! character in half, producing text the API server rejects or stores mangled (docs/compatibility.md).
//! Every truncation here ends on a character boundary and yields a prefix of the input.
//!
//! What is capped, and how (defaults in [`Limits::default`]):
//!
//! | what                          | over the cap                                  |
//! |-------------------------------|-----------------------------------------------|
//! | number of labels (merged)     | the signal is invalid                         |
//! | label name length (bytes)     | the signal is invalid                         |
//! | label value length (bytes)    | truncated on the RR at a character boundary   |
//! | number of annotations (merged)| the signal is invalid                         |
//! | annotation name length        | the signal is invalid                         |
//! | annotation value length       | truncated on the RR at a character boundary   |
//!
//! Values are truncated rather than refused because a long label value is still a valid
//! signal: the full text stays available in `spec.originalPayload`. Names are refused because a
//! truncated name could merge two different labels into one.
//!
//! # Bounded by bytes, not counts (docs/limits.md)
//!
//! Counts alone let one 256 KiB request become hundreds of MB: `commonAnnotations` are merged into
//! every alert of a batch, so 240 KiB of common annotations and 1,000 one-label alerts decode into
//! 1,000 signals of 240 KiB each — in the gateway's memory and then in 1,000 etcd objects. So bytes
//! are bounded twice:
//!
//! | what                                        | over the budget                                   |
//! |---------------------------------------------|---------------------------------------------------|
//! | label values of one RR, in total            | truncated, largest values first ([`fit_values`])  |
//! | annotation values of one RR, in total       | truncated, largest values first                   |
//! | `spec.originalPayload` of one RR            | replaced by a summary ([`payload_summary`])       |
//! | `spec.providerData` strings (URLs, group key)| truncated at a character boundary                |
//! | everything one request decodes into        | the request is refused: 413 ([`RequestBudget`])   |
//!
//! Truncation, as for single values (the kubernaut gateway also truncates values rather than drop the
//! alert): an oversize alert is still an incident that needs a remediation. The whole request is refused
//! only when it *expands*: Alertmanager repeats the common labels inside every alert, so a real webhook
//! decodes into about twice its own size; only a crafted batch reaches four times the body limit.
//!
//! Fingerprints are always computed from untruncated values; target names and namespaces have
//! their own Kubernetes length rules (see [`super`], "Target identity"), so no truncation can
//! change an identity.

use std::collections::BTreeMap;
use std::fmt;

use crate::signal::InvalidSignal;

/// The caps applied to one signal's labels and annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most labels a signal may carry after `commonLabels` are merged in.
    pub max_labels: usize,
    /// Longest label name, in bytes.
    pub max_label_key_len: usize,
    /// Longest label value on the RR, in bytes; longer values are truncated.
    pub max_label_value_len: usize,
    /// Most annotations a signal may carry after `commonAnnotations` are merged in.
    pub max_annotations: usize,
    /// Longest annotation name, in bytes.
    pub max_annotation_key_len: usize,
    /// Longest annotation value on the RR, in bytes; longer values are truncated.
    pub max_annotation_value_len: usize,
    /// Bytes of all label values of one RR together; over it the largest are truncated.
    pub max_label_bytes: usize,
    /// Bytes of all annotation values of one RR together; over it the largest are truncated.
    pub max_annotation_bytes: usize,
    /// Longest `spec.originalPayload`; a longer one is replaced by its [`payload_summary`].
    pub max_payload_bytes: usize,
    /// Longest string copied from a batch into each alert's `spec.providerData` (group key, URLs).
    pub max_provider_field_bytes: usize,
    /// Bytes one request may decode into (labels, annotations, payloads, provider data of all its
    /// signals); over it the request is refused with 413.
    pub max_request_decoded_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_labels: 64,
            max_label_key_len: 256,
            max_label_value_len: 1024,
            max_annotations: 64,
            max_annotation_key_len: 256,
            max_annotation_value_len: 16 * 1024,
            max_label_bytes: 16 * 1024,
            max_annotation_bytes: 32 * 1024,
            max_payload_bytes: 32 * 1024,
            max_provider_field_bytes: 2 * 1024,
            // Four times the body limit: a real webhook decodes into about twice its size.
            max_request_decoded_bytes: 4 * crate::http::ingest::MAX_BODY_BYTES,
        }
    }
}

/// Truncates the values of `map` so that together they are at most `max_bytes` long, cutting the
/// largest first ("water-filling": every value longer than some cap is cut to that cap, shorter
/// ones are untouched; the cap is the largest that fits). Returns whether anything was cut.
pub fn fit_values(map: &mut BTreeMap<String, String>, max_bytes: usize) -> bool {
    let total: usize = map.values().map(String::len).sum();
    if total <= max_bytes {
        return false;
    }
    let mut sizes: Vec<usize> = map.values().map(String::len).collect();
    sizes.sort_unstable();
    // The largest cap c with Σ min(size, c) ≤ max_bytes: walk the sizes in ascending order.
    let mut remaining = max_bytes;
    let mut cap = 0;
    for (i, &size) in sizes.iter().enumerate() {
        let left = sizes.len() - i;
        if size * left <= remaining {
            remaining -= size;
            cap = size;
        } else {
            cap = remaining / left;
            break;
        }
    }
    for value in map.values_mut() {
        truncate_string(value, cap);
    }
    true
}

/// What replaces an oversize `spec.originalPayload`: valid JSON that says so, with the original's
/// size and SHA-256 (to match it against the sender's copy) and its first bytes for a human.
pub fn payload_summary(payload: &str, max_bytes: usize) -> String {
    use sha2::{Digest, Sha256};
    // The prefix is escaped into JSON, which may grow it up to 6×; keep the whole summary in budget.
    let head = truncate_utf8(payload, max_bytes.saturating_sub(256) / 6);
    serde_json::json!({
        "namegateTruncated": {
            "reason": format!("originalPayload of {} bytes exceeds the limit of {max_bytes}", payload.len()),
            "originalBytes": payload.len(),
            "sha256": hex::encode(Sha256::digest(payload.as_bytes())),
            "head": head,
        }
    })
    .to_string()
}

/// Applies the per-RR byte budgets to a decoded signal (labels, annotations, original payload).
pub(crate) fn fit_signal(signal: &mut crate::signal::Signal, limits: &Limits) {
    fit_values(&mut signal.labels, limits.max_label_bytes);
    fit_values(&mut signal.annotations, limits.max_annotation_bytes);
    if signal.original_payload.len() > limits.max_payload_bytes {
        signal.original_payload =
            payload_summary(&signal.original_payload, limits.max_payload_bytes);
    }
}

/// Bytes a decoded signal holds in its variable-size fields (what a request's budget counts).
pub(crate) fn signal_bytes(signal: &crate::signal::Signal) -> usize {
    let map =
        |m: &BTreeMap<String, String>| m.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    map(&signal.labels)
        + map(&signal.annotations)
        + signal.original_payload.len()
        + signal.provider_data.as_ref().map_or(0, String::len)
}

/// Counts what one request decodes into, against [`Limits::max_request_decoded_bytes`].
#[derive(Debug)]
pub(crate) struct RequestBudget {
    used: usize,
    max: usize,
}

impl RequestBudget {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            used: 0,
            max: limits.max_request_decoded_bytes,
        }
    }

    /// Adds `bytes`; `Err` with the total once the budget is exceeded.
    pub(crate) fn take(&mut self, bytes: usize) -> Result<(), usize> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.max {
            Err(self.used)
        } else {
            Ok(())
        }
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }
}

/// The longest prefix of `s` that is at most `max_bytes` long and ends on a character boundary.
pub fn truncate_utf8(s: &str, max_bytes: usize) -> &str {
    if s.len() <= max_bytes {
        return s;
    }
    let mut end = max_bytes;
    // A UTF-8 character is at most 4 bytes, so this loops at most 3 times.
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The first `max_chars` characters of `s` (Kubernetes `maxLength` counts characters).
pub fn truncate_chars(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// Truncates `s` in place to at most `max_bytes`, on a character boundary. Returns whether
/// anything was cut.
pub fn truncate_string(s: &mut String, max_bytes: usize) -> bool {
    let keep = truncate_utf8(s, max_bytes).len();
    let cut = keep < s.len();
    s.truncate(keep);
    cut
}

/// Which map is being capped, for the caps and the error text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MapKind {
    Labels,
    Annotations,
}

impl MapKind {
    fn noun(self) -> &'static str {
        match self {
            Self::Labels => "label",
            Self::Annotations => "annotation",
        }
    }

    fn caps(self, limits: &Limits) -> (usize, usize, usize) {
        match self {
            Self::Labels => (
                limits.max_labels,
                limits.max_label_key_len,
                limits.max_label_value_len,
            ),
            Self::Annotations => (
                limits.max_annotations,
                limits.max_annotation_key_len,
                limits.max_annotation_value_len,
            ),
        }
    }
}

/// Checks the count and name caps of `map`, reporting against `field`.
pub(crate) fn check_map(
    map: &BTreeMap<String, String>,
    kind: MapKind,
    limits: &Limits,
    field: &(impl fmt::Display + ?Sized),
) -> Result<(), InvalidSignal> {
    check_keys(
        map.len(),
        map.keys().map(String::as_str),
        kind,
        limits,
        field,
    )
}

/// The count and name caps of a map of `count` entries whose keys are `keys`, in key order (the
/// first offending key is the one named); `field` is formatted only for an error.
pub(crate) fn check_keys<'k>(
    count: usize,
    mut keys: impl Iterator<Item = &'k str> + Clone,
    kind: MapKind,
    limits: &Limits,
    field: &(impl fmt::Display + ?Sized),
) -> Result<(), InvalidSignal> {
    let (max_entries, max_key, _) = kind.caps(limits);
    if count > max_entries {
        return Err(InvalidSignal::new(
            field.to_string(),
            format!("{count} {}s exceed the limit of {max_entries}", kind.noun()),
        ));
    }
    if let Some(key) = keys.clone().find(|k| k.len() > max_key) {
        return Err(InvalidSignal::new(
            field.to_string(),
            format!(
                "{} name {} is {} bytes long, over the limit of {max_key}",
                kind.noun(),
                quote(key),
                key.len()
            ),
        ));
    }
    if keys.any(str::is_empty) {
        return Err(InvalidSignal::new(
            field.to_string(),
            format!("empty {} name", kind.noun()),
        ));
    }
    Ok(())
}

/// The longest value a label or annotation keeps on the RR (longer ones are truncated).
pub(crate) fn max_value_len(kind: MapKind, limits: &Limits) -> usize {
    kind.caps(limits).2
}

/// Checks the caps of `map` and truncates its oversize values in place.
pub(crate) fn cap_map(
    map: &mut BTreeMap<String, String>,
    kind: MapKind,
    limits: &Limits,
    field: &(impl fmt::Display + ?Sized),
) -> Result<(), InvalidSignal> {
    check_map(map, kind, limits, field)?;
    let max_value = max_value_len(kind, limits);
    for value in map.values_mut() {
        truncate_string(value, max_value);
    }
    Ok(())
}

/// Client text for an error detail: at most 64 characters, escaped and quoted, so it can never
/// break a log line or a problem document.
pub(crate) fn quote(s: &str) -> String {
    const MAX: usize = 64;
    let short = truncate_chars(s, MAX);
    if short.len() < s.len() {
        format!("{short:?}…")
    } else {
        format!("{short:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        let e = "é".repeat(10); // 2 bytes each
        assert_eq!(truncate_utf8(&e, 5), "éé");
        assert_eq!(truncate_utf8(&e, 4), "éé");
        assert_eq!(truncate_utf8(&e, 1), "");
        assert_eq!(truncate_utf8(&e, 20), e);
        assert_eq!(truncate_utf8("a😀b", 4), "a");
        assert_eq!(truncate_utf8("a😀b", 5), "a😀");
        assert_eq!(truncate_chars(&e, 3), "ééé");
        assert_eq!(truncate_chars("abc", 5), "abc");
        let mut s = e.clone();
        assert!(truncate_string(&mut s, 7));
        assert_eq!(s, "ééé");
        assert!(!truncate_string(&mut s, 7));
    }

    #[test]
    fn caps_refuse_counts_and_names_and_truncate_values() {
        let limits = Limits {
            max_labels: 2,
            max_label_key_len: 4,
            max_label_value_len: 3,
            ..Limits::default()
        };
        let mut too_many: BTreeMap<String, String> = [("a", "1"), ("b", "2"), ("c", "3")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        let err = cap_map(&mut too_many, MapKind::Labels, &limits, "alerts[0].labels").unwrap_err();
        assert_eq!(err.field, "alerts[0].labels");
        assert_eq!(err.detail, "3 labels exceed the limit of 2");

        let mut long_key: BTreeMap<String, String> = [("abcde".into(), "1".into())].into();
        let err = cap_map(&mut long_key, MapKind::Labels, &limits, "f").unwrap_err();
        assert!(
            err.detail.contains("5 bytes long, over the limit of 4"),
            "{}",
            err.detail
        );

        let mut long_value: BTreeMap<String, String> = [("k".into(), "ééé".into())].into();
        cap_map(&mut long_value, MapKind::Labels, &limits, "f").unwrap();
        assert_eq!(long_value["k"], "é");
    }

    #[test]
    fn value_budget_cuts_the_largest_values_first() {
        let mut m: BTreeMap<String, String> = [
            ("small".to_owned(), "x".repeat(10)),
            ("mid".to_owned(), "y".repeat(100)),
            ("big".to_owned(), "z".repeat(1000)),
        ]
        .into();
        assert!(!fit_values(&mut m.clone(), 1110), "fits exactly");
        assert!(fit_values(&mut m, 300));
        assert_eq!(m["small"].len(), 10, "small values are untouched");
        assert_eq!(m["mid"].len(), 100);
        assert_eq!(m["big"].len(), 190, "the largest takes what is left");
        let mut m: BTreeMap<String, String> = [
            ("a".to_owned(), "é".repeat(100)),
            ("b".to_owned(), "é".repeat(100)),
        ]
        .into();
        assert!(fit_values(&mut m, 101));
        assert_eq!(
            (m["a"].len(), m["b"].len()),
            (50, 50),
            "cut on character boundaries"
        );
    }

    #[test]
    fn an_oversize_payload_becomes_a_bounded_json_summary() {
        let payload = format!("{{\"labels\":{{\"x\":\"{}\"}}}}", "\u{1}".repeat(10_000));
        let summary = payload_summary(&payload, 1024);
        assert!(summary.len() <= 1024, "{} bytes", summary.len());
        let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
        assert_eq!(v["namegateTruncated"]["originalBytes"], payload.len());
        assert_eq!(v["namegateTruncated"]["sha256"].as_str().unwrap().len(), 64);
        assert!(payload.starts_with(v["namegateTruncated"]["head"].as_str().unwrap()));
    }

    #[test]
    fn request_budget_refuses_past_its_maximum() {
        let mut b = RequestBudget::new(&Limits {
            max_request_decoded_bytes: 10,
            ..Limits::default()
        });
        assert_eq!(b.take(6), Ok(()));
        assert_eq!(b.take(4), Ok(()));
        assert_eq!(b.take(1), Err(11));
    }

    #[test]
    fn quoting_escapes_and_bounds() {
        assert_eq!(quote("a\nb"), "\"a\\nb\"");
        let long = "x".repeat(100);
        assert_eq!(quote(&long), format!("{:?}…", "x".repeat(64)));
    }

    proptest! {
        #[test]
        fn value_budget_is_met_and_keeps_prefixes(
            m in proptest::collection::btree_map("[a-z]{1,8}", any::<String>(), 0..12),
            max in 0usize..400,
        ) {
            let mut fitted = m.clone();
            fit_values(&mut fitted, max);
            let total: usize = fitted.values().map(String::len).sum();
            let before: usize = m.values().map(String::len).sum();
            if before <= max {
                prop_assert_eq!(&fitted, &m);
            } else {
                prop_assert!(total <= max);
            }
            for (k, v) in &fitted {
                prop_assert!(m[k].starts_with(v.as_str()));
            }
        }

        #[test]
        fn truncation_is_a_valid_bounded_prefix(s in any::<String>(), max in 0usize..64) {
            let t = truncate_utf8(&s, max);
            prop_assert!(t.len() <= max);
            prop_assert!(s.starts_with(t));
            // Valid UTF-8 by construction (&str), and maximal: one more character would overflow.
            if t.len() < s.len() {
                let next = s[t.len()..].chars().next().map_or(0, char::len_utf8);
                prop_assert!(t.len() + next > max);
            }
            let bytes = t.as_bytes().to_vec();
            prop_assert!(String::from_utf8(bytes).is_ok());
        }

        #[test]
        fn char_truncation_is_a_bounded_prefix(s in any::<String>(), max in 0usize..64) {
            let t = truncate_chars(&s, max);
            prop_assert!(t.chars().count() <= max);
            prop_assert!(s.starts_with(t));
            prop_assert!(t.len() == s.len() || t.chars().count() == max);
        }
    }
}
