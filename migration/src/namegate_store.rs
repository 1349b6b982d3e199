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
//!
//! Like the DataStorage path, the store is scanned into a temporary table inside the database and
//! walked one fingerprint group at a time ([`crate::walk`]): memory is one page, one group, one
//! batch and the live RRs (docs/migration.md, "Scale: bounded memory").

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write;

use jiff::Timestamp;
use sqlx::{Connection, PgConnection, Row as _, SqliteConnection};

use crate::report::{LineKind, Report};
use crate::resolve::{self, LiveIndex, Observed, Target};
use crate::walk::{self, GroupWalk, Held, LiveBuckets, Scanned, walk_groups};

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
    /// IDs read from the scan's scratch table per page.
    pub page: usize,
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

/// The session's scratch table: one row per legacy-shaped ID with what its rows say and its group
/// key (`crate::walk`). A temporary table: the database holds it, not the migrator.
const SCAN_TABLE: &str = "namegate_migrate_scan";

/// Aggregates what the rows of each legacy-shaped ID say into the scratch table (one `GROUP BY
/// correlation_id` inside the database), then gives each ID its group key a page at a time.
/// The four JSON arrays are the distinct values of the `fingerprint` column, of
/// `event_data.fingerprint`, of `event_data.rr_name` and of `event_data.remediation_request`
/// (strings only).
async fn scan(conn: &mut Conn, live: &LiveIndex, page: usize) -> Result<(), StoreError> {
    match conn {
        Conn::Sqlite(c) => {
            let pick = |k: &str| {
                format!(
                    "json_group_array(DISTINCT CASE WHEN json_type(event_data, '$.{k}') = 'text' \
                     THEN json_extract(event_data, '$.{k}') END)"
                )
            };
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP TABLE IF EXISTS temp.{SCAN_TABLE}; \
                 CREATE TEMP TABLE {SCAN_TABLE} (id TEXT PRIMARY KEY, key TEXT, first_ts TEXT NOT NULL, \
                   n INTEGER NOT NULL, fps_col TEXT NOT NULL, fps_data TEXT NOT NULL, \
                   names_rr TEXT NOT NULL, names_req TEXT NOT NULL); \
                 INSERT INTO temp.{SCAN_TABLE} (id, first_ts, n, fps_col, fps_data, names_rr, names_req) \
                 SELECT correlation_id, min(event_timestamp), count(*), \
                   json_group_array(DISTINCT fingerprint), {}, {}, {} \
                 FROM audit_events WHERE {LEGACY_SHAPED_SQLITE} GROUP BY correlation_id",
                pick("fingerprint"),
                pick("rr_name"),
                pick("remediation_request"),
            )))
            .execute(&mut *c)
            .await?;
        }
        Conn::Postgres(c) => {
            let pick = |k: &str| {
                format!(
                    "json_agg(DISTINCT CASE WHEN json_typeof(event_data->'{k}') = 'string' \
                     THEN event_data->>'{k}' END)::text"
                )
            };
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP TABLE IF EXISTS pg_temp.{SCAN_TABLE}; \
                 CREATE TEMP TABLE {SCAN_TABLE} (id text COLLATE \"C\" PRIMARY KEY, key text COLLATE \"C\", \
                   first_us bigint NOT NULL, n bigint NOT NULL, fps_col text NOT NULL, \
                   fps_data text NOT NULL, names_rr text NOT NULL, names_req text NOT NULL); \
                 INSERT INTO {SCAN_TABLE} (id, first_us, n, fps_col, fps_data, names_rr, names_req) \
                 SELECT correlation_id, (extract(epoch FROM min(event_timestamp)) * 1000000)::bigint, \
                   count(*), json_agg(DISTINCT fingerprint)::text, {}, {}, {} \
                 FROM audit_events WHERE {LEGACY_SHAPED_PG} GROUP BY correlation_id",
                pick("fingerprint"),
                pick("rr_name"),
                pick("remediation_request"),
            )))
            .execute(&mut *c)
            .await?;
        }
    }
    let mut after = String::new();
    loop {
        let rows = match conn {
            Conn::Sqlite(c) => {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT id, first_ts, n, fps_col, fps_data, names_rr, names_req \
                     FROM temp.{SCAN_TABLE} WHERE id > ?1 ORDER BY id LIMIT ?2"
                )))
                .bind(&after)
                .bind(i64::try_from(page).unwrap_or(i64::MAX))
                .fetch_all(&mut *c)
                .await?;
                rows.iter()
                    .map(observed_sqlite)
                    .collect::<Result<Vec<_>, _>>()?
            }
            Conn::Postgres(c) => {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT id, first_us, n, fps_col, fps_data, names_rr, names_req \
                     FROM {SCAN_TABLE} WHERE id > $1 ORDER BY id LIMIT $2"
                )))
                .bind(&after)
                .bind(i64::try_from(page).unwrap_or(i64::MAX))
                .fetch_all(&mut *c)
                .await?;
                rows.iter()
                    .map(observed_pg)
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        let full = rows.len() == page;
        let ids: Vec<&str> = rows.iter().map(|o| o.correlation_id.as_str()).collect();
        let keys: Vec<String> = rows.iter().map(|o| walk::group_key(o, live)).collect();
        match conn {
            Conn::Sqlite(c) => {
                let pairs = serde_json::to_string(&ids.iter().zip(&keys).collect::<Vec<_>>())
                    .unwrap_or_else(|_| "[]".into());
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE temp.{SCAN_TABLE} AS s SET key = v.value ->> 1 FROM json_each(?1) AS v \
                     WHERE s.id = v.value ->> 0"
                )))
                .bind(pairs)
                .execute(&mut *c)
                .await?;
            }
            Conn::Postgres(c) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE {SCAN_TABLE} AS s SET key = v.key \
                     FROM unnest($1::text[], $2::text[]) AS v(id, key) WHERE s.id = v.id"
                )))
                .bind(&ids)
                .bind(&keys)
                .execute(&mut *c)
                .await?;
            }
        }
        match ids.last() {
            Some(last) if full => after = (*last).to_owned(),
            _ => break,
        }
    }
    let index = format!("CREATE INDEX {SCAN_TABLE}_key ON {SCAN_TABLE} (key, id)");
    match conn {
        Conn::Sqlite(c) => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(index))
                .execute(&mut *c)
                .await?;
        }
        Conn::Postgres(c) => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(index))
                .execute(&mut *c)
                .await?;
        }
    }
    Ok(())
}

