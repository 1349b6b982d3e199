//! The load generator: HTTP/1.1 keep-alive connections (hyper's low-level client, one request in
//! flight per connection), closed loop (fixed concurrency, as fast as answers come back) or open loop
//! (fixed rate). Every loop is bounded by a deadline and by a request count.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Longest a single request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound of requests one worker sends in one run, whatever the deadline.
const MAX_REQUESTS_PER_WORKER: u64 = 5_000_000;

/// Where to send and what.
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    /// The body of request number `n` (a counter shared by all workers of a run).
    pub body: Box<dyn Fn(u64) -> Bytes + Send + Sync>,
    /// The answer that counts as a success.
    pub expect: u16,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("addr", &self.addr)
            .field("path", &self.path)
            .field("expect", &self.expect)
            .finish_non_exhaustive()
    }
}

impl Target {
    pub fn fixed(addr: SocketAddr, path: &str, body: Bytes, expect: u16) -> Arc<Self> {
        Arc::new(Self {
            addr,
            path: path.to_owned(),
            body: Box::new(move |_| body.clone()),
            expect,
        })
    }
}

/// One answer: status, headers, body.
pub type Answer = (u16, HeaderMap, Bytes);

/// A keep-alive HTTP/1.1 connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("host", &self.host).finish()
    }
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Result<Self, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake {addr}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            host: addr.to_string(),
        })
    }

    pub async fn request(
        &mut self,
        method: http::Method,
        path: &str,
        body: Bytes,
    ) -> Result<Answer, String> {
        let fut = async {
            self.sender.ready().await.map_err(|e| e.to_string())?;
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header(HOST, &self.host)
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(body))
                .map_err(|e| e.to_string())?;
            let resp = self
                .sender
                .send_request(req)
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, headers, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .map_err(|_| "request timed out".to_owned())?
    }
}

/// One request on a fresh connection (readiness probes, samples).
pub async fn once(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    body: Bytes,
) -> Result<Answer, String> {
    Conn::connect(addr).await?.request(method, path, body).await
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Answers with the expected status inside the measured window.
    pub ok: u64,
    /// Transport errors and timeouts.
    pub errors: u64,
    /// Answers with another status: (status, count).
    pub unexpected: Vec<(u16, u64)>,
    /// Length of the measured window.
    pub window: Duration,
    /// Latencies of the successful requests of the window, nanoseconds, sorted.
    pub latencies_ns: Vec<u64>,
    /// Answers with the expected status over the whole run (warm-up and stragglers included).
    pub all_ok: u64,
    /// Answers of any status over the whole run.
    pub answered: u64,
    /// Open loop only: sends that left more than 2 ms after their scheduled time (tokio's timer
    /// has 1 ms granularity, so up to 1 ms is the timer, not the server).
    pub late_sends: u64,
    /// Open loop only: requests scheduled.
    pub scheduled: u64,
}

impl Stats {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of the latencies, in milliseconds.
    pub fn pct_ms(&self, q: f64) -> f64 {
        if self.latencies_ns.is_empty() {
            return f64::NAN;
        }
        let n = self.latencies_ns.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.latencies_ns[rank - 1] as f64 / 1e6
    }

    fn merge(&mut self, w: Worker) {
        self.ok += w.ok;
        self.all_ok += w.all_ok;
        self.answered += w.answered;
        self.errors += w.errors;
        self.late_sends += w.late;
        self.scheduled += w.scheduled;
        for (status, n) in w.unexpected {
            match self.unexpected.iter_mut().find(|(s, _)| *s == status) {
                Some((_, c)) => *c += n,
                None => self.unexpected.push((status, n)),
            }
        }
        self.latencies_ns.extend(w.latencies);
    }

    fn finish(mut self, window: Duration) -> Self {
        self.window = window;
        self.latencies_ns.sort_unstable();
        self.unexpected.sort_unstable();
        self
    }

    /// Answers of `status` in the window.
    pub fn status_count(&self, status: u16) -> u64 {
        self.unexpected
            .iter()
            .filter(|(s, _)| *s == status)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn unexpected_text(&self) -> String {
        if self.unexpected.is_empty() && self.errors == 0 {
            return "none".into();
        }
        let mut parts: Vec<String> = self
            .unexpected
            .iter()
            .map(|(s, n)| format!("{n}×{s}"))
            .collect();
        if self.errors > 0 {
            parts.push(format!("{}×transport", self.errors));
        }
        parts.join(", ")
    }
}

#[derive(Default)]
struct Worker {
    ok: u64,
    all_ok: u64,
    answered: u64,
    errors: u64,
    late: u64,
    scheduled: u64,
    unexpected: Vec<(u16, u64)>,
    latencies: Vec<u64>,
}

impl Worker {
    /// Counts every answer, measured or not.
    fn count(&mut self, result: &Result<Answer, String>, expect: u16) {
        if let Ok((status, _, _)) = result {
            self.answered += 1;
            if *status == expect {
                self.all_ok += 1;
            }
        }
    }

