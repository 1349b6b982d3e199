//! The signals the benchmark sends: Alertmanager webhook v4 bodies with one firing alert for one
//! Deployment, shaped like a real KubePodCrashLooping notification (≈ 0.9 KiB).

use bytes::Bytes;
use serde_json::json;

pub const PROMETHEUS_PATH: &str = "/api/v1/signals/prometheus";
/// The namespace named by the alerts (the target's namespace, not where RRs live).
pub const TARGET_NAMESPACE: &str = "bench";

/// One webhook with one firing alert for Deployment `deployment`.
pub fn webhook(deployment: &str, starts_at: &str) -> Bytes {
    let body = json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"KubePodCrashLooping\"}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "namegate",
        "groupLabels": {"alertname": "KubePodCrashLooping"},
        "commonLabels": {"severity": "critical", "prometheus": "monitoring/k8s"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.bench.svc:9093",
        "alerts": [{
            "status": "firing",
            "labels": {
                "alertname": "KubePodCrashLooping",
                "namespace": TARGET_NAMESPACE,
                "deployment": deployment,
                "pod": format!("{deployment}-7d9c8b6f4-x2x9q"),
                "container": "app",
                "severity": "critical",
                "job": "kube-state-metrics",
            },
            "annotations": {
                "summary": format!("Pod {TARGET_NAMESPACE}/{deployment}-7d9c8b6f4-x2x9q is crash looping"),
                "description": "Pod is in waiting state (reason: \"CrashLoopBackOff\") for more than 15 minutes.",
                "runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/kubepodcrashlooping",
            },
            "startsAt": starts_at,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.bench.svc:9090/graph?g0.expr=max_over_time%28kube_pod_container_status_waiting_reason%5B5m%5D%29",
            "fingerprint": "3b1f0c7e9a4d2f61",
        }],
    });
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// `startsAt` for a run: one minute ago (well inside the replay window).
pub fn starts_at() -> String {
    (jiff::Timestamp::now() - jiff::SignedDuration::from_mins(1)).to_string()
}
