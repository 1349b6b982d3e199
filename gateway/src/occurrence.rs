//! Occurrence accounting (docs/architecture.md; the design and its failure analysis are in
//! `docs/reliability.md`, "Occurrence counts").
//!
//! Every 201 and 202 is one occurrence of the RR *object* it names (name and UID: an RR deleted and
//! re-created under the same name is another object and never inherits the old one's counts).
//! Occurrences are coalesced in memory per object and written by a flusher at most once per
//! `flush_interval`. The request path only touches a mutex-guarded map: a duplicate costs no API call.
//!
//! Where the counts live: each gateway process keeps its absolute total for an object in the RR's
//! annotation `occurrences.namegate.io/<instance>`; `status.deduplication.occurrenceCount` is derived
//! from them (their sum plus `namegate.io/occurrences-base`). Annotations, because kubernaut's
//! orchestrator replaces the whole status from Go structs that know only `firstSeenAt`, `lastSeenAt`
//! and `occurrenceCount`: anything namegate kept in the status beside them would be wiped at every
//! phase change, and a per-replica breakdown that can vanish makes the next write count twice.
//! Status writes never touch metadata, so the totals survive them; the derived count is rewritten
//! by the next flush after any status replacement.
//!
//! A create by this process carries its total of 1 for the new object (the creating signal), so a new
//! RR's first flush is one status write; a create no answer reported (its batch answered 503, or its
//! own answer lost and the admission failed) has that 1 taken back by the next flush
//! (`docs/reliability.md`, "Occurrence counts beside other status writers").
//!
//! Every write carries resourceVersion and UID preconditions, so concurrent writers cause a
//! `Conflict` and a re-read, never a lost update; and every value written is absolute, so a write
//! whose outcome is unknown (a timeout after the API server applied it) is simply written again.
//!
//! Durability: what is pending when the process is SIGKILLed is lost — what it answered since its
//! last successful flush of each RR: one flush interval while the API server accepts writes, longer
//! while they fail (`docs/reliability.md`, "The fault soak"). SIGTERM flushes everything before exit.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crd_schema::rr::Deduplication;
use crd_schema::{Fingerprint, RemediationRequest, meta};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::apiserver::{ApiError, RrApi};
use crate::telemetry::metrics::{Metrics, ResultLabels};

/// One RR object: its name and, when known, its UID. Occurrences belong to an object, not a name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub name: String,
    pub uid: Option<Uuid>,
}

impl ObjectKey {
    pub fn new(name: &str, uid: Option<Uuid>) -> Self {
        Self {
            name: name.to_owned(),
            uid,
        }
    }
}

/// This process created the RR object, and the create carried its total of 1 in its occurrence
/// annotation ([`Occurrences::annotation`]): the creating signal is already counted on the server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Created {
    /// The create response's resourceVersion, when this process saw the response (not after a lost
    /// answer): the first write then needs no read.
    pub resource_version: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Pending {
    fingerprint: Fingerprint,
    delta: i32,
    first_seen: Timestamp,
    last_seen: Timestamp,
    /// Set when this process created the object; `delta` then includes the creating signal, which
    /// the object's annotation already counts.
    created: Option<Created>,
}

impl Pending {
    fn merge(&mut self, other: Pending) {
        self.delta = self.delta.saturating_add(other.delta);
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.created = self.created.take().or(other.created);
    }
}

/// A create this process sent whose outcome it does not know: the answer was lost and the signal was
/// answered otherwise (503). If it landed, the object carries this process's total of 1 for a signal
/// no answer reported, and the flusher takes it back.
#[derive(Clone, Debug, PartialEq, Eq)]
struct UnknownCreate {
    fingerprint: Fingerprint,
    /// The admissions' `namegate.io/created-by` (at most one of their creates can have made the
    /// object), newest last, at most [`MAX_UNKNOWN_PER_NAME`].
    identities: Vec<String>,
    at: Timestamp,
}

/// Unseen creates remembered per RR name: during a long API server outage every re-delivery of a new
/// signal adds one, and only one of them can have landed; the oldest are forgotten past this.
const MAX_UNKNOWN_PER_NAME: usize = 64;

