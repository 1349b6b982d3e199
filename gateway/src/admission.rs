//! Admission (docs/architecture.md): one signal in, "created" or "duplicate" out, with the RR name as the lock.
//!
//! 1. The index says whether a suppressing RR exists: if so the signal is its duplicate (no API call).
//! 2. Otherwise, with `k` the highest live attempt, create `name(fp, k+1)`. When `k ≥ 1` the index's
//!    RR `k` is first re-read from the API server (a consistent GET): it may have become suppressing
//!    (answer duplicate) or have been deleted (re-derive `k` by a consistent list). This read is what
//!    bounds the deletion window analysed in `docs/decisions/0001-name-as-lock.md`.
//! 3. `409 AlreadyExists` → GET the name: our own create (see below) → created; another fingerprint →
//!    collision alarm; being deleted → brief retry then 503; suppressing → duplicate; terminal → next
//!    attempt (bounded).
//!
//! A create whose answer is lost (timeout, reset, a 504 after the write) is retried, and the retry
//! meets `409 AlreadyExists` on the object the first try made. Every admission therefore marks what it
//! creates with its own identity (annotation `namegate.io/created-by`, a UUID per admission) and
//! recognises it on the read after the 409: the request that made the RR is answered "created",
//! never a duplicate of itself (`docs/reliability.md`, "Lost answers").

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crd_schema::name::{self, Attempt};
use crd_schema::rr::{RemediationRequestSpec, TargetResource, TargetType};
use crd_schema::{Fingerprint, RemediationRequest, meta};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::time::Instant;
use uuid::Uuid;

use crate::apiserver::{ApiError, RrApi};
use crate::index::{RrIndex, RrRef};
use crate::occurrence::{Created, Occurrences, created_by};
use crate::signal::Signal;

/// How many successive attempts one signal may try after `AlreadyExists` on terminal RRs.
const MAX_REATTEMPTS: u32 = 16;
/// Waits for an RR that is being deleted to go away before answering 503.
const DELETING_RETRIES: u32 = 3;
const DELETING_WAIT: Duration = Duration::from_millis(200);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Created(Admitted),
    Duplicate(Admitted),
}

impl Decision {
    pub fn admitted(&self) -> &Admitted {
        match self {
            Self::Created(a) | Self::Duplicate(a) => a,
        }
    }
}

/// The RR a signal was admitted to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitted {
    pub fingerprint: Fingerprint,
    pub name: String,
    /// 0 for a legacy RR without an attempt label.
    pub attempt: u32,
    pub uid: Option<Uuid>,
    /// The occurrence count as far as this replica knows it (the RR's last written count plus this
    /// replica's unflushed occurrences): exact after quiescence, a lower bound during a storm.
    pub count: i32,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// Set when this admission's create made the object (which then holds this process's occurrence
    /// total of 1), with the create response's resourceVersion when it was seen.
    pub created: Option<Created>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error(transparent)]
    Api(#[from] ApiError),
    /// An RR of the computed name carries another fingerprint: SHA-256 collided, or someone created
    /// that name by hand. Never resolved automatically.
    #[error("RR {name} exists with fingerprint {existing}, not {expected}")]
    HashCollision {
        name: String,
        existing: String,
        expected: String,
    },
    #[error("RR {name} is being deleted; its name is not free yet")]
    BeingDeleted { name: String },
    #[error("gave up after {MAX_REATTEMPTS} successive attempts found terminal RRs")]
    TooManyAttempts,
    #[error("attempt numbers of this fingerprint are exhausted")]
    AttemptsExhausted,
}

impl AdmissionError {
    /// Retryable: the client gets 503 with `Retry-After`.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api(e) => e.is_unavailable(),
            Self::BeingDeleted { .. } | Self::TooManyAttempts => true,
            Self::HashCollision { .. } | Self::AttemptsExhausted => false,
        }
    }

    pub fn is_hash_collision(&self) -> bool {
        matches!(self, Self::HashCollision { .. })
    }

    pub fn retry_after(&self) -> Duration {
        match self {
            Self::Api(e) => e.retry_after().unwrap_or(Duration::from_secs(1)),
            _ => Duration::from_secs(1),
        }
    }

    /// A short stable code for audit `error_code` and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Api(ApiError::Refused { .. }) => "apiserver_refused",
            Self::Api(ApiError::CircuitOpen { .. }) => "apiserver_circuit_open",
            Self::Api(_) => "apiserver_unavailable",
            Self::HashCollision { .. } => "hash_collision",
            Self::BeingDeleted { .. } => "rr_being_deleted",
            Self::TooManyAttempts => "too_many_attempts",
            Self::AttemptsExhausted => "attempts_exhausted",
        }
    }
}

