//! From legacy remediations to their new correlation IDs.

use std::collections::{BTreeMap, HashSet};

use crd_schema::name::{self, Attempt};
use crd_schema::{CorrelationId, Fingerprint};
use jiff::Timestamp;

/// One legacy correlation ID as the sources describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegacyRemediation {
    pub correlation_id: String,
    /// The full fingerprint, when an event's `event_data.fingerprint` or the live RR's
    /// `spec.signalFingerprint` gives it.
    pub fingerprint: Option<Fingerprint>,
    /// The time of the ID's first event: the order of attempts.
    pub first_event: Timestamp,
}

/// One rewrite: every row of `from` moves to `to`, keeping `from` as `legacy_correlation_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewrite {
    pub from: String,
    pub to: String,
    pub fingerprint: Fingerprint,
    pub attempt: Attempt,
    /// `rr-name`-style format name of the legacy ID (`legacy-uuid-suffix`, …), for the report.
    pub format: &'static str,
}

/// An ID left intact, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    pub correlation_id: String,
    pub reason: PlanError,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("no source gives the full fingerprint of this ID")]
    NoFingerprint,
    #[error("the ID names fingerprint prefix {prefix} but its events say {fingerprint}")]
    PrefixMismatch { prefix: String, fingerprint: String },
    #[error("not a legacy correlation ID format")]
    NotLegacy,
    #[error("the fingerprint already has more than {} remediations", Attempt::MAX)]
    TooManyAttempts,
}

impl PlanError {
    pub fn is_no_fingerprint(&self) -> bool {
        matches!(self, Self::NoFingerprint)
    }
}

/// The whole plan: rewrites in execution order (by fingerprint, then attempt) and what stays.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub rewrites: Vec<Rewrite>,
    pub unresolved: Vec<Unresolved>,
    /// IDs already in the new format (a second run finds only these: it changes nothing).
    pub already_migrated: usize,
}

impl Plan {
    /// Rewrites per legacy format, for the summary report.
    pub fn counts_by_format(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for r in &self.rewrites {
            *m.entry(r.format).or_default() += 1;
        }
        m
    }

    pub fn is_complete(&self) -> bool {
        self.unresolved.is_empty()
    }
}

