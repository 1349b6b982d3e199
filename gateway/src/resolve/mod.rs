//! Target resolution (`docs/compatibility.md`, "Owner resolution" and "Scope"): the object a signal
//! names → the workload that owns it → in scope or not.
//!
//! 1. The kind must be one the API server serves ([`kinds`], from discovery): else the signal is
//!    invalid (`unknown_kind`).
//! 2. The object must exist: else the signal is invalid (`target_not_found`) — never fingerprinted
//!    as the Pod it named.
//! 3. `controller: true` ownerReferences are followed up to [`MAX_DEPTH`] hops (Pod → ReplicaSet →
//!    Deployment, Job → CronJob); a Service hops to the first Pod its selector picks. Owners are
//!    followed only from objects of the Kubernetes groups (core, apps, batch, autoscaling, policy):
//!    a custom resource is a target of its own, as in kubernaut.
//! 4. Scope `labelled`: `kubernaut.ai/managed` on the resolved object wins, else on its namespace
//!    ([`namespaces`], from a watch); anything but `true` is unmanaged.
//!
//! Cost: every hop is one metadata read on a miss of [`objects::ObjectCache`], none on a hit; a
//! repeat signal for a target seen within the TTL makes no API call at all.

pub mod kinds;
pub mod namespaces;
pub mod objects;

use std::sync::Arc;

use crd_schema::Target;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use kinds::KindsHandle;
use namespaces::NamespaceScope;
use objects::{CacheConfig, CacheCounters, Hop, Meta, ObjectCache, ObjectKey, ReadError};

use crate::telemetry::metrics::ResultLabels;

/// Most ownerReference hops followed from the signal's object.
pub const MAX_DEPTH: usize = 5;

/// Which resolved targets are admitted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every target.
    All,
    /// Only targets labelled `kubernaut.ai/managed=true`, on themselves or their namespace.
    #[default]
    Labelled,
}

/// The outcome of resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Admit the signal for this (resolved) target.
    InScope(Target),
    /// The resolved target is not managed: answer 200 `rejected` / `unmanaged_resource`.
    Unmanaged(Target),
}

impl Resolution {
    pub fn target(&self) -> &Target {
        match self {
            Self::InScope(t) | Self::Unmanaged(t) => t,
        }
    }
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum ResolveError {
    /// The API server serves no such kind.
    #[error("the API server serves no kind {kind:?}")]
    UnknownKind { kind: String },
    /// A namespaced kind without a namespace.
    #[error("{kind} is namespaced but the signal names no namespace")]
    NoNamespace { kind: String },
    /// The signal's object does not exist.
    #[error("{kind} {name:?} does not exist{}", in_namespace(.namespace))]
    NotFound {
        kind: String,
        namespace: String,
        name: String,
    },
    /// RBAC forbids reading the signal's object.
    #[error("{0}")]
    Forbidden(ReadError),
    /// Discovery or the namespace watch has not completed yet; retryable.
    #[error("{0} has not synced yet")]
    NotReady(&'static str),
    /// The API server did not answer; retryable.
    #[error("{0}")]
    Unavailable(ReadError),
}

fn in_namespace(ns: &str) -> String {
    if ns.is_empty() {
        String::new()
    } else {
        format!(" in namespace {ns:?}")
    }
}

impl ResolveError {
    /// 503 + Retry-After rather than a rejection.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::NotReady(_) | Self::Unavailable(_))
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// A short stable code for audit `error_code` and the rejection reason.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownKind { .. } => "unknown_kind",
            Self::NoNamespace { .. } => "no_namespace",
            Self::NotFound { .. } => "target_not_found",
            Self::Forbidden(_) => "target_unreadable",
            Self::NotReady(_) => "resolver_not_ready",
            Self::Unavailable(_) => "apiserver_unavailable",
        }
    }
}

