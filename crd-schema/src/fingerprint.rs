//! The fingerprint of a signal's target (docs/compatibility.md).
//!
//! `fingerprint = hex(sha256("namespace:Kind:name"))`, prefixed with `cluster:` when a cluster ID is
//! known. It must stay byte-compatible with the kubernaut gateway, so an RR created by either gateway
//! for the same workload carries the same `spec.signalFingerprint`.
//!
//! # Why the input cannot be forged
//!
//! The input joins free-form parts with `:`, so a part that contains `:` could make one target's input
//! equal another's (`cluster "a"` + `ns:Kind:name` versus no cluster + namespace `a`, kind `ns`,
//! name `Kind:name`). [`Target::validate`] closes that: the namespace, the kind and the name may not
//! contain `:` — no Kubernetes namespace, kind or object of a kind a signal can target can — so the
//! input splits unambiguously from the right into `namespace:Kind:name`, and whatever precedes the
//! third `:` from the right is the cluster ID. A cluster ID is free text and may contain `:` (EKS
//! cluster ARNs do); that is safe because the three parts after it cannot. No part may contain a
//! control character. The kind must have the shape of a Kind (`^[A-Za-z][A-Za-z0-9]{0,62}$`). See
//! `docs/compatibility.md` ("Fingerprint input").

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// The workload a signal is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// Cluster ID, when the signal names one (fleet setups).
    pub cluster: Option<String>,
    /// Empty for cluster-scoped kinds such as `Node`.
    pub namespace: String,
    pub kind: String,
    pub name: String,
    /// Informational only: never part of the fingerprint.
    pub api_version: Option<String>,
}

impl Target {
    /// The text that is hashed: `[cluster:]namespace:Kind:name`.
    pub fn fingerprint_input(&self) -> String {
        match self.cluster.as_deref().filter(|c| !c.is_empty()) {
            Some(cluster) => format!("{cluster}:{}:{}:{}", self.namespace, self.kind, self.name),
            None => format!("{}:{}:{}", self.namespace, self.kind, self.name),
        }
    }

    /// The SHA-256 of [`Target::fingerprint_input`], hashed part by part rather than joined first (it
    /// runs for every signal).
    pub fn fingerprint(&self) -> Fingerprint {
        let mut hasher = Sha256::new();
        if let Some(cluster) = self.cluster.as_deref().filter(|c| !c.is_empty()) {
            hasher.update(cluster.as_bytes());
            hasher.update(b":");
        }
        hasher.update(self.namespace.as_bytes());
        hasher.update(b":");
        hasher.update(self.kind.as_bytes());
        hasher.update(b":");
        hasher.update(self.name.as_bytes());
        Fingerprint(hasher.finalize().into())
    }

    /// Checks that the parts cannot forge another target's fingerprint input (see the module
    /// documentation). Callers validate before fingerprinting anything a client sent.
    pub fn validate(&self) -> Result<(), TargetError> {
        if let Some(cluster) = self.cluster.as_deref() {
            check_text(TargetField::Cluster, cluster, false)?;
        }
        check_text(TargetField::Namespace, &self.namespace, true)?;
        if !is_kind(&self.kind) {
            return Err(TargetError::NotAKind);
        }
        if self.name.is_empty() {
            return Err(TargetError::Empty {
                field: TargetField::Name,
            });
        }
        check_text(TargetField::Name, &self.name, true)
    }
}

/// A Kubernetes Kind: an ASCII letter, then letters and digits, at most 63 characters.
pub fn is_kind(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphabetic()
        && b.iter().all(u8::is_ascii_alphanumeric)
}

fn check_text(field: TargetField, s: &str, no_separator: bool) -> Result<(), TargetError> {
    if s.chars().any(char::is_control) {
        return Err(TargetError::ControlCharacter { field });
    }
    if no_separator && s.contains(':') {
        return Err(TargetError::Separator { field });
    }
    Ok(())
}

/// The part of a [`Target`] a [`TargetError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetField {
    Cluster,
    Namespace,
    Kind,
    Name,
}

