//! `namegate-migrate`: the one-shot correlation-ID migration (docs/migration.md).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use namegate_migrate::datastorage::canonical::HmacKey;
use namegate_migrate::datastorage::migrate::{self, Bypass, Options};
use namegate_migrate::datastorage::verify::ChainClass;
use namegate_migrate::report::Report;
use namegate_migrate::resolve::LiveIndex;
use namegate_migrate::{live, namegate_store};
use sqlx::Connection;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Source {
    /// Detect from the database's tables.
    Auto,
    /// kubernaut DataStorage's `audit_events` (PostgreSQL).
    Datastorage,
    /// namegate's own audit store (SQLite or PostgreSQL).
    Namegate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BypassArg {
    DisableTrigger,
    ReplicationRole,
}

/// Rewrites legacy correlation IDs (random-suffix RR names, RR UIDs) to namegate's deterministic
/// RR names, in namegate's audit store or in a kubernaut DataStorage database. Exit status: 0 when
/// everything resolvable was migrated and nothing was left, 2 when some IDs were left unresolved
/// (listed with the reason), 1 on failure. A second run changes nothing; an interrupted run resumes.
#[derive(Debug, Parser)]
#[command(name = "namegate-migrate", version)]
struct Args {
    /// The store: `sqlite://PATH` or `postgres://…` (namegate's store or DataStorage's database).
    #[arg(long, env = "NAMEGATE_AUDIT_URL")]
    audit_url: String,
    /// Print the plan and what would change; write nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long, value_enum, default_value = "auto")]
    source: Source,
    /// DataStorage's HMAC key file (its `audit-hmac-key.yaml`, key `hmacKey`; the string's bytes are
    /// the key, as DataStorage uses them). Needed when chains hold `hmac-sha256` rows.
    #[arg(long, env = "NAMEGATE_MIGRATE_HMAC_KEY_FILE")]
    hmac_key_file: Option<PathBuf>,
    /// Re-chain legacy chains of this class although DataStorage's verification fails
    /// (same-second-ties, out-of-order, head-missing, tampered). Repeatable.
    #[arg(long = "rechain-class", value_parser = parse_class)]
    rechain_classes: Vec<ChainClass>,
    /// Re-chain this legacy ID whatever its verification says. Repeatable.
    #[arg(long = "rechain-id")]
    rechain_ids: Vec<String>,
    /// Rows per checkpointed transaction (whole remediations; at least one).
    #[arg(long, default_value_t = 5000)]
    batch_rows: u64,
    /// Read the namespace's RemediationRequests (to resolve legacy IDs) and label/annotate the live
    /// legacy ones with their attempt and new correlation ID (in-cluster config or KUBECONFIG).
    #[arg(long)]
    live_rrs: bool,
    /// Namespace of the RRs (with --live-rrs).
    #[arg(long, env = "NAMEGATE_NAMESPACE", default_value = "kubernaut-system")]
    namespace: String,
    /// How to pass DataStorage's AU-9 immutability trigger.
    #[arg(long, value_enum, default_value = "disable-trigger")]
    bypass: BypassArg,
    /// Correlation IDs read per page from the scan's scratch table (tests use small pages).
    #[arg(long, hide = true, default_value_t = namegate_migrate::walk::DEFAULT_PAGE)]
    scan_page: usize,
}

fn parse_class(s: &str) -> Result<ChainClass, String> {
    ChainClass::parse(s).ok_or_else(|| {
        format!("unknown class {s:?}: same-second-ties, out-of-order, head-missing, tampered")
    })
}

fn read_key(path: &Path) -> Result<HmacKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    match doc.get("hmacKey") {
        Some(serde_yaml_ng::Value::String(s)) if !s.is_empty() => Ok(HmacKey::new(s.as_bytes())),
        _ => Err(format!(
            "{}: no string `hmacKey` (DataStorage's audit-hmac-key.yaml format)",
            path.display()
        )),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(report) => {
            print!("{report}");
            ExitCode::from(u8::try_from(report.exit_code()).unwrap_or(1))
        }
        Err(e) => {
            eprintln!("namegate-migrate: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> Result<Report, String> {
    let key = args.hmac_key_file.as_deref().map(read_key).transpose()?;
    let (client, objects) = if args.live_rrs {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| format!("kubernetes client: {e}"))?;
        let objects = live::list(client.clone(), &args.namespace)
            .await
            .map_err(|e| format!("listing RemediationRequests in {}: {e}", args.namespace))?;
        (Some(client), objects)
    } else {
        (None, Vec::new())
    };
    let live_index = LiveIndex::new(objects.iter().map(|o| o.rr.clone()));
    let mut report = migrate_store(&args, key, &live_index).await?;
    if let Some(client) = client {
        let (patched, unchanged) = live::label(
            client,
            &args.namespace,
            &objects,
            &report.live_assign,
            args.dry_run,
        )
        .await
        .map_err(|e| format!("labelling live RRs: {e}"))?;
        report.live_labelled = patched;
        report.live_unchanged = unchanged;
    }
    Ok(report)
}

async fn migrate_store(
    args: &Args,
    key: Option<HmacKey>,
    live: &LiveIndex,
) -> Result<Report, String> {
    let is_pg =
        args.audit_url.starts_with("postgres://") || args.audit_url.starts_with("postgresql://");
    let source = match args.source {
        Source::Auto if is_pg => {
            let mut conn = sqlx::PgConnection::connect(&args.audit_url)
                .await
                .map_err(|e| format!("connecting to the audit database: {e}"))?;
            let ds = namegate_migrate::datastorage::db::has_column(&mut conn, "event_date")
                .await
                .map_err(|e| e.to_string())?;
            let _ = conn.close().await;
            if ds {
                Source::Datastorage
            } else {
                Source::Namegate
            }
        }
        Source::Auto => Source::Namegate,
        s => s,
    };
    match source {
        Source::Datastorage => {
            let mut conn = sqlx::PgConnection::connect(&args.audit_url)
                .await
                .map_err(|e| format!("connecting to the DataStorage database: {e}"))?;
            let opts = Options {
                dry_run: args.dry_run,
                hmac_key: key,
                rechain_classes: args
                    .rechain_classes
                    .iter()
                    .copied()
                    .collect::<BTreeSet<_>>(),
                rechain_ids: args.rechain_ids.iter().cloned().collect(),
                batch_rows: args.batch_rows.max(1),
                bypass: match args.bypass {
                    BypassArg::DisableTrigger => Bypass::DisableTrigger,
                    BypassArg::ReplicationRole => Bypass::ReplicationRole,
                },
                page: args.scan_page.max(1),
            };
            migrate::run(&mut conn, live, &opts, &mut std::io::stdout())
                .await
                .map_err(|e| e.to_string())
        }
        Source::Namegate | Source::Auto => {
            let mut conn = namegate_store::Conn::connect(&args.audit_url)
                .await
                .map_err(|e| format!("connecting to the audit store: {e}"))?;
            let opts = namegate_store::Options {
                dry_run: args.dry_run,
                batch_rows: args.batch_rows.max(1),
                page: args.scan_page.max(1),
            };
            namegate_store::run(&mut conn, live, &opts, &mut std::io::stdout())
                .await
                .map_err(|e| e.to_string())
        }
    }
}
