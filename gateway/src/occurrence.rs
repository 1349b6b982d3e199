//! Occurrence accounting (contract §7a).
//!
//! Every 201 and 202 is one occurrence of the RR it names. Occurrences are coalesced in memory per RR
//! and written by a flusher at most once per `flush_interval` as `status.deduplication` merge patches
//! with resourceVersion (and UID) preconditions, so concurrent writers — other replicas, the
//! orchestrator — cause a `Conflict` and a re-read, never a lost update. The request path only touches
//! a mutex-guarded map: a duplicate costs no API call.
//!
//! Durability: what is pending when the process is SIGKILLed is lost (at most one flush interval of
//! this replica's occurrences). SIGTERM flushes everything before exit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crd_schema::Fingerprint;
use crd_schema::rr::Deduplication;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::apiserver::{ApiError, RrApi};
use crate::telemetry::metrics::{Metrics, ResultLabels};

#[derive(Clone, Debug, PartialEq, Eq)]
struct Pending {
    fingerprint: Fingerprint,
    uid: Option<Uuid>,
    delta: i32,
    first_seen: Timestamp,
    last_seen: Timestamp,
    /// Set when this replica created the RR: the create response's resourceVersion, so the first
    /// status write needs no read.
    created_rv: Option<String>,
}

impl Pending {
    fn merge(&mut self, other: Pending) {
        self.delta = self.delta.saturating_add(other.delta);
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.uid = self.uid.or(other.uid);
        self.created_rv = self.created_rv.take().or(other.created_rv);
    }
}

/// The request-side half: records occurrences.
#[derive(Debug)]
pub struct Occurrences {
    pending: Mutex<HashMap<String, Pending>>,
    metrics: Metrics,
}

impl Occurrences {
    pub fn new(metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            pending: Mutex::default(),
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        // The map holds plain counters; a panic elsewhere cannot leave it inconsistent.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one occurrence of RR `name`; returns this replica's unflushed count for it.
    pub fn record(
        &self,
        fingerprint: Fingerprint,
        name: &str,
        uid: Option<Uuid>,
        at: Timestamp,
        created_rv: Option<String>,
    ) -> i32 {
        let one = Pending {
            fingerprint,
            uid,
            delta: 1,
            first_seen: at,
            last_seen: at,
            created_rv,
        };
        let mut pending = self.lock();
        let delta = match pending.get_mut(name) {
            Some(p) => {
                p.merge(one);
                p.delta
            }
            None => {
                pending.insert(name.to_owned(), one);
                1
            }
        };
        self.metrics.occurrence_pending.set(pending.len() as i64);
        delta
    }

    /// Occurrences of RR `name` recorded here but not yet written.
    pub fn pending(&self, name: &str) -> i32 {
        self.lock().get(name).map_or(0, |p| p.delta)
    }

    /// Occurrences recorded but not yet written.
    pub fn pending_total(&self) -> i64 {
        self.lock().values().map(|p| i64::from(p.delta)).sum()
    }

    fn take(&self) -> HashMap<String, Pending> {
        let taken = std::mem::take(&mut *self.lock());
        self.metrics.occurrence_pending.set(0);
        taken
    }

    fn requeue(&self, name: String, p: Pending) {
        let mut pending = self.lock();
        match pending.get_mut(&name) {
            Some(existing) => existing.merge(p),
            None => {
                pending.insert(name, p);
            }
        }
        self.metrics.occurrence_pending.set(pending.len() as i64);
    }
}

/// What this replica last wrote for an RR; fresher than the index right after a write.
#[derive(Clone, Debug)]
struct Known {
    uid: Option<Uuid>,
    resource_version: String,
    dedup: Option<Deduplication>,
    round: u64,
}

/// The writing half.
///
/// Each replica instance owns one key of `status.deduplication.replicaCounts` and writes its absolute
/// total there, with `occurrenceCount` recomputed as the sum. An absolute value makes every write
/// idempotent: when a write times out after the API server applied it, the retry (which then meets a
/// `Conflict`, re-reads and writes again) sets the same total instead of adding the delta twice.
#[derive(Debug)]
pub struct Flusher {
    occurrences: Arc<Occurrences>,
    api: RrApi,
    metrics: Metrics,
    interval: Duration,
    /// This process's key in `replicaCounts`: unique per incarnation, so no two writers share a key.
    instance: String,
    known: Mutex<HashMap<String, Known>>,
    /// Per RR: this instance's total as last confirmed written, and the round it was last used.
    mine: Mutex<HashMap<String, (i32, u64)>>,
}

/// Conflicts tolerated for one RR in one flush before the delta waits for the next round.
const MAX_CONFLICTS: usize = 8;
/// RRs written concurrently in one flush.
const FLUSH_CONCURRENCY: usize = 32;
/// Time allowed to one RR's status write (its reads and conflict retries included).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Rounds a `Known` entry survives without use.
const KNOWN_ROUNDS: u64 = 120;

enum WriteError {
    /// Keep the occurrences and try again next round.
    Retry(ApiError),
    /// The RR is gone (deleted, or replaced by another object of that name): the occurrences belong to
    /// an RR that no longer exists.
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
            instance: instance_id(),
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
        while self.occurrences.pending_total() > 0 && Instant::now() < deadline {
            round += 1;
            self.flush_once(round, Some(deadline)).await;
            if self.occurrences.pending_total() > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let lost = self.occurrences.pending_total();
        if lost > 0 {
            tracing::error!(lost, "occurrences could not be written before shutdown");
        }
    }

