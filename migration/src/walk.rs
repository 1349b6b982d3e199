//! Resolving a store one fingerprint group at a time, so the migration's memory does not grow with
//! the number of remediations (docs/migration.md, "Scale: bounded memory").
//!
//! Attempts are numbered per fingerprint, and every ID that can take part in a fingerprint's
//! numbering carries the first 12 hex characters of that fingerprint or points at an RR name that
//! does: legacy names (`rr-{fp12}-…`), new names (their fingerprint), RR UIDs (the RR their events
//! or a live RR name). That prefix is the **group key**; IDs that cannot be numbered (look-alike
//! UUIDs, unknown formats, UIDs naming several RRs or no fingerprint) are a group of their own.
//! The stores write each ID with its key into a scratch table, read it back ordered by key and ID,
//! and hand [`resolve_group`] one group at a time. The resolution of a group is the resolution of
//! the whole store restricted to that group: nothing outside it can change its numbers.

use std::collections::{BTreeMap, HashMap, HashSet};

use crd_schema::{CorrelationId, Fingerprint};

use crate::report::Left;
use crate::resolve::{self, LiveIndex, LiveRr, Observed, Resolution};

/// IDs read from the scratch table per page.
pub const DEFAULT_PAGE: usize = 1000;

/// The key of a group that holds one ID and takes part in no numbering.
fn alone(id: &str) -> String {
    format!("~{id}")
}

fn hex12(fp: &Fingerprint) -> String {
    fp.to_hex()[..12].to_owned()
}

/// The key an RR name carries: its fingerprint prefix (legacy names) or its fingerprint's (new
/// names).
fn name_key(name: &str) -> Option<String> {
    match CorrelationId::parse(name) {
        CorrelationId::Rr(p) => Some(hex12(&p.fingerprint)),
        id => id.fingerprint_prefix().map(str::to_owned),
    }
}

/// The RR names an ID's events refer to that [`resolve::resolve`] counts.
pub fn named_rrs(o: &Observed) -> Vec<&String> {
    o.rr_names
        .iter()
        .filter(|n| CorrelationId::parse(n).is_legacy() || n.starts_with("rr-"))
        .collect()
}

/// The group key of a scanned ID.
pub fn group_key(o: &Observed, live: &LiveIndex) -> String {
    let id = o.correlation_id.as_str();
    match CorrelationId::parse(id) {
        CorrelationId::LegacyUid(_) => {
            let named = named_rrs(o);
            let rr = match named.as_slice() {
                [one] => Some((*one).clone()),
                [] => live.name_of_uid(id).map(str::to_owned),
                _ => None, // names several RRs: unresolved, alone
            };
            let Some(rr) = rr else {
                return alone(id);
            };
            if let Some(k) = name_key(&rr) {
                return k;
            }
            // Its RR's name carries no fingerprint: the UID can only be numbered by its own.
            match resolve::fingerprint_of(o) {
                Ok(Some(fp)) => hex12(&fp),
                Ok(None) => live
                    .by_name(&rr)
                    .and_then(|r| r.fingerprint)
                    .map_or_else(|| alone(id), |fp| hex12(&fp)),
                Err(_) => alone(id),
            }
        }
        _ => name_key(id).unwrap_or_else(|| alone(id)),
    }
}

/// One scanned ID with its key and the name an earlier run planned for it.
#[derive(Clone, Debug)]
pub struct Scanned {
    pub key: String,
    pub observed: Observed,
    pub reserved: Option<String>,
}

/// Cuts a stream of [`Scanned`] ordered by key into groups, holding only the group being read.
#[derive(Debug, Default)]
pub struct Grouper {
    key: Option<String>,
    group: Vec<Scanned>,
}

impl Grouper {
    /// IDs held.
    pub fn len(&self) -> usize {
        self.group.len()
    }

    pub fn is_empty(&self) -> bool {
        self.group.is_empty()
    }

    /// Adds the next ID; returns the previous group once the key changes.
    pub fn push(&mut self, s: Scanned) -> Option<(String, Vec<Scanned>)> {
        let done = match &self.key {
            Some(k) if *k != s.key => self.finish(),
            _ => None,
        };
        self.key = Some(s.key.clone());
        self.group.push(s);
        done
    }

