//! `namegate-bench`: the benchmarks of docs/benchmarks.md. Run it through `scripts/bench`, which builds the release
//! binaries, starts a private kube-apiserver, and stops everything on exit. See docs/benchmarks.md.
#![forbid(unsafe_code)]

mod apimetrics;
mod authcost;
mod bare;
mod load;
mod lockpolicy;
mod memory;
mod payload;
mod podlevel;
mod procs;
mod report;
mod requestcost;
mod run;
mod storecost;
mod storefloor;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "namegate-bench",
    about = "namegate benchmarks (use scripts/bench)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every figure, side by side, against the API server named by KUBECONFIG; prints a table.
    Run(Box<run::RunArgs>),
    /// The bare hyper baseline server (started by `run`).
    #[command(hide = true)]
    BareServer {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        status: u16,
        #[arg(long)]
        body_file: std::path::PathBuf,
        /// `Name: value`, repeatable.
        #[arg(long = "header")]
        headers: Vec<String>,
    },
    /// Builds the gateway's RR index of a namespace in this process and prints its size as JSON
    /// (started by `run` in a fresh process).
    #[command(hide = true)]
    IndexMem {
        #[arg(long)]
        namespace: String,
        /// How many RRs the namespace holds (for the half-way RSS reading).
        #[arg(long, default_value_t = 0)]
        expect: u64,
    },
    /// The audit store's CPU per appended event, without HTTP around it: alternates configurations
    /// of this one binary (docs/benchmarks.md, "The SQLite store's CPU per event").
    StoreCost {
        /// Where the scratch stores go (one file per variant, replaced by each run).
        #[arg(long)]
        dir: std::path::PathBuf,
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Events per append (the writer's full batch).
        #[arg(long, default_value_t = 2048)]
        batch: usize,
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// pool-check, pool, direct, direct-0001, direct-nocts, floor, floor-unique, floor-schema
        /// (comma-separated), run in this order in every round.
        #[arg(long, value_delimiter = ',', default_value = "pool-check,pool,direct")]
        variants: Vec<String>,
    },
    /// The request workers' CPU per duplicate in decoding the webhook and building its audit event,
    /// without HTTP around them (docs/benchmarks.md, "The request workers' decode and audit event").
    RequestCost {
        #[arg(long, default_value_t = 200_000)]
        iterations: u32,
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => runtime(true).and_then(|rt| rt.block_on(run::run(*args))),
        Command::BareServer {
            listen,
            status,
            body_file,
            headers,
        } => bare_server(listen, status, &body_file, &headers),
        Command::IndexMem { namespace, expect } => runtime(false).and_then(|rt| {
            let m = rt.block_on(memory::index_mem(
                &namespace,
                expect,
                Duration::from_secs(540),
            ))?;
            println!("{}", serde_json::to_string(&m).map_err(|e| e.to_string())?);
            Ok(())
        }),
        Command::StoreCost {
            dir,
            events,
            batch,
            rounds,
            variants,
        } => store_cost(&dir, events, batch, rounds, &variants),
        Command::RequestCost { iterations, rounds } => request_cost(iterations, rounds),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("namegate-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn store_cost(
    dir: &std::path::Path,
    events: u64,
    batch: usize,
    rounds: u32,
    variants: &[String],
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    println!(
        "| round | variant | events | wall s | CPU µs per event: total | audit-writer | sqlx-sqlite-worker | other |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for round in 1..=rounds {
        for variant in variants {
            let r = storecost::run(dir, variant, events, batch)?;
            let get = |k: &str| r.per_event_us.get(k).copied().unwrap_or(0.0);
            let total: f64 = r.per_event_us.values().sum();
            println!(
                "| {round} | {} | {} | {:.2} | {total:.1} | {:.1} | {:.1} | {:.1} |",
                r.variant,
                r.events,
                r.wall_s,
                get("audit-writer"),
                get("sqlx-sqlite-wor"),
                get("other")
            );
        }
    }
    Ok(())
}

fn request_cost(iterations: u32, rounds: u32) -> Result<(), String> {
    println!("| round | decode: CPU ns per webhook | audit event: CPU ns per duplicate |");
    println!("|---|---|---|");
    for round in 1..=rounds {
        let r = requestcost::round(iterations)?;
        println!("| {round} | {:.0} | {:.0} |", r.decode_ns, r.event_ns);
    }
    Ok(())
}

fn runtime(multi_thread: bool) -> Result<tokio::runtime::Runtime, String> {
    let mut b = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    b.enable_all().build().map_err(|e| e.to_string())
}

fn bare_server(
    listen: std::net::SocketAddr,
    status: u16,
    body_file: &std::path::Path,
    headers: &[String],
) -> Result<(), String> {
    let body = std::fs::read(body_file).map_err(|e| format!("{}: {e}", body_file.display()))?;
    let mut parsed = Vec::new();
    for h in headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| format!("--header {h:?}: expected `Name: value`"))?;
        parsed.push((
            http::HeaderName::try_from(k.trim()).map_err(|e| e.to_string())?,
            http::HeaderValue::try_from(v.trim()).map_err(|e| e.to_string())?,
        ));
    }
    let canned = bare::Canned {
        status: http::StatusCode::from_u16(status).map_err(|e| e.to_string())?,
        headers: parsed,
        body: body.into(),
    };
    // The same runtime the gateway uses: multi-thread, one worker per core.
    runtime(true)?
        .block_on(bare::run(listen, canned))
        .map_err(|e| e.to_string())
}
