//! The adapters against sample Alertmanager and Kubernetes Event payloads, and fuzz-style
//! properties: no input makes a decoder panic, and whatever is decoded respects the caps.

use crd_schema::Fingerprint;
use jiff::Timestamp;
use namegate::adapters::{AdapterConfig, decode_alertmanager, decode_kubernetes_event};
use namegate::signal::{Decoded, Signal, Source};
use proptest::prelude::*;
use serde_json::{Value, json};

const ALERTMANAGER_SAMPLE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/alertmanager-batch.json"
));
const EVENT_SAMPLE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/kubernetes-event.json"
));

fn now() -> Timestamp {
    "2026-11-26T17:00:00Z".parse().expect("a timestamp")
}

fn signal(d: &Decoded) -> &Signal {
    match d {
        Decoded::Signal(s) => s,
        other => panic!("expected a signal, got {other:?}"),
    }
}

#[test]
fn alertmanager_sample() {
    let out = decode_alertmanager(
        ALERTMANAGER_SAMPLE.as_bytes(),
        None,
        now(),
        &AdapterConfig::default(),
    )
    .unwrap();
    assert_eq!(out.len(), 3);
    let ledger = Fingerprint::of_input("payments:Deployment:ledger-writer");
    for d in &out[..2] {
        let s = signal(d);
        assert_eq!(s.source, Source::Prometheus);
        assert_eq!(s.name, "KubePodCrashLooping");
        assert_eq!(s.severity, "critical");
        assert_eq!(
            (
                s.target.namespace.as_str(),
                s.target.kind.as_str(),
                s.target.name.as_str()
            ),
            ("payments", "Deployment", "ledger-writer")
        );
        assert_eq!(s.target.api_version.as_deref(), Some("apps/v1"));
        assert_eq!(s.target.cluster, None);
        assert_eq!(s.fingerprint, ledger);
        assert_eq!(
            s.annotations["runbook_url"],
            "https://runbooks.example.org/KubePodCrashLooping"
        );
        assert_eq!(s.labels["prometheus"], "monitoring/k8s");
        assert_eq!(s.received_time, now());
        let pd: Value = serde_json::from_str(s.provider_data.as_deref().unwrap()).unwrap();
        assert_eq!(pd["receiver"], "namegate");
        assert_eq!(pd["externalURL"], "http://alertmanager.monitoring.svc:9093");
        assert_eq!(pd["truncatedAlerts"], 0);
    }
    let (a, b) = (signal(&out[0]), signal(&out[1]));
    assert_eq!(a.labels["pod"], "ledger-writer-7d9c8b6f4-x2x9q");
    assert_eq!(b.labels["pod"], "ledger-writer-7d9c8b6f4-b7k2m");
    assert!(a.annotations["description"].starts_with("Container app restarted"));
    assert!(!b.annotations.contains_key("description"));
    assert_eq!(
        a.firing_time,
        "2026-11-26T16:58:04.118Z".parse::<Timestamp>().unwrap()
    );
    let pd: Value = serde_json::from_str(a.provider_data.as_deref().unwrap()).unwrap();
    assert_eq!(pd["alertFingerprint"], "3b1f0c7e9a4d2f61");
    // Each signal's payload is its own alert, not the batch.
    let sample: Value = serde_json::from_str(ALERTMANAGER_SAMPLE).unwrap();
    let own: Value = serde_json::from_str(&b.original_payload).unwrap();
    assert_eq!(own, sample["alerts"][1]);

    match &out[2] {
        Decoded::Resolved {
            name,
            fingerprint,
            target,
        } => {
            assert_eq!(name, "KubeStatefulSetReplicasMismatch");
            assert_eq!(
                *fingerprint,
                Some(Fingerprint::of_input("data:StatefulSet:kafka"))
            );
            let t = target.as_ref().unwrap();
            assert_eq!(
                (t.kind.as_str(), t.api_version.as_deref()),
                ("StatefulSet", Some("apps/v1"))
            );
        }
        other => panic!("expected resolved, got {other:?}"),
    }
}

