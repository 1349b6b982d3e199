//! The manual trigger's pure parts: flag validation (bad input changes nothing: it is refused before
//! any I/O), the signal it makes, and the exit status of each answer.

use super::*;
use crate::pipeline::ItemBody;

fn args() -> CreateArgs {
    CreateArgs {
        namespace: "payments".into(),
        kind: "Deployment".into(),
        name: "checkout".into(),
        api_version: None,
        cluster: None,
        alert_name: "ManualRemediation".into(),
        severity: "critical".into(),
        reason: "restart after the bad rollout\nticket OPS-1".into(),
        rr_namespace: "kubernaut-system".into(),
        kubeconfig: None,
        context: None,
        audit_url: "sqlite://audit.db".into(),
        audit_hmac_key_file: None,
        audit_token_file: None,
        audit_spill_dir: None,
        scope: Scope::Labelled,
        resolve_targets: true,
        timeout: Duration::from_secs(30),
        output: Output::Name,
    }
}

fn refused(mutate: impl FnOnce(&mut CreateArgs)) -> InvalidSignal {
    let mut a = args();
    mutate(&mut a);
    Trigger::from_args(&a).expect_err("must be refused")
}

#[test]
fn valid_flags_make_a_manual_signal_of_the_target() {
    let t = Trigger::from_args(&args()).unwrap();
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let s = t.signal(Some("alice@example.com"), now);
    assert_eq!(s.source, Source::Manual);
    assert_eq!(s.source.as_str(), "manual");
    assert_eq!(
        s.fingerprint,
        crd_schema::Fingerprint::of_input("payments:Deployment:checkout")
    );
    assert_eq!(s.name, "ManualRemediation");
    assert_eq!(s.severity, "critical");
    assert_eq!(s.labels["alertname"], "ManualRemediation");
    assert_eq!(s.labels["namespace"], "payments");
    assert_eq!(
        s.annotations["summary"],
        "restart after the bad rollout\nticket OPS-1"
    );
    assert_eq!((s.firing_time, s.received_time), (now, now));
    let original: serde_json::Value = serde_json::from_str(&s.original_payload).unwrap();
    assert_eq!(original["trigger"], "manual");
    assert_eq!(original["requestedBy"], "alice@example.com");
    assert_eq!(original["target"]["kind"], "Deployment");
}

#[test]
fn cluster_scoped_targets_have_no_namespace_label() {
    let mut a = args();
    a.namespace = String::new();
    a.kind = "Node".into();
    a.name = "worker-7".into();
    let s = Trigger::from_args(&a)
        .unwrap()
        .signal(None, Timestamp::now());
    assert!(!s.labels.contains_key("namespace"));
    assert_eq!(
        s.fingerprint,
        crd_schema::Fingerprint::of_input(":Node:worker-7")
    );
}

#[test]
fn bad_flags_are_refused_with_the_flag_named() {
    let cases: Vec<(InvalidSignal, &str, &str)> = vec![
        (
            refused(|a| a.namespace = "Payments".into()),
            "namespace",
            "not a namespace name",
        ),
        (
            refused(|a| a.name = String::new()),
            "name",
            "empty resource name",
        ),
        (
            refused(|a| a.name = "a/b".into()),
            "name",
            "not a valid resource name",
        ),
        (refused(|a| a.kind = "deploy:ment".into()), "kind", ""),
        (
            refused(|a| a.alert_name = String::new()),
            "alert-name",
            "must not be empty",
        ),
        (
            refused(|a| a.alert_name = "x".repeat(254)),
            "alert-name",
            "over the limit of 253",
        ),
        (
            refused(|a| a.severity = String::new()),
            "severity",
            "1 to 50 characters",
        ),
        (
            refused(|a| a.severity = "s".repeat(51)),
            "severity",
            "got 51",
        ),
        (
            refused(|a| a.severity = "crit\u{7}".into()),
            "severity",
            "control character",
        ),
        (
            refused(|a| a.reason = "  ".into()),
            "reason",
            "must not be empty",
        ),
        (
            refused(|a| a.reason = "r".repeat(MAX_REASON_BYTES + 1)),
            "reason",
            "over the limit",
        ),
        (
            refused(|a| a.reason = "a\u{0}b".into()),
            "reason",
            "control character",
        ),
        (
            refused(|a| a.cluster = Some("c".repeat(254))),
            "cluster",
            "at most 253",
        ),
        (
            refused(|a| a.rr_namespace = "Kubernaut".into()),
            "rr-namespace",
            "not a valid namespace",
        ),
        (
            refused(|a| a.resolve_targets = false),
            "scope",
            "--scope all",
        ),
    ];
    for (e, field, needle) in cases {
        assert_eq!(e.field, field, "{e}");
        assert!(e.detail.contains(needle), "{field}: {e}");
    }
    let mut a = args();
    a.resolve_targets = false;
    a.scope = Scope::All;
    Trigger::from_args(&a).unwrap();
}

fn answered(outcome: AdmissionOutcome, refusal: Option<Refusal>) -> Answered {
    Answered {
        outcome,
        body: ItemBody::default(),
        refusal,
    }
}

#[test]
fn every_answer_has_its_exit_status() {
    use crate::admission::AdmissionError;
    use crate::apiserver::ApiError;
    let cases = [
        (answered(AdmissionOutcome::created, None), Exit::Created, 0),
        (
            answered(AdmissionOutcome::duplicate, None),
            Exit::Duplicate,
            3,
        ),
        (
            answered(AdmissionOutcome::rejected, None),
            Exit::Unmanaged,
            4,
        ),
        (
            answered(
                AdmissionOutcome::rejected,
                Some(Refusal::Invalid(InvalidSignal::new(
                    "target",
                    "target_not_found",
                ))),
            ),
            Exit::Invalid,
            2,
        ),
        (
            answered(
                AdmissionOutcome::failed,
                Some(Refusal::Failed(AdmissionError::BeingDeleted {
                    name: "rr-x".into(),
                })),
            ),
            Exit::Retry,
            75,
        ),
        (
            answered(
                AdmissionOutcome::failed,
                Some(Refusal::AuditBacklogged {
                    retry_after: Duration::from_secs(1),
                }),
            ),
            Exit::Retry,
            75,
        ),
        (
            answered(
                AdmissionOutcome::failed,
                Some(Refusal::Failed(AdmissionError::Api(
                    ApiError::Unavailable {
                        detail: "timeout".into(),
                        retry_after: Duration::from_secs(1),
                    },
                ))),
            ),
            Exit::Retry,
            75,
        ),
        (
            answered(
                AdmissionOutcome::failed,
                Some(Refusal::Failed(AdmissionError::AttemptsExhausted)),
            ),
            Exit::Failed,
            1,
        ),
    ];
    for (a, exit, code) in cases {
        assert_eq!(Exit::of(&a), exit, "{:?}", a.outcome);
        assert_eq!(exit.code(), code);
    }
}

#[test]
fn spill_files_are_per_invocation_beside_the_sqlite_database() {
    let mut a = args();
    a.audit_url = "sqlite:///var/lib/namegate/audit.db".into();
    let (p1, p2) = (spill_path(&a), spill_path(&a));
    assert_ne!(p1, p2);
    assert_eq!(p1.parent().unwrap(), Path::new("/var/lib/namegate"));
    a.audit_spill_dir = Some("/tmp/x".into());
    assert_eq!(spill_path(&a).parent().unwrap(), Path::new("/tmp/x"));
}
