//! The RR name: the fingerprint encoded so that the name itself is the lock (docs/decisions/0001-name-as-lock.md).
//!
//! `name(fp, 1) = "rr-" + base32(digest)` (RFC 4648 alphabet, lowercase, no padding, over the 32 raw
//! digest bytes) — 52 characters of body, a 55-character name. Later attempts append `-n`, so the
//! longest name, attempt 9,999,999, is 63 characters: a valid DNS-1123 label and label value.
//!
//! The encoding is a bijection onto the names [`parse`] accepts: parsing is strict (canonical base32,
//! no leading zeros, no `-1` suffix), so two different texts never map to one `(fp, attempt)` and a
//! legacy or foreign name is never mistaken for one of ours.

use std::fmt;
use std::num::NonZeroU32;

use crate::fingerprint::Fingerprint;

pub const PREFIX: &str = "rr-";
/// Characters of base32 text for a 32-byte digest: ceil(256 / 5).
pub const BODY_LEN: usize = 52;
/// Length of `name(fp, 1)`.
pub const BASE_LEN: usize = PREFIX.len() + BODY_LEN;
/// Kubernetes' limit for label values and DNS-1123 labels.
pub const MAX_NAME_LEN: usize = 63;

const ALPHABET: base32::Alphabet = base32::Alphabet::Rfc4648Lower { padding: false };

/// Which remediation of a fingerprint an RR is: 1, 2, … 9,999,999.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attempt(NonZeroU32);

impl Attempt {
    pub const FIRST: Attempt = Attempt(NonZeroU32::MIN);
    /// The largest attempt whose name still fits in 63 characters.
    pub const MAX: u32 = 9_999_999;

    pub fn new(n: u32) -> Option<Self> {
        NonZeroU32::new(n)
            .filter(|n| n.get() <= Self::MAX)
            .map(Self)
    }

    pub const fn get(self) -> u32 {
        self.0.get()
    }

    /// The attempt after this one, or `None` at [`Attempt::MAX`].
    pub fn next(self) -> Option<Self> {
        Self::new(self.get().checked_add(1)?)
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The RR name of attempt `attempt` of fingerprint `fp`.
pub fn name(fp: &Fingerprint, attempt: Attempt) -> String {
    let mut out = String::with_capacity(MAX_NAME_LEN);
    out.push_str(PREFIX);
    out.push_str(&base32::encode(ALPHABET, fp.as_bytes()));
    if attempt != Attempt::FIRST {
        out.push('-');
        out.push_str(&attempt.to_string());
    }
    debug_assert!(out.len() <= MAX_NAME_LEN);
    out
}

/// A name produced by [`name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParsedName {
    pub fingerprint: Fingerprint,
    pub attempt: Attempt,
}

/// Why a name is not one of ours. Legacy and foreign names end up here: that is expected, not a fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name does not start with {PREFIX:?}")]
    Prefix,
    #[error("name body is not {BODY_LEN} characters of lowercase base32")]
    Body,
    #[error("base32 body is not the canonical encoding of a 32-byte digest")]
    NonCanonical,
    #[error("attempt suffix is not a decimal from 2 to {max} without leading zeros", max = Attempt::MAX)]
    Attempt,
}

impl NameError {
    /// True for names that are plausibly ours but damaged (as opposed to legacy/foreign names).
    pub fn is_non_canonical(&self) -> bool {
        matches!(self, Self::NonCanonical)
    }
}

/// Reverses [`name`]: `parse(&name(fp, n)) == Ok(ParsedName { fp, n })` and nothing else parses.
pub fn parse(name: &str) -> Result<ParsedName, NameError> {
    let rest = name.strip_prefix(PREFIX).ok_or(NameError::Prefix)?;
    if rest.len() < BODY_LEN || !rest.is_char_boundary(BODY_LEN) {
        return Err(NameError::Body);
    }
    let (body, suffix) = rest.split_at(BODY_LEN);
    if !body.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7')) {
        return Err(NameError::Body);
    }
    let bytes = base32::decode(ALPHABET, body).ok_or(NameError::Body)?;
    let digest: [u8; 32] = bytes.try_into().map_err(|_| NameError::Body)?;
    // 52 characters carry 260 bits; the 4 spare bits must be zero or two bodies would share a digest.
    if base32::encode(ALPHABET, &digest) != body {
        return Err(NameError::NonCanonical);
    }
    let attempt = match suffix {
        "" => Attempt::FIRST,
        s => parse_attempt_suffix(s).ok_or(NameError::Attempt)?,
    };
    Ok(ParsedName {
        fingerprint: Fingerprint::from_bytes(digest),
        attempt,
    })
}

fn parse_attempt_suffix(suffix: &str) -> Option<Attempt> {
    let digits = suffix.strip_prefix('-')?;
    let well_formed = !digits.is_empty()
        && digits.len() <= 7
        && !digits.starts_with('0')
        && digits.bytes().all(|b| b.is_ascii_digit());
    if !well_formed {
        return None;
    }
    // `-1` would be a second spelling of attempt 1.
    Attempt::new(digits.parse().ok()?).filter(|a| *a != Attempt::FIRST)
}

