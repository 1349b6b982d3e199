//! A signal as admission sees it: what every adapter produces, whatever the wire format.

use std::collections::BTreeMap;

use crd_schema::{Fingerprint, Target};
use jiff::Timestamp;

/// Where a signal came from; also the RR's `spec.signalSource` and a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    Prometheus,
    KubernetesEvents,
    /// `namegate create`: an operator's or a tool's manual trigger (docs/creators.md).
    Manual,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::Prometheus, Source::KubernetesEvents, Source::Manual];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prometheus => "prometheus",
            Self::KubernetesEvents => "kubernetes-events",
            Self::Manual => "manual",
        }
    }
}

/// One alert or one Event, decoded, validated and fingerprinted.
#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    pub source: Source,
    /// `alertname`, or the Event's `reason`.
    pub name: String,
    /// As sent (label `severity`), bounded to the CRD's 50 characters; never a metric label.
    pub severity: String,
    pub target: Target,
    pub fingerprint: Fingerprint,
    /// Merged labels (per-alert over common), capped and truncated at UTF-8 boundaries.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub firing_time: Timestamp,
    pub received_time: Timestamp,
    /// Adapter-specific details (JSON text) for `spec.providerData`.
    pub provider_data: Option<String>,
    /// The signal's own JSON (one alert, not the batch) for `spec.originalPayload`.
    pub original_payload: String,
}

/// What an adapter makes of one element of a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded {
    /// A firing signal for admission.
    Signal(Box<Signal>),
    /// A resolved alert: nothing is created; the decision is audited under `<name>:<ns>:<Kind>:<name>` when the
    /// target could be determined.
    Resolved {
        name: String,
        fingerprint: Option<Fingerprint>,
        target: Option<Target>,
    },
    /// The element is malformed or out of bounds; `field` is a JSON pointer-like path
    /// (`alerts[3].labels.namespace`) and `detail` says what is wrong with it.
    Invalid(InvalidSignal),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {detail}")]
pub struct InvalidSignal {
    pub field: String,
    pub detail: String,
}

impl InvalidSignal {
    pub fn new(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
impl Signal {
    /// The unit tests' plain signal: alert `HighLatency` (critical) about Deployment `prod/api`,
    /// without labels, annotations or provider data, fired and received at `now`.
    pub(crate) fn sample(now: Timestamp) -> Signal {
        let target = Target {
            cluster: None,
            namespace: "prod".into(),
            kind: "Deployment".into(),
            name: "api".into(),
            api_version: None,
        };
        Signal {
            source: Source::Prometheus,
            name: "HighLatency".into(),
            severity: "critical".into(),
            fingerprint: target.fingerprint(),
            target,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            firing_time: now,
            received_time: now,
            provider_data: None,
            original_payload: "{}".into(),
        }
    }
}