/// One scanned ID from the four JSON arrays of its scratch row.
fn observed_of(
    id: String,
    first_event: Option<Timestamp>,
    n: i64,
    arrays: [String; 4],
) -> Observed {
    let parse = |s: &str| -> Vec<String> {
        serde_json::from_str::<Vec<Option<String>>>(s)
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .collect()
    };
    let [fps_col, fps_data, names_rr, names_req] = arrays;
    let mut fingerprints: BTreeSet<String> = parse(&fps_col)
        .into_iter()
        .filter(|f| !f.is_empty())
        .collect();
    fingerprints.extend(parse(&fps_data));
    let mut rr_names: BTreeSet<String> = parse(&names_rr).into_iter().collect();
    rr_names.extend(
        parse(&names_req)
            .iter()
            .filter_map(|s| s.split_once('/').map(|(_, n)| n.to_owned())),
    );
    rr_names.remove(&id);
    Observed {
        first_event: first_event.unwrap_or(Timestamp::MAX),
        rows: u64::try_from(n).unwrap_or(0),
        fingerprints,
        rr_names,
        correlation_id: id,
    }
}

fn observed_sqlite(r: &sqlx::sqlite::SqliteRow) -> Result<Observed, sqlx::Error> {
    let ts: String = r.try_get("first_ts")?;
    Ok(observed_of(
        r.try_get("id")?,
        ts.parse().ok(),
        r.try_get("n")?,
        [
            r.try_get("fps_col")?,
            r.try_get("fps_data")?,
            r.try_get("names_rr")?,
            r.try_get("names_req")?,
        ],
    ))
}

fn observed_pg(r: &sqlx::postgres::PgRow) -> Result<Observed, sqlx::Error> {
    let us: i64 = r.try_get("first_us")?;
    Ok(observed_of(
        r.try_get("id")?,
        Timestamp::from_microsecond(us).ok(),
        r.try_get("n")?,
        [
            r.try_get("fps_col")?,
            r.try_get("fps_data")?,
            r.try_get("names_rr")?,
            r.try_get("names_req")?,
        ],
    ))
}

