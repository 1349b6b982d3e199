//! Label and annotation caps, and truncation that never splits a UTF-8 character.
//!
//! The kubernaut gateway truncated label values by byte count and could cut a multi-byte
//! character in half, producing text the API server rejects or stores mangled (contract §12).
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
//! Fingerprints are always computed from untruncated values; target names and namespaces have
//! their own Kubernetes length rules (see [`super`], "Target identity"), so no truncation can
//! change an identity.

use std::collections::BTreeMap;

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
        }
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
    field: &str,
) -> Result<(), InvalidSignal> {
    let (max_entries, max_key, _) = kind.caps(limits);
    if map.len() > max_entries {
        return Err(InvalidSignal::new(
            field,
            format!(
                "{} {}s exceed the limit of {max_entries}",
                map.len(),
                kind.noun()
            ),
        ));
    }
    if let Some(key) = map.keys().find(|k| k.len() > max_key) {
        return Err(InvalidSignal::new(
            field,
            format!(
                "{} name {} is {} bytes long, over the limit of {max_key}",
                kind.noun(),
                quote(key),
                key.len()
            ),
        ));
    }
    if map.keys().any(String::is_empty) {
        return Err(InvalidSignal::new(
            field,
            format!("empty {} name", kind.noun()),
        ));
    }
    Ok(())
}

/// Checks the caps of `map` and truncates its oversize values in place.
pub(crate) fn cap_map(
    map: &mut BTreeMap<String, String>,
    kind: MapKind,
    limits: &Limits,
    field: &str,
) -> Result<(), InvalidSignal> {
    check_map(map, kind, limits, field)?;
    let (_, _, max_value) = kind.caps(limits);
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
    fn quoting_escapes_and_bounds() {
        assert_eq!(quote("a\nb"), "\"a\\nb\"");
        let long = "x".repeat(100);
        assert_eq!(quote(&long), format!("{:?}…", "x".repeat(64)));
    }

    proptest! {
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