/// True when `s` is a valid RFC 1123 label (what Kubernetes requires of many names and of label values
/// used as names): 1–63 characters of `[a-z0-9-]`, starting and ending alphanumeric.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && b.iter()
            .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'-'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(serde::Deserialize)]
    struct Vector {
        input: String,
        fingerprint: String,
        name: String,
        name_attempt_2: String,
        name_attempt_9999999: String,
    }

    /// The vectors (`tests/fixtures/name-vectors.json`, see `docs/compatibility.md`) are the compatibility
    /// contract with every other implementation of the encoding; they are data, not test code.
    fn vectors() -> Vec<Vector> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/name-vectors.json"
        );
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("the name vectors must be readable at {path}: {e}"));
        let v: Vec<Vector> = serde_json::from_str(&text).unwrap();
        assert!(!v.is_empty());
        v
    }

    #[test]
    fn reproduces_every_shared_vector() {
        for v in vectors() {
            let fp = Fingerprint::of_input(&v.input);
            assert_eq!(fp.to_hex(), v.fingerprint, "fingerprint of {:?}", v.input);
            assert_eq!(name(&fp, Attempt::FIRST), v.name);
            assert_eq!(name(&fp, Attempt::new(2).unwrap()), v.name_attempt_2);
            assert_eq!(
                name(&fp, Attempt::new(9_999_999).unwrap()),
                v.name_attempt_9999999
            );
            assert_eq!(v.name.len(), BASE_LEN);
            assert_eq!(v.name_attempt_9999999.len(), MAX_NAME_LEN);
            for (n, text) in [
                (1, &v.name),
                (2, &v.name_attempt_2),
                (9_999_999, &v.name_attempt_9999999),
            ] {
                assert_eq!(
                    parse(text),
                    Ok(ParsedName {
                        fingerprint: fp,
                        attempt: Attempt::new(n).unwrap()
                    })
                );
            }
        }
    }

    #[test]
    fn attempt_bounds() {
        assert!(Attempt::new(0).is_none());
        assert!(Attempt::new(10_000_000).is_none());
        assert_eq!(Attempt::new(9_999_999).unwrap().next(), None);
        assert_eq!(Attempt::FIRST.next(), Attempt::new(2));
    }

    #[test]
    fn legacy_and_foreign_names_are_not_ours() {
        let fp = Fingerprint::of_input("prod:Deployment:payment-api");
        let ours = name(&fp, Attempt::FIRST);
        for bad in [
            "rr-b157a3a9e42f-1c2b5576".to_owned(),
            "rr-b157a3a9e42f-1737138721".to_owned(),
            "1c2b5576-aaaa-bbbb-cccc-0123456789ab".to_owned(),
            "payment-api".to_owned(),
            String::new(),
            format!("{ours}-1"),
            format!("{ours}-01"),
            format!("{ours}-0"),
            format!("{ours}-10000000"),
            format!("{ours}-"),
            format!("{ours}-2x"),
            format!("{ours}x"),
            ours.to_uppercase(),
            ours.replacen("rr-", "rx-", 1),
            ours[..BASE_LEN - 1].to_owned(),
        ] {
            assert!(parse(&bad).is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn non_canonical_trailing_bits_are_refused() {
        let fp = Fingerprint::of_input(":Node:worker-7");
        let ours = name(&fp, Attempt::FIRST);
        // The last character carries one data bit; flipping a spare bit keeps base32 decodable.
        let last = ours.as_bytes()[BASE_LEN - 1];
        let alphabet = b"abcdefghijklmnopqrstuvwxyz234567";
        let idx = alphabet.iter().position(|c| *c == last).unwrap();
        let twin = alphabet[idx ^ 0b00001] as char;
        let mut bad = ours[..BASE_LEN - 1].to_owned();
        bad.push(twin);
        assert_eq!(parse(&bad), Err(NameError::NonCanonical));
    }

    fn any_fingerprint() -> impl Strategy<Value = Fingerprint> {
        any::<[u8; 32]>().prop_map(Fingerprint::from_bytes)
    }

    fn any_attempt() -> impl Strategy<Value = Attempt> {
        prop_oneof![Just(1u32), 1..=20u32, 1..=Attempt::MAX].prop_map(|n| Attempt::new(n).unwrap())
    }

    proptest! {
        #[test]
        fn every_name_is_a_dns1123_label(fp in any_fingerprint(), a in any_attempt()) {
            let n = name(&fp, a);
            prop_assert!(is_dns1123_label(&n), "{n}");
            prop_assert!(n.len() <= MAX_NAME_LEN);
        }

        #[test]
        fn parse_reverses_name(fp in any_fingerprint(), a in any_attempt()) {
            prop_assert_eq!(parse(&name(&fp, a)), Ok(ParsedName { fingerprint: fp, attempt: a }));
        }

        #[test]
        fn distinct_inputs_give_distinct_names(
            x in (any_fingerprint(), any_attempt()),
            y in (any_fingerprint(), any_attempt()),
        ) {
            prop_assume!(x != y);
            prop_assert_ne!(name(&x.0, x.1), name(&y.0, y.1));
        }

        #[test]
        fn distinct_targets_give_distinct_names(a in "[a-z0-9-]{1,20}", b in "[a-z0-9-]{1,20}") {
            prop_assume!(a != b);
            let fa = Fingerprint::of_input(&format!("ns:Deployment:{a}"));
            let fb = Fingerprint::of_input(&format!("ns:Deployment:{b}"));
            prop_assert_ne!(name(&fa, Attempt::FIRST), name(&fb, Attempt::FIRST));
        }

        #[test]
        fn parse_never_panics_and_accepts_only_canonical_names(s in "\\PC{0,80}") {
            if let Ok(p) = parse(&s) {
                prop_assert_eq!(name(&p.fingerprint, p.attempt), s);
            }
        }

        #[test]
        fn legacy_formats_never_parse(fp in any_fingerprint(), suffix in "[0-9a-f]{8}|[0-9]{10}") {
            let legacy = format!("rr-{}-{suffix}", &fp.to_hex()[..12]);
            prop_assert!(parse(&legacy).is_err());
        }
    }
}