/// One page of the scratch table in (key, ID) order after `after`.
async fn page(
    conn: &mut Conn,
    after: &(String, String),
    page: usize,
) -> Result<Vec<Scanned>, StoreError> {
    let limit = i64::try_from(page).unwrap_or(i64::MAX);
    let rows: Vec<(String, Observed)> = match conn {
        Conn::Sqlite(c) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT key, id, first_ts, n, fps_col, fps_data, names_rr, names_req \
             FROM temp.{SCAN_TABLE} WHERE (key, id) > (?1, ?2) ORDER BY key, id LIMIT ?3"
        )))
        .bind(&after.0)
        .bind(&after.1)
        .bind(limit)
        .fetch_all(&mut *c)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("key")?, observed_sqlite(r)?)))
        .collect::<Result<_, sqlx::Error>>()?,
        Conn::Postgres(c) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT key, id, first_us, n, fps_col, fps_data, names_rr, names_req \
             FROM {SCAN_TABLE} WHERE (key, id) > ($1, $2) ORDER BY key, id LIMIT $3"
        )))
        .bind(&after.0)
        .bind(&after.1)
        .bind(limit)
        .fetch_all(&mut *c)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("key")?, observed_pg(r)?)))
        .collect::<Result<_, sqlx::Error>>()?,
    };
    Ok(rows
        .into_iter()
        .map(|(key, observed)| Scanned {
            key,
            observed,
            reserved: None,
        })
        .collect())
}

/// legacy → new name recorded in the store for the given legacy IDs (the live RRs' IDs, or one
/// group's references).
async fn migrated_of(
    conn: &mut Conn,
    ids: &[String],
) -> Result<HashMap<String, String>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, String)> = match conn {
        Conn::Sqlite(c) => {
            sqlx::query_as(
                "SELECT DISTINCT legacy_correlation_id, correlation_id FROM audit_events \
                 WHERE legacy_correlation_id IN (SELECT value FROM json_each(?1))",
            )
            .bind(serde_json::to_string(ids).unwrap_or_else(|_| "[]".into()))
            .fetch_all(&mut *c)
            .await?
        }
        Conn::Postgres(c) => {
            sqlx::query_as(
                "SELECT DISTINCT legacy_correlation_id, correlation_id FROM audit_events \
                 WHERE legacy_correlation_id = ANY($1::text[])",
            )
            .bind(ids)
            .fetch_all(&mut *c)
            .await?
        }
    };
    Ok(rows.into_iter().collect())
}

/// Which of `ids` the scratch table holds.
async fn scanned_of(conn: &mut Conn, ids: &[String]) -> Result<HashSet<String>, StoreError> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let rows: Vec<String> = match conn {
        Conn::Sqlite(c) => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT id FROM temp.{SCAN_TABLE} WHERE id IN (SELECT value FROM json_each(?1))"
            )))
            .bind(serde_json::to_string(ids).unwrap_or_else(|_| "[]".into()))
            .fetch_all(&mut *c)
            .await?
        }
        Conn::Postgres(c) => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT id FROM {SCAN_TABLE} WHERE id = ANY($1::text[])"
            )))
            .bind(ids)
            .fetch_all(&mut *c)
            .await?
        }
    };
    Ok(rows.into_iter().collect())
}

/// The state of one run's walk over the groups.
struct Walk<'a> {
    opts: &'a Options,
    live: &'a LiveIndex,
    buckets: LiveBuckets,
    report: Report,
    pending: Vec<Target>,
    pending_rows: u64,
    trailless: Vec<Target>,
    planned_live: HashMap<String, String>,
    held: Held,
}

impl Walk<'_> {
    fn pending_ids(&self) -> usize {
        self.pending.iter().map(|t| t.sources.len()).sum()
    }

    async fn group(
        &mut self,
        conn: &mut Conn,
        out: &mut dyn Write,
        key: &str,
        group: Vec<Scanned>,
    ) -> Result<(), StoreError> {
        let live = self.buckets.index_for(key, &group, self.live);
        let refs = walk::outside_refs(&group, &live);
        let migrated = migrated_of(conn, &refs).await?;
        let elsewhere = scanned_of(conn, &refs).await?;
        let res = walk::resolve_group(key, group, &live, &migrated, &elsewhere);
        let r = &mut self.report;
        r.ids_scanned += res.scanned;
        r.already_migrated += res.already_migrated;
        r.look_alikes += res.look_alikes;
        for l in &res.unresolved {
            r.line(out, LineKind::Unresolved, l)?;
        }
        // A fingerprint's targets are all in its group: distinct per group adds up.
        r.fingerprints += res
            .targets
            .iter()
            .map(|t| t.fingerprint)
            .collect::<BTreeSet<_>>()
            .len();
        for t in &res.targets {
            for (_, format) in &t.sources {
                *r.by_format.entry((*format).to_owned()).or_default() += 1;
            }
        }
        r.attempts_assigned += res.targets.len() + res.trailless.len();
        for t in res.targets.iter().chain(&res.trailless) {
            for (s, _) in &t.sources {
                if live.by_name(s).is_some() || live.name_of_uid(s).is_some() {
                    self.planned_live.insert(s.clone(), t.name.clone());
                }
            }
        }
        self.trailless.extend(res.trailless);
        for t in res.targets {
            if self.opts.dry_run {
                self.report.rows_rewritten += t.rows;
                continue;
            }
            if !self.pending.is_empty() && self.pending_rows + t.rows > self.opts.batch_rows {
                self.flush(conn).await?;
            }
            self.pending_rows += t.rows;
            self.pending.push(t);
        }
        Ok(())
    }

    async fn flush(&mut self, conn: &mut Conn) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        self.report.rows_rewritten += rewrite(conn, &batch).await?;
        Ok(())
    }
}