    /// The last group.
    pub fn finish(&mut self) -> Option<(String, Vec<Scanned>)> {
        let key = self.key.take()?;
        Some((key, std::mem::take(&mut self.group)))
    }
}

/// Live RRs by group key. Held whole: the bound is one group plus the namespace's live RRs.
#[derive(Debug, Default)]
pub struct LiveBuckets {
    buckets: BTreeMap<String, Vec<LiveRr>>,
    /// Keys with a legacy-named live RR: groups to resolve even when the store holds no row of them
    /// (a live RR without a trail still takes its attempt), in key order.
    pending: std::collections::BTreeSet<String>,
}

impl LiveBuckets {
    pub fn new(live: &LiveIndex) -> Self {
        let mut out = Self::default();
        for rr in live.iter() {
            let Some(k) = name_key(&rr.name) else {
                continue;
            };
            if CorrelationId::parse(&rr.name).is_legacy() {
                out.pending.insert(k.clone());
            }
            out.buckets.entry(k).or_default().push(rr.clone());
        }
        out
    }

    /// Keys of live-only groups that come before `key` (all of them when `None`), removed.
    pub fn take_before(&mut self, key: Option<&str>) -> Vec<String> {
        let before: Vec<String> = self
            .pending
            .iter()
            .filter(|k| key.is_none_or(|key| k.as_str() < key))
            .cloned()
            .collect();
        for k in &before {
            self.pending.remove(k);
        }
        before
    }

    /// The live index a group resolves with: the group's live RRs and those its IDs refer to.
    pub fn index_for(&mut self, key: &str, group: &[Scanned], live: &LiveIndex) -> LiveIndex {
        self.pending.remove(key);
        let mut rrs: Vec<LiveRr> = self.buckets.get(key).cloned().unwrap_or_default();
        for s in group {
            let o = &s.observed;
            let mut refer = |name: &str| {
                if let Some(rr) = live.by_name(name)
                    && !rrs.iter().any(|r| r.name == rr.name)
                {
                    rrs.push(rr.clone());
                }
            };
            if let Some(n) = live.name_of_uid(&o.correlation_id) {
                refer(n);
            }
            for n in &o.rr_names {
                refer(n);
            }
        }
        LiveIndex::new(rrs)
    }
}

/// IDs outside `group` that its resolution looks up (for [`resolve::resolve`]'s `migrated` and
/// `elsewhere`): the RR names its UIDs name, and the names and UIDs of its live RRs.
pub fn outside_refs(group: &[Scanned], live: &LiveIndex) -> Vec<String> {
    let inside: HashSet<&str> = group
        .iter()
        .map(|s| s.observed.correlation_id.as_str())
        .collect();
    let mut out: Vec<String> = Vec::new();
    for s in group {
        if matches!(
            CorrelationId::parse(&s.observed.correlation_id),
            CorrelationId::LegacyUid(_)
        ) {
            out.extend(named_rrs(&s.observed).into_iter().cloned());
        }
    }
    for rr in live.iter() {
        out.push(rr.name.clone());
        out.push(rr.uid.clone());
    }
    out.retain(|id| !inside.contains(id.as_str()));
    out.sort();
    out.dedup();
    out
}

/// Resolves one group. A target whose fingerprint does not carry the group's key is left
/// unresolved: it is a UID whose own fingerprint contradicts the name of the RR it belongs to (the
/// UID counterpart of a legacy name's prefix mismatch), and numbering it here could take a name
/// another group hands out.
pub fn resolve_group(
    key: &str,
    group: Vec<Scanned>,
    live: &LiveIndex,
    migrated: &HashMap<String, String>,
    elsewhere: &HashSet<String>,
) -> Resolution {
    let reserved: HashMap<String, String> = group
        .iter()
        .filter_map(|s| {
            s.reserved
                .clone()
                .map(|r| (s.observed.correlation_id.clone(), r))
        })
        .collect();
    let observed: Vec<Observed> = group.into_iter().map(|s| s.observed).collect();
    let mut res = resolve::resolve(observed, live, migrated, &reserved, elsewhere);
    let fits = |fp: &Fingerprint| fp.to_hex().starts_with(key);
    let mut misfits = Vec::new();
    for list in [&mut res.targets, &mut res.trailless] {
        list.retain(|t| {
            if fits(&t.fingerprint) {
                return true;
            }
            misfits.push(t.clone());
            false
        });
    }
    for t in misfits {
        for (id, _) in t.sources {
            res.unresolved.push(Left {
                correlation_id: id,
                reason: format!(
                    "its fingerprint {} does not start with {key}, the prefix of the RR it belongs to",
                    t.fingerprint
                ),
            });
        }
    }
    res.unresolved.sort();
    res
}

