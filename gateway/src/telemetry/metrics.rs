//! Prometheus metrics (docs/operations.md). Every family is `namegate_`-prefixed and every label set is
//! closed: adapters, outcomes, verbs and status-code classes come from enums, never from input.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdapterLabels {
    pub adapter: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: AdmissionOutcome,
}

/// The outcome of one signal. `failed` covers retryable failures answered with 503.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum AdmissionOutcome {
    created,
    duplicate,
    rejected,
    ignored,
    failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub verb: ApiVerb,
    /// The HTTP status as text (`201`, `409`, …) or `error` when no response came back. Bounded: the
    /// API server answers a small set of codes.
    pub code: String,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ApiVerb {
    create,
    get,
    list,
    watch,
    /// Metadata patches: the per-replica occurrence totals.
    patch,
    patch_status,
    tokenreview,
    subjectaccessreview,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProblemLabels {
    pub status: u16,
}

/// Labels of `namegate_auth_cache_lookups_total`: `cache` is `token` or `access`, `result` is `hit`,
/// `miss` or `coalesced` (auth::cache::Lookup).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthCacheLabels {
    pub cache: &'static str,
    pub result: &'static str,
}

/// All gateway metrics except the audit writer's, which registers its own.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub signals_received: Family<AdapterLabels, Counter>,
    pub admission_outcomes: Family<OutcomeLabels, Counter>,
    pub admission_duration: Family<OutcomeLabels, Histogram>,
    pub apiserver_requests: Family<ApiLabels, Counter>,
    pub index_rrs: Gauge,
    pub index_synced: Gauge,
    pub index_tombstones: Gauge,
    pub index_resyncs: Counter,
    pub occurrence_flushes: Family<ResultLabels, Counter>,
    pub occurrence_pending: Gauge,
    pub hash_collisions: Counter,
    pub http_problems: Family<ProblemLabels, Counter>,
    pub circuit_open: Gauge,
    pub auth_cache: Family<AuthCacheLabels, Counter>,
    pub handler_panics: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            signals_received: Family::default(),
            admission_outcomes: Family::default(),
            admission_duration: Family::new_with_constructor(|| {
                // 100 µs … ~6.5 s: the duplicate path lives at the low end, creates near 1–20 ms.
                Histogram::new(exponential_buckets(0.0001, 2.0, 17))
            }),
            apiserver_requests: Family::default(),
            index_rrs: Gauge::default(),
            index_synced: Gauge::default(),
            index_tombstones: Gauge::default(),
            index_resyncs: Counter::default(),
            occurrence_flushes: Family::default(),
            occurrence_pending: Gauge::default(),
            hash_collisions: Counter::default(),
            http_problems: Family::default(),
            circuit_open: Gauge::default(),
            auth_cache: Family::default(),
            handler_panics: Counter::default(),
        };
        let r = registry;
        r.register(
            "namegate_signals_received",
            "Signals decoded, by adapter",
            m.signals_received.clone(),
        );
        r.register(
            "namegate_admission_outcomes",
            "Admission decisions, by outcome",
            m.admission_outcomes.clone(),
        );
        r.register(
            "namegate_admission_duration_seconds",
            "Time from decoded signal to decision, by outcome",
            m.admission_duration.clone(),
        );
        r.register(
            "namegate_apiserver_requests",
            "Requests to the Kubernetes API server, by verb and HTTP code",
            m.apiserver_requests.clone(),
        );
        r.register(
            "namegate_index_rrs",
            "RemediationRequests held in the index",
            m.index_rrs.clone(),
        );
        r.register(
            "namegate_index_synced",
            "1 once the index has completed its initial list",
            m.index_synced.clone(),
        );
        r.register(
            "namegate_index_tombstones",
            "Recently deleted RR attempts remembered to bound the deletion window",
            m.index_tombstones.clone(),
        );
        r.register(
            "namegate_index_resyncs",
            "Full re-lists of the RR index (start, 410 Gone, errors)",
            m.index_resyncs.clone(),
        );
        r.register(
            "namegate_occurrence_flushes",
            "Status writes of coalesced occurrence counts, by result",
            m.occurrence_flushes.clone(),
        );
        r.register(
            "namegate_occurrence_pending_rrs",
            "RRs with occurrences not yet written to the API server",
            m.occurrence_pending.clone(),
        );
        r.register(
            "namegate_hash_collisions",
            "Creates refused because an RR of that name has another fingerprint",
            m.hash_collisions.clone(),
        );
        r.register(
            "namegate_http_problems",
            "Problem responses, by HTTP status",
            m.http_problems.clone(),
        );
        r.register(
            "namegate_apiserver_circuit_open",
            "1 while the API server circuit breaker is open",
            m.circuit_open.clone(),
        );
        r.register(
            "namegate_auth_cache_lookups",
            "TokenReview (cache=token) and SubjectAccessReview (cache=access) cache lookups, by result",
            m.auth_cache.clone(),
        );
        r.register(
            "namegate_http_handler_panics",
            "Requests whose handler panicked (answered 500 problem+json)",
            m.handler_panics.clone(),
        );
        m
    }
}
