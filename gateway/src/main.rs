//! The `namegate` command: `serve`, `create`, `fingerprint`, `name`, `crd`, `audit`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use crd_schema::{Attempt, Fingerprint, Target, name};
use namegate::config::{Config, Settings};

#[derive(Debug, Parser)]
#[command(
    name = "namegate",
    version,
    about = "Signal admission gateway for Kubernetes: the RR name is the lock"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// YAML file with the same keys as the flags (flags and env win).
        #[arg(long, env = "NAMEGATE_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Box<Settings>,
    },
    /// Create the RemediationRequest of a workload by hand, through the gateway's admission: prints
    /// the RR's name; exit 0 created, 3 duplicate of the active RR, 2 bad input, 4 unmanaged target,
    /// 75 retry later, 1 failed (docs/creators.md).
    Create(Box<namegate::create::CreateArgs>),
    /// Print the fingerprint of a workload and the name of its first RemediationRequest.
    Fingerprint {
        #[arg(long, default_value = "")]
        namespace: String,
        #[arg(long)]
        kind: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        cluster: Option<String>,
        /// `text` (labelled lines), or one bare value for scripts: `fingerprint`, `name`, `input`.
        #[arg(long, value_enum, default_value_t = FingerprintOutput::Text)]
        output: FingerprintOutput,
    },
    /// Print the RemediationRequest name of attempt N of a fingerprint: the only name under which the lock
    /// policy lets any creator create that RR (docs/creators.md).
    Name {
        /// 64 lowercase hex characters (`spec.signalFingerprint`).
        #[arg(long, value_parser = parse_fingerprint)]
        fingerprint: Fingerprint,
        /// 1 to 9999999.
        #[arg(long, default_value = "1", value_parser = parse_attempt)]
        attempt: Attempt,
    },
    /// Print the RemediationRequest CRD (generated from the Rust types).
    Crd,
    /// Inspect and check the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FingerprintOutput {
    Text,
    Fingerprint,
    Name,
    Input,
}

fn parse_fingerprint(s: &str) -> Result<Fingerprint, String> {
    s.parse().map_err(|e| format!("{e}"))
}

fn parse_attempt(s: &str) -> Result<Attempt, String> {
    s.parse::<u32>()
        .ok()
        .and_then(Attempt::new)
        .ok_or_else(|| format!("an attempt is a whole number from 1 to {}", Attempt::MAX))
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// The trail of one correlation ID (an RR name, `<signal>:<ns>:<Kind>:<name>`, or a legacy ID), oldest first.
    Show {
        correlation_id: String,
        #[arg(long, env = "NAMEGATE_AUDIT_URL")]
        audit_url: String,
        /// kubernaut DataStorage as the store (`--audit-url http(s)://…`): the bearer token file
        /// (default the pod's ServiceAccount token).
        #[arg(long, env = "NAMEGATE_AUDIT_TOKEN_FILE")]
        audit_token_file: Option<PathBuf>,
    },
    /// Recompute every hash chain and report each break.
    Verify {
        #[arg(long, env = "NAMEGATE_AUDIT_URL")]
        audit_url: String,
        #[arg(long, env = "NAMEGATE_AUDIT_HMAC_KEY_FILE")]
        hmac_key_file: Option<PathBuf>,
        /// A checkpoint file written by a gateway (repeat for each replica's): every chain head in it
        /// must still be there, so deleted tails and chains are found.
        #[arg(long = "checkpoints")]
        checkpoints: Vec<PathBuf>,
        /// With a key: accept unkeyed rows older than this RFC 3339 time (the store ran without a key
        /// before it). Without it every unkeyed row is a break.
        #[arg(long)]
        unkeyed_before: Option<jiff::Timestamp>,
    },
    /// Apply the audit store's schema migrations and exit.
    MigrateSchema {
        #[arg(long, env = "NAMEGATE_AUDIT_URL")]
        audit_url: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, settings } => {
            let cfg = match Config::load(*settings, config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("namegate: invalid configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            run_async(namegate::serve::run(cfg))
        }
        Command::Create(args) => namegate::create::main(&args),
        Command::Fingerprint {
            namespace,
            kind,
            name: workload,
            cluster,
            output,
        } => {
            let target = Target {
                cluster,
                namespace,
                kind,
                name: workload,
                api_version: None,
            };
            let fp = target.fingerprint();
            let rr_name = name::name(&fp, Attempt::FIRST);
            match output {
                FingerprintOutput::Text => {
                    println!("fingerprint: {fp}");
                    println!("input:       {}", target.fingerprint_input());
                    println!("rr name:     {rr_name}");
                }
                FingerprintOutput::Fingerprint => println!("{fp}"),
                FingerprintOutput::Name => println!("{rr_name}"),
                FingerprintOutput::Input => println!("{}", target.fingerprint_input()),
            }
            ExitCode::SUCCESS
        }
        Command::Name {
            fingerprint,
            attempt,
        } => {
            println!("{}", name::name(&fingerprint, attempt));
            ExitCode::SUCCESS
        }
        Command::Crd => {
            print!("{}", crd_schema::rr::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Audit { command } => match command {
            AuditCommand::Show {
                correlation_id,
                audit_url,
                audit_token_file,
            } => run_async(async move {
                let mut out = std::io::stdout().lock();
                namegate::audit::cli::show_with(
                    &audit_url,
                    audit_token_file.as_deref(),
                    &correlation_id,
                    &mut out,
                )
                .await
            }),
            AuditCommand::Verify {
                audit_url,
                hmac_key_file,
                checkpoints,
                unkeyed_before,
            } => run_async(async move {
                let options = namegate::audit::store::VerifyOptions {
                    checkpoints,
                    unkeyed_before,
                };
                let mut out = std::io::stdout().lock();
                let report = namegate::audit::cli::verify_with_to(
                    &audit_url,
                    hmac_key_file.as_deref(),
                    &options,
                    &mut out,
                )
                .await
                .map_err(|e| e.to_string())?;
                if report.is_clean() {
                    Ok(())
                } else {
                    Err(format!("{} chain break(s)", report.breaks.len()))
                }
            }),
            AuditCommand::MigrateSchema { audit_url } => {
                run_async(async move { namegate::audit::cli::migrate_schema(&audit_url).await })
            }
        },
    }
}

fn run_async<F, E>(fut: F) -> ExitCode
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("namegate: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("namegate: {e}");
            ExitCode::FAILURE
        }
    }
}
