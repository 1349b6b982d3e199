//! The migration's bench (docs/migration.md, "Scale"): builds a DataStorage database of about
//! `--events` events with the fixture generator (in a child process, so its memory is not counted),
//! then migrates it in this process and prints events/s and this process's peak RSS (`VmHWM`).
//!
//! `cargo run --release -p namegate-migrate --bin namegate-migrate-bench -- --postgres-url URL`

use std::process::{Command, ExitCode};
use std::time::Instant;

use clap::Parser;
use namegate_migrate::datastorage::canonical::HmacKey;
use namegate_migrate::datastorage::migrate::{self, Options};
use namegate_migrate::datastorage::verify::ChainClass;
use namegate_migrate::fixture::{self, FixtureConfig};
use namegate_migrate::resolve::LiveIndex;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

const KEY: &str = "namegate-bench-key";

#[derive(Debug, Parser)]
struct Args {
    /// A PostgreSQL server URL (a database on it is created for the bench).
    #[arg(long, env = "NAMEGATE_TEST_POSTGRES_URL")]
    postgres_url: String,
    /// About this many events.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Internal: generate into this database URL and exit.
    #[arg(long, hide = true)]
    generate_into: Option<String>,
    #[arg(long, default_value_t = 5000)]
    batch_rows: u64,
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn config(events: usize) -> FixtureConfig {
    FixtureConfig {
        seed: 1,
        // About 10 events per remediation with one duplicate.
        remediations: (events / 10).max(1),
        attempts_per_fingerprint: 3,
        hmac_key: Some(KEY.into()),
        insert_seq: false,
        duplicates: 1,
        special_cases: false,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(url) = &args.generate_into {
        let mut c = match PgConnection::connect(url).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        return match fixture::generate(&mut c, &config(args.events)).await {
            Ok(fx) => {
                println!("{}", fx.rows);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("namegate-migrate-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), String> {
    let name = format!("bench_{}", uuid::Uuid::now_v7().simple());
    let mut admin = PgConnection::connect(&args.postgres_url)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await
        .map_err(|e| e.to_string())?;
    let result = match args.postgres_url.rsplit_once('/') {
        Some((base, _)) => bench(args, &name, &format!("{base}/{name}")).await,
        None => Err("a URL with a database".to_owned()),
    };
    // Dropped whatever happened, so failed runs do not leave a large database behind.
    let dropped = sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .map(|_| ())
    .map_err(|e| e.to_string());
    result.and(dropped)
}

/// Generates the database `name` at `url` and migrates it.
async fn bench(args: &Args, name: &str, url: &str) -> Result<(), String> {
    let url = url.to_owned();
    let t0 = Instant::now();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let gen_out = Command::new(exe)
        .args([
            "--postgres-url",
            &args.postgres_url,
            "--generate-into",
            &url,
        ])
        .args(["--events", &args.events.to_string()])
        .output()
        .map_err(|e| e.to_string())?;
    if !gen_out.status.success() {
        return Err(String::from_utf8_lossy(&gen_out.stderr).into_owned());
    }
    let rows: u64 = String::from_utf8_lossy(&gen_out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    println!(
        "fixture: {rows} events in {:.1} s (database {name})",
        t0.elapsed().as_secs_f64()
    );
    let base_rss = peak_rss_kib().unwrap_or(0);
    let mut conn = PgConnection::connect(&url)
        .await
        .map_err(|e| e.to_string())?;
    let opts = Options {
        hmac_key: Some(HmacKey::new(KEY)),
        rechain_classes: [ChainClass::SameSecondTies].into_iter().collect(),
        batch_rows: args.batch_rows,
        ..Options::default()
    };
    let t1 = Instant::now();
    let mut stdout = std::io::stdout();
    let report = migrate::run(&mut conn, &LiveIndex::default(), &opts, &mut stdout)
        .await
        .map_err(|e| e.to_string())?;
    let secs = t1.elapsed().as_secs_f64();
    print!("{report}");
    let peak = peak_rss_kib().unwrap_or(0);
    println!(
        "migration: {rows} events in {secs:.1} s = {:.0} events/s; {} rows rewritten; peak RSS {:.1} MiB (before the migration {:.1} MiB)",
        rows as f64 / secs,
        report.rows_rewritten,
        peak as f64 / 1024.0,
        base_rss as f64 / 1024.0
    );
    let _ = conn.close().await;
    Ok(())
}