impl TargetField {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cluster => "cluster ID",
            Self::Namespace => "namespace",
            Self::Kind => "kind",
            Self::Name => "name",
        }
    }
}

impl fmt::Display for TargetField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a target cannot be fingerprinted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// `:` in the namespace, kind or name: it would let one target's input equal another's.
    #[error(
        "the {field} contains ':', the fingerprint separator, which no Kubernetes {field} can contain"
    )]
    Separator { field: TargetField },
    /// A control character (NUL included) in any part.
    #[error("the {field} contains a control character")]
    ControlCharacter { field: TargetField },
    /// The kind is not an identifier of the shape of a Kubernetes Kind.
    #[error("the kind is not a Kubernetes Kind (a letter, then letters and digits, at most 63)")]
    NotAKind,
    #[error("the {field} is empty")]
    Empty { field: TargetField },
}

impl TargetError {
    /// The part the error is about.
    pub fn field(&self) -> TargetField {
        match self {
            Self::Separator { field }
            | Self::ControlCharacter { field }
            | Self::Empty { field } => *field,
            Self::NotAKind => TargetField::Kind,
        }
    }

    pub fn is_separator(&self) -> bool {
        matches!(self, Self::Separator { .. })
    }

    pub fn is_control_character(&self) -> bool {
        matches!(self, Self::ControlCharacter { .. })
    }

    pub fn is_not_a_kind(&self) -> bool {
        matches!(self, Self::NotAKind)
    }
}

/// A SHA-256 digest identifying one target. Displayed as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn of_input(input: &str) -> Self {
        Self(Sha256::digest(input.as_bytes()).into())
    }

    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex32(&self.0)
    }
}