/// The walk of one run with the connection and output it works on ([`walk_groups`] drives it).
struct Walking<'r, 'a> {
    w: &'r mut Walk<'a>,
    conn: &'r mut Conn,
    out: &'r mut dyn Write,
}

impl GroupWalk for Walking<'_, '_> {
    type Error = StoreError;

    async fn page(
        &mut self,
        after: &(String, String),
        size: usize,
    ) -> Result<Vec<Scanned>, StoreError> {
        page(self.conn, after, size).await
    }

    async fn group(&mut self, key: &str, group: Vec<Scanned>) -> Result<(), StoreError> {
        self.w.group(self.conn, self.out, key, group).await
    }

    fn buckets(&mut self) -> &mut LiveBuckets {
        &mut self.w.buckets
    }

    fn held(&mut self) -> &mut Held {
        &mut self.w.held
    }

    fn pending_ids(&self) -> usize {
        self.w.pending_ids()
    }
}

/// Runs the migration of namegate's store behind `conn`, writing the report's per-ID lines to `out`
/// as they are found. Memory: one page, one fingerprint group, one batch and the live RRs
/// (docs/migration.md, "Scale: bounded memory").
pub async fn run(
    conn: &mut Conn,
    live: &LiveIndex,
    opts: &Options,
    out: &mut dyn Write,
) -> Result<Report, StoreError> {
    check_schema(conn).await?;
    let report = Report {
        source: match conn {
            Conn::Sqlite(_) => "namegate audit store (SQLite)".into(),
            Conn::Postgres(_) => "namegate audit store (PostgreSQL)".into(),
        },
        dry_run: opts.dry_run,
        ..Report::default()
    };
    report.write_header(out)?;
    let count = "SELECT count(DISTINCT legacy_correlation_id) FROM audit_events \
                 WHERE legacy_correlation_id IS NOT NULL";
    let previously: i64 = match conn {
        Conn::Sqlite(c) => sqlx::query_scalar(count).fetch_one(&mut *c).await?,
        Conn::Postgres(c) => sqlx::query_scalar(count).fetch_one(&mut *c).await?,
    };
    let page_size = opts.page.max(1);
    scan(conn, live, page_size).await?;
    let mut w = Walk {
        opts,
        live,
        buckets: LiveBuckets::new(live),
        report,
        pending: Vec::new(),
        pending_rows: 0,
        trailless: Vec::new(),
        planned_live: HashMap::new(),
        held: Held::default(),
    };
    w.report.previously_migrated = usize::try_from(previously).unwrap_or(0);
    walk_groups(
        &mut Walking {
            w: &mut w,
            conn: &mut *conn,
            out: &mut *out,
        },
        page_size,
    )
    .await?;
    w.flush(conn).await?;
    match conn {
        Conn::Sqlite(c) => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP TABLE IF EXISTS temp.{SCAN_TABLE}"
            )))
            .execute(&mut *c)
            .await?;
        }
        Conn::Postgres(c) => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP TABLE IF EXISTS pg_temp.{SCAN_TABLE}"
            )))
            .execute(&mut *c)
            .await?;
        }
    }
    let mut report = w.report;
    report.peak_ids_held = w.held.peak;
    let done = if opts.dry_run {
        w.planned_live
    } else {
        let ids: Vec<String> = live
            .iter()
            .flat_map(|rr| [rr.name.clone(), rr.uid.clone()])
            .collect();
        migrated_of(conn, &ids).await?
    };
    report.live_assign = resolve::assignments(live, &done, &w.trailless);
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
