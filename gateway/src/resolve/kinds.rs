//! Kinds from API discovery: which label keys name a kind, and how to read an object of a kind.
//!
//! The table is built from aggregated discovery (`/api` and `/apis`, two requests) at start and
//! rebuilt whenever a CustomResourceDefinition appears, changes or goes (a metadata-only watch of
//! CRDs), so a CRD installed after the gateway started becomes a target kind without a restart and
//! without a request per signal. See `docs/compatibility.md` ("Target kinds").
//!
//! Label keys: each served resource's singular name (`persistentvolumeclaim`,
//! `horizontalpodautoscaler`, a CRD's `spec.names.singular`) and its lowercased Kind. When two groups
//! serve one key, the first group in discovery order wins, as in kubernaut, except that the
//! Kubernetes groups (core, `apps`, `batch`, `autoscaling`, `policy`) always come first.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::core::PartialObjectMeta;
use kube::core::discovery::v2::APIGroupDiscoveryList;
use kube::discovery::ApiResource;
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use crate::adapters::{LabelTable, ResourceLabel};

/// Groups whose owner chains are followed (kubernaut stops at other groups: CRD controllers have
/// owner chains of their own design).
pub const KUBERNETES_GROUPS: [&str; 5] = ["", "apps", "batch", "autoscaling", "policy"];

/// Workload controllers: label keys of these kinds are tried first (kubernaut's first tier).
const FIRST_TIER: [&str; 5] = [
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "CronJob",
    "DeploymentConfig",
];
/// Leaves: tried last (kubernaut's last tier).
const LAST_TIER: [&str; 2] = ["Pod", "Node"];

/// One served resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindInfo {
    pub resource: ApiResource,
    pub namespaced: bool,
    pub singular: String,
}

impl KindInfo {
    pub fn follows_owners(&self) -> bool {
        KUBERNETES_GROUPS.contains(&self.resource.group.as_str())
    }
}

/// A discovery snapshot.
#[derive(Clone, Debug, Default)]
pub struct Kinds {
    infos: Vec<KindInfo>,
    /// Kind → indices into `infos`, Kubernetes groups first.
    by_kind: HashMap<String, Vec<usize>>,
    /// (group, Kind) → index.
    by_group_kind: HashMap<(String, String), usize>,
    /// Label keys for the Prometheus adapter, in priority order.
    labels: Arc<[ResourceLabel]>,
}

impl Kinds {
    /// Builds the table from served resources in discovery order (subresources excluded).
    pub fn from_infos(mut infos: Vec<KindInfo>) -> Self {
        // Stable: keeps discovery order within each class.
        infos.sort_by_key(|i| !i.follows_owners());
        let mut by_kind: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_group_kind = HashMap::new();
        for (n, info) in infos.iter().enumerate() {
            let key = (info.resource.group.clone(), info.resource.kind.clone());
            if by_group_kind.contains_key(&key) {
                continue;
            }
            by_group_kind.insert(key, n);
            by_kind
                .entry(info.resource.kind.clone())
                .or_default()
                .push(n);
        }
        let mut seen = std::collections::HashSet::new();
        let mut labels: Vec<(u8, ResourceLabel)> = Vec::new();
        for &n in by_group_kind
            .values()
            .collect::<std::collections::BTreeSet<_>>()
        {
            let info = &infos[n];
            let tier = if FIRST_TIER.contains(&info.resource.kind.as_str()) {
                0
            } else if LAST_TIER.contains(&info.resource.kind.as_str()) {
                2
            } else {
                1
            };
            for key in [info.singular.clone(), info.resource.kind.to_lowercase()] {
                if !key.is_empty() && seen.insert(key.clone()) {
                    labels.push((
                        tier,
                        ResourceLabel {
                            label: key,
                            kind: info.resource.kind.clone(),
                            api_version: Some(info.resource.api_version.clone()),
                            cluster_scoped: !info.namespaced,
                        },
                    ));
                }
            }
        }
        labels.sort_by_key(|(tier, _)| *tier);
        Self {
            infos,
            by_kind,
            by_group_kind,
            labels: labels.into_iter().map(|(_, l)| l).collect(),
        }
    }

