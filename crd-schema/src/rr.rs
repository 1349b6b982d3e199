//! The `RemediationRequest` custom resource (`kubernaut.ai/v1alpha1`, docs/admission.md).
//!
//! The schema must accept every status write kubernaut's orchestrator makes (or the API server would
//! prune them), so orchestrator-owned objects whose inner fields namegate does not read are declared
//! with `x-kubernetes-preserve-unknown-fields`. The gateway writes only `status.deduplication`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "kubernaut.ai";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "RemediationRequest";
pub const PLURAL: &str = "remediationrequests";

/// The signal a remediation was started for. Immutable once created.
// The lint reads the repeated `type_ = …` keys of separate `printcolumn(…)` entries as one attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kubernaut.ai",
    version = "v1alpha1",
    kind = "RemediationRequest",
    plural = "remediationrequests",
    shortname = "rr",
    namespaced,
    status = "RemediationRequestStatus",
    selectable = ".spec.signalFingerprint",
    selectable = ".spec.signalType",
    selectable = ".spec.severity",
    selectable = ".spec.clusterID",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.overallPhase"),
    printcolumn(
        name = "Outcome",
        type_ = "string",
        json_path = ".status.completionStatus.outcome"
    ),
    printcolumn(name = "Alert", type_ = "string", json_path = ".spec.signalName"),
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".spec.targetResource.name"
    ),
    printcolumn(
        name = "Attempt",
        type_ = "string",
        json_path = ".metadata.labels.namegate\\.io/attempt"
    ),
    printcolumn(
        name = "Count",
        type_ = "integer",
        json_path = ".status.deduplication.occurrenceCount"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable"))]
#[serde(rename_all = "camelCase")]
pub struct RemediationRequestSpec {
    /// Lowercase hex SHA-256 of the target identity.
    #[schemars(regex(pattern = r"^[a-f0-9]{64}$"), length(max = 64))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("signalFingerprint is immutable"))]
    pub signal_fingerprint: String,
    #[schemars(length(min = 1, max = 253))]
    pub signal_name: String,
    #[schemars(length(min = 1, max = 50))]
    pub severity: String,
    /// Always `alert` for signals admitted by namegate.
    #[schemars(length(min = 1, max = 63))]
    pub signal_type: String,
    /// `prometheus`, `kubernetes-events`, or `manual` (`namegate create`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub signal_source: Option<String>,
    pub target_type: TargetType,
    pub target_resource: TargetResource,
    #[serde(rename = "clusterID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub cluster_id: Option<String>,
    pub firing_time: Time,
    pub received_time: Time,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signal_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signal_annotations: BTreeMap<String, String>,
    /// Adapter-specific details as a JSON document in a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_data: Option<String>,
    /// The signal's own JSON (one alert or one Event, never the whole batch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_payload: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TargetType {
    Kubernetes,
    Aws,
    Azure,
    Gcp,
    Datadog,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetResource {
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

/// Status. `deduplication` is the gateway's; everything else belongs to the orchestrator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemediationRequestStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deduplication: Option<Deduplication>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = crate::phase::ALL_PHASES))]
    pub overall_phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_expiry_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::kubernaut::conditions")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_status: Option<CompletionStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_status: Option<RoutingStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::kubernaut::phase_progress")]
    pub phase_progress: Option<OpaqueObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::kubernaut::workflow_selection")]
    pub workflow_selection: Option<OpaqueObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::kubernaut::operator_audit")]
    pub operator_audit: Option<OpaqueObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_config: Option<TimeoutConfig>,
}

/// Occurrence accounting (docs/architecture.md), written only by the gateway. No field is required, like in
/// kubernaut's schema: a writer whose structs omit zero values (`omitempty`) must be accepted, and a
/// missing time reads as the Unix epoch ([`Deduplication::first_seen`] treats it as unknown).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deduplication {
    #[serde(default = "epoch")]
    pub first_seen_at: Time,
    #[serde(default = "epoch")]
    pub last_seen_at: Time,
    /// The total. Derived by the gateway from the per-replica totals it keeps in the RR's
    /// `occurrences.namegate.io/*` annotations (see `docs/reliability.md`), so another writer that
    /// replaces the whole status cannot make it count anything twice.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub occurrence_count: i32,
}