/// 32 bytes (a SHA-256 digest) as 64 lowercase hex digits. `hex::encode` pushes one char at a time;
/// this fills the 64 bytes at once — it runs several times per request on the duplicate path (the
/// fingerprint in the answer and the audit event, each audit event's chain hash).
pub fn hex32(bytes: &[u8; 32]) -> String {
    let mut buf = [0u8; 64];
    match hex::encode_to_slice(bytes, &mut buf).map(|()| std::str::from_utf8(&buf)) {
        Ok(Ok(hex)) => hex.to_owned(),
        _ => hex::encode(bytes),
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Why a text is not a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a fingerprint is 64 lowercase hex characters")]
pub struct FingerprintError;

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    /// Accepts exactly the CRD's pattern `^[a-f0-9]{64}$`: uppercase hex would be a different
    /// `spec.signalFingerprint` value on the wire, so it is refused rather than normalised.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(FingerprintError);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| FingerprintError)?;
        Ok(Self(out))
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(cluster: Option<&str>, ns: &str, kind: &str, name: &str) -> Target {
        Target {
            cluster: cluster.map(str::to_owned),
            namespace: ns.into(),
            kind: kind.into(),
            name: name.into(),
            api_version: Some("apps/v1".into()),
        }
    }

    #[test]
    fn input_format_matches_contract() {
        assert_eq!(
            target(None, "prod", "Deployment", "payment-api").fingerprint_input(),
            "prod:Deployment:payment-api"
        );
        assert_eq!(
            target(Some("east-1"), "prod", "Deployment", "payment-api").fingerprint_input(),
            "east-1:prod:Deployment:payment-api"
        );
        assert_eq!(
            target(None, "", "Node", "worker-7").fingerprint_input(),
            ":Node:worker-7"
        );
        // An empty cluster label is the same as none: otherwise `:prod:…` would fork the identity.
        assert_eq!(
            target(Some(""), "prod", "Deployment", "payment-api").fingerprint(),
            target(None, "prod", "Deployment", "payment-api").fingerprint()
        );
    }

    proptest::proptest! {
        /// Hashed part by part, the fingerprint is the digest of the joined input.
        #[test]
        fn fingerprint_is_the_digest_of_the_input(
            cluster in proptest::option::of(".{0,12}"),
            ns in ".{0,12}",
            kind in ".{0,12}",
            name in ".{0,70}",
        ) {
            let t = target(cluster.as_deref(), &ns, &kind, &name);
            proptest::prop_assert_eq!(t.fingerprint(), Fingerprint::of_input(&t.fingerprint_input()));
        }
    }

    #[test]
    fn separators_cannot_forge_another_targets_input() {
        // Without the check these two targets hash the same input `a:ns:Kind:name`.
        let honest = target(Some("a"), "ns", "Kind", "name");
        let forged = target(None, "a", "ns", "Kind:name");
        assert_eq!(honest.fingerprint_input(), forged.fingerprint_input());
        assert_eq!(honest.validate(), Ok(()));
        let e = forged.validate().unwrap_err();
        assert!(e.is_separator() && e.field() == TargetField::Name, "{e}");
        for (t, field) in [
            (target(None, "a:b", "Pod", "x"), TargetField::Namespace),
            (target(None, "a", "Po:d", "x"), TargetField::Kind),
        ] {
            assert_eq!(t.validate().unwrap_err().field(), field);
        }
        // A cluster ID may contain ':' (ARNs do): the three parts after it cannot.
        assert_eq!(
            target(
                Some("arn:aws:eks:eu-west-1:1:cluster/prod"),
                "ns",
                "Pod",
                "x"
            )
            .validate(),
            Ok(())
        );
    }

    #[test]
    fn control_characters_and_kinds_are_refused() {
        for (t, field) in [
            (target(Some("a\0"), "ns", "Pod", "x"), TargetField::Cluster),
            (target(None, "n\ns", "Pod", "x"), TargetField::Namespace),
            (target(None, "ns", "Pod", "x\u{0}"), TargetField::Name),
            (target(None, "ns", "Pod", "x\u{7f}"), TargetField::Name),
        ] {
            let e = t.validate().unwrap_err();
            assert!(e.is_control_character() && e.field() == field, "{e}");
        }
        assert!(
            target(None, "ns", "apps/Deployment", "x")
                .validate()
                .unwrap_err()
                .is_not_a_kind()
        );
        assert!(
            target(None, "ns", "", "x")
                .validate()
                .unwrap_err()
                .is_not_a_kind()
        );
        assert!(
            target(None, "ns", "1Pod", "x")
                .validate()
                .unwrap_err()
                .is_not_a_kind()
        );
        assert!(target(None, "ns", &"K".repeat(64), "x").validate().is_err());
        assert_eq!(
            target(None, "ns", "Pod", "").validate(),
            Err(TargetError::Empty {
                field: TargetField::Name
            })
        );
        assert_eq!(target(None, "", "Node", "worker-7").validate(), Ok(()));
    }

    #[test]
    fn api_version_does_not_change_the_fingerprint() {
        let mut a = target(None, "prod", "Deployment", "x");
        let b = a.clone();
        a.api_version = Some("apps/v1beta2".into());
        assert_eq!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn hex32_is_lowercase_hex_of_every_byte() {
        for seed in [0u8, 1, 0x7f, 0xff] {
            let bytes: [u8; 32] =
                std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(seed));
            assert_eq!(hex32(&bytes), hex::encode(bytes));
        }
        assert_eq!(hex32(&[0xab; 32]), "ab".repeat(32));
    }

    #[test]
    fn hex_round_trip_and_strictness() {
        let fp = Fingerprint::of_input("prod:Deployment:payment-api");
        assert_eq!(fp.to_hex().parse::<Fingerprint>(), Ok(fp));
        assert!(fp.to_hex().to_uppercase().parse::<Fingerprint>().is_err());
        assert!(fp.to_hex()[..63].parse::<Fingerprint>().is_err());
        assert!(format!("{}0", fp.to_hex()).parse::<Fingerprint>().is_err());
        let json = serde_json::to_string(&fp).unwrap();
        assert_eq!(serde_json::from_str::<Fingerprint>(&json).unwrap(), fp);
    }
}