/// The request-side half: records occurrences.
#[derive(Debug)]
pub struct Occurrences {
    /// This process's instance: unique per incarnation, so no two writers share an annotation.
    instance: String,
    /// `occurrences.namegate.io/<instance>`.
    annotation: String,
    pending: Mutex<HashMap<ObjectKey, Pending>>,
    /// By RR name.
    unknown: Mutex<HashMap<String, UnknownCreate>>,
    /// RR objects taken by the flush in progress and not settled yet: still not written, so still
    /// counted by `namegate_occurrence_pending_rrs` (a gauge that read 0 while a flush was in flight
    /// told an operator, or the soak, that everything answered was written when it was not).
    in_flight: std::sync::atomic::AtomicUsize,
    metrics: Metrics,
}

impl Occurrences {
    pub fn new(metrics: Metrics) -> Arc<Self> {
        let instance = instance_id();
        Arc::new(Self {
            annotation: format!("{}{instance}", meta::OCCURRENCES_PREFIX),
            instance,
            pending: Mutex::default(),
            unknown: Mutex::default(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            metrics,
        })
    }

    /// The annotation that holds this process's total for an RR object, and that a create by this
    /// process carries with the value 1.
    pub fn annotation(&self) -> &str {
        &self.annotation
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Pending>> {
        // The map holds plain counters; a panic elsewhere cannot leave it inconsistent.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the pending gauge: RR objects waiting for the next flush plus those the flush in
    /// progress has not settled yet. Called with the map locked, so updates do not interleave.
    fn publish(&self, waiting: usize) {
        let in_flight = self.in_flight.load(std::sync::atomic::Ordering::Acquire);
        self.metrics
            .occurrence_pending
            .set(i64::try_from(waiting + in_flight).unwrap_or(i64::MAX));
    }

    /// Records one occurrence of RR object `name`/`uid`; returns this replica's unflushed count for it.
    pub fn record(
        &self,
        fingerprint: Fingerprint,
        name: &str,
        uid: Option<Uuid>,
        at: Timestamp,
        created: Option<Created>,
    ) -> i32 {
        self.add(fingerprint, name, uid, at, created, 1)
    }

    /// This process created RR object `name`/`uid`, but the answer that would report it is not sent
    /// (its batch is answered 503): no occurrence, and the total of 1 the create carried is written
    /// back to what this process counted for the object, 0.
    pub fn unanswered_create(
        &self,
        fingerprint: Fingerprint,
        name: &str,
        uid: Option<Uuid>,
        at: Timestamp,
        created: Created,
    ) {
        self.add(fingerprint, name, uid, at, Some(created), 0);
    }

    /// A create of `name` under admission `identity` may have landed unseen (see [`UnknownCreate`]).
    pub fn unknown_create(
        &self,
        fingerprint: Fingerprint,
        name: &str,
        identity: &str,
        at: Timestamp,
    ) {
        self.merge_unknown(name, fingerprint, at, |ids| ids.push(identity.to_owned()));
    }

    /// Puts back unseen creates the flusher could not check, in front of any added meanwhile.
    fn unknown_again(&self, name: &str, older: UnknownCreate) {
        self.merge_unknown(name, older.fingerprint, older.at, |ids| {
            let newer = std::mem::replace(ids, older.identities);
            ids.extend(newer);
        });
    }

    /// Applies `add` to the identities waiting for `name`, then keeps the newest
    /// [`MAX_UNKNOWN_PER_NAME`].
    fn merge_unknown(
        &self,
        name: &str,
        fingerprint: Fingerprint,
        at: Timestamp,
        add: impl FnOnce(&mut Vec<String>),
    ) {
        let mut unknown = self.lock_unknown();
        let entry = unknown
            .entry(name.to_owned())
            .or_insert_with(|| UnknownCreate {
                fingerprint,
                identities: Vec::new(),
                at,
            });
        add(&mut entry.identities);
        entry.at = entry.at.min(at);
        let excess = entry.identities.len().saturating_sub(MAX_UNKNOWN_PER_NAME);
        if excess > 0 {
            entry.identities.drain(..excess);
            tracing::warn!(
                rr = name,
                forgotten = excess,
                "too many creates of one name with lost answers; forgetting the oldest (if one of them landed, its RR counts one occurrence more than was answered)"
            );
        }
    }

    fn lock_unknown(&self) -> std::sync::MutexGuard<'_, HashMap<String, UnknownCreate>> {
        self.unknown.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(
        &self,
        fingerprint: Fingerprint,
        name: &str,
        uid: Option<Uuid>,
        at: Timestamp,
        created: Option<Created>,
        delta: i32,
    ) -> i32 {
        let one = Pending {
            fingerprint,
            delta,
            first_seen: at,
            last_seen: at,
            created,
        };
        let mut pending = self.lock();
        let key = ObjectKey::new(name, uid);
        let delta = match pending.get_mut(&key) {
            Some(p) => {
                p.merge(one);
                p.delta
            }
            None => {
                pending.insert(key, one);
                delta
            }
        };
        self.publish(pending.len());
        delta
    }

    /// Occurrences of RR object `name`/`uid` recorded here but not yet written.
    pub fn pending(&self, name: &str, uid: Option<Uuid>) -> i32 {
        self.lock()
            .get(&ObjectKey::new(name, uid))
            .map_or(0, |p| p.delta)
    }

    /// Nothing left to write: no occurrences, no derived status to rewrite, no create to check.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty() && self.lock_unknown().is_empty()
    }

    /// Occurrences recorded but not yet written.
    pub fn pending_total(&self) -> i64 {
        self.lock().values().map(|p| i64::from(p.delta)).sum()
    }

    /// Takes everything pending for a flush; it stays in the gauge until `settled`.
    /// Objects named in `held` stay where they are, for a later flush.
    fn take(&self, held: &[String]) -> HashMap<ObjectKey, Pending> {
        let mut pending = self.lock();
        let taken = if held.is_empty() {
            std::mem::take(&mut *pending)
        } else {
            let (kept, taken) = pending.drain().partition(|(k, _)| held.contains(&k.name));
            *pending = kept;
            taken
        };
        self.in_flight
            .store(taken.len(), std::sync::atomic::Ordering::Release);
        self.publish(pending.len());
        taken
    }

    /// The flush that `take` fed is over: its objects are written, gone or requeued.
    fn settled(&self) {
        let pending = self.lock();
        self.in_flight
            .store(0, std::sync::atomic::Ordering::Release);
        self.publish(pending.len());
    }

    fn requeue(&self, key: ObjectKey, p: Pending) {
        let mut pending = self.lock();
        match pending.get_mut(&key) {
            Some(existing) => existing.merge(p),
            None => {
                pending.insert(key, p);
            }
        }
        self.publish(pending.len());
    }
}

/// What the API server holds for an RR object, reduced to what the flusher needs.
#[derive(Clone, Debug, PartialEq)]
struct Known {
    uid: Option<Uuid>,
    resource_version: String,
    /// The `occurrences.namegate.io/*` totals, by instance.
    totals: BTreeMap<String, i32>,
    /// `namegate.io/occurrences-base`, when set.
    base: Option<i32>,
    dedup: Option<Deduplication>,
    round: u64,
}

impl Known {
    fn of(rr: &RemediationRequest, round: u64) -> Self {
        let annotations = rr.metadata.annotations.as_ref();
        let totals = annotations
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| {
                let instance = k.strip_prefix(meta::OCCURRENCES_PREFIX)?;
                Some((instance.to_owned(), v.parse().ok()?))
            })
            .collect();
        let base = annotations
            .and_then(|a| a.get(meta::OCCURRENCES_BASE_ANNOTATION))
            .and_then(|v| v.parse().ok());
        Self {
            uid: rr.metadata.uid.as_deref().and_then(|u| u.parse().ok()),
            resource_version: rr.metadata.resource_version.clone().unwrap_or_default(),
            totals,
            base,
            dedup: rr.status.as_ref().and_then(|s| s.deduplication.clone()),
            round,
        }
    }

    /// The base the per-replica totals add to: the annotation once written; before any gateway
    /// process wrote a total, whatever the status counts (the migration, an earlier gateway).
    fn effective_base(&self) -> i32 {
        match self.base {
            Some(b) => b,
            None if self.totals.is_empty() => {
                self.dedup.as_ref().map_or(0, |d| d.occurrence_count.max(0))
            }
            None => 0,
        }
    }

    /// The occurrence count the annotations add up to.
    fn total(&self) -> i32 {
        self.totals
            .values()
            .fold(self.effective_base(), |a, n| a.saturating_add(*n))
    }
}

/// The writing half. See the module docs for where the counts live.
#[derive(Debug)]
pub struct Flusher {
    occurrences: Arc<Occurrences>,
    api: RrApi,
    metrics: Metrics,
    interval: Duration,
    known: Mutex<HashMap<ObjectKey, Known>>,
    /// Per object: this instance's total as last confirmed written, and the round it was last used.
    mine: Mutex<HashMap<ObjectKey, (i32, u64)>>,
}

/// Conflicts tolerated for one RR in one flush before the delta waits for the next round.
const MAX_CONFLICTS: usize = 8;
/// RRs written concurrently in one flush.
const FLUSH_CONCURRENCY: usize = 32;
/// Time allowed to one RR's writes (its reads and conflict retries included).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Rounds an object's entries survive without use.
const KNOWN_ROUNDS: u64 = 120;
/// Longest instance text: an annotation name (after the `/`) is at most 63 characters.
const INSTANCE_MAX: usize = 63;

enum WriteError {
    /// Nothing was confirmed written: keep the occurrences and try again next round.
    Retry(ApiError),
    /// The occurrences are in this instance's annotation, but the derived status is not rewritten
    /// yet: try the status again next round, without adding the occurrences a second time.
    StatusPending(ApiError),
    /// The RR object is gone (deleted, or replaced by another object of that name): the occurrences
    /// belong to an object that no longer exists.
    Gone,
}

impl Flusher {
    pub fn new(
        occurrences: Arc<Occurrences>,
        api: RrApi,
        metrics: Metrics,
        interval: Duration,
    ) -> Self {
        Self {
            mine: Mutex::default(),
            occurrences,
            api,
            metrics,
            interval,
            known: Mutex::default(),
        }
    }