fn epoch() -> Time {
    Time(jiff::Timestamp::UNIX_EPOCH)
}

impl Deduplication {
    /// `firstSeenAt`, unless a writer left it out.
    pub fn first_seen(&self) -> Option<jiff::Timestamp> {
        Some(self.first_seen_at.0).filter(|t| *t != jiff::Timestamp::UNIX_EPOCH)
    }

    /// `lastSeenAt`, unless a writer left it out.
    pub fn last_seen(&self) -> Option<jiff::Timestamp> {
        Some(self.last_seen_at.0).filter(|t| *t != jiff::Timestamp::UNIX_EPOCH)
    }
}

/// The outcomes of `completionStatus.outcome`, as kubernaut's schema lists them.
pub const OUTCOMES: [&str; 6] = [
    "Remediated",
    "NoActionRequired",
    "ManualReviewRequired",
    "VerificationTimedOut",
    "Inconclusive",
    "DryRun",
];

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Outcome {
    Remediated,
    NoActionRequired,
    ManualReviewRequired,
    VerificationTimedOut,
    Inconclusive,
    DryRun,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompletionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = OUTCOMES))]
    pub outcome: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_manual_review: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = crate::phase::ALL_PHASES))]
    pub timeout_phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::kubernaut::notification_request_refs")]
    pub notification_request_refs: Vec<OpaqueObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Pending", "InProgress", "Sent", "Failed", "Cancelled"]))]
    pub notification_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_notification_sent: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoutingStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocking_workflow_execution: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub duplicate_refs: Vec<String>,
    #[serde(
        rename = "deduplicatedByWE",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub deduplicated_by_we: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_until: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_allowed_execution: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failure_count: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimeoutConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub global: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub processing: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub analyzing: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "duration"))]
    pub executing: Option<String>,
}

/// An orchestrator-owned object whose fields namegate neither reads nor pins.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(transparent)]
pub struct OpaqueObject(pub serde_json::Map<String, serde_json::Value>);

impl JsonSchema for OpaqueObject {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "OpaqueObject".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true
        })
    }
}

impl RemediationRequest {
    /// The phase view used by the suppression rules.
    pub fn phase_view(&self) -> crate::phase::PhaseView<'_> {
        let status = self.status.as_ref();
        crate::phase::PhaseView {
            phase: status.and_then(|s| s.overall_phase.as_deref()),
            outcome: status
                .and_then(|s| s.completion_status.as_ref())
                .and_then(|c| c.outcome.as_ref())
                .map(Outcome::as_str),
            next_allowed_execution: status
                .and_then(|s| s.routing_status.as_ref())
                .and_then(|r| r.next_allowed_execution.as_ref())
                .map(|t| t.0),
        }
    }
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Remediated => "Remediated",
            Self::NoActionRequired => "NoActionRequired",
            Self::ManualReviewRequired => "ManualReviewRequired",
            Self::VerificationTimedOut => "VerificationTimedOut",
            Self::Inconclusive => "Inconclusive",
            Self::DryRun => "DryRun",
        }
    }
}

/// The CRD manifest as YAML, exactly as committed under `charts/namegate/crds/`.
pub fn crd_yaml() -> String {
    let crd = RemediationRequest::crd();
    let body = serde_yaml_ng::to_string(&crd)
        .expect("a CustomResourceDefinition is plain data and always serialises to YAML");
    format!(
        "# Generated from crd-schema (RemediationRequest). Do not edit: run\n\
         #   UPDATE_CRD=1 cargo test -p crd-schema --test crd_drift\n{body}"
    )
}
