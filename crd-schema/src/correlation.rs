//! Correlation IDs of the audit trail (docs/audit.md, docs/migration.md).
//!
//! New trails are keyed by the RR name ([`crate::name`]); decisions that never reached an RR use
//! `fp:<fingerprint>`. Earlier gateway versions used three other formats, which the migration rewrites;
//! classifying them lives here so the gateway's lookups and the migration agree on one grammar.

use std::fmt;

use crate::fingerprint::Fingerprint;
use crate::name::{self, ParsedName};

/// Prefix of the correlation ID of decisions that have no RR (rejected, ignored).
pub const FINGERPRINT_PREFIX: &str = "fp:";

/// A correlation ID, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorrelationId {
    /// An RR name of the current format.
    Rr(ParsedName),
    /// `fp:<fingerprint>`: a decision with no RR.
    Fingerprint(Fingerprint),
    /// `rr-{fp[:12]}-{uuid[:8]}`.
    LegacyUuidSuffix {
        fingerprint_prefix: String,
        suffix: String,
    },
    /// `rr-{fp[:12]}-{unix seconds}`.
    LegacyUnixSuffix {
        fingerprint_prefix: String,
        unix_seconds: u64,
    },
    /// An RR UID, as older orchestrator events used.
    LegacyUid(String),
    /// Anything else: reported by the migration, never rewritten.
    Unknown(String),
}

impl CorrelationId {
    pub fn parse(s: &str) -> Self {
        if let Ok(p) = name::parse(s) {
            return Self::Rr(p);
        }
        if let Some(fp) = s
            .strip_prefix(FINGERPRINT_PREFIX)
            .and_then(|h| h.parse().ok())
        {
            return Self::Fingerprint(fp);
        }
        if let Some((prefix, suffix)) = legacy_parts(s) {
            // An 8-hex suffix of digits only is ambiguous; unix seconds have 10 digits for 2001–2286,
            // so 8 characters are always the UUID form.
            if suffix.len() == 8 && is_lower_hex(suffix) {
                return Self::LegacyUuidSuffix {
                    fingerprint_prefix: prefix.to_owned(),
                    suffix: suffix.to_owned(),
                };
            }
            if suffix.bytes().all(|b| b.is_ascii_digit())
                && let Ok(unix_seconds) = suffix.parse()
            {
                return Self::LegacyUnixSuffix {
                    fingerprint_prefix: prefix.to_owned(),
                    unix_seconds,
                };
            }
        }
        if is_uuid(s) {
            return Self::LegacyUid(s.to_owned());
        }
        Self::Unknown(s.to_owned())
    }

    pub fn is_legacy(&self) -> bool {
        matches!(
            self,
            Self::LegacyUuidSuffix { .. } | Self::LegacyUnixSuffix { .. } | Self::LegacyUid(_)
        )
    }

    /// The correlation ID of a decision about `fp` that has no RR.
    pub fn for_fingerprint(fp: &Fingerprint) -> String {
        format!("{FINGERPRINT_PREFIX}{fp}")
    }

    /// The first 12 hex characters of the fingerprint, where the ID carries them.
    pub fn fingerprint_prefix(&self) -> Option<&str> {
        match self {
            Self::LegacyUuidSuffix {
                fingerprint_prefix, ..
            }
            | Self::LegacyUnixSuffix {
                fingerprint_prefix, ..
            } => Some(fingerprint_prefix),
            _ => None,
        }
    }

    /// A short stable name of the format, for reports and metric labels.
    pub fn format_name(&self) -> &'static str {
        match self {
            Self::Rr(_) => "rr-name",
            Self::Fingerprint(_) => "fingerprint",
            Self::LegacyUuidSuffix { .. } => "legacy-uuid-suffix",
            Self::LegacyUnixSuffix { .. } => "legacy-unix-suffix",
            Self::LegacyUid(_) => "legacy-rr-uid",
            Self::Unknown(_) => "unknown",
        }
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rr(p) => f.write_str(&name::name(&p.fingerprint, p.attempt)),
            Self::Fingerprint(fp) => write!(f, "{FINGERPRINT_PREFIX}{fp}"),
            Self::LegacyUuidSuffix {
                fingerprint_prefix,
                suffix,
            } => {
                write!(f, "rr-{fingerprint_prefix}-{suffix}")
            }
            Self::LegacyUnixSuffix {
                fingerprint_prefix,
                unix_seconds,
            } => {
                write!(f, "rr-{fingerprint_prefix}-{unix_seconds}")
            }
            Self::LegacyUid(s) | Self::Unknown(s) => f.write_str(s),
        }
    }
}

fn legacy_parts(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix("rr-")?;
    let (prefix, suffix) = rest.split_once('-')?;
    (prefix.len() == 12 && is_lower_hex(prefix) && !suffix.is_empty()).then_some((prefix, suffix))
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| is_lower_hex(g))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::{Attempt, name};

    #[test]
    fn classifies_every_format() {
        let fp = Fingerprint::of_input("prod:Deployment:payment-api");
        let rr = name(&fp, Attempt::new(3).unwrap());
        assert_eq!(
            CorrelationId::parse(&rr),
            CorrelationId::Rr(ParsedName {
                fingerprint: fp,
                attempt: Attempt::new(3).unwrap()
            })
        );
        assert_eq!(
            CorrelationId::parse(&CorrelationId::for_fingerprint(&fp)),
            CorrelationId::Fingerprint(fp)
        );
        assert_eq!(
            CorrelationId::parse("rr-b157a3a9e42f-1c2b5576"),
            CorrelationId::LegacyUuidSuffix {
                fingerprint_prefix: "b157a3a9e42f".into(),
                suffix: "1c2b5576".into()
            }
        );
        assert_eq!(
            CorrelationId::parse("rr-b157a3a9e42f-1737138721"),
            CorrelationId::LegacyUnixSuffix {
                fingerprint_prefix: "b157a3a9e42f".into(),
                unix_seconds: 1_737_138_721
            }
        );
        assert_eq!(
            CorrelationId::parse("5a0e2c3d-8f1b-4c7a-9d2e-1f3b4a5c6d7e"),
            CorrelationId::LegacyUid("5a0e2c3d-8f1b-4c7a-9d2e-1f3b4a5c6d7e".into())
        );
        for unknown in [
            "",
            "rr-",
            "rr-B157A3A9E42F-1c2b5576",
            "fp:abc",
            "rr-b157a3a9e42f-",
            "x",
        ] {
            assert!(
                matches!(CorrelationId::parse(unknown), CorrelationId::Unknown(_)),
                "{unknown}"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "rr-b157a3a9e42f-1c2b5576",
            "rr-b157a3a9e42f-1737138721",
            "5a0e2c3d-8f1b-4c7a-9d2e-1f3b4a5c6d7e",
            "rr-sh6orvoesslwmrml2s6vrbm2j6zoqryo6zhpiogcfebxir4zvgyq-2",
            "something-else",
        ] {
            assert_eq!(CorrelationId::parse(s).to_string(), s);
        }
        assert!(CorrelationId::parse("rr-b157a3a9e42f-1737138721").is_legacy());
        assert!(!CorrelationId::parse("something-else").is_legacy());
    }
}
