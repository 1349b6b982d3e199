//! The RR index (docs/architecture.md): a watch-backed, namespace-scoped cache of RemediationRequests
//! keyed by `spec.signalFingerprint`, holding only what admission needs.
//!
//! Objects are decoded into [`IndexedRr`], a slim view that skips `originalPayload` and the rest of the
//! spec without allocating them (an RR can be 256 KiB), and then folded into a compact [`Entry`] of
//! well under 300 bytes. The index is an optimisation, never the source of truth: a stale entry can
//! only make admission try a name that the API server then refuses, which the 409 path resolves.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crd_schema::name::{self, Attempt};
use crd_schema::phase::{MANUAL_REVIEW_REQUIRED, PhaseView, is_terminal};
use crd_schema::{Fingerprint, meta, rr};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::telemetry::metrics::Metrics;

/// The slim decoding of an RR: everything else in the object is skipped by serde without allocation.
#[derive(Clone, Debug, Deserialize)]
pub struct IndexedRr {
    pub metadata: ObjectMeta,
    pub spec: IndexedSpec,
    #[serde(default)]
    pub status: Option<IndexedStatus>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexedSpec {
    pub signal_fingerprint: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexedStatus {
    pub overall_phase: Option<String>,
    pub deduplication: Option<rr::Deduplication>,
    pub completion_status: Option<IndexedCompletion>,
    pub routing_status: Option<IndexedRouting>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct IndexedCompletion {
    pub outcome: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexedRouting {
    pub next_allowed_execution: Option<Time>,
}

impl Resource for IndexedRr {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        rr::KIND.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        rr::GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        rr::VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        rr::PLURAL.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

const FLAG_TERMINAL: u8 = 1;
const FLAG_MANUAL_REVIEW: u8 = 2;
const FLAG_DELETING: u8 = 4;
const NONE_MS: i64 = i64::MIN;

/// One indexed RR, compact: times as unix milliseconds, phase folded into flags, the name stored
/// only when it is not derivable from `(fingerprint, attempt)` (legacy names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    uid: Uuid,
    /// 0 for a legacy RR without the `namegate.io/attempt` label.
    attempt: u32,
    flags: u8,
    occurrence_count: i32,
    next_allowed_ms: i64,
    first_seen_ms: i64,
    last_seen_ms: i64,
    resource_version: Box<str>,
    legacy_name: Option<Box<str>>,
}

/// What admission and the occurrence flusher read of an indexed RR.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RrRef {
    pub name: String,
    pub uid: Uuid,
    pub attempt: u32,
    pub resource_version: String,
    pub occurrence_count: i32,
    pub first_seen: Option<Timestamp>,
    pub last_seen: Option<Timestamp>,
    pub active: bool,
    pub deleting: bool,
}

/// The index's answer for one fingerprint.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Lookup {
    /// The RR new signals are duplicates of: the active one if any, else the newest suppressing one.
    pub suppressing: Option<RrRef>,
    /// The live RR with the highest attempt (the one a re-attempt must verify).
    pub highest: Option<RrRef>,
}

impl Entry {
    fn from_rr(obj: &IndexedRr) -> Option<(Fingerprint, Self)> {
        let fp: Fingerprint = obj.spec.signal_fingerprint.parse().ok()?;
        let name = obj.metadata.name.as_deref()?;
        let parsed = name::parse(name).ok().filter(|p| p.fingerprint == fp);
        let label_attempt = obj
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(meta::ATTEMPT_LABEL))
            .and_then(|v| v.parse::<u32>().ok());
        let attempt = parsed
            .map(|p| p.attempt.get())
            .or(label_attempt)
            .unwrap_or(0);
        let status = obj.status.clone().unwrap_or_default();
        let phase = status.overall_phase.as_deref();
        let outcome = status
            .completion_status
            .as_ref()
            .and_then(|c| c.outcome.as_deref());
        let mut flags = 0;
        if is_terminal(phase) {
            flags |= FLAG_TERMINAL;
        }
        if outcome == Some(MANUAL_REVIEW_REQUIRED) {
            flags |= FLAG_MANUAL_REVIEW;
        }
        if obj.metadata.deletion_timestamp.is_some() {
            flags |= FLAG_DELETING;
        }
        let ms = |t: Option<&Time>| t.map_or(NONE_MS, |t| t.0.as_millisecond());
        let dedup = status.deduplication.as_ref();
        Some((
            fp,
            Self {
                uid: obj
                    .metadata
                    .uid
                    .as_deref()
                    .and_then(|u| u.parse().ok())
                    .unwrap_or_default(),
                attempt,
                flags,
                occurrence_count: dedup.map_or(0, |d| d.occurrence_count),
                next_allowed_ms: ms(status
                    .routing_status
                    .as_ref()
                    .and_then(|r| r.next_allowed_execution.as_ref())),
                // A writer that omitted a time (kubernaut's `omitempty`) leaves the epoch: unknown.
                first_seen_ms: ms(dedup
                    .map(|d| &d.first_seen_at)
                    .filter(|t| t.0 != Timestamp::UNIX_EPOCH)),
                last_seen_ms: ms(dedup
                    .map(|d| &d.last_seen_at)
                    .filter(|t| t.0 != Timestamp::UNIX_EPOCH)),
                resource_version: obj
                    .metadata
                    .resource_version
                    .as_deref()
                    .unwrap_or_default()
                    .into(),
                legacy_name: parsed.is_none().then(|| name.into()),
            },
        ))
    }

    fn name(&self, fp: &Fingerprint) -> String {
        match (&self.legacy_name, Attempt::new(self.attempt)) {
            (Some(n), _) => n.to_string(),
            (None, Some(a)) => name::name(fp, a),
            // Unreachable by construction: entries without a legacy name parsed with an attempt ≥ 1.
            (None, None) => String::new(),
        }
    }

    fn is_suppressing(&self, now: Timestamp) -> bool {
        if self.flags & FLAG_DELETING != 0 {
            return false;
        }
        let view = PhaseView {
            // Only "terminal or not" matters to the rules, so a representative phase stands in.
            phase: (self.flags & FLAG_TERMINAL != 0).then_some("Completed"),
            outcome: (self.flags & FLAG_MANUAL_REVIEW != 0).then_some(MANUAL_REVIEW_REQUIRED),
            next_allowed_execution: ts(self.next_allowed_ms),
        };
        view.is_suppressing(now)
    }

    fn to_ref(&self, fp: &Fingerprint) -> RrRef {
        RrRef {
            name: self.name(fp),
            uid: self.uid,
            attempt: self.attempt,
            resource_version: self.resource_version.to_string(),
            occurrence_count: self.occurrence_count,
            first_seen: ts(self.first_seen_ms),
            last_seen: ts(self.last_seen_ms),
            active: self.flags & FLAG_TERMINAL == 0,
            deleting: self.flags & FLAG_DELETING != 0,
        }
    }
}

fn ts(ms: i64) -> Option<Timestamp> {
    (ms != NONE_MS)
        .then(|| Timestamp::from_millisecond(ms).ok())
        .flatten()
}

type Map = HashMap<Fingerprint, Vec<Entry>>;

#[derive(Debug, Default)]
struct State {
    live: Map,
    len: usize,
    /// Objects of a re-list in progress; swapped in whole at `InitDone` so RRs deleted while the
    /// watch was down disappear.
    relisting: Option<Map>,
}

fn upsert(map: &mut Map, fp: Fingerprint, entry: Entry) -> bool {
    // Almost every fingerprint has one live RR: start at capacity 1, not `Vec`'s default of 4.
    let entries = map.entry(fp).or_insert_with(|| Vec::with_capacity(1));
    match entries.iter_mut().find(|e| e.uid == entry.uid) {
        Some(existing) => {
            *existing = entry;
            false
        }
        None => {
            entries.push(entry);
            true
        }
    }
}

/// Extra wait beyond the server-side watch timeout before a silent stream counts as dead.
pub const IDLE_MARGIN: Duration = Duration::from_secs(5);
const LIST_PAGE: u32 = 500;
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long a list-and-watch session must have worked for the re-list backoff to start over.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(2);

/// Why a list-and-watch cycle ended.
#[derive(Debug)]
enum WatchEnd {
    /// `410 Gone`: the resourceVersion is too old; re-list at once.
    Gone,
    /// An error from the API server or the way to it.
    Failed(String),
    /// Nothing arrived for this long: a dead (half-open) connection.
    Stalled(Duration),
}

impl std::fmt::Display for WatchEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Gone => f.write_str("resourceVersion expired (410 Gone)"),
            Self::Failed(e) => write!(f, "watch failed: {e}"),
            Self::Stalled(d) => write!(f, "watch silent for {d:?}"),
        }
    }
}

