//! Turning what a store knows about each correlation ID into plan input (docs/migration.md,
//! "Resolving legacy IDs").
//!
//! - A legacy RR name's fingerprint comes from its own events (`event_data.fingerprint`,
//!   `event_data.signal_fingerprint`, the `Signal` resource ID) or else from the live RR of that name.
//!   Events that disagree leave the ID unresolved.
//! - A UUID is an RR UID only with positive evidence: its events name the RR (`event_data.rr_name`,
//!   `event_data.remediation_request`) or a live RR has that UID. It then joins that RR's trail under
//!   the same new name. Every other UUID (NotificationRequest UIDs, admission request UIDs,
//!   DataStorage's self-audit, random request IDs) is a look-alike and is never touched.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crd_schema::{CorrelationId, Fingerprint};
use jiff::Timestamp;

use crate::plan::{self, LegacyRemediation, Plan};
use crate::report::Left;

/// A live RR, as the cluster shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveRr {
    pub name: String,
    pub uid: String,
    pub fingerprint: Option<Fingerprint>,
    pub created: Timestamp,
    /// Its `namegate.io/correlation-id` annotation, when an earlier run set it.
    pub correlation_annotation: Option<String>,
}

/// Live RRs by name and by UID.
#[derive(Clone, Debug, Default)]
pub struct LiveIndex {
    by_name: HashMap<String, LiveRr>,
    by_uid: HashMap<String, String>,
}

impl LiveIndex {
    pub fn new(rrs: impl IntoIterator<Item = LiveRr>) -> Self {
        let mut out = Self::default();
        for rr in rrs {
            out.by_uid.insert(rr.uid.clone(), rr.name.clone());
            out.by_name.insert(rr.name.clone(), rr);
        }
        out
    }

    pub fn by_name(&self, name: &str) -> Option<&LiveRr> {
        self.by_name.get(name)
    }

    pub fn name_of_uid(&self, uid: &str) -> Option<&str> {
        self.by_uid.get(uid).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = &LiveRr> {
        self.by_name.values()
    }
}

/// What to put on each live legacy RR: name → (attempt, new correlation ID).
pub type Assignments = BTreeMap<String, (u32, String)>;

/// Live legacy RRs whose trail (or their own earlier labelling) gave them a new name.
pub fn assignments(
    live: &LiveIndex,
    migrated: &HashMap<String, String>,
    trailless: &[Target],
) -> Assignments {
    let mut out = Assignments::new();
    for rr in live.iter() {
        if !CorrelationId::parse(&rr.name).is_legacy() {
            continue;
        }
        let new = migrated
            .get(&rr.name)
            .or_else(|| migrated.get(&rr.uid))
            .cloned()
            .or_else(|| {
                trailless
                    .iter()
                    .find(|t| t.sources.iter().any(|(s, _)| *s == rr.name || *s == rr.uid))
                    .map(|t| t.name.clone())
            });
        if let Some(new) = new
            && let CorrelationId::Rr(p) = CorrelationId::parse(&new)
        {
            out.insert(rr.name.clone(), (p.attempt.get(), new));
        }
    }
    out
}

/// What one source knows about one correlation ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub correlation_id: String,
    pub first_event: Timestamp,
    pub rows: u64,
    /// Every distinct full fingerprint its events state.
    pub fingerprints: BTreeSet<String>,
    /// Every distinct RR name its events refer to.
    pub rr_names: BTreeSet<String>,
}

/// One new name and the legacy IDs whose rows move to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub fingerprint: Fingerprint,
    pub attempt: u32,
    /// (legacy ID, format name).
    pub sources: Vec<(String, &'static str)>,
    /// Rows the sources hold (for batching).
    pub rows: u64,
}

/// The resolved migration: targets in execution order and what stays.
#[derive(Clone, Debug, Default)]
pub struct Resolution {
    pub targets: Vec<Target>,
    /// Targets with no rows in this store (live RRs only): nothing to rewrite, but their RRs are
    /// labelled.
    pub trailless: Vec<Target>,
    pub unresolved: Vec<Left>,
    pub look_alikes: usize,
    pub already_migrated: usize,
    pub previously_migrated: usize,
    pub scanned: usize,
}