#[derive(Debug)]
pub struct Admission {
    index: Arc<RrIndex>,
    api: RrApi,
    occurrences: Arc<Occurrences>,
    namespace: String,
}

/// What re-reading attempt n-1 decided.
enum Reread {
    Decided(Decision),
    /// Create this attempt (again).
    Retry(Attempt),
}

/// First pause before re-reading after a failed create; doubles up to [`REREAD_BACKOFF_MAX`].
const REREAD_BACKOFF: Duration = Duration::from_millis(25);
const REREAD_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A jittered pause inside `deadline`; `false` when none fits.
async fn pause(backoff: &mut Duration, deadline: Instant) -> bool {
    let sleep = rand::random_range(Duration::ZERO..=*backoff);
    if Instant::now() + sleep >= deadline {
        return false;
    }
    tokio::time::sleep(sleep).await;
    *backoff = (*backoff * 2).min(REREAD_BACKOFF_MAX);
    true
}

/// What the API server said about one RR, reduced to what the decision needs.
#[derive(Clone)]
struct Observed {
    name: String,
    fingerprint: Option<Fingerprint>,
    uid: Option<Uuid>,
    attempt: u32,
    deleting: bool,
    suppressing: bool,
    count: i32,
    first_seen: Option<Timestamp>,
    last_seen: Option<Timestamp>,
}