    fn record(&mut self, result: &Result<Answer, String>, expect: u16, latency: Duration) {
        match result {
            Ok((status, _, _)) if *status == expect => {
                self.ok += 1;
                self.latencies.push(latency.as_nanos() as u64);
            }
            Ok((status, _, _)) => match self.unexpected.iter_mut().find(|(s, _)| s == status) {
                Some((_, c)) => *c += 1,
                None => self.unexpected.push((*status, 1)),
            },
            Err(_) => self.errors += 1,
        }
    }
}

/// Closed loop: `conns` connections each send the next request as soon as the previous answer is
/// in, for `warmup` (not measured) and then `duration` (measured).
pub async fn closed_loop(
    target: Arc<Target>,
    conns: usize,
    warmup: Duration,
    duration: Duration,
) -> Stats {
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let target = target.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut w = Worker::default();
            let mut conn: Option<Conn> = None;
            for _ in 0..MAX_REQUESTS_PER_WORKER {
                if Instant::now() >= end {
                    break;
                }
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match Conn::connect(target.addr).await {
                        Ok(c) => conn.insert(c),
                        Err(_) => {
                            if Instant::now() >= measure_from {
                                w.errors += 1;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    },
                };
                let body = (target.body)(counter.fetch_add(1, Ordering::Relaxed));
                let sent = Instant::now();
                let result = c.request(http::Method::POST, &target.path, body).await;
                let done = Instant::now();
                if result.is_err() {
                    conn = None;
                }
                w.count(&result, target.expect);
                if sent >= measure_from && done <= end {
                    w.record(&result, target.expect, done - sent);
                }
            }
            w
        }));
    }
    let mut stats = Stats::default();
    for t in tasks {
        if let Ok(w) = t.await {
            stats.merge(w);
        }
    }
    stats.finish(duration)
}

/// Open loop: requests are scheduled at a fixed `rate` (per second) over `duration`, spread
/// round-robin over `conns` connections (connection `j` sends requests `j, j+conns, …`). A request
/// whose connection is still busy at its scheduled time leaves late (counted); latency is measured
/// from the moment it is written, so it is the server's answer time plus loopback and client cost.
pub async fn open_loop(target: Arc<Target>, conns: usize, rate: f64, duration: Duration) -> Stats {
    let counter = Arc::new(AtomicU64::new(0));
    // Connect everything first so connection setup is not in the window.
    let mut ready = Vec::with_capacity(conns);
    for _ in 0..conns {
        ready.push(Conn::connect(target.addr).await.ok());
    }
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + duration;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let mut tasks = Vec::with_capacity(conns);
    for (j, mut conn) in ready.into_iter().enumerate() {
        let target = target.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut w = Worker::default();
            for m in 0..MAX_REQUESTS_PER_WORKER {
                let slot = j as u64 + m * conns as u64;
                let at = start + interval.mul_f64(slot as f64);
                if at >= end {
                    break;
                }
                w.scheduled += 1;
                tokio::time::sleep_until(at).await;
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match Conn::connect(target.addr).await {
                        Ok(c) => conn.insert(c),
                        Err(_) => {
                            w.errors += 1;
                            continue;
                        }
                    },
                };
                let body = (target.body)(counter.fetch_add(1, Ordering::Relaxed));
                let sent = Instant::now();
                if sent > at + Duration::from_millis(2) {
                    w.late += 1;
                }
                let result = c.request(http::Method::POST, &target.path, body).await;
                if result.is_err() {
                    conn = None;
                }
                w.count(&result, target.expect);
                w.record(&result, target.expect, sent.elapsed());
            }
            w
        }));
    }
    let mut stats = Stats::default();
    for t in tasks {
        if let Ok(w) = t.await {
            stats.merge(w);
        }
    }
    stats.finish(duration)
}

/// Sends `bodies` with at most `conns` requests in flight; returns the status of each, in order.
pub async fn send_all(
    addr: SocketAddr,
    path: &str,
    bodies: Vec<Bytes>,
    conns: usize,
) -> Vec<Result<u16, String>> {
    let n = bodies.len();
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conns.min(n.max(1)) {
        let bodies = bodies.clone();
        let next = next.clone();
        let path = path.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut conn: Option<Conn> = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= bodies.len() {
                    break;
                }
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match Conn::connect(addr).await {
                        Ok(c) => conn.insert(c),
                        Err(e) => {
                            out.push((i, Err(e)));
                            continue;
                        }
                    },
                };
                let r = c
                    .request(http::Method::POST, &path, bodies[i].clone())
                    .await;
                if r.is_err() {
                    conn = None;
                }
                out.push((i, r.map(|(s, _, _)| s)));
            }
            out
        }));
    }
    let mut results: Vec<Result<u16, String>> = (0..n).map(|_| Err("not sent".into())).collect();
    for t in tasks {
        if let Ok(out) = t.await {
            for (i, r) in out {
                results[i] = r;
            }
        }
    }
    results
}