/// Resolves `observed` (legacy and new-format IDs of a store, or one fingerprint group of them:
/// [`crate::walk`]), with `migrated` = legacy → new name recorded by earlier runs, `reserved` =
/// legacy → new name planned by an earlier run for IDs still in place (a chain left for the operator
/// keeps the attempt number it was given, so a later opt-in re-chain lands on the same name), and
/// `elsewhere` = IDs the store holds outside `observed` that `observed` refers to (RR names its UIDs
/// name, UIDs and names of live RRs).
pub fn resolve(
    observed: Vec<Observed>,
    live: &LiveIndex,
    migrated: &HashMap<String, String>,
    reserved: &HashMap<String, String>,
    elsewhere: &HashSet<String>,
) -> Resolution {
    let mut out = Resolution {
        scanned: observed.len(),
        previously_migrated: migrated.len(),
        ..Resolution::default()
    };
    // Live RRs labelled by an earlier run count as migrated; live legacy RRs with no trail in this
    // store still take their place among their fingerprint's attempts.
    let mut migrated = migrated.clone();
    let mut observed = observed;
    let seen: BTreeSet<String> = observed
        .iter()
        .map(|o| o.correlation_id.clone())
        .chain(elsewhere.iter().cloned())
        .collect();
    for rr in live.iter() {
        if let Some(new) = &rr.correlation_annotation
            && matches!(CorrelationId::parse(new), CorrelationId::Rr(_))
        {
            migrated
                .entry(rr.name.clone())
                .or_insert_with(|| new.clone());
            continue;
        }
        if CorrelationId::parse(&rr.name).is_legacy()
            && !seen.contains(&rr.name)
            && !seen.contains(&rr.uid)
            && !migrated.contains_key(&rr.name)
        {
            observed.push(Observed {
                correlation_id: rr.name.clone(),
                first_event: rr.created,
                rows: 0,
                fingerprints: BTreeSet::new(),
                rr_names: BTreeSet::new(),
            });
        }
    }
    let migrated = &migrated;
    let mut items = Vec::new();
    let mut uids: Vec<(Observed, String)> = Vec::new();
    let mut rows_of: HashMap<String, u64> = HashMap::new();
    let names_present: BTreeSet<String> = observed
        .iter()
        .map(|o| &o.correlation_id)
        .chain(elsewhere)
        .filter(|id| !matches!(CorrelationId::parse(id), CorrelationId::LegacyUid(_)))
        .cloned()
        .collect();
    let mut reserved_targets: BTreeMap<String, Target> = BTreeMap::new();
    let mut synthetic = 0usize;
    for o in observed {
        rows_of.insert(o.correlation_id.clone(), o.rows);
        let id = CorrelationId::parse(&o.correlation_id);
        if let Some(new) = reserved.get(&o.correlation_id)
            && let CorrelationId::Rr(p) = CorrelationId::parse(new)
        {
            let t = reserved_targets.entry(new.clone()).or_insert_with(|| {
                // Holds the number in the plan like a name already in use.
                synthetic += 1;
                items.push(LegacyRemediation {
                    correlation_id: new.clone(),
                    fingerprint: None,
                    first_event: o.first_event,
                });
                Target {
                    name: new.clone(),
                    fingerprint: p.fingerprint,
                    attempt: p.attempt.get(),
                    sources: Vec::new(),
                    rows: 0,
                }
            });
            t.sources.push((o.correlation_id.clone(), id.format_name()));
            t.rows += o.rows;
            continue;
        }
        match id {
            CorrelationId::Rr(_) => items.push(LegacyRemediation {
                correlation_id: o.correlation_id,
                fingerprint: None,
                first_event: o.first_event,
            }),
            CorrelationId::LegacyUuidSuffix { .. } | CorrelationId::LegacyUnixSuffix { .. } => {
                let fingerprint = match fingerprint_of(&o) {
                    Ok(Some(fp)) => Some(fp),
                    Ok(None) => live
                        .by_name(&o.correlation_id)
                        .and_then(|rr| rr.fingerprint),
                    Err(reason) => {
                        out.unresolved.push(Left {
                            correlation_id: o.correlation_id,
                            reason,
                        });
                        continue;
                    }
                };
                items.push(LegacyRemediation {
                    correlation_id: o.correlation_id,
                    fingerprint,
                    first_event: o.first_event,
                });
            }
            CorrelationId::LegacyUid(_) => {
                // Which RR do its events name (other than a UID)? Or does a live RR have this UID?
                let named: Vec<&String> = o
                    .rr_names
                    .iter()
                    .filter(|n| CorrelationId::parse(n).is_legacy() || n.starts_with("rr-"))
                    .collect();
                let rr = match named.as_slice() {
                    [one] => Some((*one).clone()),
                    [] => live.name_of_uid(&o.correlation_id).map(str::to_owned),
                    _ => {
                        out.unresolved.push(Left {
                            correlation_id: o.correlation_id.clone(),
                            reason: format!(
                                "its events name several RRs: {}",
                                named
                                    .iter()
                                    .map(|s| s.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        });
                        continue;
                    }
                };
                match rr {
                    Some(name) => uids.push((o, name)),
                    None => out.look_alikes += 1,
                }
            }
            CorrelationId::Fingerprint(_) | CorrelationId::Unknown(_) => {}
        }
    }
    // A UID whose RR has no trail of its own under its name is a remediation by itself (fingerprint
    // from its events or the live RR).
    let mut merged: Vec<(String, String)> = Vec::new();
    for (o, name) in uids {
        if names_present.contains(&name) || migrated.contains_key(&name) {
            merged.push((o.correlation_id, name));
            continue;
        }
        let fingerprint = match fingerprint_of(&o) {
            Ok(Some(fp)) => Some(fp),
            Ok(None) => live.by_name(&name).and_then(|rr| rr.fingerprint),
            Err(reason) => {
                out.unresolved.push(Left {
                    correlation_id: o.correlation_id,
                    reason,
                });
                continue;
            }
        };
        items.push(LegacyRemediation {
            correlation_id: o.correlation_id,
            fingerprint,
            first_event: o.first_event,
        });
    }
    let p: Plan = plan::plan(&items);
    out.already_migrated = p.already_migrated.saturating_sub(synthetic);
    for u in p.unresolved {
        out.unresolved.push(Left {
            correlation_id: u.correlation_id,
            reason: u.reason.to_string(),
        });
    }
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for t in reserved_targets.into_values() {
        for (src, _) in &t.sources {
            index.insert(src.clone(), out.targets.len());
        }
        out.targets.push(t);
    }
    for r in p.rewrites {
        let rows = rows_of.get(&r.from).copied().unwrap_or(0);
        index.insert(r.from.clone(), out.targets.len());
        out.targets.push(Target {
            name: r.to,
            fingerprint: r.fingerprint,
            attempt: r.attempt.get(),
            sources: vec![(r.from, r.format)],
            rows,
        });
    }
    for (uid, name) in merged {
        let rows = rows_of.get(&uid).copied().unwrap_or(0);
        if let Some(i) = index.get(&name) {
            let t = &mut out.targets[*i];
            t.sources.push((uid, "legacy-rr-uid"));
            t.rows += rows;
        } else if let Some(new) = migrated.get(&name) {
            // Its RR's name was migrated by an earlier run: join that trail.
            match CorrelationId::parse(new) {
                CorrelationId::Rr(p) => out.targets.push(Target {
                    name: new.clone(),
                    fingerprint: p.fingerprint,
                    attempt: p.attempt.get(),
                    sources: vec![(uid, "legacy-rr-uid")],
                    rows,
                }),
                _ => out.unresolved.push(Left {
                    correlation_id: uid,
                    reason: format!(
                        "its RR {name} was recorded as migrated to {new:?}, not a name"
                    ),
                }),
            }
        } else {
            out.unresolved.push(Left {
                correlation_id: uid,
                reason: format!("RR UID of {name}, which is unresolved"),
            });
        }
    }
    // A fixed order whatever the scan's: the attestation (and its ID) is written from it.
    for t in &mut out.targets {
        t.sources.sort();
    }
    out.targets.sort_by_key(|t| (t.fingerprint, t.attempt));
    let (with_rows, without): (Vec<Target>, Vec<Target>) =
        out.targets.drain(..).partition(|t| t.rows > 0);
    out.targets = with_rows;
    out.trailless = without;
    out
}

impl Resolution {
    /// legacy ID → new name of every planned target (what a dry run would do).
    pub fn planned(&self) -> HashMap<String, String> {
        self.targets
            .iter()
            .chain(&self.trailless)
            .flat_map(|t| {
                t.sources
                    .iter()
                    .map(move |(s, _)| (s.clone(), t.name.clone()))
            })
            .collect()
    }
}

pub(crate) fn fingerprint_of(o: &Observed) -> Result<Option<Fingerprint>, String> {
    let mut fps = o.fingerprints.iter();
    let Some(first) = fps.next() else {
        return Ok(None);
    };
    if let Some(other) = fps.next() {
        return Err(format!(
            "its events state different fingerprints ({first}, {other})"
        ));
    }
    first
        .parse()
        .map(Some)
        .map_err(|_| format!("its events state a malformed fingerprint {first:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(id: &str, at: &str, fps: &[&str], names: &[&str]) -> Observed {
        Observed {
            correlation_id: id.into(),
            first_event: at.parse().unwrap_or(Timestamp::UNIX_EPOCH),
            rows: 3,
            fingerprints: fps.iter().map(|s| (*s).to_owned()).collect(),
            rr_names: names.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn uids_join_their_rr_and_look_alikes_are_left() {
        let fp = Fingerprint::of_input("prod:Deployment:a");
        let hex = fp.to_hex();
        let name = format!("rr-{}-1737138721", &hex[..12]);
        let uid = "5a0e2c3d-8f1b-4c7a-9d2e-1f3b4a5c6d7e";
        let nr_uid = "9b1e4a2c-0d3f-4e5a-8b6c-7d8e9f0a1b2c";
        let res = resolve(
            vec![
                obs(&name, "2026-01-01T00:00:00Z", &[&hex], &[]),
                obs(uid, "2026-01-01T00:01:00Z", &[], &[&name]),
                obs(nr_uid, "2026-01-01T00:02:00Z", &[], &[]),
            ],
            &LiveIndex::default(),
            &HashMap::new(),
            &HashMap::new(),
            &HashSet::new(),
        );
        assert!(res.unresolved.is_empty(), "{:?}", res.unresolved);
        assert_eq!(res.look_alikes, 1);
        assert_eq!(res.targets.len(), 1);
        let t = &res.targets[0];
        assert_eq!(t.attempt, 1);
        assert_eq!(
            t.sources,
            vec![
                (uid.to_owned(), "legacy-rr-uid"),
                (name.clone(), "legacy-unix-suffix")
            ]
        );
        assert_eq!(t.rows, 6);
    }

    #[test]
    fn conflicting_fingerprints_and_unresolved_rrs_are_reported() {
        let a = Fingerprint::of_input("a").to_hex();
        let b = Fingerprint::of_input("b").to_hex();
        let name = format!("rr-{}-1c2b5576", &a[..12]);
        let uid = "5a0e2c3d-8f1b-4c7a-9d2e-1f3b4a5c6d7e";
        let res = resolve(
            vec![
                obs(&name, "2026-03-01T00:00:00Z", &[&a, &b], &[]),
                obs(uid, "2026-03-01T00:00:00Z", &[], &[&name]),
            ],
            &LiveIndex::default(),
            &HashMap::new(),
            &HashMap::new(),
            &HashSet::new(),
        );
        assert!(res.targets.is_empty());
        assert_eq!(res.unresolved.len(), 2);
        assert!(res.unresolved[0].reason.contains("different fingerprints"));
        assert!(res.unresolved[1].reason.contains("unresolved"));
    }

    #[test]
    fn reserved_numbers_are_kept_and_later_ids_come_after_them() {
        let fp = Fingerprint::of_input("prod:Deployment:a");
        let hex = fp.to_hex();
        let early = format!("rr-{}-1c2b5576", &hex[..12]);
        let late = format!("rr-{}-2c2b5576", &hex[..12]);
        let reserved_name = crd_schema::name::name(&fp, crd_schema::Attempt::new(1).unwrap());
        let reserved: HashMap<String, String> = [(early.clone(), reserved_name.clone())].into();
        let res = resolve(
            vec![
                obs(&late, "2026-03-01T00:00:00Z", &[&hex], &[]),
                obs(&early, "2026-02-01T00:00:00Z", &[&hex], &[]),
            ],
            &LiveIndex::default(),
            &HashMap::new(),
            &reserved,
            &HashSet::new(),
        );
        assert_eq!(res.already_migrated, 0);
        let got: Vec<(&str, u32)> = res
            .targets
            .iter()
            .map(|t| (t.sources[0].0.as_str(), t.attempt))
            .collect();
        assert_eq!(got, vec![(early.as_str(), 1), (late.as_str(), 2)]);
        assert_eq!(res.targets[0].name, reserved_name);
    }
}
