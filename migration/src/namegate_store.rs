//! Migrating namegate's own audit store, SQLite or PostgreSQL (docs/migration.md, "What the
//! migration changes in namegate's store").
//!
//! namegate's chain key is `COALESCE(legacy_correlation_id, correlation_id)` (docs/audit.md): the
//! migration sets `legacy_correlation_id` to the old ID and `correlation_id` to the new name, so no hash
//! changes, every chain stays exactly as verifiable as it was (`namegate audit verify` stays clean) and
//! lookups by either ID find the trail. The rewrite goes through the store's migration guard
//! (PostgreSQL: `SET LOCAL namegate.migration = 'on'`; SQLite: the `audit_migration_guard` row inside a
//! `BEGIN IMMEDIATE` transaction), one transaction per batch of remediations: the checkpoint. Rows
//! already carrying a `legacy_correlation_id` are never touched again.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write;

use futures::TryStreamExt;
use jiff::Timestamp;
use sqlx::{Connection, PgConnection, Row as _, SqliteConnection};

use crate::report::{LineKind, Report};
use crate::resolve::{self, LiveIndex, Observed, Target};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("not a namegate audit store: {0}")]
    NotNamegate(String),
    #[error("writing the report: {0}")]
    Report(#[from] std::io::Error),
}

impl StoreError {
    pub fn is_not_namegate(&self) -> bool {
        matches!(self, Self::NotNamegate(_))
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub dry_run: bool,
    /// Rows per checkpointed transaction (whole remediations).
    pub batch_rows: u64,
}

/// An open store of either engine.
#[derive(Debug)]
pub enum Conn {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl Conn {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            let opts: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
            let opts = opts
                .create_if_missing(false)
                .busy_timeout(std::time::Duration::from_secs(30));
            Ok(Self::Sqlite(SqliteConnection::connect_with(&opts).await?))
        } else {
            Ok(Self::Postgres(PgConnection::connect(url).await?))
        }
    }
}

const LEGACY_SHAPED_SQLITE: &str = "legacy_correlation_id IS NULL AND (correlation_id LIKE 'rr-%' \
     OR (length(correlation_id) = 36 AND correlation_id GLOB \
     '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]-*'))";
const LEGACY_SHAPED_PG: &str = "legacy_correlation_id IS NULL AND (correlation_id LIKE 'rr-%' \
     OR correlation_id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$')";

async fn check_schema(conn: &mut Conn) -> Result<(), StoreError> {
    let n: i64 = match conn {
        Conn::Sqlite(c) => {
            sqlx::query_scalar(
                "SELECT count(*) FROM pragma_table_info('audit_events') \
                 WHERE name IN ('legacy_correlation_id', 'seq', 'fingerprint')",
            )
            .fetch_one(&mut *c)
            .await?
        }
        Conn::Postgres(c) => sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() \
                 AND table_name = 'audit_events' \
                 AND column_name IN ('legacy_correlation_id', 'seq', 'fingerprint')",
        )
        .fetch_one(&mut *c)
        .await?,
    };
    if n == 3 {
        Ok(())
    } else {
        Err(StoreError::NotNamegate(
            "audit_events lacks seq/fingerprint/legacy_correlation_id (run `namegate audit migrate-schema` first)"
                .into(),
        ))
    }
}

/// What the rows of each legacy-shaped ID say, aggregated while streaming (memory per ID, not per row).
async fn scan(conn: &mut Conn) -> Result<Vec<Observed>, StoreError> {
    let mut by_id: HashMap<String, Observed> = HashMap::new();
    let mut add = |id: String, at: Option<Timestamp>, fp: Option<String>, data: Option<String>| {
        let o = by_id.entry(id.clone()).or_insert_with(|| Observed {
            correlation_id: id.clone(),
            first_event: at.unwrap_or(Timestamp::MAX),
            rows: 0,
            fingerprints: BTreeSet::new(),
            rr_names: BTreeSet::new(),
        });
        o.rows += 1;
        if let Some(at) = at {
            o.first_event = o.first_event.min(at);
        }
        if let Some(fp) = fp.filter(|f| !f.is_empty()) {
            o.fingerprints.insert(fp);
        }
        if let Some(v) = data.and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok()) {
            if let Some(fp) = v.get("fingerprint").and_then(|f| f.as_str()) {
                o.fingerprints.insert(fp.to_owned());
            }
            if let Some(n) = v.get("rr_name").and_then(|f| f.as_str())
                && n != id
            {
                o.rr_names.insert(n.to_owned());
            }
            if let Some((_, n)) = v
                .get("remediation_request")
                .and_then(|f| f.as_str())
                .and_then(|s| s.split_once('/'))
                && n != id
            {
                o.rr_names.insert(n.to_owned());
            }
        }
    };
    match conn {
        Conn::Sqlite(c) => {
            let sql = format!(
                "SELECT correlation_id, event_timestamp, fingerprint, event_data FROM audit_events \
                 WHERE {LEGACY_SHAPED_SQLITE}"
            );
            let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch(&mut *c);
            while let Some(r) = rows.try_next().await? {
                let ts: String = r.try_get("event_timestamp")?;
                add(
                    r.try_get("correlation_id")?,
                    ts.parse().ok(),
                    r.try_get("fingerprint")?,
                    r.try_get("event_data")?,
                );
            }
        }
        Conn::Postgres(c) => {
            let sql = format!(
                "SELECT correlation_id, (extract(epoch FROM event_timestamp) * 1000000)::bigint AS ts_us, \
                 fingerprint, event_data::text AS event_data FROM audit_events WHERE {LEGACY_SHAPED_PG}"
            );
            let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch(&mut *c);
            while let Some(r) = rows.try_next().await? {
                let us: i64 = r.try_get("ts_us")?;
                add(
                    r.try_get("correlation_id")?,
                    Timestamp::from_microsecond(us).ok(),
                    r.try_get("fingerprint")?,
                    r.try_get("event_data")?,
                );
            }
        }
    }
    let mut out: Vec<Observed> = by_id.into_values().collect();
    out.sort_by(|a, b| a.correlation_id.cmp(&b.correlation_id));
    Ok(out)
}