/// Plans the migration of `items`. Attempts are numbered per fingerprint by first event time (ties
/// broken by the ID, so the plan is deterministic); IDs already in the new format, and the numbers
/// they hold, are respected: legacy remediations are numbered after the highest attempt that
/// already exists, so a rewrite never lands on a name in use.
pub fn plan(items: &[LegacyRemediation]) -> Plan {
    let mut out = Plan::default();
    let mut taken: BTreeMap<Fingerprint, u32> = BTreeMap::new();
    let mut by_fp: BTreeMap<Fingerprint, Vec<(&LegacyRemediation, &'static str)>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for item in items {
        if !seen.insert(item.correlation_id.as_str()) {
            continue;
        }
        let id = CorrelationId::parse(&item.correlation_id);
        match &id {
            CorrelationId::Rr(p) => {
                out.already_migrated += 1;
                let max = taken.entry(p.fingerprint).or_default();
                *max = (*max).max(p.attempt.get());
                continue;
            }
            CorrelationId::Fingerprint(_) | CorrelationId::Unknown(_) => {
                out.unresolved.push(Unresolved {
                    correlation_id: item.correlation_id.clone(),
                    reason: PlanError::NotLegacy,
                });
                continue;
            }
            _ => {}
        }
        let Some(fp) = item.fingerprint else {
            out.unresolved.push(Unresolved {
                correlation_id: item.correlation_id.clone(),
                reason: PlanError::NoFingerprint,
            });
            continue;
        };
        if let Some(prefix) = id.fingerprint_prefix()
            && !fp.to_hex().starts_with(prefix)
        {
            out.unresolved.push(Unresolved {
                correlation_id: item.correlation_id.clone(),
                reason: PlanError::PrefixMismatch {
                    prefix: prefix.to_owned(),
                    fingerprint: fp.to_hex(),
                },
            });
            continue;
        }
        by_fp.entry(fp).or_default().push((item, id.format_name()));
    }
    for (fp, mut legacy) in by_fp {
        legacy.sort_by(|a, b| {
            (a.0.first_event, &a.0.correlation_id).cmp(&(b.0.first_event, &b.0.correlation_id))
        });
        let start = taken.get(&fp).copied().unwrap_or(0);
        for (i, (item, format)) in legacy.into_iter().enumerate() {
            let n = u32::try_from(i)
                .ok()
                .and_then(|i| start.checked_add(i)?.checked_add(1));
            match n.and_then(Attempt::new) {
                Some(attempt) => out.rewrites.push(Rewrite {
                    from: item.correlation_id.clone(),
                    to: name::name(&fp, attempt),
                    fingerprint: fp,
                    attempt,
                    format,
                }),
                None => out.unresolved.push(Unresolved {
                    correlation_id: item.correlation_id.clone(),
                    reason: PlanError::TooManyAttempts,
                }),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(s: &str) -> Fingerprint {
        Fingerprint::of_input(s)
    }

    fn legacy(id: &str, fp: Option<Fingerprint>, at: &str) -> LegacyRemediation {
        LegacyRemediation {
            correlation_id: id.into(),
            fingerprint: fp,
            first_event: at.parse().unwrap(),
        }
    }

    #[test]
    fn a_fingerprints_legacy_remediations_become_attempts_in_first_event_order() {
        let f = fp("prod:Deployment:payment-api");
        let p12 = &f.to_hex()[..12];
        let items = [
            legacy(
                &format!("rr-{p12}-1737138721"),
                Some(f),
                "2025-01-17T18:32:01Z",
            ),
            legacy(
                &format!("rr-{p12}-1c2b5576"),
                Some(f),
                "2024-12-01T00:00:00Z",
            ),
            legacy(
                "5a0e2c3d-8f1b-4c7a-9d2e-1f3b4a5c6d7e",
                Some(f),
                "2025-03-01T00:00:00Z",
            ),
        ];
        let plan = plan(&items);
        assert!(plan.is_complete());
        let got: Vec<(&str, &str, u32)> = plan
            .rewrites
            .iter()
            .map(|r| (r.from.as_str(), r.format, r.attempt.get()))
            .collect();
        assert_eq!(
            got,
            vec![
                (items[1].correlation_id.as_str(), "legacy-uuid-suffix", 1),
                (items[0].correlation_id.as_str(), "legacy-unix-suffix", 2),
                (items[2].correlation_id.as_str(), "legacy-rr-uid", 3),
            ]
        );
        assert_eq!(
            plan.rewrites[0].to,
            "rr-sh6orvoesslwmrml2s6vrbm2j6zoqryo6zhpiogcfebxir4zvgyq"
        );
        assert_eq!(
            plan.rewrites[1].to,
            "rr-sh6orvoesslwmrml2s6vrbm2j6zoqryo6zhpiogcfebxir4zvgyq-2"
        );
        assert_eq!(plan.counts_by_format().values().sum::<usize>(), 3);
    }

    #[test]
    fn unresolvable_ids_are_reported_and_left_alone() {
        let f = fp("prod:Deployment:payment-api");
        let other = fp("prod:Deployment:other");
        let items = [
            legacy("rr-b157a3a9e42f-1c2b5576", None, "2025-01-01T00:00:00Z"),
            legacy(
                &format!("rr-{}-1c2b5576", &other.to_hex()[..12]),
                Some(f),
                "2025-01-01T00:00:00Z",
            ),
            legacy("something-else", Some(f), "2025-01-01T00:00:00Z"),
        ];
        let plan = plan(&items);
        assert!(plan.rewrites.is_empty());
        assert!(plan.unresolved[0].reason.is_no_fingerprint());
        assert!(matches!(
            plan.unresolved[1].reason,
            PlanError::PrefixMismatch { .. }
        ));
        assert_eq!(plan.unresolved[2].reason, PlanError::NotLegacy);
        assert!(!plan.is_complete());
    }

    #[test]
    fn a_second_run_changes_nothing_and_new_names_are_respected() {
        let f = fp("prod:Deployment:payment-api");
        let p12 = &f.to_hex()[..12];
        let first = plan(&[
            legacy(
                &format!("rr-{p12}-1c2b5576"),
                Some(f),
                "2024-12-01T00:00:00Z",
            ),
            legacy(
                &format!("rr-{p12}-1737138721"),
                Some(f),
                "2025-01-17T18:32:01Z",
            ),
        ]);
        // After the rewrite the store holds only new names: nothing left to do.
        let after: Vec<_> = first
            .rewrites
            .iter()
            .map(|r| legacy(&r.to, Some(f), "2025-01-01T00:00:00Z"))
            .collect();
        let second = plan(&after);
        assert!(second.rewrites.is_empty() && second.is_complete());
        assert_eq!(second.already_migrated, 2);

        // A legacy ID found alongside attempts that already exist is numbered after them.
        let mut mixed = after.clone();
        mixed.push(legacy(
            &format!("rr-{p12}-deadbeef"),
            Some(f),
            "2020-01-01T00:00:00Z",
        ));
        let third = plan(&mixed);
        assert_eq!(third.rewrites.len(), 1);
        assert_eq!(third.rewrites[0].attempt.get(), 3);
    }
}