    /// One round: writes every pending RR once; `drain_deadline` caps the writes during shutdown.
    pub async fn flush_once(&self, round: u64, drain_deadline: Option<Instant>) -> usize {
        let batch = self.occurrences.take();
        if batch.is_empty() {
            return 0;
        }
        let results = futures::stream::iter(batch)
            .map(|(name, p)| async move {
                // Each write gets its own deadline: one per round would cut off the writes that queue
                // behind slow ones, after the API server may already have applied them.
                let own = Instant::now() + WRITE_TIMEOUT;
                let deadline = drain_deadline.map_or(own, |d| d.min(own));
                let outcome = self.write(&name, &p, round, deadline).await;
                (name, p, outcome)
            })
            .buffer_unordered(FLUSH_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut written = 0;
        for (name, p, outcome) in results {
            let result = match outcome {
                Ok(()) => {
                    written += 1;
                    "ok"
                }
                Err(WriteError::Gone) => {
                    tracing::warn!(rr = %name, occurrences = p.delta, "RR gone before its occurrences were written");
                    "gone"
                }
                Err(WriteError::Retry(e)) => {
                    tracing::warn!(rr = %name, error = %e, "occurrence flush failed; retrying next round");
                    self.occurrences.requeue(name, p);
                    "retry"
                }
            };
            self.metrics
                .occurrence_flushes
                .get_or_create(&ResultLabels { result })
                .inc();
        }
        // An RR idle this long has no write of unknown outcome left (those are retried every round, which
        // refreshes `mine`), so forgetting it is safe: the next contact reads this instance's total back.
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

    fn starting_point(&self, name: &str, p: &Pending) -> Option<Known> {
        if let Some(known) = self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Some(known.clone());
        }
        // A new RR: its status is empty, and the create response's resourceVersion saves a read.
        p.created_rv.as_ref().map(|rv| Known {
            uid: p.uid,
            resource_version: rv.clone(),
            dedup: None,
            round: 0,
        })
    }

    async fn read(&self, name: &str, p: &Pending, deadline: Instant) -> Result<Known, WriteError> {
        let rr = self
            .api
            .get(name, deadline)
            .await
            .map_err(WriteError::Retry)?
            .ok_or(WriteError::Gone)?;
        let uid = rr.metadata.uid.as_deref().and_then(|u| u.parse().ok());
        if p.uid.is_some() && uid != p.uid {
            return Err(WriteError::Gone);
        }
        Ok(Known {
            uid,
            resource_version: rr.metadata.resource_version.clone().unwrap_or_default(),
            dedup: rr.status.and_then(|s| s.deduplication),
            round: 0,
        })
    }

    /// This instance's confirmed total for `name`, remembered before the first write so that a write
    /// whose outcome is unknown is never mistaken for the starting point.
    fn confirmed_mine(&self, name: &str, base: &Known, round: u64) -> i32 {
        let mut mine = self.mine.lock().unwrap_or_else(|p| p.into_inner());
        let entry = mine.entry(name.to_owned()).or_insert_with(|| {
            let on_server = base
                .dedup
                .as_ref()
                .and_then(|d| d.replica_counts.get(&self.instance))
                .copied();
            (on_server.unwrap_or(0), round)
        });
        entry.1 = round;
        entry.0
    }

    async fn write(
        &self,
        name: &str,
        p: &Pending,
        round: u64,
        deadline: Instant,
    ) -> Result<(), WriteError> {
        let mut base = match self.starting_point(name, p) {
            Some(k) => k,
            None => self.read(name, p, deadline).await?,
        };
        let mine = self
            .confirmed_mine(name, &base, round)
            .saturating_add(p.delta);
        for _ in 0..MAX_CONFLICTS {
            let dedup = merged(base.dedup.as_ref(), p, &self.instance, mine);
            let uid = p.uid.or(base.uid).map(|u| u.to_string());
            match self
                .api
                .patch_deduplication(
                    name,
                    uid.as_deref(),
                    &base.resource_version,
                    &dedup,
                    deadline,
                )
                .await
            {
                Ok(rr) => {
                    let known = Known {
                        uid: rr.metadata.uid.as_deref().and_then(|u| u.parse().ok()),
                        resource_version: rr.metadata.resource_version.unwrap_or_default(),
                        dedup: rr.status.and_then(|s| s.deduplication),
                        round,
                    };
                    self.known
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(name.to_owned(), known);
                    self.mine
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(name.to_owned(), (mine, round));
                    return Ok(());
                }
                Err(ApiError::Conflict) => base = self.read(name, p, deadline).await?,
                Err(ApiError::NotFound) => return Err(WriteError::Gone),
                Err(e) => return Err(WriteError::Retry(e)),
            }
        }
        Err(WriteError::Retry(ApiError::Conflict))
    }
}

/// A unique key per process: the pod (or host) name and a random suffix.
fn instance_id() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
                .take(63)
                .collect()
        })
        .filter(|h: &String| !h.is_empty())
        .unwrap_or_else(|| "namegate".to_owned());
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// The deduplication status to write: this instance's total `mine` under its own key (a merge patch
/// leaves the other keys alone), and the total recomputed from the current status.
fn merged(
    current: Option<&Deduplication>,
    p: &Pending,
    instance: &str,
    mine: i32,
) -> Deduplication {
    let (first, last, others, earlier_writers) = match current {
        Some(d) => {
            let keyed: i32 = d
                .replica_counts
                .values()
                .fold(0, |a, n| a.saturating_add(*n));
            let others = keyed.saturating_sub(d.replica_counts.get(instance).copied().unwrap_or(0));
            // Counts written without per-replica keys (an older gateway, the migration) are kept.
            let earlier = d.occurrence_count.saturating_sub(keyed).max(0);
            (
                d.first_seen_at.0.min(p.first_seen),
                d.last_seen_at.0.max(p.last_seen),
                others,
                earlier,
            )
        }
        None => (p.first_seen, p.last_seen, 0, 0),
    };
    Deduplication {
        first_seen_at: Time(first),
        last_seen_at: Time(last),
        occurrence_count: earlier_writers.saturating_add(others).saturating_add(mine),
        replica_counts: [(instance.to_owned(), mine)].into(),
    }
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
    fn occurrences_coalesce_per_rr() {
        let o = occ();
        let fp = Fingerprint::of_input("ns:Deployment:a");
        let t1: Timestamp = "2026-11-26T12:00:00Z".parse().unwrap();
        let t2: Timestamp = "2026-11-26T12:00:05Z".parse().unwrap();
        assert_eq!(o.record(fp, "rr-a", None, t2, None), 1);
        assert_eq!(o.record(fp, "rr-a", None, t1, Some("7".into())), 2);
        assert_eq!(o.record(fp, "rr-b", None, t1, None), 1);
        assert_eq!(o.pending_total(), 3);
        let taken = o.take();
        let a = &taken["rr-a"];
        assert_eq!(
            (a.delta, a.first_seen, a.last_seen, a.created_rv.as_deref()),
            (2, t1, t2, Some("7"))
        );
        assert_eq!(o.pending_total(), 0);
        o.requeue("rr-a".into(), a.clone());
        o.record(fp, "rr-a", None, t2, None);
        assert_eq!(o.pending_total(), 3);
    }

    #[test]
    fn merge_writes_an_absolute_total_under_this_instances_key() {
        let fp = Fingerprint::of_input("ns:Deployment:a");
        let p = Pending {
            fingerprint: fp,
            uid: None,
            delta: 5,
            first_seen: "2026-11-26T12:00:03Z".parse().unwrap(),
            last_seen: "2026-11-26T12:00:09Z".parse().unwrap(),
            created_rv: None,
        };
        let fresh = merged(None, &p, "me", 5);
        assert_eq!((fresh.occurrence_count, fresh.replica_counts["me"]), (5, 5));

        // 4 counted by an older writer without keys, 3 by another replica, 2 already by us.
        let current = Deduplication {
            first_seen_at: Time("2026-11-26T12:00:00Z".parse().unwrap()),
            last_seen_at: Time("2026-11-26T12:00:04Z".parse().unwrap()),
            occurrence_count: 9,
            replica_counts: [("other".to_owned(), 3), ("me".to_owned(), 2)].into(),
        };
        let m = merged(Some(&current), &p, "me", 7);
        assert_eq!(m.occurrence_count, 4 + 3 + 7);
        assert_eq!(
            m.replica_counts,
            [("me".to_owned(), 7)].into(),
            "only our key is written"
        );
        assert_eq!(m.first_seen_at, current.first_seen_at);
        assert_eq!(m.last_seen_at.0, p.last_seen);

        // Re-applying the same write after it already landed changes nothing: idempotent.
        let landed = Deduplication {
            occurrence_count: m.occurrence_count,
            replica_counts: [("other".to_owned(), 3), ("me".to_owned(), 7)].into(),
            ..current
        };
        assert_eq!(merged(Some(&landed), &p, "me", 7).occurrence_count, 14);
    }
}
