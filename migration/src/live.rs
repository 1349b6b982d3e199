//! Live legacy RRs in the cluster (docs/migration.md, "Live RRs").
//!
//! The migration reads the RRs of the namespace (as untyped objects, so RRs written by any kubernaut
//! version are read whatever their spec holds), lets them resolve legacy IDs (a UID whose events do not
//! name their RR, a name whose events carry no fingerprint), and then gives every live RR with a legacy
//! name whose trail moved the label `namegate.io/attempt` (its attempt number) and the annotation
//! `namegate.io/correlation-id` (its new correlation ID), with one JSON merge patch of metadata only.
//! The gateway's index then counts it as attempt n of its fingerprint. RRs already labelled right are
//! not patched again.

use std::collections::BTreeMap;

use crd_schema::meta::{ATTEMPT_LABEL, CORRELATION_ANNOTATION};
use crd_schema::{CorrelationId, RemediationRequest};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::resolve::{Assignments, LiveRr};

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
}

impl LiveError {
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Self::Kube(kube::Error::Api(s)) if s.is_forbidden())
    }
}

/// One live RR as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveObject {
    pub rr: LiveRr,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

fn api(client: kube::Client, namespace: &str) -> Api<DynamicObject> {
    let ar = ApiResource::erase::<RemediationRequest>(&());
    Api::namespaced_with(client, namespace, &ar)
}

/// Every RR of `namespace`, paginated.
pub async fn list(client: kube::Client, namespace: &str) -> Result<Vec<LiveObject>, LiveError> {
    let api = api(client, namespace);
    let mut out = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        for o in page.items {
            let (Some(name), Some(uid)) = (o.metadata.name.clone(), o.metadata.uid.clone()) else {
                continue;
            };
            let fingerprint = o
                .data
                .get("spec")
                .and_then(|s| s.get("signalFingerprint"))
                .and_then(|f| f.as_str())
                .and_then(|f| f.parse().ok());
            let annotations = o.metadata.annotations.clone().unwrap_or_default();
            out.push(LiveObject {
                rr: LiveRr {
                    name,
                    uid,
                    fingerprint,
                    created: o
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map_or(jiff::Timestamp::UNIX_EPOCH, |t| t.0),
                    correlation_annotation: annotations.get(CORRELATION_ANNOTATION).cloned(),
                },
                labels: o.metadata.labels.unwrap_or_default(),
                annotations: o.metadata.annotations.unwrap_or_default(),
            });
        }
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => params = params.continue_token(&c),
            _ => break,
        }
    }
    Ok(out)
}

/// Labels and annotates the live legacy RRs in `assign`; returns (patched, already right).
pub async fn label(
    client: kube::Client,
    namespace: &str,
    objects: &[LiveObject],
    assign: &Assignments,
    dry_run: bool,
) -> Result<(usize, usize), LiveError> {
    let api = api(client, namespace);
    let (mut patched, mut unchanged) = (0, 0);
    for o in objects {
        let Some((attempt, cid)) = assign.get(&o.rr.name) else {
            continue;
        };
        if !CorrelationId::parse(&o.rr.name).is_legacy() {
            continue;
        }
        let attempt = attempt.to_string();
        if o.labels.get(ATTEMPT_LABEL) == Some(&attempt)
            && o.annotations.get(CORRELATION_ANNOTATION) == Some(cid)
        {
            unchanged += 1;
            continue;
        }
        patched += 1;
        if dry_run {
            continue;
        }
        let patch = json!({"metadata": {
            "labels": {ATTEMPT_LABEL: attempt},
            "annotations": {CORRELATION_ANNOTATION: cid},
        }});
        api.patch(&o.rr.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok((patched, unchanged))
}