    /// Flushes every `interval` until `shutdown`, then flushes what is left, trying until `drain_for`
    /// has passed.
    pub async fn run(self, shutdown: CancellationToken, drain_for: Duration) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut round = 0;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {
                    round += 1;
                    self.flush_once(round, None).await;
                }
            }
        }
        let deadline = Instant::now() + drain_for;
        while !self.occurrences.is_empty() && Instant::now() < deadline {
            round += 1;
            self.flush_once(round, Some(deadline)).await;
            if !self.occurrences.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let lost = self.occurrences.pending_total();
        if lost > 0 {
            tracing::error!(lost, "occurrences could not be written before shutdown");
        }
    }

    /// One round: writes every pending RR object once; `drain_deadline` caps the writes during
    /// shutdown.
    pub async fn flush_once(&self, round: u64, drain_deadline: Option<Instant>) -> usize {
        // Not written while a create of the same name is unchecked: the first write of an object fixes
        // where this process's total starts, and that depends on whether the create landed.
        let unchecked = self.resolve_unknown_creates(drain_deadline).await;
        let batch = self.occurrences.take(&unchecked);
        if batch.is_empty() {
            return 0;
        }
        let results = futures::stream::iter(batch)
            .map(|(key, p)| async move {
                // Each write gets its own deadline: one per round would cut off the writes that queue
                // behind slow ones, after the API server may already have applied them.
                let own = Instant::now() + WRITE_TIMEOUT;
                let deadline = drain_deadline.map_or(own, |d| d.min(own));
                let outcome = self.write(&key, &p, round, deadline).await;
                (key, p, outcome)
            })
            .buffer_unordered(FLUSH_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut written = 0;
        for (key, p, outcome) in results {
            let result = match outcome {
                Ok(()) => {
                    written += 1;
                    "ok"
                }
                Err(WriteError::Gone) => {
                    tracing::warn!(rr = %key.name, uid = ?key.uid, occurrences = p.delta,
                        "RR object gone before its occurrences were written");
                    "gone"
                }
                Err(WriteError::Retry(e)) => {
                    tracing::warn!(rr = %key.name, error = %e, "occurrence flush failed; retrying next round");
                    self.occurrences.requeue(key, p);
                    "retry"
                }
                Err(WriteError::StatusPending(e)) => {
                    tracing::warn!(rr = %key.name, error = %e,
                        "occurrences written, derived status not yet; rewriting it next round");
                    self.occurrences.requeue(key, Pending { delta: 0, ..p });
                    "retry"
                }
            };
            self.metrics
                .occurrence_flushes
                .get_or_create(&ResultLabels { result })
                .inc();
        }
        self.occurrences.settled();
        // An object idle this long has no write of unknown outcome left (those are retried every
        // round, which refreshes `mine`), so forgetting it is safe: the next contact reads this
        // instance's total back from its annotation.
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, k| k.round + KNOWN_ROUNDS > round);
        self.mine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, m| m.1 + KNOWN_ROUNDS > round);
        written
    }

    /// Reads each object an unseen create may have made: made by that create → this process's total
    /// for it starts at 0 and is written (the 1 the create carried is taken back); absent or another's
    /// → nothing to do; unreadable → tried next round. Returns the names still unresolved.
    async fn resolve_unknown_creates(&self, drain_deadline: Option<Instant>) -> Vec<String> {
        let unknown = std::mem::take(&mut *self.occurrences.lock_unknown());
        let mut unresolved = Vec::new();
        for (name, u) in unknown {
            let own = Instant::now() + WRITE_TIMEOUT;
            let deadline = drain_deadline.map_or(own, |d| d.min(own));
            match self.api.get(&name, deadline).await {
                Ok(Some(rr))
                    if created_by(&rr).is_some_and(|c| u.identities.iter().any(|i| i == c)) =>
                {
                    tracing::info!(rr = %name,
                        "a create whose answer was lost had landed; taking back the occurrence it carried");
                    let uid = rr.metadata.uid.as_deref().and_then(|id| id.parse().ok());
                    self.take_back(u.fingerprint, &name, uid, u.at);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(rr = %name, error = %e,
                        "could not check a create whose answer was lost; retrying next round");
                    self.occurrences.unknown_again(&name, u);
                    unresolved.push(name);
                }
            }
        }
        unresolved
    }

    /// The object `name`/`uid` holds a total of 1 from a create of this process that no answer
    /// reported. This process's total for it starts at 0 instead; if this process already wrote a
    /// total for it, that one started from the 1 read back, so it is lowered by one. Either way the
    /// next write sets the corrected total.
    fn take_back(&self, fingerprint: Fingerprint, name: &str, uid: Option<Uuid>, at: Timestamp) {
        let key = ObjectKey::new(name, uid);
        let started = {
            let mut mine = self.mine.lock().unwrap_or_else(|p| p.into_inner());
            mine.get_mut(&key)
                .map(|m| m.0 = m.0.saturating_sub(1))
                .is_some()
        };
        if started {
            self.occurrences.add(fingerprint, name, uid, at, None, 0);
        } else {
            self.occurrences
                .unanswered_create(fingerprint, name, uid, at, Created::default());
        }
    }

    fn starting_point(&self, key: &ObjectKey, p: &Pending) -> Option<Known> {
        if let Some(known) = self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
        {
            return Some(known.clone());
        }
        // A new RR: only the total of 1 its create carried, no status yet; the create response's
        // resourceVersion saves a read.
        let created = p.created.as_ref()?;
        Some(Known {
            uid: key.uid,
            resource_version: created.resource_version.clone()?,
            totals: BTreeMap::from([(self.occurrences.instance.clone(), 1)]),
            base: None,
            dedup: None,
            round: 0,
        })
    }

    async fn read(&self, key: &ObjectKey, deadline: Instant) -> Result<Known, WriteError> {
        let rr = self
            .api
            .get(&key.name, deadline)
            .await
            .map_err(WriteError::Retry)?
            .ok_or(WriteError::Gone)?;
        let known = Known::of(&rr, 0);
        if key.uid.is_some() && known.uid != key.uid {
            return Err(WriteError::Gone);
        }
        Ok(known)
    }

    /// This instance's confirmed total for the object, remembered before the first write so that a
    /// write whose outcome is unknown is never mistaken for the starting point. For an object this
    /// process created, the starting point is 0: the 1 its create carried is the creating signal,
    /// which the pending delta counts.
    fn confirmed_mine(&self, key: &ObjectKey, p: &Pending, base: &Known, round: u64) -> i32 {
        let mut mine = self.mine.lock().unwrap_or_else(|p| p.into_inner());
        let entry = mine.entry(key.clone()).or_insert_with(|| {
            let on_server = base.totals.get(&self.occurrences.instance).copied();
            let start = if p.created.is_some() {
                0
            } else {
                on_server.unwrap_or(0)
            };
            (start, round)
        });
        entry.1 = round;
        entry.0
    }

    /// Makes the object hold this instance's new total `mine` (an annotation write, when it does not
    /// already), then makes its status count what the annotations add up to (a status write, when it
    /// does not already). A conflict at either step re-reads and goes on from what is there.
    async fn write(
        &self,
        key: &ObjectKey,
        p: &Pending,
        round: u64,
        deadline: Instant,
    ) -> Result<(), WriteError> {
        let mut cur = match self.starting_point(key, p) {
            Some(k) => k,
            None => self.read(key, deadline).await?,
        };
        let mine = self
            .confirmed_mine(key, p, &cur, round)
            .saturating_add(p.delta);
        let mut confirmed = false;
        let mut failure = ApiError::Conflict;
        let mut done = false;
        for _ in 0..MAX_CONFLICTS {
            let uid = key.uid.or(cur.uid).map(|u| u.to_string());
            if cur.totals.get(&self.occurrences.instance) == Some(&mine) && !confirmed {
                // From here on the occurrences are in the annotation: a failure below leaves only
                // the derived status to rewrite, never the delta to add again.
                confirmed = true;
                self.mine
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key.clone(), (mine, round));
            }
            let step = if !confirmed {
                // The first total written records the base it adds to (0 needs no annotation).
                let base = (cur.base.is_none() && cur.totals.is_empty())
                    .then(|| cur.effective_base())
                    .filter(|b| *b > 0);
                self.api
                    .patch_occurrence_annotations(
                        &key.name,
                        uid.as_deref(),
                        &cur.resource_version,
                        self.occurrences.annotation(),
                        mine,
                        base,
                        deadline,
                    )
                    .await
            } else {
                let want = derived(cur.dedup.as_ref(), p, cur.total());
                if cur.dedup.as_ref() == Some(&want) {
                    done = true;
                    break;
                }
                self.api
                    .patch_deduplication(
                        &key.name,
                        uid.as_deref(),
                        &cur.resource_version,
                        &want,
                        deadline,
                    )
                    .await
            };
            let status_step = confirmed;
            let step_ok = step.is_ok();
            let next = match step {
                Ok(rr) => Ok(Known::of(&rr, round)),
                Err(ApiError::Conflict) => self.read(key, deadline).await,
                Err(ApiError::NotFound) => Err(WriteError::Gone),
                Err(e) => Err(WriteError::Retry(e)),
            };
            match next {
                Ok(k) => {
                    cur = k;
                    if status_step && step_ok {
                        done = true;
                        break;
                    }
                }
                Err(WriteError::Gone) => return Err(WriteError::Gone),
                Err(WriteError::Retry(e) | WriteError::StatusPending(e)) => {
                    failure = e;
                    break;
                }
            }
        }
        cur.round = round;
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), cur);
        match (done, confirmed) {
            (true, _) => Ok(()),
            (false, true) => Err(WriteError::StatusPending(failure)),
            (false, false) => Err(WriteError::Retry(failure)),
        }
    }
}

