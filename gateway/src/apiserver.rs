//! The RemediationRequest API as admission and occurrence accounting use it: classification of API
//! server answers by `reason` (never by code alone), bounded jittered retries inside a deadline, a
//! circuit breaker, and a request counter by verb and code.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crd_schema::RemediationRequest;
use crd_schema::rr::Deduplication;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rand::Rng;
use serde_json::json;
use tokio::time::Instant;

use crate::telemetry::metrics::{ApiLabels, ApiVerb, Metrics};

/// How the API server (or the way to it) answered.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 409 with reason `AlreadyExists`: the name (the lock) is taken.
    #[error("an object of that name already exists")]
    AlreadyExists,
    /// 409 with reason `Conflict`: a resourceVersion or UID precondition failed.
    #[error("precondition failed (conflict)")]
    Conflict,
    #[error("not found")]
    NotFound,
    /// The request itself was refused (400/403/422…): retrying cannot help.
    #[error("refused by the API server: {code} {reason}: {message}")]
    Refused {
        code: u16,
        reason: String,
        message: String,
    },
    /// 429, 5xx, timeouts, connection errors, or the deadline ran out while retrying.
    #[error("API server unavailable: {detail}")]
    Unavailable {
        detail: String,
        retry_after: Duration,
    },
    /// The circuit breaker is open: the API server failed repeatedly and is being given a rest.
    #[error("API server circuit open")]
    CircuitOpen { retry_after: Duration },
}

impl ApiError {
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Self::AlreadyExists)
    }
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict)
    }
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound)
    }
    /// Failures that go away by themselves: the caller answers 503 with `Retry-After`.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::CircuitOpen { .. })
    }
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after, .. } | Self::CircuitOpen { retry_after } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    fn classify(err: kube::Error) -> Self {
        match err {
            kube::Error::Api(status) => match (status.code, status.reason.as_str()) {
                (409, "AlreadyExists") => Self::AlreadyExists,
                (409, "Conflict") => Self::Conflict,
                (404, _) => Self::NotFound,
                (429, _) | (500..=599, _) => Self::Unavailable {
                    detail: format!("{} {}", status.code, status.reason),
                    retry_after: DEFAULT_RETRY_AFTER,
                },
                // A 409 with any other reason (e.g. the object is being deleted and its name is not
                // yet free) is neither "the lock is taken" nor a precondition failure: retry it.
                (409, _) => Self::Unavailable {
                    detail: format!("409 {}: {}", status.reason, status.message),
                    retry_after: DEFAULT_RETRY_AFTER,
                },
                // 401/403 are about the gateway's own credentials or RBAC, or (403 with the cause
                // `NamespaceTerminating`) a namespace being deleted: nothing the sender did wrong, and
                // an operator's fix or time makes a retry succeed. A 500 would lose the signal for
                // good (Alertmanager retries 5xx only), so these are 503 (docs/security.md).
                (401 | 403, _) => Self::Unavailable {
                    detail: format!("{} {}: {}", status.code, status.reason, status.message),
                    retry_after: DEFAULT_RETRY_AFTER,
                },
                (code, reason) => Self::Refused {
                    code,
                    reason: reason.to_owned(),
                    message: status.message.clone(),
                },
            },
            other => Self::Unavailable {
                detail: other.to_string(),
                retry_after: DEFAULT_RETRY_AFTER,
            },
        }
    }

    fn code_label(result: &Result<(), &Self>, ok_code: u16) -> String {
        match result {
            Ok(()) => ok_code.to_string(),
            Err(Self::AlreadyExists | Self::Conflict) => "409".into(),
            Err(Self::NotFound) => "404".into(),
            Err(Self::Refused { code, .. }) => code.to_string(),
            Err(Self::Unavailable { .. }) => "error".into(),
            Err(Self::CircuitOpen { .. }) => "circuit_open".into(),
        }
    }
}

const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(2);

/// Retry and breaker settings.
#[derive(Clone, Debug)]
pub struct Resilience {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Consecutive unavailable answers that open the breaker.
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
    /// Longest wait for one answer. A call whose answer is lost (a half-open connection, a dropped
    /// reply) is abandoned and retried after this, instead of hanging until the request deadline —
    /// a create retried so meets `AlreadyExists` on its own object, which admission recognises.
    pub attempt_timeout: Duration,
}

