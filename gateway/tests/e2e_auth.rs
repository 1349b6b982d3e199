//! Authentication and authorisation on the real API server (docs/security.md): real ServiceAccount
//! tokens from TokenRequest, real Roles and RoleBindings, the gateway's real TokenReview and
//! SubjectAccessReview calls.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use crd_schema::{Attempt, name};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use serde_json::Value;
use support::{Cluster, ReplicaOptions, fingerprint_of, webhook};

const SERVICE: &str = "namegate";

fn auth_on() -> ReplicaOptions {
    ReplicaOptions {
        extra_args: vec![
            "--auth".into(),
            "kubernetes".into(),
            "--auth-service-name".into(),
            SERVICE.into(),
        ],
        ..ReplicaOptions::default()
    }
}

fn meta(name: &str, ns: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        ..ObjectMeta::default()
    }
}

/// A ServiceAccount, bound to a Role with `rules` when there are any; returns its token.
async fn service_account(client: &Client, ns: &str, sa: &str, rules: Vec<PolicyRule>) -> String {
    let pp = PostParams::default();
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(
            &pp,
            &ServiceAccount {
                metadata: meta(sa, ns),
                ..ServiceAccount::default()
            },
        )
        .await
        .unwrap();
    if !rules.is_empty() {
        Api::<Role>::namespaced(client.clone(), ns)
            .create(
                &pp,
                &Role {
                    metadata: meta(sa, ns),
                    rules: Some(rules),
                },
            )
            .await
            .unwrap();
        Api::<RoleBinding>::namespaced(client.clone(), ns)
            .create(
                &pp,
                &RoleBinding {
                    metadata: meta(sa, ns),
                    role_ref: RoleRef {
                        api_group: "rbac.authorization.k8s.io".into(),
                        kind: "Role".into(),
                        name: sa.into(),
                    },
                    subjects: Some(vec![Subject {
                        kind: "ServiceAccount".into(),
                        name: sa.into(),
                        namespace: Some(ns.into()),
                        ..Subject::default()
                    }]),
                },
            )
            .await
            .unwrap();
    }
    token(client, ns, sa).await
}

async fn token(client: &Client, ns: &str, sa: &str) -> String {
    token_for(client, ns, sa, &[]).await
}

/// A bound token of `sa` for `audiences` (empty: the API server's own).
async fn token_for(client: &Client, ns: &str, sa: &str, audiences: &[&str]) -> String {
    let tr = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
            expiration_seconds: Some(600),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(sa, &PostParams::default(), &tr)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
}

/// What the chart's sender ClusterRole grants: `create` on the gateway's Service, by name.
fn ingest_rule() -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["services".into()]),
        resource_names: Some(vec![SERVICE.into()]),
        verbs: vec!["create".into()],
        ..PolicyRule::default()
    }
}

