//! The object metadata cache behind owner resolution: per object, its controller owner (the next
//! hop) and its scope label, read with metadata-only requests and kept for a bounded time.
//!
//! - bounded: at most `capacity` objects (least recently used evicted first);
//! - expiring: an object read is kept `ttl`, an object found missing `missing_ttl` (short: a new
//!   object of that name may appear);
//! - single-flight: concurrent lookups of one object wait for one read (`moka`'s `try_get_with`);
//! - errors are not cached.
//!
//! A Service is the one kind read in full: its next hop is the first Pod (by name) its selector
//! picks, as in kubernaut — a Service read plus a metadata-only list of those Pods.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{DynamicObject, ListParams};
use kube::{Api, Client};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::kinds::KindInfo;
use super::namespaces::managed_value;
use crate::telemetry::metrics::ResultLabels;

/// One object, as the cache keys it.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ObjectKey {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// The next object up the chain: the controller owner, or a Service's chosen Pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

/// What is known about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Meta {
    Missing,
    Present {
        next: Option<Hop>,
        /// `kubernaut.ai/managed` on the object.
        managed: Option<bool>,
    },
}

/// Why an object could not be read.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ReadError {
    /// The gateway's ServiceAccount may not read this kind (RBAC): a configuration problem.
    #[error("the gateway may not read {plural}.{group} (RBAC forbids it)")]
    Forbidden { plural: String, group: String },
    /// The API server did not answer usefully in time; retryable.
    #[error("reading {what} failed: {detail}")]
    Unavailable { what: String, detail: String },
}

impl ReadError {
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Self::Forbidden { .. })
    }
}

struct ByOutcome {
    found: Duration,
    missing: Duration,
}

impl moka::Expiry<ObjectKey, Arc<Meta>> for ByOutcome {
    fn expire_after_create(
        &self,
        _key: &ObjectKey,
        value: &Arc<Meta>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(match **value {
            Meta::Missing => self.missing,
            Meta::Present { .. } => self.found,
        })
    }
}

/// Cache settings (defaults in `config.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    pub capacity: u64,
    pub ttl: Duration,
    pub missing_ttl: Duration,
}

/// Counters of the cache (registered by `resolve::ResolveMetrics`).
#[derive(Clone, Debug, Default)]
pub struct CacheCounters {
    /// Lookups by `result` = `hit` | `miss`.
    pub lookups: Family<ResultLabels, Counter>,
    /// API reads by `result` = `found` | `missing` | `forbidden` | `error`.
    pub reads: Family<ResultLabels, Counter>,
}

#[derive(Clone)]
pub struct ObjectCache {
    client: Client,
    cache: moka::future::Cache<ObjectKey, Arc<Meta>>,
    counters: CacheCounters,
}

impl std::fmt::Debug for ObjectCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectCache")
            .field("entries", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

impl ObjectCache {
    pub fn new(client: Client, cfg: CacheConfig, counters: CacheCounters) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(cfg.capacity)
            .expire_after(ByOutcome {
                found: cfg.ttl,
                missing: cfg.missing_ttl,
            })
            .build();
        Self {
            client,
            cache,
            counters,
        }
    }

    /// Objects held (approximate: moka counts lazily).
    pub fn len(&self) -> u64 {
        self.cache.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The object's metadata: from the cache, or one read (shared with concurrent callers).
    pub async fn get(&self, key: &ObjectKey, info: &KindInfo) -> Result<Arc<Meta>, ReadError> {
        if let Some(meta) = self.cache.get(key).await {
            self.count_lookup("hit");
            return Ok(meta);
        }
        self.count_lookup("miss");
        self.cache
            .try_get_with(key.clone(), async {
                let result = self.read(key, info).await;
                let label = match &result {
                    Ok(Meta::Present { .. }) => "found",
                    Ok(Meta::Missing) => "missing",
                    Err(e) if e.is_forbidden() => "forbidden",
                    Err(_) => "error",
                };
                self.counters
                    .reads
                    .get_or_create(&ResultLabels { result: label })
                    .inc();
                result.map(Arc::new)
            })
            .await
            .map_err(|e| (*e).clone())
    }

    fn count_lookup(&self, result: &'static str) {
        self.counters
            .lookups
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    async fn read(&self, key: &ObjectKey, info: &KindInfo) -> Result<Meta, ReadError> {
        if key.group.is_empty() && key.kind == "Service" {
            return self.read_service(key).await;
        }
        let api: Api<DynamicObject> = if info.namespaced {
            Api::namespaced_with(self.client.clone(), &key.namespace, &info.resource)
        } else {
            Api::all_with(self.client.clone(), &info.resource)
        };
        let meta = api
            .get_metadata_opt(&key.name)
            .await
            .map_err(|e| classify(e, info))?;
        Ok(match meta {
            None => Meta::Missing,
            Some(obj) => Meta::Present {
                next: obj
                    .metadata
                    .owner_references
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .find(|r| r.controller == Some(true))
                    .map(|r| Hop {
                        api_version: r.api_version.clone(),
                        kind: r.kind.clone(),
                        name: r.name.clone(),
                    }),
                managed: managed_value(obj.metadata.labels.as_ref()),
            },
        })
    }

    async fn read_service(&self, key: &ObjectKey) -> Result<Meta, ReadError> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &key.namespace);
        let svc_info = |plural: &str| KindInfo {
            resource: kube::discovery::ApiResource {
                group: String::new(),
                version: "v1".into(),
                api_version: "v1".into(),
                kind: String::new(),
                plural: plural.into(),
            },
            namespaced: true,
            singular: String::new(),
        };
        let Some(svc) = services
            .get_opt(&key.name)
            .await
            .map_err(|e| classify(e, &svc_info("services")))?
        else {
            return Ok(Meta::Missing);
        };
        let managed = managed_value(svc.metadata.labels.as_ref());
        let selector: BTreeMap<String, String> =
            svc.spec.and_then(|s| s.selector).unwrap_or_default();
        if selector.is_empty() {
            return Ok(Meta::Present {
                next: None,
                managed,
            });
        }
        let labels = selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let list = pods
            .list_metadata(&ListParams::default().labels(&labels))
            .await
            .map_err(|e| classify(e, &svc_info("pods")))?;
        let first = list
            .items
            .iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .min();
        Ok(Meta::Present {
            next: first.map(|name| Hop {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: name.to_owned(),
            }),
            managed,
        })
    }
}

fn classify(e: kube::Error, info: &KindInfo) -> ReadError {
    match &e {
        kube::Error::Api(s) if s.code == 403 => ReadError::Forbidden {
            plural: info.resource.plural.clone(),
            group: if info.resource.group.is_empty() {
                "core".into()
            } else {
                info.resource.group.clone()
            },
        },
        _ => ReadError::Unavailable {
            what: info.resource.plural.clone(),
            detail: e.to_string(),
        },
    }
}