impl Default for Resilience {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_secs(1),
            breaker_threshold: 8,
            breaker_cooldown: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(4),
        }
    }
}

/// A consecutive-failure circuit breaker. While open, calls fail at once instead of piling up on a
/// struggling API server; after the cooldown the next call is let through as a probe.
#[derive(Debug)]
struct Breaker {
    consecutive_failures: AtomicU32,
    open_until: std::sync::Mutex<Option<Instant>>,
    threshold: u32,
    cooldown: Duration,
}

impl Breaker {
    fn check(&self) -> Result<(), ApiError> {
        let guard = self.open_until.lock().unwrap_or_else(|p| p.into_inner());
        match *guard {
            Some(until) if Instant::now() < until => Err(ApiError::CircuitOpen {
                retry_after: until - Instant::now() + Duration::from_millis(500),
            }),
            _ => Ok(()),
        }
    }

    /// Returns whether the breaker state changed (for the gauge).
    fn record(&self, unavailable: bool) -> Option<bool> {
        if !unavailable {
            if self.consecutive_failures.swap(0, Ordering::Relaxed) >= self.threshold {
                *self.open_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
                return Some(false);
            }
            return None;
        }
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.threshold {
            *self.open_until.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(Instant::now() + self.cooldown);
            return Some(true);
        }
        None
    }
}

/// The RR API of one namespace.
#[derive(Clone, Debug)]
pub struct RrApi {
    api: Api<RemediationRequest>,
    metrics: Metrics,
    resilience: Resilience,
    breaker: Arc<Breaker>,
}

impl RrApi {
    pub fn new(client: Client, namespace: &str, metrics: Metrics, resilience: Resilience) -> Self {
        let breaker = Arc::new(Breaker {
            consecutive_failures: AtomicU32::new(0),
            open_until: std::sync::Mutex::new(None),
            threshold: resilience.breaker_threshold,
            cooldown: resilience.breaker_cooldown,
        });
        Self {
            api: Api::namespaced(client, namespace),
            metrics,
            resilience,
            breaker,
        }
    }

    pub fn namespace(&self) -> Option<&str> {
        self.api.namespace()
    }

    /// `create`; never retried on `AlreadyExists` (that answer is the lock working).
    pub async fn create(
        &self,
        rr: &RemediationRequest,
        deadline: Instant,
    ) -> Result<RemediationRequest, ApiError> {
        let pp = PostParams::default();
        self.call(ApiVerb::create, 201, deadline, || self.api.create(&pp, rr))
            .await
            .map_err(Self::retryable_on_create)
    }

    /// On a create, `NotFound` means the namespace or the RR resource type is not there (yet: a CRD
    /// being installed, a namespace being created) and `Conflict` a storage-level race: both go
    /// away by themselves, so they are retryable, never a final failure.
    fn retryable_on_create(e: ApiError) -> ApiError {
        match e {
            ApiError::NotFound | ApiError::Conflict => ApiError::Unavailable {
                detail: format!("create: {e}"),
                retry_after: DEFAULT_RETRY_AFTER,
            },
            other => other,
        }
    }

    /// `create`, one try (still bounded by `attempt_timeout`): for a create whose decision rests on
    /// an earlier read, which must be read again rather than retried past its freshness.
    pub async fn create_once(
        &self,
        rr: &RemediationRequest,
        deadline: Instant,
    ) -> Result<RemediationRequest, ApiError> {
        let pp = PostParams::default();
        let once = Instant::now()
            .checked_add(self.resilience.attempt_timeout)
            .map_or(deadline, |t| t.min(deadline));
        self.call_with(ApiVerb::create, 201, once, false, || {
            self.api.create(&pp, rr)
        })
        .await
    }