fn lookup_rule() -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["services/audit".into()]),
        resource_names: Some(vec![SERVICE.into()]),
        verbs: vec!["get".into()],
        ..PolicyRule::default()
    }
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn send(c: &Cluster, req: reqwest::RequestBuilder, token: Option<&str>) -> Answer {
    let _ = c;
    let req = match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

async fn ingest(c: &Cluster, deployment: &str, token: Option<&str>) -> Answer {
    let req = c
        .http
        .post(c.replicas[0].url("/api/v1/signals/prometheus"))
        .json(&webhook(&[(deployment, "KubePodCrashLooping")]));
    send(c, req, token).await
}

async fn lookup(c: &Cluster, correlation: &str, token: Option<&str>) -> Answer {
    let req = c
        .http
        .get(c.replicas[0].url(&format!("/api/v1/audit/correlations/{correlation}")));
    send(c, req, token).await
}

fn assert_problem(a: &Answer, status: u16, what: &str) {
    assert_eq!(a.status, status, "{what}: {:?}", a.body);
    assert_eq!(
        a.headers[reqwest::header::CONTENT_TYPE],
        "application/problem+json",
        "{what}"
    );
    assert_eq!(a.body["status"], status, "{what}");
    assert!(a.body["request_id"].is_string(), "{what}: {:?}", a.body);
}

/// `namegate_<family>_total{<labels>}` from a replica's /metrics (0 when absent).
fn counter(metrics: &str, family: &str, labels: &str) -> u64 {
    let prefix = format!("{family}_total{{{labels}}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse::<f64>().unwrap() as u64)
        .unwrap_or(0)
}

async fn reviews(c: &Cluster) -> (u64, u64) {
    let m = c.replicas[0].metrics().await;
    (
        counter(
            &m,
            "namegate_apiserver_requests",
            "verb=\"tokenreview\",code=\"201\"",
        ),
        counter(
            &m,
            "namegate_apiserver_requests",
            "verb=\"subjectaccessreview\",code=\"201\"",
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn only_authorised_service_accounts_ingest_and_look_up() {
    let c = Cluster::start_with("e2e-auth", &[auth_on()]).await;
    let (client, ns) = (&c.client, c.namespace.as_str());
    let sender = service_account(client, ns, "alertmanager", vec![ingest_rule()]).await;
    let auditor = service_account(client, ns, "auditor", vec![lookup_rule()]).await;
    let stranger = service_account(client, ns, "stranger", vec![]).await;

    // No token, a malformed header, a garbage token: 401 problems, nothing created.
    let a = ingest(&c, "no-token", None).await;
    assert_problem(&a, 401, "no token");
    assert_eq!(a.headers[reqwest::header::WWW_AUTHENTICATE], "Bearer");
    let basic = send(
        &c,
        c.http
            .post(c.replicas[0].url("/api/v1/signals/prometheus"))
            .basic_auth("u", Some("p"))
            .json(&webhook(&[("basic", "KubePodCrashLooping")])),
        None,
    )
    .await;
    assert_problem(&basic, 401, "basic auth");
    assert_problem(
        &ingest(&c, "garbage", Some("not-a-token")).await,
        401,
        "garbage",
    );

    // Authenticated but not authorised: 403 problem naming the missing permission.
    let denied = ingest(&c, "stranger", Some(&stranger)).await;
    assert_problem(&denied, 403, "no RBAC");
    let detail = denied.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("system:serviceaccount:") && detail.contains("create services"),
        "{detail}"
    );
    assert!(c.list().await.is_empty(), "refused requests created RRs");

    // The sender's ServiceAccount: admitted; the RR exists.
    let ok = ingest(&c, "checkout", Some(&sender)).await;
    assert_eq!(ok.status, 201, "{:?}", ok.body);
    let rr = name::name(&fingerprint_of("checkout"), Attempt::FIRST);
    assert_eq!(c.list().await.len(), 1);

    // A sender that may only ingest may not read the audit trail; the auditor may (once the audit
    // writer has stored the event: 404 until then), but may not ingest.
    assert_problem(&lookup(&c, &rr, Some(&sender)).await, 403, "sender lookup");
    assert_problem(&lookup(&c, &rr, None).await, 401, "anonymous lookup");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let trail = loop {
        let a = lookup(&c, &rr, Some(&auditor)).await;
        if a.status == 200 {
            break a.body;
        }
        assert_eq!(a.status, 404, "auditor lookup: {:?}", a.body);
        assert!(
            tokio::time::Instant::now() < deadline,
            "no audit trail in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The audit trail names the authenticated sender.
    let actor = format!("system:serviceaccount:{ns}:alertmanager");
    assert!(trail.to_string().contains(&actor), "{trail}");
    assert_problem(
        &ingest(&c, "auditor", Some(&auditor)).await,
        403,
        "auditor ingest",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn a_token_of_a_deleted_service_account_is_refused() {
    // An expired token cannot be made without waiting: TokenRequest's expirationSeconds is bounded
    // below (10 min). The API server rejects a token whose ServiceAccount is gone through the same
    // TokenReview answer (authenticated: false) as an expired one, so that is what is tested.
    let c = Cluster::start_with("e2e-auth-revoked", &[auth_on()]).await;
    let (client, ns) = (&c.client, c.namespace.as_str());
    let ghost = service_account(client, ns, "ghost", vec![ingest_rule()]).await;
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .delete("ghost", &DeleteParams::default())
        .await
        .unwrap();
    let a = ingest(&c, "ghost", Some(&ghost)).await;
    assert_problem(&a, 401, "deleted ServiceAccount");
    assert!(c.list().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn a_storm_from_one_sender_costs_one_token_review_and_one_access_review() {
    let c = Cluster::start_with("e2e-auth-storm", &[auth_on()]).await;
    let (client, ns) = (&c.client, c.namespace.as_str());
    let sender = service_account(client, ns, "alertmanager", vec![ingest_rule()]).await;
    let before = reviews(&c).await;
    // A concurrent burst of one unknown token: single-flight, one review of each kind.
    let answers =
        futures::future::join_all((0..64).map(|_| ingest(&c, "storm", Some(&sender)))).await;
    let mut codes: Vec<u16> = answers.iter().map(|a| a.status).collect();
    codes.sort_unstable();
    codes.dedup();
    assert!(codes.iter().all(|s| [201, 202].contains(s)), "{codes:?}");
    // Then a sequential storm within the TTL: no review at all.
    for _ in 0..64 {
        assert_eq!(ingest(&c, "storm", Some(&sender)).await.status, 202);
    }
    let after = reviews(&c).await;
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1, 1),
        "TokenReviews and SubjectAccessReviews made for 128 requests of one sender"
    );
    let m = c.replicas[0].metrics().await;
    assert!(
        counter(
            &m,
            "namegate_auth_cache_lookups",
            "cache=\"token\",result=\"hit\""
        ) >= 64,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn a_namespace_being_deleted_is_a_503_never_a_500() {
    // No controller-manager runs in the harness, so a deleted namespace stays Terminating.
    let c = Cluster::start("e2e-terminating", 1).await;
    Api::<Namespace>::all(c.client.clone())
        .delete(&c.namespace, &DeleteParams::default())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ns = Api::<Namespace>::all(c.client.clone())
            .get(&c.namespace)
            .await
            .unwrap();
        if ns.metadata.deletion_timestamp.is_some() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One alert, then a batch of two: both must be retried by Alertmanager, so 503 + Retry-After.
    for body in [
        webhook(&[("doomed", "KubePodCrashLooping")]),
        webhook(&[
            ("doomed-a", "KubePodCrashLooping"),
            ("doomed-b", "KubePodCrashLooping"),
        ]),
    ] {
        let (status, headers, body) = c.post_alerts(0, &body).await;
        assert_eq!(status, 503, "{body}");
        assert!(headers.contains_key(reqwest::header::RETRY_AFTER));
        assert_eq!(body["status"], 503);
    }
    // Every problem answer is counted.
    let m = c.replicas[0].metrics().await;
    assert!(
        counter(&m, "namegate_http_problems", "status=\"503\"") >= 2,
        "{m}"
    );
}

/// Whether the API server itself accepts `token` (a SelfSubjectReview made with it, no client
/// certificate).
async fn api_server_accepts(token: &str) -> bool {
    let mut cfg = kube::Config::infer().await.unwrap();
    cfg.auth_info = kube::config::AuthInfo {
        token: Some(token.to_owned().into()),
        ..kube::config::AuthInfo::default()
    };
    let client = Client::try_from(cfg).unwrap();
    let body =
        serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let req = http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    match client.request::<Value>(req).await {
        Ok(_) => true,
        Err(kube::Error::Api(s)) if s.code == 401 => false,
        Err(e) => panic!("SelfSubjectReview: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the real kube-apiserver: run scripts/test"]
async fn with_an_audience_only_tokens_for_the_gateway_pass_and_they_do_not_work_on_the_api_server()
{
    let mut opts = auth_on();
    opts.extra_args
        .extend(["--auth-audience".to_owned(), "namegate".to_owned()]);
    let c = Cluster::start_with("e2e-auth-audience", &[opts]).await;
    let (client, ns) = (&c.client, c.namespace.as_str());
    // One ServiceAccount with the sender rule, two tokens: one for the gateway's audience, one for
    // the API server's (what a pod's default mounted token is).
    let for_api = service_account(client, ns, "alertmanager", vec![ingest_rule()]).await;
    let for_gateway = token_for(client, ns, "alertmanager", &["namegate"]).await;

    assert_problem(
        &ingest(&c, "api-audience", Some(&for_api)).await,
        401,
        "a token for the API server's audience",
    );
    let ok = ingest(&c, "gateway-audience", Some(&for_gateway)).await;
    assert_eq!(ok.status, 201, "{:?}", ok.body);
    assert_eq!(c.list().await.len(), 1, "only the gateway-audience signal");

    // What the audience buys: the token a sender gives the gateway is useless against the API
    // server, while the API server's own token works there.
    assert!(api_server_accepts(&for_api).await);
    assert!(!api_server_accepts(&for_gateway).await);
}