/// The index. Cheap to share (`Arc`); readers never wait for the watch.
#[derive(Debug)]
pub struct RrIndex {
    state: RwLock<State>,
    synced: watch::Sender<bool>,
    metrics: Metrics,
    /// Fault injection for tests: stop applying watch events after the first sync, so this replica's
    /// view goes stale on purpose. Never set in production.
    freeze_after_sync: bool,
    frozen: std::sync::atomic::AtomicBool,
    last_ok: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl RrIndex {
    pub fn new(metrics: Metrics, freeze_after_sync: bool) -> Arc<Self> {
        Arc::new(Self {
            state: RwLock::default(),
            synced: watch::channel(false).0,
            metrics,
            freeze_after_sync,
            frozen: std::sync::atomic::AtomicBool::new(false),
            last_ok: std::sync::Mutex::new(None),
        })
    }

    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Resolves once the first list has completed.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        // The sender lives as long as `self`, so `wait_for` cannot fail while we borrow it.
        let _ = rx.wait_for(|s| *s).await;
    }

    pub fn len(&self) -> usize {
        self.read().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-updated in a way that matters more
        // than losing the index, so poisoning is ignored.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn lookup(&self, fp: &Fingerprint, now: Timestamp) -> Lookup {
        let state = self.read();
        let Some(entries) = state.live.get(fp) else {
            return Lookup::default();
        };
        let suppressing = entries
            .iter()
            .filter(|e| e.is_suppressing(now))
            .max_by_key(|e| (e.flags & FLAG_TERMINAL == 0, e.attempt))
            .map(|e| e.to_ref(fp));
        let highest = entries
            .iter()
            .max_by_key(|e| e.attempt)
            .map(|e| e.to_ref(fp));
        Lookup {
            suppressing,
            highest,
        }
    }

