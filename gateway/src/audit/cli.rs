//! `namegate audit show|verify|migrate-schema` (docs/operations.md, docs/audit.md). The binary parses flags and calls
//! these; they print for humans and return what the exit code needs.
//!
//! `show` and `verify` never change the store (no migrations); `migrate-schema` is the only writer.

use std::io::{self, Write};
use std::path::Path;

use super::chain::format_timestamp;
use super::lookup::{self, MAX_LIMIT};
use super::store::{
    AuditStore, Engine, MigrationReport, StoreConfig, StoreError, StoredEvent, VerifyOptions,
    VerifyReport,
};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
    #[error("no audit events for correlation ID {0:?}")]
    NotFound(String),
}

impl CliError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_))
    }
}

async fn open_read_only(
    url: &str,
    hmac_key_file: Option<&Path>,
    token_file: Option<&Path>,
) -> Result<AuditStore, CliError> {
    let mut config = StoreConfig::new(url).without_migrations();
    config.hmac_key_file = hmac_key_file.map(Path::to_owned);
    config.token_file = token_file.map(Path::to_owned);
    let store = AuditStore::open_with(&config).await?;
    // DataStorage has no namegate schema: opening it already made an authenticated query.
    if store.engine() != Engine::DataStorage && store.schema_version().await?.is_none() {
        return Err(StoreError::SchemaMissing.into());
    }
    Ok(store)
}

/// Prints the trail of `correlation_id` (new or legacy format), oldest first, grouped by RR object.
/// [`CliError::NotFound`] when it has no events.
pub async fn show(url: &str, correlation_id: &str, out: &mut impl Write) -> Result<(), CliError> {
    show_with(url, None, correlation_id, out).await
}

/// [`show`] with DataStorage's bearer token file (`--audit-token-file`; default the pod's
/// ServiceAccount token) when `url` is kubernaut DataStorage.
pub async fn show_with(
    url: &str,
    token_file: Option<&Path>,
    correlation_id: &str,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let store = open_read_only(url, None, token_file).await?;
    let result = show_from(&store, correlation_id, out).await;
    store.close().await;
    result
}

