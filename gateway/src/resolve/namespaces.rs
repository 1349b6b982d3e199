//! Namespace scope labels from a metadata-only watch: `kubernaut.ai/managed` of every namespace,
//! held in memory so a scope decision never reads the API server (`docs/compatibility.md`,
//! "Scope").

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

/// The scope label, on a resource or on its namespace.
pub const MANAGED_LABEL: &str = "kubernaut.ai/managed";

/// The value of [`MANAGED_LABEL`] in a label map: `true`/`false`; any other value counts as absent.
pub fn managed_value(labels: Option<&std::collections::BTreeMap<String, String>>) -> Option<bool> {
    match labels?.get(MANAGED_LABEL)?.as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

#[derive(Debug, Default)]
struct State {
    /// Only namespaces that carry the label: memory is bounded by labelled namespaces.
    managed: HashMap<String, bool>,
    synced: bool,
}

/// The namespace label store.
#[derive(Clone, Debug, Default)]
pub struct NamespaceScope(Arc<RwLock<State>>);

impl NamespaceScope {
    /// `None` until the first listing completed; then the namespace's label value, if any.
    pub fn managed(&self, namespace: &str) -> Option<Option<bool>> {
        let s = self.0.read().unwrap_or_else(|e| e.into_inner());
        s.synced.then(|| s.managed.get(namespace).copied())
    }

    pub fn is_synced(&self) -> bool {
        self.0.read().unwrap_or_else(|e| e.into_inner()).synced
    }

    /// Labelled namespaces held (for the memory report).
    pub fn len(&self) -> usize {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .managed
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn apply(
        &self,
        event: watcher::Event<PartialObjectMeta<Namespace>>,
        pending: &mut Option<HashMap<String, bool>>,
    ) {
        let entry = |ns: &PartialObjectMeta<Namespace>| {
            (
                ns.metadata.name.clone().unwrap_or_default(),
                managed_value(ns.metadata.labels.as_ref()),
            )
        };
        match event {
            watcher::Event::Init => *pending = Some(HashMap::new()),
            watcher::Event::InitApply(ns) => {
                if let (name, Some(v)) = entry(&ns) {
                    pending.get_or_insert_default().insert(name, v);
                }
            }
            watcher::Event::InitDone => {
                let mut s = self.0.write().unwrap_or_else(|e| e.into_inner());
                s.managed = pending.take().unwrap_or_default();
                s.synced = true;
            }
            watcher::Event::Apply(ns) => {
                let (name, v) = entry(&ns);
                let mut s = self.0.write().unwrap_or_else(|e| e.into_inner());
                match v {
                    Some(v) => s.managed.insert(name, v),
                    None => s.managed.remove(&name),
                };
            }
            watcher::Event::Delete(ns) => {
                let (name, _) = entry(&ns);
                self.0
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .managed
                    .remove(&name);
            }
        }
    }

    /// Watches namespaces (metadata only) until `stop`.
    pub async fn run(self, client: Client, stop: CancellationToken) {
        let api: kube::Api<PartialObjectMeta<Namespace>> = kube::Api::all(client);
        let mut events = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
        let mut pending = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                ev = events.next() => match ev {
                    Some(Ok(ev)) => self.apply(ev, &mut pending),
                    Some(Err(e)) => tracing::warn!(error = %e, "namespace watch error; the watcher retries"),
                    None => return,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str, managed: Option<&str>) -> PartialObjectMeta<Namespace> {
        let mut m = PartialObjectMeta::<Namespace>::default();
        m.metadata.name = Some(name.into());
        m.metadata.labels = managed.map(|v| {
            [(MANAGED_LABEL.to_owned(), v.to_owned())]
                .into_iter()
                .collect()
        });
        m
    }

    #[test]
    fn unsynced_then_labels_follow_events() {
        let scope = NamespaceScope::default();
        let mut pending = None;
        assert_eq!(scope.managed("a"), None);
        scope.apply(watcher::Event::Init, &mut pending);
        scope.apply(
            watcher::Event::InitApply(ns("a", Some("true"))),
            &mut pending,
        );
        scope.apply(watcher::Event::InitApply(ns("b", None)), &mut pending);
        assert_eq!(scope.managed("a"), None, "not synced before InitDone");
        scope.apply(watcher::Event::InitDone, &mut pending);
        assert_eq!(scope.managed("a"), Some(Some(true)));
        assert_eq!(scope.managed("b"), Some(None));
        scope.apply(watcher::Event::Apply(ns("b", Some("false"))), &mut pending);
        assert_eq!(scope.managed("b"), Some(Some(false)));
        scope.apply(watcher::Event::Apply(ns("a", Some("yes"))), &mut pending);
        assert_eq!(scope.managed("a"), Some(None), "only true/false count");
        scope.apply(watcher::Event::Delete(ns("b", Some("false"))), &mut pending);
        assert_eq!(scope.managed("b"), Some(None));
        assert_eq!(scope.len(), 0);
    }
}
