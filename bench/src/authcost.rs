//! §1 rows for caller authentication (docs/security.md, docs/benchmarks.md "Authentication cost"): the
//! TokenReviews and SubjectAccessReviews the API server receives per signal when the gateway runs with
//! `--auth kubernetes` (the default), counted by the API server's own `apiserver_request_total`
//! (resources `tokenreviews` and `subjectaccessreviews`), with real ServiceAccount tokens (TokenRequest)
//! and real RBAC: a sender bound to the sender rule, a ServiceAccount without it, and a token the API
//! server never issued.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kube::Client;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use crate::apimetrics;
use crate::payload;
use crate::podlevel::{ar, create};
use crate::procs::Replica;
use crate::report::{Report, yes_no};

const PROMETHEUS_PATH: &str = "/api/v1/signals/prometheus";
/// The gateway's Service name the SubjectAccessReviews ask about (`--auth-service-name` default).
const SERVICE: &str = "namegate";
/// In flight at once: a burst from one sender hits the cold cache concurrently (single flight).
const CONNS: usize = 32;

/// (TokenReview creates, SubjectAccessReview creates) so far, and the API server's mean time of each.
#[derive(Clone, Copy, Debug, Default)]
struct Reviews {
    tokens: f64,
    access: f64,
    token_ms: (f64, f64),
    access_ms: (f64, f64),
}

async fn reviews(client: &Client) -> Result<Reviews, String> {
    let t = apimetrics::scrape_resource(client, "tokenreviews").await?;
    let a = apimetrics::scrape_resource(client, "subjectaccessreviews").await?;
    let d = |c: &apimetrics::Counts| c.durations.get(&("POST".into(), String::new())).copied();
    Ok(Reviews {
        tokens: t.creates(),
        access: a.creates(),
        token_ms: d(&t).unwrap_or_default(),
        access_ms: d(&a).unwrap_or_default(),
    })
}

impl Reviews {
    fn since(self, earlier: Reviews) -> Reviews {
        Reviews {
            tokens: self.tokens - earlier.tokens,
            access: self.access - earlier.access,
            token_ms: (
                self.token_ms.0 - earlier.token_ms.0,
                self.token_ms.1 - earlier.token_ms.1,
            ),
            access_ms: (
                self.access_ms.0 - earlier.access_ms.0,
                self.access_ms.1 - earlier.access_ms.1,
            ),
        }
    }
}

/// A bound token of ServiceAccount `sa` (TokenRequest, one hour).
async fn token(client: &Client, ns: &str, sa: &str) -> Result<String, String> {
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                      "spec": {"expirationSeconds": 3600}});
    let req = Request::post(format!(
        "/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token"
    ))
    .header(CONTENT_TYPE, "application/json")
    .body(serde_json::to_vec(&body).map_err(|e| e.to_string())?)
    .map_err(|e| e.to_string())?;
    let answer: Value = client
        .request(req)
        .await
        .map_err(|e| format!("TokenRequest for {ns}/{sa}: {e}"))?;
    answer["status"]["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("TokenRequest for {ns}/{sa}: no token in {answer}"))
}