    /// Every indexed RR of a fingerprint, oldest attempt first (for the debug endpoint).
    pub fn entries(&self, fp: &Fingerprint) -> Vec<RrRef> {
        let state = self.read();
        let mut refs: Vec<RrRef> = state
            .live
            .get(fp)
            .map(|v| v.iter().map(|e| e.to_ref(fp)).collect())
            .unwrap_or_default();
        refs.sort_by_key(|r| r.attempt);
        refs
    }

    /// The indexed RR of that fingerprint and name, if any.
    pub fn get(&self, fp: &Fingerprint, name: &str) -> Option<RrRef> {
        let state = self.read();
        state
            .live
            .get(fp)?
            .iter()
            .map(|e| e.to_ref(fp))
            .find(|r| r.name == name)
    }

    /// Applies one watcher event. Public for unit tests and for replaying recorded streams.
    pub fn apply(&self, event: watcher::Event<IndexedRr>) {
        if self.freeze_after_sync && self.frozen.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let mut state = self.write();
        match event {
            watcher::Event::Init => {
                state.relisting = Some(Map::new());
                self.metrics.index_resyncs.inc();
            }
            watcher::Event::InitApply(obj) => {
                if let (Some(map), Some((fp, entry))) =
                    (state.relisting.as_mut(), Entry::from_rr(&obj))
                {
                    upsert(map, fp, entry);
                }
            }
            watcher::Event::InitDone => {
                if let Some(map) = state.relisting.take() {
                    state.len = map.values().map(Vec::len).sum();
                    state.live = map;
                }
                drop(state);
                self.frozen
                    .store(self.freeze_after_sync, std::sync::atomic::Ordering::Release);
                self.touch();
                self.synced.send_replace(true);
                self.metrics.index_synced.set(1);
                self.metrics.index_rrs.set(self.len() as i64);
                return;
            }
            watcher::Event::Apply(obj) => {
                if let Some((fp, entry)) = Entry::from_rr(&obj)
                    && upsert(&mut state.live, fp, entry)
                {
                    state.len += 1;
                }
            }
            watcher::Event::Delete(obj) => {
                if let Some((fp, gone)) = Entry::from_rr(&obj)
                    && let Some(entries) = state.live.get_mut(&fp)
                {
                    let before = entries.len();
                    entries.retain(|e| e.uid != gone.uid);
                    let removed = before - entries.len();
                    if entries.is_empty() {
                        state.live.remove(&fp);
                    }
                    state.len -= removed;
                }
            }
        }
        self.metrics.index_rrs.set(state.len as i64);
    }