    /// A consistent read (no resourceVersion: served from etcd, not a cache). `None` when absent.
    pub async fn get(
        &self,
        name: &str,
        deadline: Instant,
    ) -> Result<Option<RemediationRequest>, ApiError> {
        match self
            .call(ApiVerb::get, 200, deadline, || self.api.get(name))
            .await
        {
            Ok(rr) => Ok(Some(rr)),
            Err(ApiError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A consistent list of one fingerprint's RRs via the `spec.signalFingerprint` selectable field.
    pub async fn list_fingerprint(
        &self,
        fingerprint: &str,
        deadline: Instant,
    ) -> Result<Vec<RemediationRequest>, ApiError> {
        let lp = ListParams::default().fields(&format!("spec.signalFingerprint={fingerprint}"));
        self.call(ApiVerb::list, 200, deadline, || self.api.list(&lp))
            .await
            .map(|l| l.items)
    }

    /// Writes `status.deduplication` only, as a merge patch with resourceVersion (and UID, when
    /// known) preconditions: a concurrent writer makes it fail with `Conflict` instead of losing
    /// an update, and no other status field is sent, so none can be clobbered.
    pub async fn patch_deduplication(
        &self,
        name: &str,
        uid: Option<&str>,
        resource_version: &str,
        dedup: &Deduplication,
        deadline: Instant,
    ) -> Result<RemediationRequest, ApiError> {
        let mut metadata = json!({ "resourceVersion": resource_version });
        if let Some(uid) = uid {
            metadata["uid"] = json!(uid);
        }
        let patch =
            Patch::Merge(json!({ "metadata": metadata, "status": { "deduplication": dedup } }));
        let pp = PatchParams::default();
        self.call(ApiVerb::patch_status, 200, deadline, || {
            self.api.patch_status(name, &pp, &patch)
        })
        .await
    }

    /// Sets this gateway process's occurrence total (and, on the first write, the base it adds to) in
    /// the RR's annotations: a metadata-only merge patch with resourceVersion (and UID) preconditions.
    /// Status writes never touch metadata, so no status writer can wipe it.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch_occurrence_annotations(
        &self,
        name: &str,
        uid: Option<&str>,
        resource_version: &str,
        key: &str,
        total: i32,
        base: Option<i32>,
        deadline: Instant,
    ) -> Result<RemediationRequest, ApiError> {
        let mut annotations = json!({ key: total.to_string() });
        if let Some(base) = base {
            annotations[crd_schema::meta::OCCURRENCES_BASE_ANNOTATION] = json!(base.to_string());
        }
        let mut metadata =
            json!({ "resourceVersion": resource_version, "annotations": annotations });
        if let Some(uid) = uid {
            metadata["uid"] = json!(uid);
        }
        let patch = Patch::Merge(json!({ "metadata": metadata }));
        let pp = PatchParams::default();
        self.call(ApiVerb::patch, 200, deadline, || {
            self.api.patch(name, &pp, &patch)
        })
        .await
    }

    async fn call<T, F, Fut>(
        &self,
        verb: ApiVerb,
        ok_code: u16,
        deadline: Instant,
        op: F,
    ) -> Result<T, ApiError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        self.call_with(verb, ok_code, deadline, true, op).await
    }

    async fn call_with<T, F, Fut>(
        &self,
        verb: ApiVerb,
        ok_code: u16,
        deadline: Instant,
        retry: bool,
        op: F,
    ) -> Result<T, ApiError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        let mut backoff = self.resilience.initial_backoff;
        loop {
            self.breaker
                .check()
                .inspect_err(|e| self.count(verb, ok_code, Err(e)))?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let wait = remaining.min(self.resilience.attempt_timeout);
            let result = match tokio::time::timeout(wait, op()).await {
                Ok(r) => r.map_err(ApiError::classify),
                Err(_) => Err(ApiError::Unavailable {
                    detail: format!("no answer within {wait:?}"),
                    retry_after: DEFAULT_RETRY_AFTER,
                }),
            };
            self.count(verb, ok_code, result.as_ref().map(|_| ()));
            let unavailable = matches!(&result, Err(e) if e.is_unavailable());
            if let Some(open) = self.breaker.record(unavailable) {
                self.metrics.circuit_open.set(i64::from(open));
                if open {
                    tracing::warn!(?verb, "API server circuit breaker opened");
                }
            }
            match result {
                Err(e) if unavailable && retry => {
                    // Full jitter: replicas retrying the same outage do not synchronise.
                    let sleep = rand::rng().random_range(Duration::ZERO..=backoff);
                    if Instant::now() + sleep >= deadline {
                        return Err(e);
                    }
                    tracing::debug!(?verb, error = %e, ?sleep, "retrying API server call");
                    tokio::time::sleep(sleep).await;
                    backoff = (backoff * 2).min(self.resilience.max_backoff);
                }
                other => return other,
            }
        }
    }

