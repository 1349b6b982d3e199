//! `namegate-bench request-cost`: the request workers' CPU per duplicate in the two stages that
//! depend only on the request's bytes — decoding the webhook and building the duplicate's audit
//! event — without HTTP, the index or the audit writer around them (docs/benchmarks.md, "The request
//! workers' decode and audit event").
//!
//! Decodes the benchmark's webhook (`payload::webhook`, the body §2 sends) `iterations` times, then
//! builds the `gateway.signal.deduplicated` event of its signal `iterations` times, on this thread,
//! and reads the thread's CPU time (`/proc/thread-self/schedstat`) around each loop: unlike wall
//! time, it does not count the time other processes hold the cores.

use namegate::adapters::{AdapterConfig, decode_alertmanager};
use namegate::audit::payload::{Actor, RrRef, signal_deduplicated};
use namegate::signal::{Decoded, Source};

use crate::payload;

/// CPU ns per operation of each stage in one round.
pub struct Round {
    pub decode_ns: f64,
    pub event_ns: f64,
}

fn thread_cpu_ns() -> Result<u64, String> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .map_err(|e| format!("/proc/thread-self/schedstat: {e}"))?
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "/proc/thread-self/schedstat: no CPU time".to_owned())
}

pub fn round(iterations: u32) -> Result<Round, String> {
    let body = payload::webhook("bench-deploy-0", &payload::starts_at());
    let cfg = AdapterConfig::default();
    let now = jiff::Timestamp::now();
    let start = thread_cpu_ns()?;
    for _ in 0..iterations {
        let decoded = decode_alertmanager(&body, None, now, &cfg).map_err(|e| e.to_string())?;
        std::hint::black_box(decoded);
    }
    let decoded = thread_cpu_ns()?;
    let signal = match decode_alertmanager(&body, None, now, &cfg)
        .map_err(|e| e.to_string())?
        .pop()
    {
        Some(Decoded::Signal(s)) => s,
        other => return Err(format!("the benchmark's webhook decoded into {other:?}")),
    };
    let sender = Actor::sender(None, Source::Prometheus);
    let rr = RrRef {
        namespace: "kubernaut-system",
        name: "rr-9f1c2a7d4e3b",
        uid: Some("0b8f3c52-6d1e-4e8a-9a57-2f4c1d9e7b60".to_owned()),
        attempt: 0,
    };
    let before = thread_cpu_ns()?;
    for i in 0..iterations {
        let count = i32::try_from(i).unwrap_or(i32::MAX);
        std::hint::black_box(signal_deduplicated(&signal, &sender, &rr, count));
    }
    let built = thread_cpu_ns()?;
    let per = |ns: u64| ns as f64 / f64::from(iterations.max(1));
    Ok(Round {
        decode_ns: per(decoded - start),
        event_ns: per(built - before),
    })
}