    /// Parses aggregated discovery documents (`/api` and `/apis`).
    pub fn from_aggregated(lists: &[APIGroupDiscoveryList]) -> Self {
        let mut infos = Vec::new();
        for group in lists.iter().flat_map(|l| &l.items) {
            let name = group
                .metadata
                .as_ref()
                .and_then(|m| m.name.clone())
                .unwrap_or_default();
            // Versions are listed in preference order: the first serving a kind wins.
            for version in &group.versions {
                let Some(v) = version.version.as_deref() else {
                    continue;
                };
                for r in &version.resources {
                    let (Some(plural), Some(kind)) = (
                        r.resource.as_deref(),
                        r.response_kind.as_ref().and_then(|k| k.kind.as_deref()),
                    ) else {
                        continue;
                    };
                    if plural.contains('/') || kind.is_empty() {
                        continue;
                    }
                    let api_version = if name.is_empty() {
                        v.to_owned()
                    } else {
                        format!("{name}/{v}")
                    };
                    infos.push(KindInfo {
                        resource: ApiResource {
                            group: name.clone(),
                            version: v.to_owned(),
                            api_version,
                            kind: kind.to_owned(),
                            plural: plural.to_owned(),
                        },
                        namespaced: r.scope.as_deref() != Some("Cluster"),
                        singular: r
                            .singular_resource
                            .clone()
                            .filter(|s| !s.is_empty())
                            .unwrap_or_else(|| kind.to_lowercase()),
                    });
                }
            }
        }
        Self::from_infos(infos)
    }

    pub fn is_empty(&self) -> bool {
        self.infos.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_group_kind.len()
    }

    /// The resource of `kind`: of the group of `api_version` when given and served, else the
    /// first group serving the kind.
    pub fn lookup(&self, kind: &str, api_version: Option<&str>) -> Option<&KindInfo> {
        if let Some(av) = api_version.filter(|v| !v.is_empty()) {
            let group = av.rsplit_once('/').map_or("", |(g, _)| g);
            if let Some(&n) = self.by_group_kind.get(&(group.to_owned(), kind.to_owned())) {
                return Some(&self.infos[n]);
            }
        }
        self.by_kind
            .get(kind)
            .and_then(|v| v.first())
            .map(|&n| &self.infos[n])
    }

    /// Every group serving `kind`, Kubernetes groups first, then in discovery order.
    pub fn candidates(&self, kind: &str) -> impl Iterator<Item = &KindInfo> {
        self.by_kind
            .get(kind)
            .into_iter()
            .flatten()
            .map(|&n| &self.infos[n])
    }

    /// Label keys that name a kind, in kubernaut's priority order (workload controllers, other
    /// resources, Pod and Node).
    pub fn labels(&self) -> Arc<[ResourceLabel]> {
        self.labels.clone()
    }
}

/// The current snapshot, shared by the resolver; every refresh also republishes the label keys to
/// the adapters' [`LabelTable`].
#[derive(Clone, Debug, Default)]
pub struct KindsHandle {
    kinds: Arc<RwLock<Arc<Kinds>>>,
    labels: LabelTable,
}

impl KindsHandle {
    pub fn new(labels: LabelTable) -> Self {
        Self {
            kinds: Arc::default(),
            labels,
        }
    }

    pub fn get(&self) -> Arc<Kinds> {
        self.kinds.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, kinds: Kinds) {
        self.labels.replace(kinds.labels());
        *self.kinds.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(kinds);
    }

    /// Runs discovery once.
    pub async fn refresh(&self, client: &Client) -> Result<usize, kube::Error> {
        let apis = client.list_api_groups_aggregated().await?;
        let core = client.list_core_api_versions_aggregated().await?;
        let kinds = Kinds::from_aggregated(&[core, apis]);
        let n = kinds.len();
        if n > 0 {
            self.set(kinds);
        }
        Ok(n)
    }