/// [`show`] on an open store.
pub async fn show_from(
    store: &AuditStore,
    correlation_id: &str,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut cursor: Option<String> = None;
    let mut total = 0usize;
    let mut current_uid: Option<Option<String>> = None;
    loop {
        let page =
            lookup::correlation_trail(store, correlation_id, cursor.as_deref(), MAX_LIMIT).await?;
        if total == 0 {
            if page.count == 0 {
                return Err(CliError::NotFound(correlation_id.to_owned()));
            }
            write!(out, "audit trail of {}", clean(correlation_id))?;
            let others: Vec<String> = page.resolved_ids.iter().skip(1).map(|s| clean(s)).collect();
            if !others.is_empty() {
                write!(out, " (migrated to {})", others.join(", "))?;
            }
            writeln!(out)?;
        }
        total += page.count;
        for group in &page.groups {
            // A group continued from the previous page gets no second header.
            if current_uid.as_ref() != Some(&group.rr_uid) {
                match &group.rr_uid {
                    Some(uid) => writeln!(out, "RR object uid {}:", clean(uid))?,
                    None => writeln!(out, "(no RR object):")?,
                }
                current_uid = Some(group.rr_uid.clone());
            }
            for ev in &group.events {
                writeln!(out, "  {}", event_line(ev))?;
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    writeln!(out, "{total} event(s)")?;
    Ok(())
}

/// One event as a line: time, type, outcome, ID, then whatever of the interesting fields it has.
pub fn event_line(ev: &StoredEvent) -> String {
    let mut line = format!(
        "{}  {:<28} {:<7} event={}",
        format_timestamp(ev.event_timestamp),
        clean(&ev.event_type),
        clean(&ev.event_outcome),
        ev.event_id
    );
    let mut field = |name: &str, value: Option<String>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            line.push_str(&format!(" {name}={}", clean(&v)));
        }
    };
    let data = |key: &str| {
        ev.event_data.get(key).and_then(|v| match v {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        })
    };
    field("attempt", data("attempt"));
    field("count", data("occurrence_count"));
    field("reason", data("reason"));
    field("signal", data("signal_name"));
    field("severity", ev.severity.clone());
    field("namespace", ev.namespace.clone());
    field(
        "actor",
        ev.actor_id.as_ref().map(|id| match &ev.actor_type {
            Some(t) => format!("{t}/{id}"),
            None => id.clone(),
        }),
    );
    field("error", ev.error_code.clone());
    field("message", ev.error_message.clone());
    // Migrated rows: the ID they were written under.
    field("legacy_id", ev.legacy_correlation_id.clone());
    line
}

/// Control characters (terminal escapes, newlines) from stored text never reach the terminal raw.
fn clean(s: &str) -> String {
    if s.chars().any(char::is_control) {
        s.chars().flat_map(char::escape_default).collect()
    } else {
        s.to_owned()
    }
}

/// Recomputes every chain and prints each break; prints to stdout. The caller exits non-zero unless
/// [`VerifyReport::is_clean`].
pub async fn verify(url: &str, hmac_key_file: Option<&Path>) -> Result<VerifyReport, CliError> {
    let mut out = io::stdout().lock();
    verify_to(url, hmac_key_file, &mut out).await
}

/// [`verify`] printing to `out`.
pub async fn verify_to(
    url: &str,
    hmac_key_file: Option<&Path>,
    out: &mut impl Write,
) -> Result<VerifyReport, CliError> {
    verify_with_to(url, hmac_key_file, &VerifyOptions::default(), out).await
}

/// [`verify_to`], also checking checkpoint files and unkeyed rows (see [`VerifyOptions`]).
pub async fn verify_with_to(
    url: &str,
    hmac_key_file: Option<&Path>,
    options: &VerifyOptions,
    out: &mut impl Write,
) -> Result<VerifyReport, CliError> {
    let store = open_read_only(url, hmac_key_file, None).await?;
    let report = store.verify_with(options).await;
    store.close().await;
    let report = report?;
    print_report(&report, out)?;
    Ok(report)
}

/// The human form of a [`VerifyReport`].
pub fn print_report(report: &VerifyReport, out: &mut impl Write) -> io::Result<()> {
    for b in &report.breaks {
        writeln!(out, "{}", clean(&b.to_string()))?;
    }
    if report.unverifiable > 0 {
        writeln!(
            out,
            "{} event(s) are chained with hmac-sha256 and were not checked: pass the HMAC key file",
            report.unverifiable
        )?;
    }
    if report.checkpoint_heads_checked > 0 {
        writeln!(
            out,
            "{} checkpointed chain head(s) compared",
            report.checkpoint_heads_checked
        )?;
    }
    writeln!(
        out,
        "{} event(s) in {} chain(s) checked: {}",
        report.events_checked,
        report.chains_checked,
        if report.is_clean() {
            "all chains intact".to_owned()
        } else if report.breaks.is_empty() {
            "no break found, but not everything could be checked".to_owned()
        } else {
            format!("{} break(s)", report.breaks.len())
        }
    )
}

/// Applies pending schema migrations and says what it did (stdout).
pub async fn migrate_schema(url: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    migrate_schema_to(url, &mut out).await.map(|_| ())
}

/// [`migrate_schema`] printing to `out`.
pub async fn migrate_schema_to(
    url: &str,
    out: &mut impl Write,
) -> Result<MigrationReport, CliError> {
    // Opened without migrating so that migrate() can report what it applied.
    let store = AuditStore::open_with(&StoreConfig::new(url).without_migrations()).await?;
    let report = store.migrate().await;
    store.close().await;
    let report = report?;
    if report.applied.is_empty() {
        writeln!(
            out,
            "audit schema of {} is current (version {})",
            store.url(),
            report
                .current
                .map_or_else(|| "none".to_owned(), |v| v.to_string())
        )?;
    } else {
        let applied: Vec<String> = report.applied.iter().map(i64::to_string).collect();
        writeln!(
            out,
            "audit schema of {}: applied migration(s) {}; now at version {}",
            store.url(),
            applied.join(", "),
            report
                .current
                .map_or_else(|| "none".to_owned(), |v| v.to_string())
        )?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("plain"), "plain");
        assert_eq!(clean("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
    }
}
