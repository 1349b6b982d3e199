//! `namegate-bench run`: every figure of docs/benchmarks.md, side by side, in one run against one API server.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use crd_schema::{Attempt, RemediationRequest};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use namegate::adapters::{AdapterConfig, decode_alertmanager};
use namegate::signal::Decoded;
use serde_json::json;
use tokio::time::Instant;

use crate::apimetrics::{self, Counts};
use crate::load::{self, Stats, Target};
use crate::memory;
use crate::payload::{self, PROMETHEUS_PATH};
use crate::procs::{self, Replica};
use crate::report::{Report, mib, num, pct, yes_no};

#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// The `namegate` binary to benchmark (a release build).
    #[arg(long)]
    pub namegate: PathBuf,
    /// Scratch directory (audit databases, logs, the canned response).
    #[arg(long)]
    pub work_dir: PathBuf,
    /// §1: distinct new signals sent through a replica.
    #[arg(long, default_value_t = 200)]
    pub new_signals: usize,
    /// §1: duplicates of those fingerprints sent afterwards.
    #[arg(long, default_value_t = 2000)]
    pub duplicates: usize,
    /// Connections of the duplicate-path load (closed and open loop).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Unmeasured warm-up before each closed-loop measurement.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Length of each closed-loop duplicate measurement.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Open-loop rate as a fraction of the measured maximum duplicate throughput.
    #[arg(long, default_value_t = 0.5)]
    pub rate_fraction: f64,
    /// §4's open-loop rate in requests per second, instead of `--rate-fraction` × §2's gateway rate:
    /// before/after pairs at the same rate when §2 moves with the machine's load.
    #[arg(long)]
    pub open_rate: Option<f64>,
    /// Length of each open-loop measurement.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub open_duration: Duration,
    /// Requests in flight for the new-signal comparison (gateway and kube-rs baseline alike).
    #[arg(long, default_value_t = 32)]
    pub new_concurrency: usize,
    /// Length of each new-signal measurement.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub new_duration: Duration,
    /// §5: RRs to create and index (0 skips the memory section).
    #[arg(long, default_value_t = 100_000)]
    pub rrs: u64,
    /// Creates in flight while filling the memory namespace.
    #[arg(long, default_value_t = 64)]
    pub create_concurrency: usize,
    /// Give up creating RRs after this long and measure what exists.
    #[arg(long, default_value = "12m", value_parser = humantime::parse_duration)]
    pub create_timeout: Duration,
    /// Sections to run (§1 always runs: the others need its RRs). 4 implies 2.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5,6")]
    pub sections: Vec<u8>,
    /// PID of the API server process, to report its CPU time per RR in §3 (scripts/bench passes it).
    #[arg(long)]
    pub apiserver_pid: Option<u32>,
    /// §6: RR creates timed with and without the lock policy (each).
    #[arg(long, default_value_t = 600)]
    pub lock_policy_creates: usize,
    /// §2 also through a replica whose audit store is this PostgreSQL URL (`scripts/bench --postgres`
    /// starts a private server and passes a fresh database).
    #[arg(long)]
    pub postgres_url: Option<String>,
    /// The replicas' occurrence flush interval.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub flush_interval: Duration,
}

const READY_TIMEOUT: Duration = Duration::from_secs(180);