    /// Lists, then watches RRs of `namespace` until `shutdown`, and says when the view cannot be trusted
    /// (`docs/reliability.md`, "A stale index"):
    ///
    /// - every watch asks the server to end it after `watch_timeout`, so a healthy stream ends (and is
    ///   re-opened from its resourceVersion) at least that often, even when nothing changes;
    /// - a stream that delivers nothing for `watch_timeout` + [`IDLE_MARGIN`] is dead (a half-open
    ///   connection): the index turns stale and the watch is re-opened on a new connection;
    /// - an error (RBAC revoked, the CRD removed, the API server unreachable) makes it re-list with
    ///   backoff; if no list or watch succeeds within the same bound (`watch_timeout` +
    ///   [`IDLE_MARGIN`] since the last confirmation), it turns stale — the same bound as a silent
    ///   stream, so a brief API server restart does not stop duplicates being answered;
    ///
    /// and it is fresh again once a list completes or a watch from the last resourceVersion is
    /// accepted (everything since that version is delivered on it). While stale, `/readyz` and
    /// `namegate_index_synced` are 0, and the readiness gate answers ingestion with 503 + Retry-After.
    pub async fn run(
        self: Arc<Self>,
        client: Client,
        namespace: String,
        watch_timeout: Duration,
        shutdown: CancellationToken,
    ) {
        let api: Api<IndexedRr> = Api::namespaced(client, &namespace);
        let limit = watch_timeout + IDLE_MARGIN;
        let watchdog = {
            let index = self.clone();
            let stop = shutdown.child_token();
            let guard = stop.clone().drop_guard();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let age = index.last_ok().map(|t| t.elapsed());
                    if index.is_synced() && age.is_some_and(|a| a > limit) {
                        index.mark_stale(&WatchEnd::Stalled(limit));
                    }
                }
            });
            guard
        };
        let mut backoff = BACKOFF_MIN;
        loop {
            let began = tokio::time::Instant::now();
            let confirmed_before = self.last_ok();
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                o = self.list_and_watch(&api, watch_timeout) => o,
            };
            // A session that worked for a while (the view was confirmed and it lasted
            // `BACKOFF_RESET_AFTER`) ends the previous trouble: the next break re-lists after the
            // shortest backoff, not after the one an outage long over had grown to (it delays the
            // index seeing deletions: docs/reliability.md, "The deletion window"). A session that
            // breaks sooner keeps growing it, so a flapping connection does not cause a list storm.
            if self.last_ok() != confirmed_before && began.elapsed() >= BACKOFF_RESET_AFTER {
                backoff = BACKOFF_MIN;
            }
            match &outcome {
                // Silent for the whole bound already: stale now.
                WatchEnd::Stalled(_) => self.mark_stale(&outcome),
                // The watchdog turns it stale if nothing succeeds within the bound.
                WatchEnd::Failed(_) | WatchEnd::Gone => {
                    tracing::warn!(reason = %outcome, "RR watch interrupted; re-listing");
                }
            }
            if matches!(outcome, WatchEnd::Gone) {
                backoff = BACKOFF_MIN;
                continue;
            }
            let sleep = rand::random_range(backoff / 2..=backoff);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(sleep) => {},
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
            let _ = &watchdog;
        }
    }

    /// When the view was last confirmed current (a list completed, a watch accepted, an event).
    fn last_ok(&self) -> Option<tokio::time::Instant> {
        *self.last_ok.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn touch(&self) {
        *self.last_ok.lock().unwrap_or_else(|p| p.into_inner()) = Some(tokio::time::Instant::now());
    }

    fn mark_stale(&self, why: &WatchEnd) {
        let was = self.synced.send_replace(false);
        self.metrics.index_synced.set(0);
        if was {
            tracing::warn!(reason = %why, "RR index stale: not ready until it is fresh again");
        }
    }

    fn mark_fresh(&self) {
        self.touch();
        if !self.synced.send_replace(true) {
            tracing::info!("RR index fresh again");
        }
        self.metrics.index_synced.set(1);
    }

    /// One list followed by watches from its resourceVersion, until something ends it.
    async fn list_and_watch(&self, api: &Api<IndexedRr>, watch_timeout: Duration) -> WatchEnd {
        let limit = watch_timeout + IDLE_MARGIN;
        let mut rv = match self.relist(api, limit).await {
            Ok(rv) => rv,
            Err(e) => return e,
        };
        let secs = u32::try_from(watch_timeout.as_secs().max(1)).unwrap_or(u32::MAX);
        loop {
            let wp = WatchParams::default().timeout(secs); // bookmarks are on by default
            let mut stream = match tokio::time::timeout(limit, api.watch(&wp, &rv)).await {
                Ok(Ok(s)) => s.boxed(),
                Ok(Err(e)) => return WatchEnd::Failed(e.to_string()),
                Err(_) => return WatchEnd::Stalled(limit),
            };
            // The server accepted a watch from `rv`: everything since is on its way.
            self.mark_fresh();
            loop {
                let item = match tokio::time::timeout(limit, stream.next()).await {
                    Err(_) => return WatchEnd::Stalled(limit),
                    Ok(None) => break, // the server ended it after `watch_timeout`: re-open
                    Ok(Some(Err(e))) => return WatchEnd::Failed(e.to_string()),
                    Ok(Some(Ok(item))) => item,
                };
                self.touch();
                match item {
                    WatchEvent::Added(obj) | WatchEvent::Modified(obj) => {
                        rv = obj.metadata.resource_version.clone().unwrap_or(rv);
                        self.apply(watcher::Event::Apply(obj));
                    }
                    WatchEvent::Deleted(obj) => {
                        rv = obj.metadata.resource_version.clone().unwrap_or(rv);
                        self.apply(watcher::Event::Delete(obj));
                    }
                    WatchEvent::Bookmark(b) => rv = b.metadata.resource_version,
                    WatchEvent::Error(e) if e.code == 410 => return WatchEnd::Gone,
                    WatchEvent::Error(e) => {
                        return WatchEnd::Failed(format!("{} {}", e.code, e.message));
                    }
                }
            }
        }
    }

    /// A complete paged list, applied as one replacement of the index; returns its resourceVersion.
    async fn relist(&self, api: &Api<IndexedRr>, limit: Duration) -> Result<String, WatchEnd> {
        self.apply(watcher::Event::Init);
        let mut lp = ListParams::default().limit(LIST_PAGE);
        loop {
            let page = match tokio::time::timeout(limit, api.list(&lp)).await {
                Ok(Ok(p)) => p,
                Ok(Err(kube::Error::Api(s))) if s.code == 410 => return Err(WatchEnd::Gone),
                Ok(Err(e)) => return Err(WatchEnd::Failed(e.to_string())),
                Err(_) => return Err(WatchEnd::Stalled(limit)),
            };
            for obj in page.items {
                self.apply(watcher::Event::InitApply(obj));
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => lp = lp.continue_token(&token),
                None => {
                    self.apply(watcher::Event::InitDone);
                    return Ok(page.metadata.resource_version.unwrap_or_default());
                }
            }
        }
    }

    /// Heap and inline bytes held by the index, counted from capacities (what the allocator holds,
    /// not just what is used). For the memory benchmark.
    pub fn approx_bytes(&self) -> usize {
        let state = self.read();
        let table = state.live.capacity()
            * (std::mem::size_of::<Fingerprint>() + std::mem::size_of::<Vec<Entry>>() + 1);
        let entries: usize = state
            .live
            .values()
            .map(|v| {
                v.capacity() * std::mem::size_of::<Entry>()
                    + v.iter()
                        .map(|e| {
                            e.resource_version.len() + e.legacy_name.as_ref().map_or(0, |n| n.len())
                        })
                        .sum::<usize>()
            })
            .sum();
        table + entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rr(fp: &Fingerprint, name: &str, uid: &str, status: serde_json::Value) -> IndexedRr {
        serde_json::from_value(json!({
            "metadata": {"name": name, "uid": uid, "resourceVersion": "42"},
            "spec": {"signalFingerprint": fp.to_hex(), "originalPayload": "x".repeat(1000)},
            "status": status,
        }))
        .unwrap()
    }

    fn uid(n: u8) -> String {
        format!("00000000-0000-0000-0000-0000000000{n:02x}")
    }

    fn index() -> Arc<RrIndex> {
        let metrics = Metrics::register(&mut prometheus_client::registry::Registry::default());
        let idx = RrIndex::new(metrics, false);
        idx.apply(watcher::Event::Init);
        idx.apply(watcher::Event::InitDone);
        idx
    }

    const NOW: &str = "2026-11-26T12:00:00Z";

    #[test]
    fn active_rr_is_suppressing_and_highest() {
        let idx = index();
        let fp = Fingerprint::of_input("ns:Deployment:a");
        let n1 = name::name(&fp, Attempt::FIRST);
        idx.apply(watcher::Event::Apply(rr(
            &fp,
            &n1,
            &uid(1),
            json!({"overallPhase": "Executing"}),
        )));
        let l = idx.lookup(&fp, NOW.parse().unwrap());
        assert_eq!(
            l.suppressing.as_ref().map(|r| r.name.as_str()),
            Some(n1.as_str())
        );
        assert_eq!(l.highest.as_ref().map(|r| r.attempt), Some(1));
        assert_eq!(idx.len(), 1);
    }

    #[test]
    fn terminal_rr_is_not_suppressing_but_sets_the_attempt() {
        let idx = index();
        let fp = Fingerprint::of_input("ns:Deployment:a");
        let n2 = name::name(&fp, Attempt::new(2).unwrap());
        idx.apply(watcher::Event::Apply(rr(
            &fp,
            &n2,
            &uid(2),
            json!({"overallPhase": "Completed"}),
        )));
        let l = idx.lookup(&fp, NOW.parse().unwrap());
        assert_eq!(l.suppressing, None);
        assert_eq!(l.highest.unwrap().attempt, 2);
    }

    #[test]
    fn manual_review_and_backoff_suppress() {
        let idx = index();
        let fp = Fingerprint::of_input("ns:Deployment:a");
        let n1 = name::name(&fp, Attempt::FIRST);
        idx.apply(watcher::Event::Apply(rr(
            &fp,
            &n1,
            &uid(1),
            json!({"overallPhase": "Failed", "completionStatus": {"outcome": "ManualReviewRequired"}}),
        )));
        assert!(idx.lookup(&fp, NOW.parse().unwrap()).suppressing.is_some());

        let fp2 = Fingerprint::of_input("ns:Deployment:b");
        let m1 = name::name(&fp2, Attempt::FIRST);
        idx.apply(watcher::Event::Apply(rr(
            &fp2,
            &m1,
            &uid(3),
            json!({"overallPhase": "Failed", "routingStatus": {"nextAllowedExecution": "2026-11-26T12:05:00Z"}}),
        )));
        assert!(idx.lookup(&fp2, NOW.parse().unwrap()).suppressing.is_some());
        assert!(
            idx.lookup(&fp2, "2026-11-26T12:05:01Z".parse().unwrap())
                .suppressing
                .is_none()
        );
    }

    #[test]
    fn active_preferred_over_newer_suppressing_terminal() {
        let idx = index();
        let fp = Fingerprint::of_input("ns:Deployment:a");
        let n1 = name::name(&fp, Attempt::FIRST);
        let n2 = name::name(&fp, Attempt::new(2).unwrap());
        idx.apply(watcher::Event::Apply(rr(&fp, &n1, &uid(1), json!({}))));
        idx.apply(watcher::Event::Apply(rr(
            &fp,
            &n2,
            &uid(2),
            json!({"overallPhase": "Failed", "completionStatus": {"outcome": "ManualReviewRequired"}}),
        )));
        let l = idx.lookup(&fp, NOW.parse().unwrap());
        assert_eq!(l.suppressing.unwrap().name, n1);
        assert_eq!(l.highest.unwrap().name, n2);
    }

    #[test]
    fn legacy_rr_keeps_its_name_and_label_attempt() {
        let idx = index();
        let fp = Fingerprint::of_input("ns:Deployment:a");
        let mut legacy = rr(
            &fp,
            "rr-91fce8d5c494-1c2b5576",
            &uid(9),
            json!({"overallPhase": "Completed"}),
        );
        idx.apply(watcher::Event::Apply(legacy.clone()));
        assert_eq!(
            idx.lookup(&fp, NOW.parse().unwrap())
                .highest
                .unwrap()
                .attempt,
            0
        );
        legacy.metadata.labels = Some([(meta::ATTEMPT_LABEL.to_owned(), "3".to_owned())].into());
        idx.apply(watcher::Event::Apply(legacy));
        let h = idx.lookup(&fp, NOW.parse().unwrap()).highest.unwrap();
        assert_eq!(
            (h.attempt, h.name.as_str()),
            (3, "rr-91fce8d5c494-1c2b5576")
        );
        assert_eq!(idx.len(), 1, "an update of the same UID replaces the entry");
    }

    #[test]
    fn delete_and_relist_forget_rrs() {
        let idx = index();
        let fp = Fingerprint::of_input("ns:Deployment:a");
        let n1 = name::name(&fp, Attempt::FIRST);
        let obj = rr(&fp, &n1, &uid(1), json!({}));
        idx.apply(watcher::Event::Apply(obj.clone()));
        idx.apply(watcher::Event::Delete(obj.clone()));
        assert_eq!(idx.lookup(&fp, NOW.parse().unwrap()), Lookup::default());
        assert_eq!(idx.len(), 0);

        idx.apply(watcher::Event::Apply(obj));
        // A re-list that no longer contains the RR (deleted while the watch was down) drops it.
        idx.apply(watcher::Event::Init);
        assert_eq!(idx.len(), 1, "until InitDone the old view keeps serving");
        idx.apply(watcher::Event::InitDone);
        assert_eq!(idx.len(), 0);
    }

    #[test]
    fn deleting_rr_is_not_suppressing() {
        let idx = index();
        let fp = Fingerprint::of_input("ns:Deployment:a");
        let mut obj = rr(&fp, &name::name(&fp, Attempt::FIRST), &uid(1), json!({}));
        obj.metadata.deletion_timestamp = Some(Time(NOW.parse().unwrap()));
        idx.apply(watcher::Event::Apply(obj));
        let l = idx.lookup(&fp, NOW.parse().unwrap());
        assert!(l.suppressing.is_none());
        assert!(l.highest.unwrap().deleting);
    }

    #[test]
    fn frozen_index_ignores_events_after_sync() {
        let metrics = Metrics::register(&mut prometheus_client::registry::Registry::default());
        let idx = RrIndex::new(metrics, true);
        let fp = Fingerprint::of_input("ns:Deployment:a");
        idx.apply(watcher::Event::Init);
        idx.apply(watcher::Event::InitApply(rr(
            &fp,
            &name::name(&fp, Attempt::FIRST),
            &uid(1),
            json!({}),
        )));
        idx.apply(watcher::Event::InitDone);
        idx.apply(watcher::Event::Apply(rr(
            &fp,
            &name::name(&fp, Attempt::new(2).unwrap()),
            &uid(2),
            json!({}),
        )));
        assert_eq!(idx.len(), 1);
    }

    #[test]
    fn entry_stays_small() {
        // The memory budget (docs/benchmarks.md) is 300 bytes per RR including the table; the inline entry must leave room.
        assert!(
            std::mem::size_of::<Entry>() <= 96,
            "{}",
            std::mem::size_of::<Entry>()
        );
    }
}
