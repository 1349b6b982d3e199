//! The fingerprint of a signal's target (contract §4).
//!
//! `fingerprint = hex(sha256("namespace:Kind:name"))`, prefixed with `cluster:` when a cluster ID is
//! known. It must stay byte-compatible with the kubernaut gateway, so an RR created by either gateway
//! for the same workload carries the same `spec.signalFingerprint`.

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

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_input(&self.fingerprint_input())
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
        hex::encode(self.0)
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

    #[test]
    fn api_version_does_not_change_the_fingerprint() {
        let mut a = target(None, "prod", "Deployment", "x");
        let b = a.clone();
        a.api_version = Some("apps/v1beta2".into());
        assert_eq!(a.fingerprint(), b.fingerprint());
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