pub async fn run(args: RunArgs) -> Result<(), String> {
    let started = Instant::now();
    let load_at_start = procs::loadavg();
    let mut report = Report::default();
    let client = namegate_e2e::client().await;
    namegate_e2e::install_crd(&client).await;
    let version = client
        .apiserver_version()
        .await
        .map(|v| v.git_version)
        .unwrap_or_else(|_| "?".into());
    let starts_at = payload::starts_at();

    // ------------------------------------------------------------------ §1 API calls per signal
    eprintln!("bench: §1 API calls per signal");
    let ns = namegate_e2e::fresh_namespace(&client, "bench-gw").await;
    let s0 = apimetrics::scrape(&client).await?;
    let gw = Replica::start(
        &args.namegate,
        &ns,
        &args.work_dir,
        "gateway",
        args.flush_interval,
        READY_TIMEOUT,
    )
    .await?;
    let (rss_empty, _) = procs::rss(gw.proc.pid())?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s1 = apimetrics::scrape(&client).await?;
    let startup = s1.since(&s0);

    let n = args.new_signals.max(1);
    let deployments: Vec<String> = (0..n).map(|i| format!("svc-{i:05}")).collect();
    let bodies: Vec<Bytes> = deployments
        .iter()
        .map(|d| payload::webhook(d, &starts_at))
        .collect();
    let answers = load::send_all(gw.addr, PROMETHEUS_PATH, bodies.clone(), 32).await;
    let created = answers.iter().filter(|a| matches!(a, Ok(201))).count();
    if created != n {
        report.note(format!(
            "§1: {created} of {n} new signals were answered 201 (others: {})",
            summarize(&answers)
        ));
    }
    let (s2, _) = wait_status_writes(&client, &s1, created as f64, args.flush_interval).await?;
    let new_delta = s2.since(&s1);

    let m = args.duplicates;
    let dup_bodies: Vec<Bytes> = (0..m).map(|i| bodies[i % n].clone()).collect();
    let t = Instant::now();
    let answers = load::send_all(gw.addr, PROMETHEUS_PATH, dup_bodies, 32).await;
    let dup_elapsed = t.elapsed();
    let dups = answers.iter().filter(|a| matches!(a, Ok(202))).count();
    if dups != m {
        report.note(format!(
            "§1: {dups} of {m} duplicates were answered 202 (others: {})",
            summarize(&answers)
        ));
    }
    // Wait until the replica has written every occurrence it answered (its pending gauge counts a
    // flush in flight until it settles); a fixed sleep read the counts mid-flush under load.
    if !occurrences_flushed(&gw, args.flush_interval * 5 + Duration::from_secs(30)).await {
        report.note("§1: occurrences still pending at the deadline; the counts below are early");
    }
    let s3 = apimetrics::scrape(&client).await?;
    let dup_delta = s3.since(&s2);
    // Flush rounds the duplicates can have landed in: the ones the sending overlapped, plus one.
    let intervals = (dup_elapsed.as_secs_f64() / args.flush_interval.as_secs_f64()).ceil() + 1.0;
    let rrs_touched = n.min(m) as f64;

    let sync_new = new_delta.synchronous() / created.max(1) as f64;
    report.row(
        "1",
        "synchronous API calls per new signal (create + get + list)",
        format!(
            "{:.2} ({} POST, {} GET, {} LIST for {created} × 201)",
            sync_new,
            new_delta.creates(),
            new_delta.gets(),
            new_delta.lists()
        ),
        "",
        "",
        "1",
        yes_no(sync_new <= 1.0 + 1e-9),
    );
    let sw_new = new_delta.status_writes() / created.max(1) as f64;
    report.row(
        "1",
        "status writes per new RR (asynchronous: the first flush)",
        format!("{sw_new:.2} ({} PATCH status)", new_delta.status_writes()),
        "",
        "",
        "≤ 1 per RR per flush interval",
        yes_no(sw_new <= 1.0 + 1e-9),
    );
    let sync_dup = dup_delta.synchronous() / dups.max(1) as f64;
    report.row(
        "1",
        "synchronous API calls per duplicate",
        format!(
            "{sync_dup:.3} ({} POST, {} GET, {} LIST for {dups} × 202)",
            dup_delta.creates(),
            dup_delta.gets(),
            dup_delta.lists()
        ),
        "",
        "",
        "0",
        yes_no(dup_delta.synchronous() == 0.0),
    );
    let per_rr_interval = dup_delta.status_writes() / (rrs_touched * intervals);
    report.row(
        "1",
        "status writes during the duplicates: per duplicate (amortised) / per RR per flush interval",
        format!(
            "{:.3} / {per_rr_interval:.2} ({} PATCH status; {m} duplicates over {rrs_touched} RRs in {:.2} s = {intervals} flush rounds)",
            dup_delta.status_writes() / dups.max(1) as f64,
            dup_delta.status_writes(),
            dup_elapsed.as_secs_f64()
        ),
        "",
        "",
        "≤ 1 per RR per flush interval",
        yes_no(per_rr_interval <= 1.0 + 1e-9),
    );
    // The per-process occurrence totals live in an annotation (docs/reliability.md), so each flush
    // of an RR is a metadata PATCH besides the status PATCH: shown, not folded into the rows above.
    let meta_new = new_delta.get("PATCH", "");
    let meta_dup = dup_delta.get("PATCH", "");
    report.row(
        "1",
        "occurrence-annotation writes (metadata PATCH): per new RR / per RR per flush interval during the duplicates",
        format!(
            "{:.2} / {:.2} ({meta_new} during the new signals, {meta_dup} during the duplicates)",
            meta_new / created.max(1) as f64,
            meta_dup / (rrs_touched * intervals),
        ),
        "",
        "",
        "",
        "",
    );
    report.row(
        "1",
        "watch/list calls (the index), separately",
        format!(
            "at start: {} LIST, {} WATCH open; during the new signals: {} LIST, {} WATCH; during the duplicates: {} LIST, {} WATCH",
            startup.lists(),
            s1.open_watches - s0.open_watches,
            new_delta.lists(),
            new_delta.watches(),
            dup_delta.lists(),
            dup_delta.watches(),
        ),
        "",
        "",
        "",
        "",
    );
    let others = |d: &Counts| {
        d.total() - d.synchronous() - d.status_writes() - d.watches() - d.get("PATCH", "")
    };
    if others(&new_delta) != 0.0 || others(&dup_delta) != 0.0 {
        report.note(format!(
            "§1: other RR requests seen: during new signals {}; during duplicates {}",
            new_delta.describe(),
            dup_delta.describe()
        ));
    }
    // Consistency: after quiescence the counts written equal the answers given (docs/admission.md, occurrence accounting).
    let rrs: Api<RemediationRequest> = Api::namespaced(client.clone(), &ns);
    let list = rrs
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    let counted: i64 = list
        .items
        .iter()
        .filter_map(|rr| rr.status.as_ref()?.deduplication.as_ref())
        .map(|d| i64::from(d.occurrence_count))
        .sum();
    report.row(
        "1",
        "Σ occurrenceCount after the flush vs 201+202 answers",
        format!("{counted} vs {}", created + dups),
        "",
        "",
        "equal",
        yes_no(counted == (created + dups) as i64),
    );

    // Pod-level alerts through a replica with target resolution on (the defaults).
    crate::podlevel::run(
        &client,
        &args.namegate,
        &args.work_dir,
        (50, 500),
        &starts_at,
        &mut report,
    )
    .await?;

    // Caller authentication through a replica with `--auth kubernetes` (the default).
    crate::authcost::run(
        &client,
        &args.namegate,
        &args.work_dir,
        500,
        &starts_at,
        &mut report,
    )
    .await?;

    let want = |n: u8| args.sections.contains(&n);
    // Every 201/202 the gateway gives is one occurrence (docs/admission.md); checked against the RRs at the end.
    let mut occurrences = (created + dups) as u64;
    if want(2) || want(4) {
        // ------------------------------------------------------- §2 duplicate-path throughput
        eprintln!(
            "bench: §2 duplicate-path throughput (gateway vs bare hyper); load average {}",
            procs::loadavg()
        );
        let sample = bodies[0].clone();
        let (status, headers, body) =
            load::once(gw.addr, http::Method::POST, PROMETHEUS_PATH, sample.clone()).await?;
        if status != 202 {
            return Err(format!(
                "the sample duplicate was answered {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        occurrences += 1;
        std::fs::write(args.work_dir.join("bare-response.json"), &body)
            .map_err(|e| e.to_string())?;
        let canned_headers: Vec<(String, String)> = headers
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "date" | "content-length" | "connection"))
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        let (bare, bare_addr) = procs::start_bare(&args.work_dir, status, &canned_headers)?;
        let gw_target = Target::fixed(gw.addr, PROMETHEUS_PATH, sample.clone(), 202);
        let bare_target = Target::fixed(bare_addr, PROMETHEUS_PATH, sample.clone(), 202);

        let gw_closed = duplicate_throughput(
            &gw,
            "SQLite",
            &gw_target,
            &bare,
            &bare_target,
            &args,
            (sample.len(), body.len()),
            &mut report,
        )
        .await?;
        occurrences += gw_closed.all_ok;

        // ------------------------------------------- §4 latency at half the maximum throughput
        // Start from an empty audit queue, not the backlog §2 left.
        let t = Instant::now();
        let drained = gw
            .wait_metric(
                "namegate_audit_queue_depth",
                |v| v == 0.0,
                Duration::from_secs(120),
            )
            .await;
        if !drained || t.elapsed() > Duration::from_secs(1) {
            report.note(format!(
                "§4: the audit queue §2 left took {:.1} s to drain{}",
                t.elapsed().as_secs_f64(),
                if drained {
                    ""
                } else {
                    " (not empty after 120 s)"
                }
            ));
        }
        let rate = args
            .open_rate
            .unwrap_or(gw_closed.rps() * args.rate_fraction)
            .max(1.0);
        eprintln!(
            "bench: §4 latency at {rate:.0} rps (open loop); load average {}",
            procs::loadavg()
        );
        let cpu0 = procs::cpu_time(gw.proc.pid())?;
        let gw_open = load::open_loop(gw_target, args.concurrency, rate, args.open_duration).await;
        let gw_cpu = procs::cpu_time(gw.proc.pid())?.saturating_sub(cpu0);
        occurrences += gw_open.all_ok;
        let cpu0 = procs::cpu_time(bare.pid())?;
        let bare_open = load::open_loop(
            bare_target.clone(),
            args.concurrency,
            rate,
            args.open_duration,
        )
        .await;
        let bare_cpu = procs::cpu_time(bare.pid())?.saturating_sub(cpu0);
        report.row(
            "4",
            format!(
                "duplicate latency at {} rps = {} of max (open loop, {} connections, {} s) p50 / p99 / p99.9",
                num(rate),
                pct(rate / gw_closed.rps().max(1.0)),
                args.concurrency,
                args.open_duration.as_secs_f64()
            ),
            lat(&gw_open),
            lat(&bare_open),
            "",
            "p99 < 2 ms",
            yes_no(gw_open.pct_ms(0.99) < 2.0),
        );
        report.row(
            "4",
            "gateway-added p99 beyond client + loopback (gateway p99 − bare p99)",
            format!("{:.2} ms", gw_open.pct_ms(0.99) - bare_open.pct_ms(0.99)),
            "",
            "",
            "p99 < 2 ms",
            yes_no(gw_open.pct_ms(0.99) - bare_open.pct_ms(0.99) < 2.0),
        );
        report.row(
            "4",
            "CPU time per duplicate at that rate (server process, all threads: request path, audit writer, flusher)",
            format!("{:.0} µs", per_answer(gw_cpu, &gw_open)),
            format!("{:.0} µs", per_answer(bare_cpu, &bare_open)),
            format!(
                "{:.1}×",
                per_answer(gw_cpu, &gw_open) / per_answer(bare_cpu, &bare_open).max(1e-9)
            ),
            "",
            "",
        );
        report.note(format!(
            "§4: achieved {} / {} rps (gateway / bare); sends > 2 ms behind schedule: gateway {} of {}, bare {} of {}; unexpected answers: gateway {}, bare {}",
            num(gw_open.rps()),
            num(bare_open.rps()),
            gw_open.late_sends,
            gw_open.scheduled,
            bare_open.late_sends,
            bare_open.scheduled,
            gw_open.unexpected_text(),
            bare_open.unexpected_text()
        ));
        if let Some(url) = &args.postgres_url {
            // The same duplicates through a replica whose audit store is PostgreSQL (same namespace,
            // same RR; its occurrences are its own and are flushed on its graceful stop).
            eprintln!(
                "bench: §2 duplicate-path throughput with the PostgreSQL audit store; load average {}",
                procs::loadavg()
            );
            let mut pg = Replica::start_with_audit(
                &args.namegate,
                &ns,
                &args.work_dir,
                "gateway-pg",
                args.flush_interval,
                READY_TIMEOUT,
                url,
            )
            .await?;
            let (status, _, _) =
                load::once(pg.addr, http::Method::POST, PROMETHEUS_PATH, sample.clone()).await?;
            if status != 202 {
                return Err(format!(
                    "the PostgreSQL replica answered the sample duplicate {status}"
                ));
            }
            occurrences += 1;
            let pg_target = Target::fixed(pg.addr, PROMETHEUS_PATH, sample.clone(), 202);
            let pg_closed = duplicate_throughput(
                &pg,
                "PostgreSQL",
                &pg_target,
                &bare,
                &bare_target,
                &args,
                (sample.len(), body.len()),
                &mut report,
            )
            .await?;
            occurrences += pg_closed.all_ok;
            pg.proc.terminate(Duration::from_secs(60));
        }
        drop(bare);
    }

    if want(3) {
        // ------------------------------------------------------------- §3 new-signal throughput
        eprintln!(
            "bench: §3 new-signal throughput (gateway vs kube-rs create + status patch); load average {}",
            procs::loadavg()
        );
        let new_warmup = args.warmup.min(Duration::from_secs(2));
        let api_cpu = |pid: Option<u32>| pid.and_then(|p| procs::cpu_time(p).ok());
        let base_ns = namegate_e2e::fresh_namespace(&client, "bench-base").await;
        let s_base = apimetrics::scrape(&client).await?;
        let api_cpu0 = api_cpu(args.apiserver_pid);
        let own = || procs::cpu_time(std::process::id()).ok();
        let own0 = own();
        let base = baseline_new(
            &client,
            &base_ns,
            &starts_at,
            args.new_concurrency,
            new_warmup,
            args.new_duration,
        )
        .await;
        let base_api_cpu = api_cpu(args.apiserver_pid)
            .zip(api_cpu0)
            .map(|(b, a)| b.saturating_sub(a));
        // The baseline's client runs in this process: its CPU shares the cores with the API server,
        // as the gateway's and its load generator's do.
        let base_client_cpu = own().zip(own0).map(|(b, a)| b.saturating_sub(a));
        let s4 = apimetrics::scrape(&client).await?;
        let base_delta = s4.since(&s_base);
        let run_tag: u32 = rand::random();
        let sa = starts_at.clone();
        let gw_new_target = Arc::new(Target {
            addr: gw.addr,
            path: PROMETHEUS_PATH.into(),
            body: Box::new(move |i| payload::webhook(&format!("new-{run_tag:08x}-{i:07}"), &sa)),
            expect: 201,
        });
        let api_cpu0 = api_cpu(args.apiserver_pid);
        let (gw_cpu0, own0) = (api_cpu(Some(gw.proc.pid())), own());
        let t_new = Instant::now();
        let gw_new = load::closed_loop(
            gw_new_target,
            args.new_concurrency,
            new_warmup,
            args.new_duration,
        )
        .await;
        occurrences += gw_new.all_ok;
        let creates_so_far = apimetrics::scrape(&client).await?.since(&s4).creates();
        let (s5, caught_up) =
            wait_status_writes(&client, &s4, creates_so_far, args.flush_interval).await?;
        let gw_api_cpu = api_cpu(args.apiserver_pid)
            .zip(api_cpu0)
            .map(|(b, a)| b.saturating_sub(a));
        let gw_cpu = api_cpu(Some(gw.proc.pid()))
            .zip(gw_cpu0)
            .map(|(b, a)| b.saturating_sub(a));
        let load_cpu = own().zip(own0).map(|(b, a)| b.saturating_sub(a));
        let gw_new_delta = s5.since(&s4);
        // Sustained: every create of the run (warm-up included) with its first status write done.
        let sustained = gw_new.all_ok as f64 / (caught_up - t_new).as_secs_f64();
        let base_sustained = base.all_ok as f64 / (new_warmup + args.new_duration).as_secs_f64();
        let ratio = gw_new.rps() / base.rps().max(1e-9);
        let ratio_sustained = sustained / base_sustained.max(1e-9);
        report.row(
            "3",
            format!(
                "new-signal throughput ({} in flight, closed loop, {} s after {} s warm-up)",
                args.new_concurrency,
                args.new_duration.as_secs_f64(),
                new_warmup.as_secs_f64()
            ),
            format!("{} RR/s answered 201 in the window", num(gw_new.rps())),
            format!(
                "{} RR/s (kube-rs create + status merge patch)",
                num(base.rps())
            ),
            pct(ratio),
            "≥ 90 %",
            yes_no(ratio >= 0.90),
        );
        report.row(
            "3",
            "new-signal throughput, sustained: all creates of the run ÷ time until their first status write landed",
            format!(
                "{} RR/s ({} creates, status writes caught up {:.1} s after the last answer)",
                num(sustained),
                num(gw_new.all_ok as f64),
                (caught_up - t_new).as_secs_f64() - (new_warmup + args.new_duration).as_secs_f64()
            ),
            format!("{} RR/s", num(base_sustained)),
            pct(ratio_sustained),
            "≥ 90 %",
            yes_no(ratio_sustained >= 0.90),
        );
        report.row(
            "3",
            "new-signal latency p50 / p99 / p99.9",
            lat(&gw_new),
            lat(&base),
            "",
            "",
            "",
        );
        report.row(
            "3",
            "RR requests the API server saw during the run (warm-up and trailing flush included)",
            format!(
                "{}; status writes per create {:.2}",
                gw_new_delta.describe(),
                gw_new_delta.status_writes() / gw_new_delta.creates().max(1.0)
            ),
            base_delta.describe(),
            "",
            "",
            "",
        );
        let ms = |c: &Counts, verb: &str, sub: &str| {
            c.mean_ms(verb, sub)
                .map_or("—".to_owned(), |v| format!("{v:.0} ms"))
        };
        let cpu_per_rr = |cpu: Option<Duration>, rrs: f64| {
            cpu.map_or(String::new(), |c| {
                format!(
                    "; API server CPU {:.1} ms per RR",
                    c.as_secs_f64() * 1e3 / rrs.max(1.0)
                )
            })
        };
        report.row(
            "3",
            "API server's own mean time per create / per status patch (apiserver_request_duration_seconds)",
            format!(
                "{} / {}{}",
                ms(&gw_new_delta, "POST", ""),
                ms(&gw_new_delta, "PATCH", "status"),
                cpu_per_rr(gw_api_cpu, gw_new_delta.creates())
            ),
            format!(
                "{} / {}{}",
                ms(&base_delta, "POST", ""),
                ms(&base_delta, "PATCH", "status"),
                cpu_per_rr(base_api_cpu, base_delta.creates())
            ),
            "",
            "",
            "",
        );
        let per_rr = |cpu: Option<Duration>, rrs: f64| {
            cpu.map_or("—".to_owned(), |c| {
                format!("{:.2} ms", c.as_secs_f64() * 1e3 / rrs.max(1.0))
            })
        };
        report.row(
            "3",
            "CPU per new RR beside the API server's, on the same cores (gateway process / load generator; the baseline's in-process client)",
            format!(
                "{} / {}",
                per_rr(gw_cpu, gw_new_delta.creates()),
                per_rr(load_cpu, gw_new_delta.creates())
            ),
            per_rr(base_client_cpu, base_delta.creates()),
            "",
            "",
            "",
        );
        if gw_new.unexpected_text() != "none" || base.unexpected_text() != "none" {
            report.note(format!(
                "§3: unexpected answers: gateway {}; baseline {}",
                gw_new.unexpected_text(),
                base.unexpected_text()
            ));
        }
    }
    let gw_rrs = gw.metric("namegate_index_rrs").await.unwrap_or(f64::NAN);
    let (rss_busy, hwm_busy) = procs::rss(gw.proc.pid())?;
    let mut gw = gw;
    // SIGTERM flushes every pending occurrence; then the counts on the RRs must equal the answers.
    gw.proc.terminate(Duration::from_secs(30));
    let list = rrs
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    let counted: i64 = list
        .items
        .iter()
        .filter_map(|rr| rr.status.as_ref()?.deduplication.as_ref())
        .map(|d| i64::from(d.occurrence_count))
        .sum();
    report.row(
        "1",
        "occurrence accounting after all sections and a graceful stop: Σ occurrenceCount vs 201+202 answers",
        format!("{counted} vs {occurrences}"),
        "",
        "",
        "equal",
        yes_no(counted == occurrences as i64),
    );

    // --------------------------------------------------------------------------- §5 memory
    if want(5) && args.rrs > 0 {
        eprintln!("bench: §5 memory: creating {} RRs", args.rrs);
        let mem_ns = namegate_e2e::fresh_namespace(&client, "bench-mem").await;
        let (made, took) = memory::create_rrs(
            &client,
            &mem_ns,
            args.rrs,
            args.create_concurrency,
            args.create_timeout,
        )
        .await;
        report.row(
            "5",
            format!(
                "creating the RRs (kube-rs, {} in flight, small RRs)",
                args.create_concurrency
            ),
            format!(
                "{} RRs in {:.0} s ({} RR/s)",
                num(made as f64),
                took.as_secs_f64(),
                num(made as f64 / took.as_secs_f64())
            ),
            "",
            "",
            "",
            "",
        );
        let im = index_mem_subprocess(&mem_ns, made).await?;
        let per_rr = im.approx_bytes as f64 / im.len.max(1) as f64;
        let rss_per_rr = (im.rss_after as f64 - im.rss_before as f64) / im.len.max(1) as f64;
        report.row(
            "5",
            format!(
                "index bytes per RR, {} RRs (RrIndex::approx_bytes / len)",
                num(im.len as f64)
            ),
            format!("{per_rr:.0} B"),
            "",
            "",
            "≤ 300 B",
            yes_no(per_rr <= 300.0),
        );
        report.row(
            "5",
            "index bytes per RR measured as process RSS growth (fresh process, list + fold)",
            format!(
                "{rss_per_rr:.0} B ({} → {}, peak {}; list took {:.1} s)",
                mib(im.rss_before as f64),
                mib(im.rss_after as f64),
                mib(im.hwm_after as f64),
                im.list_seconds
            ),
            "",
            "",
            "≤ 300 B",
            yes_no(rss_per_rr <= 300.0),
        );
        if im.rss_half > 0 && im.len as u64 > im.half {
            let marginal =
                (im.rss_after as f64 - im.rss_half as f64) / (im.len as u64 - im.half) as f64;
            report.row(
                "5",
                format!(
                    "index bytes per RR, marginal: RSS growth over the second half of the list ({} → {} RRs)",
                    num(im.half as f64),
                    num(im.len as f64)
                ),
                format!("{marginal:.0} B"),
                "",
                "",
                "≤ 300 B",
                yes_no(marginal <= 300.0),
            );
        }
        let mem_gw = Replica::start(
            &args.namegate,
            &mem_ns,
            &args.work_dir,
            "gateway-mem",
            args.flush_interval,
            READY_TIMEOUT,
        )
        .await?;
        let (rss_ready, hwm_ready) = procs::rss(mem_gw.proc.pid())?;
        let indexed = mem_gw
            .metric("namegate_index_rrs")
            .await
            .unwrap_or(f64::NAN);
        // A few seconds of idle watching, then again: what it settles at.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (rss_settled, hwm_settled) = procs::rss(mem_gw.proc.pid())?;
        report.row(
            "5",
            format!("gateway RSS with {} RRs indexed", num(indexed)),
            format!(
                "{} at /readyz ({:.1} s after start), {} 3 s later; peak {}",
                mib(rss_ready as f64),
                mem_gw.ready_after.as_secs_f64(),
                mib(rss_settled as f64),
                mib(hwm_settled.max(hwm_ready) as f64)
            ),
            format!("{} with an empty index", mib(rss_empty as f64)),
            "",
            "< 100 MiB",
            yes_no(rss_ready.max(rss_settled) < 100 * 1024 * 1024),
        );
        drop(mem_gw);
    }
    if want(6) {
        eprintln!("bench: §6 the RR name lock policy's cost per create");
        crate::lockpolicy::rows(&client, &mut report, args.lock_policy_creates).await?;
    }
    report.note(format!(
        "gateway RSS after §1–§4 ({} RRs indexed): {} (peak {}); at start: {}",
        num(gw_rrs),
        mib(rss_busy as f64),
        mib(hwm_busy as f64),
        mib(rss_empty as f64)
    ));
    report.note(format!(
        "total bench time {:.0} s",
        started.elapsed().as_secs_f64()
    ));

    let header = format!(
        "namegate benchmarks — {} — {}, {} logical CPUs (shared; 1-min load average {} at start, {} at end), kube-apiserver {version} (own instance, embedded etcd)",
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_at_start,
        procs::loadavg(),
    );
    println!("{}", report.render(&header));
    Ok(())
}

fn per_answer(cpu: Duration, s: &Stats) -> f64 {
    cpu.as_secs_f64() * 1e6 / s.answered.max(1) as f64
}

/// §2 for one replica: the gateway's duplicate throughput, closed loop, then the bare server's right
/// after it; the audit queue is read at the start and the end of the gateway's measured window (a
/// ratio bought by shedding or by a growing backlog does not count). Reports the rows, returns the
/// gateway's figures.
#[allow(clippy::too_many_arguments)]
async fn duplicate_throughput(
    gw: &Replica,
    store: &str,
    gw_target: &Arc<Target>,
    bare: &procs::Guarded,
    bare_target: &Arc<Target>,
    args: &RunArgs,
    (request_len, response_len): (usize, usize),
    report: &mut Report,
) -> Result<Stats, String> {
    let audit0 = AuditWriter::read(gw).await;
    let cpu0 = procs::cpu_time(gw.proc.pid())?;
    let (gw_closed, queue) = tokio::join!(
        load::closed_loop(
            gw_target.clone(),
            args.concurrency,
            args.warmup,
            args.duration,
        ),
        QueueWindow::watch(gw, args.warmup, args.duration),
    );
    let gw_cpu = procs::cpu_time(gw.proc.pid())?.saturating_sub(cpu0);
    let audit = AuditWriter::read(gw).await.since(&audit0);
    let cpu0 = procs::cpu_time(bare.pid())?;
    let own0 = procs::cpu_time(std::process::id())?;
    let bare_closed = load::closed_loop(
        bare_target.clone(),
        args.concurrency,
        args.warmup,
        args.duration,
    )
    .await;
    let bare_cpu = procs::cpu_time(bare.pid())?.saturating_sub(cpu0);
    let client_cpu = procs::cpu_time(std::process::id())?.saturating_sub(own0);
    let ratio = gw_closed.rps() / bare_closed.rps().max(1e-9);
    let shed = gw_closed.status_count(503);
    // Honest only without shedding and without a growing backlog (one batch of slack: the gauge is
    // read at an arbitrary point of the writer's batch cycle).
    let steady = shed == 0 && queue.end_depth <= queue.start_depth + 2048.0;
    report.row(
        "2",
        format!(
            "duplicate throughput, {store} audit store ({} connections, closed loop, {} s after {} s warm-up; request {request_len} B, response {response_len} B)",
            args.concurrency,
            args.duration.as_secs_f64(),
            args.warmup.as_secs_f64(),
        ),
        if shed > 0 {
            format!(
                "{} rps 202 (and {} rps 503: shed)",
                num(gw_closed.rps()),
                num(shed as f64 / gw_closed.window.as_secs_f64())
            )
        } else {
            format!("{} rps", num(gw_closed.rps()))
        },
        format!("{} rps (bare hyper)", num(bare_closed.rps())),
        pct(ratio),
        "≥ 70 %, no shedding, queue not growing",
        yes_no(ratio >= 0.70 && steady),
    );
    report.row(
        "2",
        format!("{store}: audit queue depth at the start / end of the measured window (max sampled in it); events written in the window vs 202 answers in it"),
        format!(
            "{} / {} events (max {}); {} written vs {} answered",
            num(queue.start_depth),
            num(queue.end_depth),
            num(queue.max_depth),
            num(queue.end_written - queue.start_written),
            num(gw_closed.ok as f64),
        ),
        "",
        "",
        "no 503, end ≤ start + 1 batch",
        yes_no(steady),
    );
    let run_secs = (args.warmup + args.duration).as_secs_f64();
    report.row(
        "2",
        format!(
            "{store}: CPU time per answered request (server process, user + system, whole run)"
        ),
        format!(
            "{:.0} µs ({:.2} cores busy)",
            per_answer(gw_cpu, &gw_closed),
            gw_cpu.as_secs_f64() / run_secs
        ),
        format!(
            "{:.0} µs ({:.2} cores busy)",
            per_answer(bare_cpu, &bare_closed),
            bare_cpu.as_secs_f64() / run_secs
        ),
        format!(
            "{:.1}×",
            per_answer(gw_cpu, &gw_closed) / per_answer(bare_cpu, &bare_closed).max(1e-9)
        ),
        "",
        "",
    );
    // What 70 % of the bare server's rate leaves the gateway per duplicate: the bare window kept the
    // machine busy with (client + bare) µs per request, so at 0.7 × its rate the client still needs
    // its share and the gateway may spend the rest (docs/benchmarks.md, "The budget of a duplicate").
    let (client_us, bare_us) = (
        per_answer(client_cpu, &bare_closed),
        per_answer(bare_cpu, &bare_closed),
    );
    report.row(
        "2",
        format!("{store}: CPU a duplicate may cost the gateway at 70 % of bare hyper's rate (the bare window's client + server CPU per request ÷ 0.7 − the client's)"),
        format!(
            "{:.0} µs (client {client_us:.0} µs + bare {bare_us:.0} µs per request in the bare window); the gateway spent {:.0} µs",
            (client_us + bare_us) / 0.7 - client_us,
            per_answer(gw_cpu, &gw_closed)
        ),
        "",
        "",
        "",
        "",
    );
    report.row(
        "2",
        format!("{store}: the gateway's audit writer during that run (1 event per duplicate)"),
        format!(
            "{} events/s written; {} batches, mean {:.0} events in {:.1} ms = {:.1} µs per event",
            num(audit.events / run_secs),
            num(audit.batches),
            audit.events / audit.batches.max(1.0),
            audit.batch_seconds * 1e3 / audit.batches.max(1.0),
            audit.batch_seconds * 1e6 / audit.events.max(1.0)
        ),
        "",
        "",
        "",
        "",
    );
    report.row(
        "2",
        format!("{store}: duplicate latency at max throughput p50 / p99 / p99.9"),
        lat(&gw_closed),
        lat(&bare_closed),
        "",
        "",
        "",
    );
    if gw_closed.unexpected_text() != "none" || bare_closed.unexpected_text() != "none" {
        report.note(format!(
            "§2 ({store}): unexpected answers in the window: gateway {}; bare {}",
            gw_closed.unexpected_text(),
            bare_closed.unexpected_text()
        ));
    }
    if audit.spilled > 0.0 || audit.dropped > 0.0 {
        report.note(format!(
            "§2 ({store}): the audit writer spilled {} and dropped {} events during the run",
            audit.spilled, audit.dropped
        ));
    }
    Ok(gw_closed)
}

/// The audit queue around a measured window: depth and events written at its start and end, and the
/// largest depth sampled (every 250 ms) in between.
#[derive(Clone, Copy, Debug, Default)]
struct QueueWindow {
    start_depth: f64,
    end_depth: f64,
    max_depth: f64,
    start_written: f64,
    end_written: f64,
}

/// Polls the replica's `namegate_occurrence_pending_rrs` until it reads 0 (true) or `within` passes.
async fn occurrences_flushed(gw: &Replica, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if gw.metric("namegate_occurrence_pending_rrs").await == Some(0.0) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl QueueWindow {
    async fn watch(gw: &Replica, warmup: Duration, window: Duration) -> Self {
        let start = Instant::now() + warmup;
        let end = start + window;
        tokio::time::sleep_until(start).await;
        let depth = || async {
            gw.metric("namegate_audit_queue_depth")
                .await
                .unwrap_or(f64::NAN)
        };
        let written = || async {
            gw.metric("namegate_audit_events_written_total")
                .await
                .unwrap_or(f64::NAN)
        };
        let mut q = Self {
            start_depth: depth().await,
            start_written: written().await,
            ..Self::default()
        };
        q.max_depth = q.start_depth;
        while Instant::now() + Duration::from_millis(250) < end {
            tokio::time::sleep(Duration::from_millis(250)).await;
            q.max_depth = q.max_depth.max(depth().await);
        }
        tokio::time::sleep_until(end).await;
        q.end_depth = depth().await;
        q.end_written = written().await;
        q.max_depth = q.max_depth.max(q.end_depth);
        q
    }
}

/// The gateway's audit writer counters (its own /metrics).
#[derive(Clone, Copy, Debug, Default)]
struct AuditWriter {
    events: f64,
    batches: f64,
    batch_seconds: f64,
    spilled: f64,
    dropped: f64,
}

impl AuditWriter {
    async fn read(gw: &Replica) -> Self {
        Self {
            events: gw
                .metric("namegate_audit_events_written_total")
                .await
                .unwrap_or(0.0),
            batches: gw
                .metric("namegate_audit_batch_duration_seconds_count")
                .await
                .unwrap_or(0.0),
            batch_seconds: gw
                .metric("namegate_audit_batch_duration_seconds_sum")
                .await
                .unwrap_or(0.0),
            spilled: gw
                .metric("namegate_audit_spilled_events_total")
                .await
                .unwrap_or(0.0),
            dropped: gw
                .metric("namegate_audit_dropped_events_total")
                .await
                .unwrap_or(0.0),
        }
    }

    fn since(self, earlier: &Self) -> Self {
        Self {
            events: self.events - earlier.events,
            batches: self.batches - earlier.batches,
            batch_seconds: self.batch_seconds - earlier.batch_seconds,
            spilled: self.spilled - earlier.spilled,
            dropped: self.dropped - earlier.dropped,
        }
    }
}

fn lat(s: &Stats) -> String {
    format!(
        "{:.2} / {:.2} / {:.2} ms",
        s.pct_ms(0.50),
        s.pct_ms(0.99),
        s.pct_ms(0.999)
    )
}

fn summarize(answers: &[Result<u16, String>]) -> String {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for a in answers {
        let k = match a {
            Ok(s) => s.to_string(),
            Err(e) => e.clone(),
        };
        *counts.entry(k).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, v)| format!("{v}×{k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Polls the API server's metrics until `expected` status writes happened since `since` (bounded by
/// `5 × flush + 60 s`), then waits one more flush interval so late extra writes are seen too.
/// Returns the counts and when the expected number was reached.
async fn wait_status_writes(
    client: &Client,
    since: &Counts,
    expected: f64,
    flush: Duration,
) -> Result<(Counts, Instant), String> {
    let deadline = Instant::now() + flush * 5 + Duration::from_secs(60);
    let reached = loop {
        let now = apimetrics::scrape(client).await?;
        if now.since(since).status_writes() >= expected || Instant::now() >= deadline {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(flush + Duration::from_millis(300)).await;
    Ok((apimetrics::scrape(client).await?, reached))
}

/// The baseline of §3: what any correct implementation must do per new RR — a create and one
/// status write (a merge patch of `status.deduplication` with the create's resourceVersion as
/// precondition, as the gateway writes it) — with the same client library (kube-rs, one shared
/// client), the same RR (decoded from the same webhook by the gateway's adapter and built by its
/// `build_rr`) and the same number in flight.
async fn baseline_new(
    client: &Client,
    namespace: &str,
    starts_at: &str,
    conns: usize,
    warmup: Duration,
    duration: Duration,
) -> Stats {
    let api: Api<RemediationRequest> = Api::namespaced(client.clone(), namespace);
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let api = api.clone();
        let counter = counter.clone();
        let starts_at = starts_at.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u64;
            let mut all_ok = 0u64;
            let mut failed = 0u64;
            let mut lat = Vec::new();
            let cfg = AdapterConfig::default();
            let pp = PostParams::default();
            let patch_params = PatchParams::default();
            while Instant::now() < end {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let body = payload::webhook(&format!("base-{i:07}"), &starts_at);
                let sent = Instant::now();
                let result = async {
                    let decoded = decode_alertmanager(&body, None, jiff::Timestamp::now(), &cfg)
                        .map_err(|e| e.to_string())?;
                    let Some(Decoded::Signal(signal)) = decoded.into_iter().next() else {
                        return Err("not a signal".to_owned());
                    };
                    let rr = namegate::admission::build_rr(&signal, Attempt::FIRST);
                    let created =
                        tokio::time::timeout(Duration::from_secs(10), api.create(&pp, &rr))
                            .await
                            .map_err(|_| "timeout".to_owned())?
                            .map_err(|e| e.to_string())?;
                    let name = created.metadata.name.clone().unwrap_or_default();
                    let now = jiff::Timestamp::now().to_string();
                    let patch = Patch::Merge(json!({
                        "metadata": {
                            "resourceVersion": created.metadata.resource_version,
                            "uid": created.metadata.uid,
                        },
                        "status": {"deduplication": {
                            "firstSeenAt": now, "lastSeenAt": now, "occurrenceCount": 1,
                        }},
                    }));
                    tokio::time::timeout(
                        Duration::from_secs(10),
                        api.patch_status(&name, &patch_params, &patch),
                    )
                    .await
                    .map_err(|_| "timeout".to_owned())?
                    .map_err(|e| e.to_string())?;
                    Ok::<_, String>(())
                }
                .await;
                let done = Instant::now();
                if result.is_ok() {
                    all_ok += 1;
                }
                if sent >= measure_from && done <= end {
                    match result {
                        Ok(()) => {
                            ok += 1;
                            lat.push((done - sent).as_nanos() as u64);
                        }
                        Err(_) => failed += 1,
                    }
                }
            }
            (ok, all_ok, failed, lat)
        }));
    }
    let mut stats = Stats {
        window: duration,
        ..Stats::default()
    };
    for t in tasks {
        if let Ok((ok, all_ok, failed, lat)) = t.await {
            stats.ok += ok;
            stats.all_ok += all_ok;
            stats.errors += failed;
            stats.latencies_ns.extend(lat);
        }
    }
    stats.latencies_ns.sort_unstable();
    stats
}

/// Runs `namegate-bench index-mem` in a fresh process and reads its JSON line.
async fn index_mem_subprocess(namespace: &str, expect: u64) -> Result<memory::IndexMem, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = tokio::process::Command::new(exe)
        .args(["index-mem", "--namespace", namespace])
        .args(["--expect", &expect.to_string()])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), out)
        .await
        .map_err(|_| "index-mem did not finish within 600 s".to_owned())?
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("index-mem failed: {}", out.status));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "index-mem printed {:?}: {e}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