async fn migrated(conn: &mut Conn) -> Result<HashMap<String, String>, StoreError> {
    let sql = "SELECT DISTINCT legacy_correlation_id, correlation_id FROM audit_events \
               WHERE legacy_correlation_id IS NOT NULL";
    let rows: Vec<(String, String)> = match conn {
        Conn::Sqlite(c) => sqlx::query_as(sql).fetch_all(&mut *c).await?,
        Conn::Postgres(c) => sqlx::query_as(sql).fetch_all(&mut *c).await?,
    };
    Ok(rows.into_iter().collect())
}

/// Runs the migration of namegate's store behind `conn`.
pub async fn run(
    conn: &mut Conn,
    live: &LiveIndex,
    opts: &Options,
    out: &mut dyn Write,
) -> Result<Report, StoreError> {
    check_schema(conn).await?;
    let previously = migrated(conn).await?;
    let observed = scan(conn).await?;
    let res = resolve::resolve(
        observed,
        live,
        &previously,
        &HashMap::new(),
        &HashSet::new(),
    );
    let mut report = Report {
        source: match conn {
            Conn::Sqlite(_) => "namegate audit store (SQLite)".into(),
            Conn::Postgres(_) => "namegate audit store (PostgreSQL)".into(),
        },
        dry_run: opts.dry_run,
        ids_scanned: res.scanned,
        already_migrated: res.already_migrated,
        previously_migrated: res.previously_migrated,
        look_alikes: res.look_alikes,
        ..Report::default()
    };
    report.write_header(out)?;
    // This store's walk still holds every ID (docs/migration.md, "Scale: bounded memory").
    report.peak_ids_held = res.scanned;
    let mut unresolved = res.unresolved.clone();
    unresolved.sort();
    for l in &unresolved {
        report.line(out, LineKind::Unresolved, l)?;
    }
    let fingerprints: BTreeSet<String> =
        res.targets.iter().map(|t| t.fingerprint.to_hex()).collect();
    report.fingerprints = fingerprints.len();
    for t in &res.targets {
        for (_, format) in &t.sources {
            *report.by_format.entry((*format).to_owned()).or_default() += 1;
        }
    }
    report.attempts_assigned = res.targets.len() + res.trailless.len();
    if opts.dry_run {
        report.rows_rewritten = res.targets.iter().map(|t| t.rows).sum();
        report.live_assign = resolve::assignments(live, &res.planned(), &res.trailless);
        return Ok(report);
    }
    let mut i = 0;
    while i < res.targets.len() {
        let mut j = i;
        let mut rows = 0u64;
        while j < res.targets.len() && (j == i || rows + res.targets[j].rows <= opts.batch_rows) {
            rows += res.targets[j].rows;
            j += 1;
        }
        report.rows_rewritten += rewrite(conn, &res.targets[i..j]).await?;
        i = j;
    }
    let done = migrated(conn).await?;
    report.live_assign = resolve::assignments(live, &done, &res.trailless);
    Ok(report)
}

/// One checkpointed batch through the store's migration guard.
async fn rewrite(conn: &mut Conn, batch: &[Target]) -> Result<u64, StoreError> {
    let update = |ph_new: &str, ph_old: &str| {
        format!(
            "UPDATE audit_events SET legacy_correlation_id = correlation_id, correlation_id = {ph_new} \
             WHERE correlation_id = {ph_old} AND legacy_correlation_id IS NULL"
        )
    };
    let mut n = 0;
    match conn {
        Conn::Sqlite(c) => {
            // BEGIN IMMEDIATE: the write lock first, so nobody sees the guard row.
            let mut tx = c.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query(
                "INSERT INTO audit_migration_guard (id, holder, acquired_at) VALUES (1, 'namegate-migrate', ?1)",
            )
            .bind(Timestamp::now().to_string())
            .execute(&mut *tx)
            .await?;
            for t in batch {
                for (old, _) in &t.sources {
                    n += sqlx::query(sqlx::AssertSqlSafe(update("?1", "?2")))
                        .bind(&t.name)
                        .bind(old)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
            }
            sqlx::query("DELETE FROM audit_migration_guard")
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Conn::Postgres(c) => {
            let mut tx = c.begin().await?;
            sqlx::query("SET LOCAL namegate.migration = 'on'")
                .execute(&mut *tx)
                .await?;
            for t in batch {
                for (old, _) in &t.sources {
                    n += sqlx::query(sqlx::AssertSqlSafe(update("$1", "$2")))
                        .bind(&t.name)
                        .bind(old)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
            }
            tx.commit().await?;
        }
    }
    Ok(n)
}
