//! Memory (docs/benchmarks.md, §5): many RRs in one namespace, then (a) the gateway's own `RrIndex` fed by the same
//! watcher the gateway runs, in a fresh process, measured by `approx_bytes()/len()` and by the
//! process's RSS before and after; (b) a real replica started on that namespace, its RSS at
//! `/readyz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crd_schema::{Attempt, Fingerprint, RemediationRequest};
use futures::StreamExt;
use kube::api::PostParams;
use kube::runtime::watcher;
use kube::{Api, Client};
use namegate::index::{IndexedRr, RrIndex};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Creates RRs `0..n` (small ones: no originalPayload) with `concurrency` requests in flight, until
/// done or `timeout`. Returns (created, elapsed).
pub async fn create_rrs(
    client: &Client,
    namespace: &str,
    n: u64,
    concurrency: usize,
    timeout: Duration,
) -> (u64, Duration) {
    let api: Api<RemediationRequest> = Api::namespaced(client.clone(), namespace);
    let next = Arc::new(AtomicU64::new(0));
    let created = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + timeout;
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (api, next, created, failed) =
            (api.clone(), next.clone(), created.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let pp = PostParams::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || Instant::now() >= deadline {
                    return;
                }
                let workload = format!("mem-{i:07}");
                let fp = Fingerprint::of_input(&format!("bench-mem:Deployment:{workload}"));
                let rr = namegate_e2e::sample_rr(&fp, Attempt::FIRST, &workload);
                // A few tries per RR: a busy API server may time out or answer 429/5xx.
                for _ in 0..5 {
                    match api.create(&pp, &rr).await {
                        Ok(_) => {
                            created.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(kube::Error::Api(s)) if s.code == 409 => break,
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        }));
    }
    let progress = {
        let created = created.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(15)).await;
                let c = created.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "bench:   {c}/{n} RRs created in {secs:.0} s ({:.0}/s)",
                    c as f64 / secs
                );
            }
        })
    };
    for t in tasks {
        let _ = t.await;
    }
    progress.abort();
    let f = failed.load(Ordering::Relaxed);
    if f > 0 {
        eprintln!("bench:   {f} create attempts failed and were retried");
    }
    (created.load(Ordering::Relaxed), started.elapsed())
}

/// What `namegate-bench index-mem` prints (one JSON line).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IndexMem {
    pub len: usize,
    pub approx_bytes: usize,
    pub rss_before: u64,
    pub rss_after: u64,
    pub hwm_after: u64,
    /// RSS when half of `expect` objects had been applied (0 if not reached), for the marginal cost
    /// per RR without the fixed costs (client, page buffers, runtime).
    pub rss_half: u64,
    pub half: u64,
    pub list_seconds: f64,
}

/// The `index-mem` subcommand: in this (fresh) process, build the gateway's `RrIndex` from the
/// watcher's initial list of `namespace`, exactly as `RrIndex::run` does (page size 500), and report
/// its size. Runs on a current-thread runtime so one malloc arena holds everything.
pub async fn index_mem(
    namespace: &str,
    expect: u64,
    timeout: Duration,
) -> Result<IndexMem, String> {
    let client = Client::try_default().await.map_err(|e| e.to_string())?;
    let api: Api<IndexedRr> = Api::namespaced(client, namespace);
    // Warm the client (TLS, connection pool) so its memory is in the "before" figure.
    api.list(&kube::api::ListParams::default().limit(1))
        .await
        .map_err(|e| e.to_string())?;
    let metrics = namegate::telemetry::metrics::Metrics::register(
        &mut prometheus_client::registry::Registry::default(),
    );
    let index = RrIndex::new(metrics, false);
    let me = std::process::id();
    let (rss_before, _) = crate::procs::rss(me)?;
    let started = Instant::now();
    let half = expect / 2;
    let mut rss_half = 0;
    let mut applied = 0u64;
    {
        let stream = watcher(api, watcher::Config::default().page_size(500));
        futures::pin_mut!(stream);
        let deadline = started + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, stream.next())
                .await
                .map_err(|_| format!("the initial list did not finish within {timeout:?}"))?;
            match next {
                Some(Ok(ev)) => {
                    let done = matches!(ev, watcher::Event::InitDone);
                    let object = matches!(ev, watcher::Event::InitApply(_));
                    index.apply(ev);
                    if done {
                        break;
                    }
                    if object {
                        applied += 1;
                        if applied == half {
                            rss_half = crate::procs::rss(me)?.0;
                        }
                    }
                }
                Some(Err(e)) => return Err(format!("watch failed: {e}")),
                None => return Err("the watch stream ended".into()),
            }
        }
    }
    let list_seconds = started.elapsed().as_secs_f64();
    let (rss_after, hwm_after) = crate::procs::rss(me)?;
    Ok(IndexMem {
        len: index.len(),
        approx_bytes: index.approx_bytes(),
        rss_before,
        rss_after,
        hwm_after,
        rss_half,
        half,
        list_seconds,
    })
}