    /// Keeps the snapshot current: discovery at start (retried until it succeeds) and after every
    /// CRD change reported by a metadata-only watch of CRDs. A CRD is served (and listed by
    /// discovery) a moment after its object changes, so each change is followed by a few more
    /// refreshes, 0.5 s to 8 s later ([`FOLLOW_UPS`]): at most a dozen discovery runs (two requests
    /// each) per burst of CRD changes, none per signal.
    pub async fn run(self, client: Client, stop: CancellationToken) {
        let crds: kube::Api<PartialObjectMeta<CustomResourceDefinition>> =
            kube::Api::all(client.clone());
        let mut events = std::pin::pin!(watcher::watcher(crds, watcher::Config::default()));
        let mut failed = !self.refresh_logged(&client).await;
        // Index into FOLLOW_UPS of the next follow-up refresh, if any is due.
        let mut follow_up: Option<usize> = None;
        loop {
            let wait = if failed {
                Duration::from_secs(2)
            } else {
                follow_up.map_or(Duration::from_secs(3600), |i| FOLLOW_UPS[i])
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {
                    failed = !self.refresh_logged(&client).await;
                    if !failed {
                        follow_up = follow_up.map(|i| i + 1).filter(|&i| i < FOLLOW_UPS.len());
                    }
                }
                ev = events.next() => match ev {
                    // The initial listing changes nothing discovery has not seen.
                    Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::InitDone)) => {}
                    Some(Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))) => {
                        failed = !self.refresh_logged(&client).await;
                        follow_up = Some(0);
                    }
                    Some(Err(e)) => tracing::debug!(error = %e, "CRD watch error; the watcher retries"),
                    None => return,
                },
            }
        }
    }

    async fn refresh_logged(&self, client: &Client) -> bool {
        match self.refresh(client).await {
            Ok(n) => {
                tracing::debug!(kinds = n, "API discovery refreshed");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "API discovery failed; retrying in 2 s");
                false
            }
        }
    }
}

/// Delays of the refreshes that follow a CRD change.
const FOLLOW_UPS: [Duration; 5] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn info(group: &str, kind: &str, plural: &str, namespaced: bool) -> KindInfo {
        let api_version = if group.is_empty() {
            "v1".to_owned()
        } else {
            format!("{group}/v1")
        };
        KindInfo {
            resource: ApiResource {
                group: group.into(),
                version: "v1".into(),
                api_version,
                kind: kind.into(),
                plural: plural.into(),
            },
            namespaced,
            singular: kind.to_lowercase(),
        }
    }

    #[test]
    fn priority_tiers_and_kubernetes_groups_first() {
        let kinds = Kinds::from_infos(vec![
            info("example.com", "Deployment", "deployments", true),
            info("", "Pod", "pods", true),
            info("", "PersistentVolumeClaim", "persistentvolumeclaims", true),
            info("apps", "Deployment", "deployments", true),
            info("", "Node", "nodes", false),
            info("stable.example.com", "CronTab", "crontabs", true),
        ]);
        let labels: Vec<_> = kinds.labels().iter().map(|l| l.label.clone()).collect();
        assert_eq!(labels[0], "deployment");
        assert_eq!(&labels[labels.len() - 2..], ["pod", "node"]);
        assert!(labels.contains(&"crontab".to_owned()));
        // The Kubernetes group wins a shared Kind; an apiVersion picks its own group.
        assert_eq!(
            kinds.lookup("Deployment", None).unwrap().resource.group,
            "apps"
        );
        assert_eq!(
            kinds
                .lookup("Deployment", Some("example.com/v1"))
                .unwrap()
                .resource
                .group,
            "example.com"
        );
        assert!(!kinds.lookup("Node", None).unwrap().namespaced);
        assert!(kinds.lookup("Nope", None).is_none());
        assert!(!kinds.lookup("CronTab", None).unwrap().follows_owners());
    }

    #[test]
    fn aggregated_documents_are_parsed() {
        let doc: APIGroupDiscoveryList = serde_json::from_value(serde_json::json!({
            "items": [{
                "metadata": {"name": "stable.example.com"},
                "versions": [{"version": "v1", "resources": [
                    {"resource": "crontabs", "responseKind": {"group": "stable.example.com", "version": "v1", "kind": "CronTab"},
                     "scope": "Namespaced", "singularResource": "crontab", "verbs": ["get"]},
                    {"resource": "crontabs/status", "responseKind": {"group": "", "version": "", "kind": "CronTab"}, "scope": "Namespaced"}
                ]}]
            }]
        }))
        .unwrap();
        let kinds = Kinds::from_aggregated(&[doc]);
        assert_eq!(kinds.len(), 1);
        let ct = kinds.lookup("CronTab", None).unwrap();
        assert_eq!(
            (ct.resource.plural.as_str(), ct.namespaced),
            ("crontabs", true)
        );
        assert_eq!(ct.resource.api_version, "stable.example.com/v1");
    }
}
