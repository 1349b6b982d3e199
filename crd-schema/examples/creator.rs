//! A creator other than the gateway, built on `crd-schema` alone (docs/creators.md).
//!
//! It computes the fingerprint of a workload, the lock name of the RR attempt it wants to create, and the
//! object with the label the lock policy checks; it decides the attempt from the RRs that already exist,
//! with the same phase rules as the gateway. The create itself (any Kubernetes client) then either wins or
//! gets `409 AlreadyExists`, exactly as the gateway's does: that 409 is the lock.
//!
//! `cargo run -p crd-schema --example creator` prints the RR as YAML; `cargo test -p crd-schema` runs the
//! tests at the bottom (this example is built as a test target, see `crd-schema/Cargo.toml`).

use std::collections::BTreeMap;

use crd_schema::phase::PhaseView;
use crd_schema::rr::{RemediationRequestSpec, TargetResource, TargetType};
use crd_schema::{Attempt, RemediationRequest, Target, meta, name};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// What a creator knows about an RR that already exists for the fingerprint (from a list or a `get`).
/// `RemediationRequest::phase_view` gives the same view of a full object.
struct Existing<'a> {
    name: &'a str,
    view: PhaseView<'a>,
}

/// The attempt to create next, or `None` when an existing attempt still suppresses new ones (active, ended
/// needing manual review, or in its back-off): the signal is then a duplicate of it. Names that are not
/// ours (legacy, foreign) are ignored here; the gateway's index also reads their `namegate.io/attempt`
/// label.
fn next_attempt(existing: &[Existing<'_>], now: jiff::Timestamp) -> Option<Attempt> {
    let mut highest: Option<Attempt> = None;
    for rr in existing {
        let Ok(parsed) = name::parse(rr.name) else {
            continue;
        };
        if rr.view.is_suppressing(now) {
            return None;
        }
        highest = highest.max(Some(parsed.attempt));
    }
    match highest {
        None => Some(Attempt::FIRST),
        Some(a) => a.next(),
    }
}

/// The RR attempt `attempt` of `target`, named and labelled so the lock policy admits it.
fn build(target: &Target, attempt: Attempt, signal_name: &str) -> RemediationRequest {
    let fp = target.fingerprint();
    let rr_name = name::name(&fp, attempt);
    let now = Time(jiff::Timestamp::now());
    let mut rr = RemediationRequest::new(
        &rr_name,
        RemediationRequestSpec {
            signal_fingerprint: fp.to_hex(),
            signal_name: signal_name.into(),
            severity: "warning".into(),
            signal_type: "alert".into(),
            signal_source: Some("manual".into()),
            target_type: TargetType::Kubernetes,
            target_resource: TargetResource {
                kind: target.kind.clone(),
                name: target.name.clone(),
                namespace: (!target.namespace.is_empty()).then(|| target.namespace.clone()),
                api_version: target.api_version.clone(),
            },
            cluster_id: target.cluster.clone(),
            firing_time: now.clone(),
            received_time: now,
            signal_labels: BTreeMap::new(),
            signal_annotations: BTreeMap::new(),
            provider_data: None,
            original_payload: None,
        },
    );
    rr.metadata.labels = Some(BTreeMap::from([
        (meta::MANAGED_BY_KEY.into(), meta::MANAGED_BY_VALUE.into()),
        (meta::ATTEMPT_LABEL.into(), attempt.to_string()),
    ]));
    rr.metadata.annotations = Some(BTreeMap::from([(
        meta::CORRELATION_ANNOTATION.into(),
        rr_name,
    )]));
    rr
}

fn payment_api() -> Target {
    Target {
        cluster: None,
        namespace: "prod".into(),
        kind: "Deployment".into(),
        name: "payment-api".into(),
        api_version: Some("apps/v1".into()),
    }
}

fn main() {
    let target = payment_api();
    let fp = target.fingerprint();
    let first = name::name(&fp, Attempt::FIRST);
    // Attempt 1 ended (Completed): the next remediation of this workload is attempt 2.
    let existing = [Existing {
        name: &first,
        view: PhaseView {
            phase: Some("Completed"),
            ..PhaseView::default()
        },
    }];
    let Some(attempt) = next_attempt(&existing, jiff::Timestamp::now()) else {
        println!("# {first} is active: a new signal is a duplicate of it");
        return;
    };
    let rr = build(&target, attempt, "ManualRemediation");
    println!(
        "# fingerprint {fp} (input {:?})",
        target.fingerprint_input()
    );
    println!("# create this; 409 AlreadyExists means another creator won the same attempt");
    match serde_yaml_ng::to_string(&rr) {
        Ok(yaml) => print!("{yaml}"),
        Err(e) => eprintln!("serialising the RR: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_runs() {
        main();
    }

    #[test]
    fn the_built_rr_is_the_lock_of_its_fingerprint() {
        let target = payment_api();
        let a = Attempt::new(2).unwrap();
        let rr = build(&target, a, "X");
        let n = rr.metadata.name.clone().unwrap();
        let parsed = name::parse(&n).unwrap();
        assert_eq!(parsed.fingerprint.to_hex(), rr.spec.signal_fingerprint);
        assert_eq!(parsed.attempt, a);
        assert_eq!(rr.metadata.labels.unwrap()[meta::ATTEMPT_LABEL], "2");
    }

    #[test]
    fn the_next_attempt_follows_the_phase_rules() {
        let fp = payment_api().fingerprint();
        let n1 = name::name(&fp, Attempt::FIRST);
        let n2 = name::name(&fp, Attempt::new(2).unwrap());
        let now = jiff::Timestamp::now();
        let rr = |name, phase| Existing {
            name,
            view: PhaseView {
                phase,
                ..PhaseView::default()
            },
        };
        assert_eq!(next_attempt(&[], now), Some(Attempt::FIRST));
        assert_eq!(
            next_attempt(&[rr(&n1, None)], now),
            None,
            "pending is active"
        );
        assert_eq!(next_attempt(&[rr(&n1, Some("Executing"))], now), None);
        assert_eq!(
            next_attempt(&[rr(&n1, Some("Failed")), rr(&n2, Some("Completed"))], now),
            Attempt::new(3)
        );
        let manual = Existing {
            name: &n1,
            view: PhaseView {
                phase: Some("Failed"),
                outcome: Some(crd_schema::phase::MANUAL_REVIEW_REQUIRED),
                next_allowed_execution: None,
            },
        };
        assert_eq!(
            next_attempt(&[manual], now),
            None,
            "manual review suppresses"
        );
        assert_eq!(
            next_attempt(&[rr("rr-b157a3a9e42f-1c2b5576", Some("Completed"))], now),
            Some(Attempt::FIRST),
            "legacy names are not attempts of ours"
        );
    }
}