#[test]
fn kubernetes_event_sample() {
    let d =
        decode_kubernetes_event(EVENT_SAMPLE.as_bytes(), now(), &AdapterConfig::default()).unwrap();
    let s = signal(&d);
    assert_eq!(s.source, Source::KubernetesEvents);
    assert_eq!(
        (s.name.as_str(), s.severity.as_str()),
        ("BackOff", "Warning")
    );
    assert_eq!(
        s.target.fingerprint_input(),
        "payments:Pod:ledger-writer-7d9c8b6f4-x2x9q"
    );
    assert_eq!(
        s.fingerprint,
        Fingerprint::of_input("payments:Pod:ledger-writer-7d9c8b6f4-x2x9q")
    );
    assert_eq!(s.labels["kubernaut.ai/event-source"], "kubelet");
    assert_eq!(s.annotations["kubernaut.ai/source-host"], "worker-7");
    assert!(
        s.annotations["kubernaut.ai/event-message"]
            .starts_with("Back-off restarting failed container app")
    );
    assert_eq!(
        s.firing_time,
        "2026-11-26T16:57:12Z".parse::<Timestamp>().unwrap()
    );
    assert_eq!(s.original_payload, EVENT_SAMPLE);

    // Ten minutes later the same Event is a replay.
    let later: Timestamp = "2026-11-26T17:10:00Z".parse().unwrap();
    let e = decode_kubernetes_event(EVENT_SAMPLE.as_bytes(), later, &AdapterConfig::default())
        .unwrap_err();
    assert!(e.is_freshness());
    assert_eq!(e.field(), "lastTimestamp");
}

#[test]
fn default_caps_truncate_long_values_at_char_boundaries() {
    let body = json!({"version": "4", "alerts": [{
        "labels": {"alertname": "A", "namespace": "ns", "pod": "p", "note": "é".repeat(1000)},
        "annotations": {"description": "😀".repeat(5000)},
        "startsAt": "2026-11-26T16:59:00Z"}]});
    let cfg = AdapterConfig::default();
    let out = decode_alertmanager(body.to_string().as_bytes(), None, now(), &cfg).unwrap();
    let s = signal(&out[0]);
    assert_eq!(
        s.labels["note"],
        "é".repeat(cfg.limits.max_label_value_len / 2)
    );
    assert_eq!(
        s.annotations["description"].len(),
        cfg.limits.max_annotation_value_len
    );
    assert!(s.annotations["description"].chars().all(|c| c == '😀'));
    // The payload keeps the full text.
    assert!(s.original_payload.contains(&"é".repeat(1000)));
}

/// Arbitrary JSON, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Field and label names the decoders look at, plus noise.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "version",
            "alerts",
            "status",
            "labels",
            "annotations",
            "startsAt",
            "commonLabels",
            "commonAnnotations",
            "groupKey",
            "receiver",
            "externalURL",
            "truncatedAlerts",
            "generatorURL",
            "fingerprint",
            "alertname",
            "severity",
            "namespace",
            "exported_namespace",
            "deployment",
            "pod",
            "node",
            "job",
            "job_name",
            "cluster",
            "type",
            "reason",
            "message",
            "note",
            "involvedObject",
            "regarding",
            "kind",
            "name",
            "apiVersion",
            "lastTimestamp",
            "firstTimestamp",
            "eventTime",
            "series",
            "lastObservedTime",
            "count",
            "source",
            "component",
            "metadata",
        ])
        .prop_map(str::to_owned),
        ".{0,8}",
    ]
}

/// Label values: resource-like names, timestamps, and arbitrary text.
fn label_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9-]{0,12}",
        Just("Warning".to_owned()),
        Just("2026-11-26T16:59:00Z".to_owned()),
        Just("resolved".to_owned()),
        ".{0,80}",
    ]
}

fn alert_strategy() -> impl Strategy<Value = Value> {
    let resource_key = prop::sample::select(vec![
        "deployment",
        "statefulset",
        "job_name",
        "job",
        "pod",
        "exported_pod",
        "node",
        "service",
    ]);
    (
        (
            prop::option::weighted(0.9, "[A-Za-z]{1,10}"),
            prop::option::weighted(
                0.8,
                prop_oneof![4 => "[a-z][a-z0-9-]{0,8}", 1 => label_value()],
            ),
            prop::option::weighted(0.9, (resource_key, label_value())),
            prop::collection::btree_map(field_name(), label_value(), 0..5),
        ),
        prop::collection::btree_map(field_name(), label_value(), 0..4),
        prop::option::of(label_value()),
        prop::option::of(prop::sample::select(vec![
            "firing", "firing", "resolved", "other",
        ])),
    )
        .prop_map(
            |((alertname, namespace, resource, mut labels), annotations, starts_at, status)| {
                labels.extend(alertname.map(|v| ("alertname".to_owned(), v)));
                labels.extend(namespace.map(|v| ("namespace".to_owned(), v)));
                labels.extend(resource.map(|(k, v)| (k.to_owned(), v)));
                let mut a = json!({"labels": labels, "annotations": annotations});
                if let Some(t) = starts_at {
                    a["startsAt"] = json!(t);
                }
                if let Some(s) = status {
                    a["status"] = json!(s);
                }
                a
            },
        )
}