    fn count(&self, verb: ApiVerb, ok_code: u16, result: Result<(), &ApiError>) {
        let code = ApiError::code_label(&result, ok_code);
        self.metrics
            .apiserver_requests
            .get_or_create(&ApiLabels { verb, code })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api_err(code: u16, reason: &str) -> ApiError {
        ApiError::classify(kube::Error::Api(Box::new(
            Status::failure("m", reason).with_code(code),
        )))
    }

    #[test]
    fn a_409_is_classified_by_reason() {
        assert!(api_err(409, "AlreadyExists").is_already_exists());
        assert!(api_err(409, "Conflict").is_conflict());
        // Never "duplicate" just because the code is 409.
        let other = api_err(409, "SomethingElse");
        assert!(!other.is_already_exists() && other.is_unavailable());
        assert!(api_err(404, "NotFound").is_not_found());
        assert!(api_err(429, "TooManyRequests").is_unavailable());
        assert!(api_err(503, "ServiceUnavailable").is_unavailable());
        assert!(matches!(
            api_err(422, "Invalid"),
            ApiError::Refused { code: 422, .. }
        ));
    }

    /// The answers a retry can fix, as the API server sends them (status, reason, cause).
    #[test]
    fn answers_a_retry_can_fix_are_unavailable() {
        // The body kube-apiserver sends for a create in a namespace being deleted.
        let terminating: Status = serde_json::from_value(json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403,
            "reason": "Forbidden",
            "message": "remediationrequests.kubernaut.ai \"x\" is forbidden: unable to create new content in namespace ns because it is being terminated",
            "details": {"name": "x", "group": "kubernaut.ai", "kind": "remediationrequests",
                "causes": [{"reason": "NamespaceTerminating", "field": "metadata.namespace",
                    "message": "namespace ns is being terminated"}]},
        }))
        .unwrap();
        let terminating = ApiError::classify(kube::Error::Api(Box::new(terminating)));
        assert!(terminating.is_unavailable(), "{terminating:?}");
        // The gateway's own RBAC or credentials: fixable by an operator, never the sender's fault.
        assert!(api_err(403, "Forbidden").is_unavailable());
        assert!(api_err(401, "Unauthorized").is_unavailable());
        // A validating webhook that timed out (failurePolicy: Fail) answers 500 InternalError.
        assert!(api_err(500, "InternalError").is_unavailable());
        assert!(api_err(504, "Timeout").is_unavailable());
        // Transport errors.
        assert!(
            ApiError::classify(kube::Error::Service("connection refused".into())).is_unavailable()
        );
        // On create: the CRD not served yet / the namespace missing, and a Conflict.
        for e in [api_err(404, "NotFound"), api_err(409, "Conflict")] {
            assert!(RrApi::retryable_on_create(e).is_unavailable());
        }
        assert!(RrApi::retryable_on_create(api_err(409, "AlreadyExists")).is_already_exists());
        // What no retry fixes stays refused.
        assert!(!RrApi::retryable_on_create(api_err(422, "Invalid")).is_unavailable());
        assert!(!api_err(400, "BadRequest").is_unavailable());
    }

    #[test]
    fn breaker_opens_after_threshold_and_closes_on_success() {
        let b = Breaker {
            consecutive_failures: AtomicU32::new(0),
            open_until: std::sync::Mutex::new(None),
            threshold: 3,
            cooldown: Duration::from_secs(60),
        };
        assert_eq!(b.record(true), None);
        assert_eq!(b.record(true), None);
        assert!(b.check().is_ok());
        assert_eq!(b.record(true), Some(true));
        assert!(matches!(b.check(), Err(ApiError::CircuitOpen { .. })));
        assert_eq!(b.record(false), Some(false));
        assert!(b.check().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_lets_a_probe_through_after_the_cooldown() {
        let b = Breaker {
            consecutive_failures: AtomicU32::new(0),
            open_until: std::sync::Mutex::new(None),
            threshold: 1,
            cooldown: Duration::from_secs(3),
        };
        b.record(true);
        assert!(b.check().is_err());
        tokio::time::advance(Duration::from_millis(2_999)).await;
        assert!(b.check().is_err());
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(b.check().is_ok());
    }
}