/// One store's side of the walk [`walk_groups`] drives: the scratch table's pages, and what to do with
/// each group. Both stores walk the same way (docs/migration.md, "Scale: bounded memory").
pub(crate) trait GroupWalk {
    type Error;
    /// The next `size` rows of the scratch table after `after` (key, ID), in (key, ID) order.
    async fn page(
        &mut self,
        after: &(String, String),
        size: usize,
    ) -> Result<Vec<Scanned>, Self::Error>;
    /// Resolves, plans and queues one group; an empty group is a live RR's key no scanned ID has.
    async fn group(&mut self, key: &str, group: Vec<Scanned>) -> Result<(), Self::Error>;
    fn buckets(&mut self) -> &mut LiveBuckets;
    fn held(&mut self) -> &mut Held;
    /// The IDs queued in the batch being filled.
    fn pending_ids(&self) -> usize;
}

/// Reads the scratch table page by page and hands `w` one group at a time, in key order, with the
/// keys of live RRs that no scanned ID has in their place; notes the IDs held at each step (the rest
/// of the page, the group being read, the queued batch).
pub(crate) async fn walk_groups<W: GroupWalk>(w: &mut W, page_size: usize) -> Result<(), W::Error> {
    let mut grouper = Grouper::default();
    let mut after = (String::new(), String::new());
    loop {
        let rows = w.page(&after, page_size).await?;
        let last = rows.len() < page_size;
        if let Some(s) = rows.last() {
            after = (s.key.clone(), s.observed.correlation_id.clone());
        }
        let mut rows = rows.into_iter();
        while let Some(s) = rows.next() {
            let held = rows.len() + 1 + grouper.len() + w.pending_ids();
            w.held().note(held);
            if let Some((key, group)) = grouper.push(s) {
                walk_group(w, key, group).await?;
            }
        }
        if last {
            break;
        }
    }
    if let Some((key, group)) = grouper.finish() {
        walk_group(w, key, group).await?;
    }
    for key in w.buckets().take_before(None) {
        w.group(&key, Vec::new()).await?;
    }
    let held = w.pending_ids();
    w.held().note(held);
    Ok(())
}

/// One group, after the live-only keys that sort before it.
async fn walk_group<W: GroupWalk>(
    w: &mut W,
    key: String,
    group: Vec<Scanned>,
) -> Result<(), W::Error> {
    for k in w.buckets().take_before(Some(&key)) {
        w.group(&k, Vec::new()).await?;
    }
    w.group(&key, group).await
}

/// The high-water mark of correlation IDs held in memory.
#[derive(Clone, Copy, Debug, Default)]
pub struct Held {
    pub peak: usize,
}

