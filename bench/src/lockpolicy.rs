//! §6: what the RR name lock (the chart's ValidatingAdmissionPolicy, docs/creators.md) costs the API
//! server per create: the same creates, in a namespace without the policy and in one where it is bound,
//! timed by the API server itself (`apiserver_request_duration_seconds` of RR POSTs, admission included).

use std::time::Duration;

use crd_schema::{Attempt, RemediationRequest};
use futures::StreamExt;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::time::Instant;

use crate::apimetrics;
use crate::report::{Report, pct};

/// Creates in flight while measuring.
const CONCURRENCY: usize = 8;

/// Creates `n` gateway-shaped RRs (random fingerprints, attempt 1) in `namespace`; returns the API
/// server's mean time per create in ms and the client-side mean.
async fn timed_creates(client: &Client, namespace: &str, n: usize) -> Result<(f64, f64), String> {
    let api: Api<RemediationRequest> = Api::namespaced(client.clone(), namespace);
    let before = apimetrics::scrape(client).await?;
    let t = Instant::now();
    let failures: Vec<String> = futures::stream::iter(0..n)
        .map(|_| {
            let api = api.clone();
            async move {
                let (fp, workload) = namegate_e2e::random_fingerprint();
                let rr = namegate_e2e::sample_rr(&fp, Attempt::FIRST, &workload);
                api.create(&PostParams::default(), &rr)
                    .await
                    .err()
                    .map(|e| e.to_string())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|r| async move { r })
        .collect()
        .await;
    let wall = t.elapsed();
    if let Some(first) = failures.first() {
        return Err(format!(
            "§6: {} of {n} creates in {namespace} failed, e.g. {first}",
            failures.len()
        ));
    }
    let delta = apimetrics::scrape(client).await?.since(&before);
    let server = delta
        .mean_ms("POST", "")
        .ok_or("§6: the API server reported no RR creates")?;
    let client_mean = wall.as_secs_f64() * 1e3 * CONCURRENCY as f64 / n.max(1) as f64;
    Ok((server, client_mean))
}

pub async fn rows(client: &Client, report: &mut Report, creates: usize) -> Result<(), String> {
    let off = namegate_e2e::fresh_namespace(client, "bench-nolock").await;
    let on = namegate_e2e::fresh_namespace(client, "bench-lock").await;
    namegate_e2e::install_lock_policy(client, &on).await;
    // Warm-up (connections, the policy's compiled program, etcd), then alternating rounds so drift in the
    // machine's load hits both sides alike.
    let warm = (creates / 10).max(20);
    timed_creates(client, &off, warm).await?;
    timed_creates(client, &on, warm).await?;
    let (mut s_off, mut s_on, mut c_off, mut c_on) = (0.0, 0.0, 0.0, 0.0);
    const ROUNDS: usize = 3;
    let per_round = (creates / ROUNDS).max(1);
    for _ in 0..ROUNDS {
        let (s, c) = timed_creates(client, &off, per_round).await?;
        (s_off, c_off) = (s_off + s, c_off + c);
        let (s, c) = timed_creates(client, &on, per_round).await?;
        (s_on, c_on) = (s_on + s, c_on + c);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = ROUNDS as f64;
    let (s_off, s_on, c_off, c_on) = (s_off / r, s_on / r, c_off / r, c_on / r);
    report.row(
        "6",
        format!(
            "RR name lock policy: API server's mean time per RR create, with the policy vs without \
             ({} creates each, {CONCURRENCY} in flight; client-side mean in brackets)",
            per_round * ROUNDS
        ),
        format!("{s_on:.2} ms ({c_on:.2} ms)"),
        format!("{s_off:.2} ms ({c_off:.2} ms)"),
        pct(s_on / s_off),
        "",
        "",
    );
    Ok(())
}