/// Metrics of resolution.
#[derive(Clone, Debug, Default)]
pub struct ResolveMetrics {
    pub cache: CacheCounters,
    /// Resolutions by `result` = `in_scope` | `unmanaged` | the [`ResolveError::code`].
    pub resolutions: Family<ResultLabels, Counter>,
    pub cache_entries: Gauge,
    pub labelled_namespaces: Gauge,
    pub kinds: Gauge,
}

impl ResolveMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "namegate_target_cache_lookups",
            "Owner-resolution cache lookups by result (hit, miss)",
            m.cache.lookups.clone(),
        );
        registry.register(
            "namegate_target_reads",
            "Metadata reads of signal targets and their owners, by result (found, missing, forbidden, error)",
            m.cache.reads.clone(),
        );
        registry.register(
            "namegate_target_resolutions",
            "Target resolutions by result (in_scope, unmanaged, or the rejection/failure code)",
            m.resolutions.clone(),
        );
        registry.register(
            "namegate_target_cache_entries",
            "Objects held by the owner-resolution cache",
            m.cache_entries.clone(),
        );
        registry.register(
            "namegate_scope_labelled_namespaces",
            "Namespaces carrying kubernaut.ai/managed, held from the namespace watch",
            m.labelled_namespaces.clone(),
        );
        registry.register(
            "namegate_discovery_kinds",
            "Kinds served by the API server, from the last discovery",
            m.kinds.clone(),
        );
        m
    }
}

#[derive(Clone, Debug)]
pub struct Resolver {
    kinds: KindsHandle,
    objects: ObjectCache,
    namespaces: NamespaceScope,
    scope: Scope,
    metrics: ResolveMetrics,
}

impl Resolver {
    pub fn new(
        client: kube::Client,
        kinds: KindsHandle,
        namespaces: NamespaceScope,
        scope: Scope,
        cache: CacheConfig,
        metrics: ResolveMetrics,
    ) -> Self {
        Self {
            objects: ObjectCache::new(client, cache, metrics.cache.clone()),
            kinds,
            namespaces,
            scope,
            metrics,
        }
    }

    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// Discovery has run and, under `scope: labelled`, the namespace watch has listed.
    pub fn is_synced(&self) -> bool {
        !self.kinds.get().is_empty() && (self.scope == Scope::All || self.namespaces.is_synced())
    }

    /// Resolves `target` to its workload and decides its scope.
    pub async fn resolve(&self, target: &Target) -> Result<Resolution, ResolveError> {
        let result = self.resolve_inner(target).await;
        let label = match &result {
            Ok(Resolution::InScope(_)) => "in_scope",
            Ok(Resolution::Unmanaged(_)) => "unmanaged",
            Err(e) => e.code(),
        };
        self.metrics
            .resolutions
            .get_or_create(&ResultLabels { result: label })
            .inc();
        self.metrics
            .cache_entries
            .set(i64::try_from(self.objects.len()).unwrap_or(i64::MAX));
        self.metrics
            .labelled_namespaces
            .set(i64::try_from(self.namespaces.len()).unwrap_or(i64::MAX));
        result
    }