fn small_caps() -> AdapterConfig {
    let mut cfg = AdapterConfig::default();
    cfg.limits.max_labels = 8;
    cfg.limits.max_label_value_len = 7;
    cfg.limits.max_annotation_value_len = 5;
    cfg
}

fn check_signal(s: &Signal, cfg: &AdapterConfig) {
    assert_eq!(s.fingerprint, s.target.fingerprint());
    assert!(!s.name.is_empty() && s.name.chars().count() <= 253);
    assert!(!s.severity.is_empty() && s.severity.chars().count() <= 50);
    assert!(s.labels.len() <= cfg.limits.max_labels);
    assert!(
        s.labels
            .values()
            .all(|v| v.len() <= cfg.limits.max_label_value_len)
    );
    assert!(
        s.annotations
            .values()
            .all(|v| v.len() <= cfg.limits.max_annotation_value_len)
    );
    assert!(!s.target.name.is_empty() && s.target.name.len() <= 253);
    assert!(!s.target.namespace.contains(':'));
    assert!(serde_json::from_str::<Value>(&s.original_payload).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512), header in prop::option::of(".{0,12}")) {
        let cfg = AdapterConfig::default();
        let _ = decode_alertmanager(&body, header.as_deref(), now(), &cfg);
        let _ = decode_kubernetes_event(&body, now(), &cfg);
    }

    #[test]
    fn arbitrary_json_never_panics(value in any_json()) {
        let cfg = small_caps();
        let body = value.to_string();
        let _ = decode_alertmanager(body.as_bytes(), None, now(), &cfg);
        let _ = decode_kubernetes_event(body.as_bytes(), now(), &cfg);
        // The same value as the single alert of a webhook, and as an Event's target.
        let wrapped = json!({"alerts": [value.clone()], "commonLabels": {"cluster": "c"}}).to_string();
        let _ = decode_alertmanager(wrapped.as_bytes(), None, now(), &cfg);
        let event = json!({"type": "Warning", "reason": "R", "lastTimestamp": "2026-11-26T16:59:00Z",
                           "involvedObject": value}).to_string();
        let _ = decode_kubernetes_event(event.as_bytes(), now(), &cfg);
    }

    #[test]
    fn webhooks_decode_one_result_per_alert(alerts in prop::collection::vec(alert_strategy(), 1..12),
                                            common in prop::collection::btree_map(field_name(), label_value(), 0..4)) {
        let cfg = small_caps();
        let body = json!({"version": "4", "alerts": alerts, "commonLabels": common}).to_string();
        match decode_alertmanager(body.as_bytes(), None, now(), &cfg) {
            Ok(out) => {
                prop_assert_eq!(out.len(), alerts.len());
                for (d, a) in out.iter().zip(&alerts) {
                    match d {
                        Decoded::Signal(s) => {
                            prop_assert_ne!(a["status"].as_str(), Some("resolved"));
                            check_signal(s, &cfg);
                        }
                        Decoded::Resolved { fingerprint, target, .. } => {
                            prop_assert_eq!(a["status"].as_str(), Some("resolved"));
                            prop_assert_eq!(*fingerprint, target.as_ref().map(|t| t.fingerprint()));
                        }
                        Decoded::Invalid(e) => prop_assert!(e.field.starts_with("alerts[") || e.field.is_empty()),
                    }
                }
            }
            // Only envelope problems: a commonLabels cap or cluster, or a future startsAt.
            Err(e) => prop_assert!(matches!(e.field(), "commonLabels" | "commonLabels.cluster")
                || e.field().ends_with(".startsAt"), "{e}"),
        }
    }

    #[test]
    fn events_with_arbitrary_text_never_panic(kind in label_value(), name in label_value(), ns in label_value(),
                                              reason in label_value(), message in ".{0,40}",
                                              ty in prop::sample::select(vec!["Warning", "Error", "Normal", ""])) {
        let cfg = small_caps();
        let event = json!({"type": ty, "reason": reason, "message": message,
                           "lastTimestamp": "2026-11-26T16:59:00Z",
                           "involvedObject": {"kind": kind, "name": name, "namespace": ns}});
        if let Ok(Decoded::Signal(s)) = decode_kubernetes_event(event.to_string().as_bytes(), now(), &cfg) {
            check_signal(&s, &cfg);
        }
    }
}