/// Sends every body with `Authorization: Bearer <token>` over `conns` keep-alive connections; the
/// statuses in order of completion.
async fn send(addr: SocketAddr, token: &str, bodies: Vec<Bytes>, conns: usize) -> Vec<u16> {
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let auth = format!("Bearer {token}");
    let mut tasks = Vec::new();
    for _ in 0..conns.min(bodies.len()) {
        let (bodies, next, auth) = (bodies.clone(), next.clone(), auth.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let Ok(stream) = TcpStream::connect(addr).await else {
                return out;
            };
            let Ok((mut sender, conn)) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
            else {
                return out;
            };
            tokio::spawn(conn);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let req = Request::post(PROMETHEUS_PATH)
                    .header(HOST, addr.to_string())
                    .header(CONTENT_TYPE, "application/json")
                    .header(AUTHORIZATION, &auth)
                    .body(Full::new(body.clone()));
                let Ok(req) = req else { break };
                let sent = async {
                    sender.ready().await?;
                    sender.send_request(req).await
                };
                let answered = async {
                    let resp = sent.await?;
                    let status = resp.status().as_u16();
                    resp.into_body().collect().await?;
                    Ok::<_, hyper::Error>(status)
                };
                match tokio::time::timeout(Duration::from_secs(10), answered).await {
                    Ok(Ok(status)) => out.push(status),
                    _ => break,
                }
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all
}

fn count(answers: &[u16], want: &[u16]) -> usize {
    answers.iter().filter(|s| want.contains(s)).count()
}

/// Runs the phases against one replica started with `--auth kubernetes` and reports the rows.
pub async fn run(
    client: &Client,
    namegate: &Path,
    work_dir: &Path,
    signals: usize,
    starts_at: &str,
    report: &mut Report,
) -> Result<(), String> {
    let ns = namegate_e2e::fresh_namespace(client, "bench-auth").await;
    let sa = ar("", "ServiceAccount", "serviceaccounts");
    for name in ["sender", "stranger"] {
        create(
            client,
            &ns,
            &sa,
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}),
        )
        .await?;
    }
    // The chart's sender rule (charts/namegate/templates/rbac.yaml), as a Role of the namespace.
    create(
        client,
        &ns,
        &ar("rbac.authorization.k8s.io", "Role", "roles"),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "namegate-sender"},
               "rules": [{"apiGroups": [""], "resources": ["services"],
                          "resourceNames": [SERVICE], "verbs": ["create"]}]}),
    )
    .await?;
    create(
        client,
        &ns,
        &ar("rbac.authorization.k8s.io", "RoleBinding", "rolebindings"),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "namegate-sender"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                           "name": "namegate-sender"},
               "subjects": [{"kind": "ServiceAccount", "name": "sender", "namespace": ns}]}),
    )
    .await?;
    let sender = token(client, &ns, "sender").await?;
    let stranger = token(client, &ns, "stranger").await?;
    // Well-formed, signed by nobody the API server trusts.
    let forged =
        "eyJhbGciOiJSUzI1NiIsImtpZCI6IngifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6eDp5In0.c2ln";

    let gw = Replica::start_with(
        namegate,
        &ns,
        work_dir,
        "gateway-auth",
        Duration::from_secs(1),
        Duration::from_secs(180),
        &[
            "--auth",
            "kubernetes",
            "--auth-service-name",
            SERVICE,
            "--resolve-targets",
            "false",
            "--scope",
            "all",
        ],
    )
    .await?;
    let addr = gw.addr;
    // Ten workloads: ten RRs, the rest duplicates (the admission path is §1's; only auth is counted).
    let bodies = |n: usize| -> Vec<Bytes> {
        (0..n)
            .map(|i| payload::webhook(&format!("auth-{:02}", i % 10), starts_at))
            .collect()
    };

    let r0 = reviews(client).await?;
    let cold = send(addr, &sender, bodies(signals), CONNS).await;
    let r1 = reviews(client).await?;
    let warm = send(addr, &sender, bodies(signals), CONNS).await;
    let r2 = reviews(client).await?;
    let denied = send(addr, &stranger, bodies(signals / 5), CONNS).await;
    let r3 = reviews(client).await?;
    let rejected = send(addr, forged, bodies(signals / 5), CONNS).await;
    let r4 = reviews(client).await?;
    drop(gw);

    let (c, w, d, x) = (r1.since(r0), r2.since(r1), r3.since(r2), r4.since(r3));
    let expected = [
        (count(&cold, &[201, 202]), signals, "sender, cold cache"),
        (count(&warm, &[201, 202]), signals, "sender, warm cache"),
        (count(&denied, &[403]), signals / 5, "stranger (403)"),
        (count(&rejected, &[401]), signals / 5, "forged token (401)"),
    ];
    for (got, want, what) in expected {
        if got != want {
            report.note(format!(
                "§1 auth: {what}: {got} of {want} answers as expected"
            ));
        }
    }
    let pair = |r: &Reviews| {
        format!(
            "{} TokenReview + {} SubjectAccessReview",
            r.tokens, r.access
        )
    };
    report.row(
        "1",
        format!(
            "auth (`--auth kubernetes`, cache TTL 30 s): API calls for {signals} signals of one sender from a cold cache, {CONNS} in flight"
        ),
        format!(
            "{} ({:.4} per signal)",
            pair(&c),
            (c.tokens + c.access) / signals.max(1) as f64
        ),
        "",
        "",
        "1 + 1 per sender per TTL",
        yes_no(c.tokens <= 1.0 && c.access <= 1.0),
    );
    report.row(
        "1",
        format!("auth: {signals} more signals of that sender within the TTL"),
        pair(&w),
        "",
        "",
        "0 + 0",
        yes_no(w.tokens == 0.0 && w.access == 0.0),
    );
    report.row(
        "1",
        format!(
            "auth: {} signals of a ServiceAccount without the sender role (403)",
            signals / 5
        ),
        pair(&d),
        "",
        "",
        "1 + 1 per negative TTL (5 s)",
        yes_no(d.tokens <= 1.0 && d.access <= 1.0),
    );
    report.row(
        "1",
        format!(
            "auth: {} signals with a token the API server did not issue (401)",
            signals / 5
        ),
        pair(&x),
        "",
        "",
        "1 + 0 per negative TTL (5 s)",
        yes_no(x.tokens <= 1.0 && x.access == 0.0),
    );
    let all = r4.since(r0);
    let mean = |(sum, n): (f64, f64)| {
        if n > 0.0 {
            format!("{:.1} ms", sum / n * 1000.0)
        } else {
            "-".into()
        }
    };
    report.row(
        "1",
        "auth: the API server's own time per TokenReview / SubjectAccessReview (apiserver_request_duration_seconds)",
        format!("{} / {}", mean(all.token_ms), mean(all.access_ms)),
        "",
        "",
        "",
        "",
    );
    Ok(())
}