    async fn resolve_inner(&self, target: &Target) -> Result<Resolution, ResolveError> {
        let kinds = self.kinds.get();
        if kinds.is_empty() {
            return Err(ResolveError::NotReady("API discovery"));
        }
        self.metrics
            .kinds
            .set(i64::try_from(kinds.len()).unwrap_or(i64::MAX));
        let info = kinds
            .lookup(&target.kind, target.api_version.as_deref())
            .ok_or_else(|| ResolveError::UnknownKind {
                kind: target.kind.clone(),
            })?;
        let namespace = if info.namespaced {
            if target.namespace.is_empty() {
                return Err(ResolveError::NoNamespace {
                    kind: target.kind.clone(),
                });
            }
            target.namespace.clone()
        } else {
            String::new()
        };

        let mut current = info.clone();
        let mut name = target.name.clone();
        let mut managed = None;
        // Other groups serving the same Kind, tried in order when the object is not in the first
        // (a Kind served by two groups: kubernaut's existence check).
        let mut others = kinds
            .candidates(&target.kind)
            .filter(|c| c.resource.group != info.resource.group && c.namespaced == info.namespaced);
        for depth in 0..=MAX_DEPTH {
            let key = ObjectKey {
                group: current.resource.group.clone(),
                kind: current.resource.kind.clone(),
                namespace: namespace.clone(),
                name: name.clone(),
            };
            let mut meta = match self.objects.get(&key, &current).await {
                Ok(meta) => meta,
                Err(e) if depth == 0 && e.is_forbidden() => return Err(ResolveError::Forbidden(e)),
                // An owner we may not read stays the target, its labels unknown.
                Err(e) if e.is_forbidden() => break,
                Err(e) => return Err(ResolveError::Unavailable(e)),
            };
            while depth == 0 && *meta == Meta::Missing {
                let Some(other) = others.next() else { break };
                let key = ObjectKey {
                    group: other.resource.group.clone(),
                    ..key.clone()
                };
                match self.objects.get(&key, other).await {
                    Ok(m) if *m != Meta::Missing => {
                        current = other.clone();
                        meta = m;
                    }
                    Ok(_) => {}
                    Err(e) if e.is_forbidden() => {}
                    Err(e) => return Err(ResolveError::Unavailable(e)),
                }
            }
            let next = match &*meta {
                Meta::Missing if depth == 0 => {
                    return Err(ResolveError::NotFound {
                        kind: target.kind.clone(),
                        namespace,
                        name,
                    });
                }
                // The owner is named by its dependent but gone (being replaced or orphaning):
                // it still is the workload's identity, as in kubernaut.
                Meta::Missing => break,
                Meta::Present { next, managed: m } => {
                    managed = *m;
                    next.clone()
                }
            };
            let Some(Hop {
                api_version,
                kind,
                name: next_name,
            }) = next
            else {
                break;
            };
            if depth == MAX_DEPTH || !current.follows_owners() {
                break;
            }
            let Some(next_info) = kinds.lookup(&kind, Some(&api_version)) else {
                // An owner of a kind no longer served: the chain ends at it, unread.
                current.resource.kind = kind;
                current.resource.api_version = api_version;
                name = next_name;
                managed = None;
                break;
            };
            current = next_info.clone();
            name = next_name;
            managed = None;
        }

        let resolved = Target {
            cluster: target.cluster.clone(),
            namespace: namespace.clone(),
            kind: current.resource.kind.clone(),
            name,
            api_version: Some(current.resource.api_version.clone()),
        };
        if self.scope == Scope::All {
            return Ok(Resolution::InScope(resolved));
        }
        let managed = match managed {
            Some(m) => m,
            None if namespace.is_empty() => false,
            None => self
                .namespaces
                .managed(&namespace)
                .ok_or(ResolveError::NotReady("the namespace watch"))?
                .unwrap_or(false),
        };
        Ok(if managed {
            Resolution::InScope(resolved)
        } else {
            Resolution::Unmanaged(resolved)
        })
    }
}

/// Starts discovery and the namespace watch; returns their handles and tasks.
pub fn spawn_watches(
    client: &kube::Client,
    labels: crate::adapters::LabelTable,
    stop: &tokio_util::sync::CancellationToken,
) -> (
    KindsHandle,
    NamespaceScope,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let kinds = KindsHandle::new(labels);
    let namespaces = NamespaceScope::default();
    let tasks = vec![
        tokio::spawn(kinds.clone().run(client.clone(), stop.clone())),
        tokio::spawn(namespaces.clone().run(client.clone(), stop.clone())),
    ];
    (kinds, namespaces, tasks)
}

/// Shared handle type for the ingestion path.
pub type SharedResolver = Arc<Resolver>;