impl Observed {
    fn of(rr: &RemediationRequest, now: Timestamp) -> Self {
        let dedup = rr.status.as_ref().and_then(|s| s.deduplication.as_ref());
        let name = rr.metadata.name.clone().unwrap_or_default();
        let fingerprint = rr.spec.signal_fingerprint.parse().ok();
        let attempt = name::parse(&name)
            .ok()
            .filter(|p| Some(p.fingerprint) == fingerprint)
            .map(|p| p.attempt.get())
            .or_else(|| {
                rr.metadata
                    .labels
                    .as_ref()?
                    .get(meta::ATTEMPT_LABEL)?
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        Self {
            uid: rr.metadata.uid.as_deref().and_then(|u| u.parse().ok()),
            attempt,
            deleting: rr.metadata.deletion_timestamp.is_some(),
            suppressing: rr.metadata.deletion_timestamp.is_none()
                && rr.phase_view().is_suppressing(now),
            count: dedup.map_or(0, |d| d.occurrence_count),
            first_seen: dedup.and_then(|d| d.first_seen()),
            last_seen: dedup.and_then(|d| d.last_seen()),
            fingerprint,
            name,
        }
    }
}

impl Admission {
    pub fn new(
        index: Arc<RrIndex>,
        api: RrApi,
        occurrences: Arc<Occurrences>,
        namespace: String,
    ) -> Self {
        Self {
            index,
            api,
            occurrences,
            namespace,
        }
    }

    /// The RR index this admission consults.
    pub fn index(&self) -> &Arc<RrIndex> {
        &self.index
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub async fn admit(
        &self,
        signal: &Signal,
        deadline: Instant,
    ) -> Result<Decision, AdmissionError> {
        let fp = signal.fingerprint;
        let now = signal.received_time;
        let lookup = self.index.lookup(&fp, now);
        if let Some(rr) = lookup.suppressing {
            return Ok(self.duplicate_of_indexed(&fp, rr, now));
        }

        let mut k = lookup.highest.as_ref().map_or(0, |h| h.attempt);
        if let Some(highest) = lookup.highest {
            // Consistent read of the RR the index believes is the newest (see module docs).
            match self.api.get(&highest.name, deadline).await? {
                Some(rr) => {
                    let seen = Observed::of(&rr, now);
                    if seen.fingerprint == Some(fp) && seen.suppressing {
                        return Ok(self.duplicate_of_observed(&fp, seen, now));
                    }
                }
                None => match self.consistent_highest(&fp, now, deadline).await? {
                    Ok(dup) => return Ok(dup),
                    Err(highest) => k = highest,
                },
            }
        }

        let attempt = Attempt::new(k.saturating_add(1)).ok_or(AdmissionError::AttemptsExhausted)?;
        let identity = Uuid::now_v7().to_string();
        let mut unknown = Vec::new();
        let decided = self
            .create(signal, attempt, &identity, &mut unknown, deadline)
            .await;
        // A create that may have landed without this admission learning it (its answer was lost and
        // the admission ended otherwise) carried this process's total of 1: the flusher finds out and
        // takes it back (docs/reliability.md, "Occurrence counts").
        let made = match &decided {
            Ok(Decision::Created(a)) => Some(a.name.as_str()),
            _ => None,
        };
        for name in unknown.iter().filter(|n| Some(n.as_str()) != made) {
            self.occurrences.unknown_create(fp, name, &identity, now);
        }
        decided
    }

    /// Creates attempt `attempt` (or a later one) under `identity`; `unknown` collects the names whose
    /// create may have landed unseen (an `Unavailable` answer: a timeout, a reset, a 5xx).
    async fn create(
        &self,
        signal: &Signal,
        mut attempt: Attempt,
        identity: &str,
        unknown: &mut Vec<String>,
        deadline: Instant,
    ) -> Result<Decision, AdmissionError> {
        let fp = signal.fingerprint;
        let now = signal.received_time;
        let mut deleting_waits = 0;
        let mut tries = 0;
        let mut backoff = REREAD_BACKOFF;
        loop {
            tries += 1;
            if tries > MAX_REATTEMPTS {
                return Err(AdmissionError::TooManyAttempts);
            }
            let mut rr = build_rr(signal, attempt);
            rr.metadata.annotations.get_or_insert_default().extend([
                (meta::CREATED_BY_ANNOTATION.to_owned(), identity.to_owned()),
                // The creating signal, counted in this process's total from the start: a new RR's
                // first flush is then one status write (docs/reliability.md, "Occurrence counts").
                (self.occurrences.annotation().to_owned(), "1".to_owned()),
            ]);
            let rr_name = name::name(&fp, attempt);
            // A create of attempt n ≥ 2 rests on the read of attempt n-1: it is tried once, and on a
            // retryable failure that read is made again rather than the create retried past its
            // freshness (docs/reliability.md, "The deletion window").
            let result = if attempt.get() >= 2 {
                self.api.create_once(&rr, deadline).await
            } else {
                self.api.create(&rr, deadline).await
            };
            // Unavailable: sent, answer lost. CircuitOpen: the breaker may have opened after an
            // earlier try of this call was sent.
            if let Err(ApiError::Unavailable { .. } | ApiError::CircuitOpen { .. }) = &result
                && !unknown.contains(&rr_name)
            {
                unknown.push(rr_name.clone());
            }
            match result {
                Ok(created) => {
                    return Ok(Decision::Created(Admitted {
                        fingerprint: fp,
                        name: rr_name,
                        attempt: attempt.get(),
                        uid: created.metadata.uid.as_deref().and_then(|u| u.parse().ok()),
                        count: 0,
                        first_seen: now,
                        last_seen: now,
                        created: Some(Created {
                            resource_version: created.metadata.resource_version,
                        }),
                    }));
                }
                Err(ApiError::AlreadyExists) => {}
                Err(e) if e.is_unavailable() && attempt.get() >= 2 => {
                    if !pause(&mut backoff, deadline).await {
                        return Err(e.into());
                    }
                    match self
                        .reread_previous(&fp, attempt, identity, now, deadline)
                        .await?
                    {
                        Reread::Decided(d) => return Ok(d),
                        Reread::Retry(a) => attempt = a,
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            // The name is taken: read what holds it, from the API server, not the cache.
            let Some(existing) = self.api.get(&rr_name, deadline).await? else {
                // Deleted between our create and our read: the name is free again, try it once more.
                continue;
            };
            if created_by(&existing) == Some(identity) && seen_fingerprint(&existing, &fp) {
                // Our own create landed; only its answer was lost.
                tracing::info!(rr = %rr_name, "a create whose answer was lost had landed: it is ours");
                return Ok(Decision::Created(Admitted {
                    fingerprint: fp,
                    name: rr_name,
                    attempt: attempt.get(),
                    uid: existing
                        .metadata
                        .uid
                        .as_deref()
                        .and_then(|u| u.parse().ok()),
                    count: 0,
                    first_seen: now,
                    last_seen: now,
                    created: Some(Created::default()),
                }));
            }
            let seen = Observed::of(&existing, now);
            if seen.fingerprint != Some(fp) {
                return Err(AdmissionError::HashCollision {
                    name: rr_name,
                    existing: existing.spec.signal_fingerprint.clone(),
                    expected: fp.to_hex(),
                });
            }
            if seen.deleting {
                deleting_waits += 1;
                if deleting_waits > DELETING_RETRIES || Instant::now() + DELETING_WAIT >= deadline {
                    return Err(AdmissionError::BeingDeleted { name: rr_name });
                }
                tokio::time::sleep(DELETING_WAIT).await;
                continue;
            }
            if seen.suppressing {
                return Ok(self.duplicate_of_observed(&fp, seen, now));
            }
            attempt = attempt.next().ok_or(AdmissionError::AttemptsExhausted)?;
        }
    }

    /// After a failed create of `attempt` (n ≥ 2): reads attempt n-1 again. Still there and terminal →
    /// try `attempt` again; suppressing → duplicate; gone → continue from the true highest attempt
    /// (a consistent list), recognising an RR this admission made with the lost create.
    async fn reread_previous(
        &self,
        fp: &Fingerprint,
        attempt: Attempt,
        identity: &str,
        now: Timestamp,
        deadline: Instant,
    ) -> Result<Reread, AdmissionError> {
        let previous = Attempt::new(attempt.get() - 1).ok_or(AdmissionError::AttemptsExhausted)?;
        if let Some(rr) = self.api.get(&name::name(fp, previous), deadline).await? {
            let seen = Observed::of(&rr, now);
            if seen.fingerprint == Some(*fp) && seen.suppressing && !seen.deleting {
                return Ok(Reread::Decided(self.duplicate_of_observed(fp, seen, now)));
            }
            return Ok(Reread::Retry(attempt));
        }
        let items = self.api.list_fingerprint(&fp.to_hex(), deadline).await?;
        if let Some(ours) = items.iter().find(|rr| created_by(rr) == Some(identity)) {
            let seen = Observed::of(ours, now);
            return Ok(Reread::Decided(Decision::Created(Admitted {
                fingerprint: *fp,
                name: seen.name,
                attempt: seen.attempt,
                uid: seen.uid,
                count: 0,
                first_seen: now,
                last_seen: now,
                created: Some(Created::default()),
            })));
        }
        let seen: Vec<Observed> = items.iter().map(|rr| Observed::of(rr, now)).collect();
        if let Some(o) = seen
            .iter()
            .filter(|o| o.suppressing)
            .max_by_key(|o| o.attempt)
        {
            return Ok(Reread::Decided(self.duplicate_of_observed(
                fp,
                o.clone(),
                now,
            )));
        }
        let k = seen.iter().map(|o| o.attempt).max().unwrap_or(0);
        Attempt::new(k.saturating_add(1))
            .map(Reread::Retry)
            .ok_or(AdmissionError::AttemptsExhausted)
    }

    /// The index's newest RR is gone: list the fingerprint consistently. `Ok` = a duplicate of a
    /// suppressing RR found there; `Err(k)` = the true highest live attempt to continue from.
    async fn consistent_highest(
        &self,
        fp: &Fingerprint,
        now: Timestamp,
        deadline: Instant,
    ) -> Result<Result<Decision, u32>, AdmissionError> {
        let items = self.api.list_fingerprint(&fp.to_hex(), deadline).await?;
        let seen: Vec<Observed> = items.iter().map(|rr| Observed::of(rr, now)).collect();
        let k = seen.iter().map(|o| o.attempt).max().unwrap_or(0);
        let best = seen
            .into_iter()
            .filter(|o| o.suppressing)
            .max_by_key(|o| o.attempt);
        Ok(match best {
            Some(o) => Ok(self.duplicate_of_observed(fp, o, now)),
            None => Err(k),
        })
    }

    fn duplicate_of_indexed(&self, fp: &Fingerprint, rr: RrRef, now: Timestamp) -> Decision {
        Decision::Duplicate(Admitted {
            fingerprint: *fp,
            count: rr.occurrence_count,
            first_seen: rr.first_seen.unwrap_or(now),
            last_seen: now.max(rr.last_seen.unwrap_or(now)),
            name: rr.name,
            attempt: rr.attempt,
            uid: Some(rr.uid),
            created: None,
        })
    }

    fn duplicate_of_observed(&self, fp: &Fingerprint, o: Observed, now: Timestamp) -> Decision {
        Decision::Duplicate(Admitted {
            fingerprint: *fp,
            count: o.count,
            first_seen: o.first_seen.unwrap_or(now),
            last_seen: now.max(o.last_seen.unwrap_or(now)),
            name: o.name,
            attempt: o.attempt,
            uid: o.uid,
            created: None,
        })
    }

    /// The occurrence count this decision makes once it is answered, as far as this replica knows:
    /// the RR's written count, plus this replica's unflushed occurrences, plus this one.
    pub fn expected_count(&self, decision: &Decision) -> i32 {
        let a = decision.admitted();
        let pending = self.occurrences.pending(&a.name, a.uid);
        match decision {
            Decision::Created(_) => pending.saturating_add(1),
            Decision::Duplicate(_) => a.count.saturating_add(pending).saturating_add(1),
        }
    }

    /// Counts the decision as one occurrence of its RR (docs/architecture.md). Called only once the answer
    /// that reports it (201/202, or its line in a 207) is certain to be sent, so that after
    /// quiescence the RRs' counts equal the answers given; a batch answered 503 records nothing.
    pub fn record(&self, decision: &mut Decision, at: Timestamp) {
        let (a, created) = match decision {
            Decision::Created(a) => (a, true),
            Decision::Duplicate(a) => (a, false),
        };
        let pending = self
            .occurrences
            .record(a.fingerprint, &a.name, a.uid, at, a.created.take());
        a.count = if created {
            pending
        } else {
            a.count.saturating_add(pending)
        };
    }
}

impl Admission {
    /// The decision will not be answered (its batch is answered 503 and re-delivered): nothing is
    /// counted, but an RR this process created carries its total of 1 from the create, which is
    /// written back to 0 ([`Occurrences::unanswered_create`]).
    pub fn abandon(&self, decision: &mut Decision, at: Timestamp) {
        if let Decision::Created(a) = decision
            && let Some(created) = a.created.take()
        {
            self.occurrences
                .unanswered_create(a.fingerprint, &a.name, a.uid, at, created);
        }
    }
}

fn seen_fingerprint(rr: &RemediationRequest, fp: &Fingerprint) -> bool {
    rr.spec.signal_fingerprint == fp.to_hex()
}

/// The RR for attempt `attempt` of `signal` (docs/api.md): spec from the signal, the attempt label and
/// correlation annotation, no ownerReferences.
pub fn build_rr(signal: &Signal, attempt: Attempt) -> RemediationRequest {
    let rr_name = name::name(&signal.fingerprint, attempt);
    let target = &signal.target;
    let mut rr = RemediationRequest::new(
        &rr_name,
        RemediationRequestSpec {
            signal_fingerprint: signal.fingerprint.to_hex(),
            signal_name: signal.name.clone(),
            severity: signal.severity.clone(),
            signal_type: "alert".into(),
            signal_source: Some(signal.source.as_str().into()),
            target_type: TargetType::Kubernetes,
            target_resource: TargetResource {
                kind: target.kind.clone(),
                name: target.name.clone(),
                namespace: (!target.namespace.is_empty()).then(|| target.namespace.clone()),
                api_version: target.api_version.clone(),
            },
            cluster_id: target.cluster.clone().filter(|c| !c.is_empty()),
            firing_time: Time(signal.firing_time),
            received_time: Time(signal.received_time),
            signal_labels: signal.labels.clone(),
            signal_annotations: signal.annotations.clone(),
            provider_data: signal.provider_data.clone(),
            original_payload: Some(signal.original_payload.clone()),
        },
    );
    rr.metadata.labels = Some(BTreeMap::from([
        (
            meta::MANAGED_BY_KEY.to_owned(),
            meta::MANAGED_BY_VALUE.to_owned(),
        ),
        (meta::ATTEMPT_LABEL.to_owned(), attempt.to_string()),
    ]));
    rr.metadata.annotations = Some(BTreeMap::from([(
        meta::CORRELATION_ANNOTATION.to_owned(),
        rr_name,
    )]));
    rr
}