impl Held {
    pub fn note(&mut self, now: usize) {
        self.peak = self.peak.max(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;
    use std::collections::BTreeSet;

    fn obs(id: &str, fps: &[&str], names: &[&str]) -> Observed {
        Observed {
            correlation_id: id.into(),
            first_event: Timestamp::UNIX_EPOCH,
            rows: 1,
            fingerprints: fps.iter().map(|s| (*s).to_owned()).collect(),
            rr_names: names.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn ids_of_one_fingerprint_share_a_key_and_look_alikes_are_alone() {
        let fp = Fingerprint::of_input("prod:Deployment:a");
        let hex = fp.to_hex();
        let legacy = format!("rr-{}-1737138721", &hex[..12]);
        let new = crd_schema::name::name(&fp, crd_schema::Attempt::new(2).unwrap());
        let uid = "5a0e2c3d-8f1b-4c7a-9d2e-1f3b4a5c6d7e";
        let live = LiveIndex::default();
        let k = &hex[..12];
        assert_eq!(group_key(&obs(&legacy, &[], &[]), &live), k);
        assert_eq!(group_key(&obs(&new, &[], &[]), &live), k);
        assert_eq!(group_key(&obs(uid, &[], &[&legacy]), &live), k);
        assert_eq!(group_key(&obs(uid, &[], &[]), &live), format!("~{uid}"));
        // A UID of a live RR whose events do not name it joins that RR's group.
        let live = LiveIndex::new([LiveRr {
            name: legacy.clone(),
            uid: uid.into(),
            fingerprint: Some(fp),
            created: Timestamp::UNIX_EPOCH,
            correlation_annotation: None,
        }]);
        assert_eq!(group_key(&obs(uid, &[], &[]), &live), k);
        assert_eq!(
            group_key(&obs("config-reload-1", &[], &[]), &live),
            "~config-reload-1"
        );
    }

    /// Thousands of remediations in many groups, read in pages: the grouper never holds more than
    /// one group, so what a run holds does not grow with the number of remediations.
    #[test]
    fn the_walk_holds_one_group_at_a_time() {
        let mut all: Vec<Scanned> = Vec::new();
        let mut biggest = 0;
        for g in 0..2000u32 {
            let fp = Fingerprint::of_input(&format!("fp-{g}"));
            let hex = fp.to_hex();
            let size = 1 + (g as usize % 4);
            biggest = biggest.max(size);
            for i in 0..size {
                let o = obs(&format!("rr-{}-{:08x}", &hex[..12], i), &[&hex], &[]);
                all.push(Scanned {
                    key: group_key(&o, &LiveIndex::default()),
                    observed: o,
                    reserved: None,
                });
            }
        }
        all.sort_by(|a, b| {
            (&a.key, &a.observed.correlation_id).cmp(&(&b.key, &b.observed.correlation_id))
        });
        let total = all.len();
        let mut grouper = Grouper::default();
        let mut held = Held::default();
        let mut groups = 0;
        let mut targets = 0;
        let mut keys = BTreeSet::new();
        let mut resolve = |k: String, g: Vec<Scanned>| {
            let res = resolve_group(
                &k,
                g,
                &LiveIndex::default(),
                &HashMap::new(),
                &HashSet::new(),
            );
            assert!(res.unresolved.is_empty(), "{:?}", res.unresolved);
            assert!(keys.insert(k), "a key came twice");
            groups += 1;
            targets += res.targets.len();
        };
        for page in all.chunks(DEFAULT_PAGE / 10) {
            for s in page.iter().cloned() {
                held.note(grouper.len());
                if let Some((k, g)) = grouper.push(s) {
                    resolve(k, g);
                }
            }
        }
        if let Some((k, g)) = grouper.finish() {
            resolve(k, g);
        }
        assert_eq!(groups, 2000);
        assert_eq!(targets, total);
        assert!(held.peak <= biggest, "{} > {biggest}", held.peak);
    }

    #[test]
    fn a_uid_whose_fingerprint_contradicts_its_rr_is_left() {
        let a = Fingerprint::of_input("a");
        let b = Fingerprint::of_input("b");
        let name = format!("rr-{}-1c2b5576", &a.to_hex()[..12]);
        let uid = "5a0e2c3d-8f1b-4c7a-9d2e-1f3b4a5c6d7e";
        // The UID names the RR (whose own trail is not in the store) but states b's fingerprint.
        let o = obs(uid, &[&b.to_hex()], &[&name]);
        let key = group_key(&o, &LiveIndex::default());
        assert_eq!(key, a.to_hex()[..12]);
        let res = resolve_group(
            &key,
            vec![Scanned {
                key: key.clone(),
                observed: o,
                reserved: None,
            }],
            &LiveIndex::default(),
            &HashMap::new(),
            &HashSet::new(),
        );
        assert!(res.targets.is_empty());
        assert_eq!(res.unresolved.len(), 1);
        assert!(res.unresolved[0].reason.contains("does not start with"));
    }
}