/// The admission identity an RR was created with.
pub(crate) fn created_by(rr: &RemediationRequest) -> Option<&str> {
    rr.metadata
        .annotations
        .as_ref()?
        .get(meta::CREATED_BY_ANNOTATION)
        .map(String::as_str)
}

/// A unique instance per process: the pod (or host) name and a random suffix, short enough to be an
/// annotation name.
fn instance_id() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
                .take(INSTANCE_MAX - 9)
                .collect::<String>()
                .trim_start_matches(['-', '.'])
                .to_owned()
        })
        .filter(|h: &String| !h.is_empty())
        .unwrap_or_else(|| "namegate".to_owned());
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// The deduplication status the annotations call for: their total, and the first/last times widened
/// by this round's occurrences.
fn derived(current: Option<&Deduplication>, p: &Pending, total: i32) -> Deduplication {
    let (first, last) = match current {
        Some(d) => (
            d.first_seen().map_or(p.first_seen, |f| f.min(p.first_seen)),
            d.last_seen().map_or(p.last_seen, |l| l.max(p.last_seen)),
        ),
        None => (p.first_seen, p.last_seen),
    };
    // Whole seconds, as the API server stores times: what is written reads back equal.
    Deduplication {
        first_seen_at: Time(whole_seconds(first)),
        last_seen_at: Time(whole_seconds(last)),
        occurrence_count: total,
    }
}

fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occ() -> Arc<Occurrences> {
        Occurrences::new(Metrics::register(
            &mut prometheus_client::registry::Registry::default(),
        ))
    }

    #[test]
    fn unseen_creates_are_kept_per_name_oldest_first_and_bounded() {
        let o = occ();
        let fp = Fingerprint::of_input("ns:Deployment:a");
        let t: Timestamp = "2026-11-26T12:00:00Z".parse().unwrap();
        for i in 0..MAX_UNKNOWN_PER_NAME + 6 {
            o.unknown_create(fp, "rr-a", &format!("id-{i}"), t);
        }
        o.unknown_create(fp, "rr-b", "id-b", t);
        assert!(!o.is_empty(), "creates to check keep the accounting busy");
        let mut taken = std::mem::take(&mut *o.lock_unknown());
        let a = taken.remove("rr-a").unwrap();
        assert_eq!(a.identities.len(), MAX_UNKNOWN_PER_NAME);
        assert_eq!(a.identities[0], "id-6", "the oldest are forgotten");
        // Put back unchecked while a newer one arrived: the older stay in front, the bound holds.
        o.unknown_create(fp, "rr-a", "id-new", t);
        o.unknown_again("rr-a", a);
        let again = &o.lock_unknown()["rr-a"];
        assert_eq!(again.identities.len(), MAX_UNKNOWN_PER_NAME);
        assert_eq!(again.identities.last().map(String::as_str), Some("id-new"));
        assert_eq!(again.identities[0], "id-7");
    }

    #[test]
    fn occurrences_coalesce_per_object() {
        let o = occ();
        let fp = Fingerprint::of_input("ns:Deployment:a");
        let t1: Timestamp = "2026-11-26T12:00:00Z".parse().unwrap();
        let t2: Timestamp = "2026-11-26T12:00:05Z".parse().unwrap();
        let (old, new) = (Some(Uuid::from_u128(1)), Some(Uuid::from_u128(2)));
        assert_eq!(o.record(fp, "rr-a", old, t2, None), 1);
        let created = Created {
            resource_version: Some("7".into()),
        };
        assert_eq!(o.record(fp, "rr-a", old, t1, Some(created.clone())), 2);
        assert_eq!(o.record(fp, "rr-b", None, t1, None), 1);
        // The same name, another object (deleted and re-created): counted apart.
        assert_eq!(o.record(fp, "rr-a", new, t2, None), 1);
        assert_eq!((o.pending("rr-a", old), o.pending("rr-a", new)), (2, 1));
        assert_eq!(o.pending_total(), 4);
        let taken = o.take(&[]);
        let a = &taken[&ObjectKey::new("rr-a", old)];
        assert_eq!(
            (a.delta, a.first_seen, a.last_seen, a.created.as_ref()),
            (2, t1, t2, Some(&created))
        );
        assert_eq!(o.pending_total(), 0);
        o.requeue(ObjectKey::new("rr-a", old), a.clone());
        o.record(fp, "rr-a", old, t2, None);
        assert_eq!(o.pending_total(), 3);
    }

    #[test]
    fn an_rr_stays_pending_until_its_flush_settles() {
        let o = occ();
        let fp = Fingerprint::of_input("ns:Deployment:a");
        let t: Timestamp = "2026-11-26T12:00:00Z".parse().unwrap();
        let gauge = || o.metrics.occurrence_pending.get();
        o.record(fp, "rr-a", None, t, None);
        o.record(fp, "rr-b", None, t, None);
        assert_eq!(gauge(), 2);
        // Taken by a flush whose writes are in flight: not written yet, still pending.
        let mut batch = o.take(&[]);
        assert_eq!(gauge(), 2, "a flush in flight has written nothing yet");
        o.record(fp, "rr-c", None, t, None);
        assert_eq!(gauge(), 3);
        // rr-a is written, rr-b failed and waits for the next round.
        let b = batch.remove(&ObjectKey::new("rr-b", None)).unwrap();
        o.requeue(ObjectKey::new("rr-b", None), b);
        o.settled();
        assert_eq!(gauge(), 2, "rr-b and rr-c");
        o.take(&[]);
        o.settled();
        assert_eq!(gauge(), 0);
    }

    fn known(annotations: &[(&str, &str)], count: Option<i32>) -> Known {
        let rr: RemediationRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "kubernaut.ai/v1alpha1", "kind": "RemediationRequest",
            "metadata": {"name": "rr", "uid": Uuid::from_u128(1).to_string(), "resourceVersion": "5",
                "annotations": annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
            "spec": {"signalFingerprint": "a".repeat(64), "signalName": "x", "severity": "critical",
                "signalType": "alert", "targetType": "kubernetes",
                "targetResource": {"kind": "Deployment", "name": "a"},
                "firingTime": "2026-11-26T12:00:00Z", "receivedTime": "2026-11-26T12:00:00Z"},
            "status": count.map(|c| serde_json::json!({"deduplication": {
                "firstSeenAt": "2026-11-26T12:00:00Z", "lastSeenAt": "2026-11-26T12:00:00Z",
                "occurrenceCount": c}})),
        }))
        .unwrap();
        Known::of(&rr, 0)
    }

    #[test]
    fn the_count_is_the_annotations_sum_whatever_the_status_says() {
        let a = |i: &str| format!("{}{i}", meta::OCCURRENCES_PREFIX);
        let (ka, kb) = (a("pod-a-1"), a("pod-b-2"));
        // A whole-status replacement wrote a stale or wiped count: the annotations decide.
        let k = known(&[(&ka, "6"), (&kb, "4")], Some(3));
        assert_eq!(k.total(), 10);
        // Counted by the migration before any replica wrote: the status count is the base...
        let legacy = known(&[], Some(7));
        assert_eq!(legacy.total(), 7);
        assert_eq!(legacy.effective_base(), 7);
        // ...until the base annotation records it.
        let based = known(
            &[(&ka, "2"), (meta::OCCURRENCES_BASE_ANNOTATION, "7")],
            Some(1),
        );
        assert_eq!(based.total(), 9);
        // Unrelated annotations are not counts.
        let other = known(&[("namegate.io/correlation-id", "rr"), (&ka, "x")], None);
        assert_eq!(other.total(), 0);
    }

    #[test]
    fn derived_status_widens_times_and_sets_the_total() {
        let fp = Fingerprint::of_input("ns:Deployment:a");
        let p = Pending {
            fingerprint: fp,
            delta: 5,
            first_seen: "2026-11-26T12:00:03Z".parse().unwrap(),
            last_seen: "2026-11-26T12:00:09Z".parse().unwrap(),
            created: None,
        };
        let fresh = derived(None, &p, 5);
        assert_eq!(fresh.occurrence_count, 5);
        let current = Deduplication {
            first_seen_at: Time("2026-11-26T12:00:00Z".parse().unwrap()),
            last_seen_at: Time("2026-11-26T12:00:04Z".parse().unwrap()),
            occurrence_count: 2,
        };
        let d = derived(Some(&current), &p, 14);
        assert_eq!(d.occurrence_count, 14);
        assert_eq!(d.first_seen_at, current.first_seen_at);
        assert_eq!(d.last_seen_at.0, p.last_seen);
    }

    #[test]
    fn instance_fits_an_annotation_name() {
        let id = instance_id();
        assert!(id.len() <= INSTANCE_MAX, "{id}");
        assert!(id.chars().next().unwrap().is_ascii_alphanumeric());
    }
}
