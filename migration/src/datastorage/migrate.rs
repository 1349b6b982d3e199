//! Migrating a kubernaut DataStorage database (docs/migration.md, "What the migration changes in
//! DataStorage").
//!
//! 1. Scan: one `GROUP BY correlation_id` over RR-name- and UUID-shaped IDs into a temporary table
//!    of the session, each ID with its fingerprint group key ([`crate::walk`]).
//! 2. Walk the table in (key, ID) order one group at a time: resolve and plan the group
//!    ([`crate::resolve`]), record its plan, queue its targets. Memory: one page, one group, one
//!    batch, the live RRs — never a whole-database set.
//! 3. Per new name (batched into transactions of about `batch_rows` rows, each a checkpoint): take
//!    DataStorage's advisory locks of every ID involved, pass the AU-9 trigger (`ALTER TABLE …
//!    DISABLE TRIGGER` inside the transaction, or `SET LOCAL session_replication_role = replica`),
//!    verify every old chain by DataStorage's rules, re-chain the rows in DataStorage's verification
//!    order under the new name with each row's own algorithm, append an attestation row holding each
//!    old chain's tail hash (and, for chains that did not verify, every old link), record the mapping
//!    in `namegate_correlation_migration`, commit. A chain that does not verify is left untouched
//!    unless the operator asked for its class or its ID.
//!
//! Killed at any point, a run leaves only whole committed batches; the next run finds the migrated
//! IDs gone and continues with the same numbering (attempts are assigned in a fixed order and names
//! already in use are respected), so it ends in the state an uninterrupted run reaches.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;

use crd_schema::Fingerprint;
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection, Row as _};

use super::canonical::{Algorithm, HashError, HmacKey, Row};
use super::db::{self, DbError};
use super::verify::{self, ChainClass};
use crate::report::{Left, LineKind, Report};
use crate::resolve::{self, LiveIndex, Observed, Target};
use crate::walk::{self, GroupWalk, Held, LiveBuckets, Scanned, walk_groups};

/// The table the migration keeps in DataStorage's database: its checkpoint and the legacy → new
/// index for lookups. DataStorage never reads it.
pub const MAP_TABLE: &str = "namegate_correlation_migration";

/// The plan of earlier runs: legacy ID → new name, for IDs not moved yet (their number is kept).
pub const PLAN_TABLE: &str = "namegate_correlation_plan";

/// `event_type` of the attestation row.
pub const ATTESTATION_TYPE: &str = "namegate.migration.rechained";

/// How the migration passes DataStorage's AU-9 trigger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Bypass {
    /// `ALTER TABLE audit_events DISABLE TRIGGER enforce_audit_event_immutability` inside each batch
    /// transaction (needs the table owner). Blocks DataStorage's inserts until the batch commits.
    #[default]
    DisableTrigger,
    /// `SET LOCAL session_replication_role = replica` (superuser, or on PostgreSQL ≥ 15 a role
    /// granted `SET` on it). Silences every trigger of the transaction.
    ReplicationRole,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub dry_run: bool,
    pub hmac_key: Option<HmacKey>,
    /// Re-chain legacy chains of these classes although DataStorage's verification fails.
    pub rechain_classes: BTreeSet<ChainClass>,
    /// Re-chain these legacy IDs whatever their class.
    pub rechain_ids: BTreeSet<String>,
    pub batch_rows: u64,
    pub bypass: Bypass,
    /// IDs read from the scan's scratch table per page.
    pub page: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            dry_run: false,
            hmac_key: None,
            rechain_classes: BTreeSet::new(),
            rechain_ids: BTreeSet::new(),
            batch_rows: 5000,
            bypass: Bypass::default(),
            page: walk::DEFAULT_PAGE,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("not a kubernaut DataStorage database: {0}")]
    NotDataStorage(String),
    #[error("writing the report: {0}")]
    Report(#[from] std::io::Error),
}

impl From<sqlx::Error> for MigrateError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(DbError::Sql(e))
    }
}

impl MigrateError {
    pub fn is_not_datastorage(&self) -> bool {
        matches!(self, Self::NotDataStorage(_))
    }
}

const LEGACY_SHAPED: &str = "(correlation_id LIKE 'rr-%' OR correlation_id ~ \
     '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$')";

/// The session's scratch table: one row per RR-name- or UUID-shaped correlation ID with what its
/// events say and its group key (a temporary table: PostgreSQL keeps it, not the migrator).
const SCAN_TABLE: &str = "namegate_migrate_scan";

/// Aggregates what the database knows about every RR-name- and UUID-shaped correlation ID into the
/// session's scratch table (one `GROUP BY correlation_id`, inside PostgreSQL), then gives each ID its
/// group key (`crate::walk`) a page at a time. Returns the number of IDs.
async fn scan(conn: &mut PgConnection, live: &LiveIndex, page: usize) -> Result<usize, DbError> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS pg_temp.{SCAN_TABLE}; \
         CREATE TEMP TABLE {SCAN_TABLE} ( \
           id text COLLATE \"C\" PRIMARY KEY, \
           key text COLLATE \"C\", \
           first_us bigint NOT NULL, \
           n bigint NOT NULL, \
           fps text[] NOT NULL, \
           rr_names text[] NOT NULL); \
         INSERT INTO {SCAN_TABLE} (id, first_us, n, fps, rr_names) \
         SELECT correlation_id::text, \
           (extract(epoch FROM min(event_timestamp)) * 1000000)::bigint, \
           count(*), \
           array_remove(array_agg(DISTINCT event_data->>'fingerprint'), NULL) \
             || array_remove(array_agg(DISTINCT event_data->>'signal_fingerprint'), NULL) \
             || array_remove(array_agg(DISTINCT CASE WHEN resource_type = 'Signal' THEN resource_id::text END), NULL), \
           array_remove(array_agg(DISTINCT event_data->>'rr_name'), NULL) \
             || array_remove(array_agg(DISTINCT split_part(event_data->>'remediation_request', '/', 2)), NULL) \
         FROM audit_events WHERE {LEGACY_SHAPED} GROUP BY correlation_id"
    )))
    .execute(&mut *conn)
    .await?;
    let mut after = String::new();
    let mut total = 0;
    loop {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, first_us, n, fps, rr_names FROM {SCAN_TABLE} WHERE id > $1 ORDER BY id LIMIT $2"
        )))
        .bind(&after)
        .bind(i64::try_from(page).unwrap_or(i64::MAX))
        .fetch_all(&mut *conn)
        .await?;
        let mut ids = Vec::with_capacity(rows.len());
        let mut keys = Vec::with_capacity(rows.len());
        for r in &rows {
            let o = observed(r)?;
            keys.push(walk::group_key(&o, live));
            ids.push(o.correlation_id);
        }
        total += ids.len();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {SCAN_TABLE} AS s SET key = v.key FROM unnest($1::text[], $2::text[]) AS v(id, key) \
             WHERE s.id = v.id"
        )))
        .bind(&ids)
        .bind(&keys)
        .execute(&mut *conn)
        .await?;
        match ids.pop() {
            Some(last) if rows.len() == page => after = last,
            _ => break,
        }
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE INDEX ON {SCAN_TABLE} (key, id); ANALYZE {SCAN_TABLE}"
    )))
    .execute(&mut *conn)
    .await?;
    Ok(total)
}

fn observed(r: &sqlx::postgres::PgRow) -> Result<Observed, DbError> {
    let id: String = r.try_get("id")?;
    let first_us: i64 = r.try_get("first_us")?;
    let n: i64 = r.try_get("n")?;
    let fps: Vec<String> = r.try_get("fps")?;
    let names: Vec<String> = r.try_get("rr_names")?;
    Ok(Observed {
        first_event: Timestamp::from_microsecond(first_us).unwrap_or(Timestamp::UNIX_EPOCH),
        rows: u64::try_from(n).unwrap_or(0),
        fingerprints: fps.into_iter().filter(|s| !s.is_empty()).collect(),
        rr_names: names
            .into_iter()
            .filter(|s| !s.is_empty() && *s != id)
            .collect(),
        correlation_id: id,
    })
}

/// One page of the scratch table, in (key, ID) order, after `after`.
async fn page(
    conn: &mut PgConnection,
    after: &(String, String),
    page: usize,
    plan: bool,
) -> Result<Vec<Scanned>, DbError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT key, id, first_us, n, fps, rr_names FROM {SCAN_TABLE} \
         WHERE (key, id) > ($1, $2) ORDER BY key, id LIMIT $3"
    )))
    .bind(&after.0)
    .bind(&after.1)
    .bind(i64::try_from(page).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(Scanned {
            key: r.try_get("key")?,
            observed: observed(r)?,
            reserved: None,
        });
    }
    if plan && !out.is_empty() {
        // Names an earlier run planned for these IDs (kept, so numbers do not change on resume).
        let ids: Vec<&str> = out
            .iter()
            .map(|s| s.observed.correlation_id.as_str())
            .collect();
        let reserved: HashMap<String, String> =
            sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(format!(
                "SELECT legacy_correlation_id, correlation_id FROM {PLAN_TABLE} \
                 WHERE legacy_correlation_id = ANY($1::text[])"
            )))
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
        for s in &mut out {
            s.reserved = reserved.get(&s.observed.correlation_id).cloned();
        }
    }
    Ok(out)
}

async fn ensure_map_table(conn: &mut PgConnection) -> Result<(), DbError> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {MAP_TABLE} ( \
           legacy_correlation_id text PRIMARY KEY, \
           correlation_id text NOT NULL, \
           fingerprint text NOT NULL, \
           attempt integer NOT NULL, \
           legacy_format text NOT NULL, \
           chain_class text NOT NULL, \
           legacy_tail_hash text, \
           legacy_events bigint NOT NULL, \
           attestation_event_id uuid, \
           migrated_at timestamptz NOT NULL DEFAULT now()); \
         CREATE INDEX IF NOT EXISTS {MAP_TABLE}_new ON {MAP_TABLE} (correlation_id); \
         CREATE TABLE IF NOT EXISTS {PLAN_TABLE} ( \
           legacy_correlation_id text PRIMARY KEY, \
           correlation_id text NOT NULL);"
    )))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn table_exists(conn: &mut PgConnection, table: &str) -> Result<bool, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_name = $1)",
    )
    .bind(table)
    .fetch_one(&mut *conn)
    .await?)
}

/// legacy → new name recorded in the map table, for the given legacy IDs only.
async fn migrated_of(
    conn: &mut PgConnection,
    ids: &[String],
) -> Result<HashMap<String, String>, DbError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT legacy_correlation_id, correlation_id FROM {MAP_TABLE} \
         WHERE legacy_correlation_id = ANY($1::text[])"
    )))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Which of `ids` the scratch table holds.
async fn scanned_of(conn: &mut PgConnection, ids: &[String]) -> Result<HashSet<String>, DbError> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM {SCAN_TABLE} WHERE id = ANY($1::text[])"
    )))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// The state of one run's walk over the groups.
struct Walk<'a> {
    opts: &'a Options,
    live: &'a LiveIndex,
    buckets: LiveBuckets,
    insert_seq: bool,
    trigger: bool,
    map_exists: bool,
    report: Report,
    /// Targets of the batch being filled, and their rows.
    pending: Vec<Target>,
    pending_rows: u64,
    /// The last fingerprint counted (targets come in fingerprint order).
    last_fp: Option<Fingerprint>,
    trailless: Vec<Target>,
    /// legacy → new of the live RRs' IDs (dry run: what the run would record).
    planned_live: HashMap<String, String>,
    held: Held,
}

impl Walk<'_> {
    fn pending_ids(&self) -> usize {
        self.pending.iter().map(|t| t.sources.len()).sum()
    }

    /// Resolves one group, plans it, and queues its targets into batches.
    async fn group(
        &mut self,
        conn: &mut PgConnection,
        out: &mut dyn Write,
        key: &str,
        group: Vec<Scanned>,
    ) -> Result<(), MigrateError> {
        let live = self.buckets.index_for(key, &group, self.live);
        let refs = walk::outside_refs(&group, &live);
        let migrated = if self.map_exists {
            migrated_of(conn, &refs).await?
        } else {
            HashMap::new()
        };
        let elsewhere = scanned_of(conn, &refs).await?;
        let res = walk::resolve_group(key, group, &live, &migrated, &elsewhere);
        self.report.ids_scanned += res.scanned;
        self.report.already_migrated += res.already_migrated;
        self.report.look_alikes += res.look_alikes;
        for l in &res.unresolved {
            self.report.line(out, LineKind::Unresolved, l)?;
        }
        for t in res.targets.iter().chain(&res.trailless) {
            for (s, _) in &t.sources {
                if live.by_name(s).is_some() || live.name_of_uid(s).is_some() {
                    self.planned_live.insert(s.clone(), t.name.clone());
                }
            }
        }
        self.trailless.extend(res.trailless);
        if !self.opts.dry_run && !res.targets.is_empty() {
            // The group's plan before any of its rows move: an interrupted run resumes with the
            // same numbers, and a chain left for the operator keeps its number for a later run.
            let (legacy, new): (Vec<&str>, Vec<&str>) = res
                .targets
                .iter()
                .flat_map(|t| t.sources.iter().map(|(s, _)| (s.as_str(), t.name.as_str())))
                .unzip();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {PLAN_TABLE} (legacy_correlation_id, correlation_id) \
                 SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING"
            )))
            .bind(&legacy)
            .bind(&new)
            .execute(&mut *conn)
            .await?;
        }
        for t in res.targets {
            // Whole targets up to about batch_rows rows per batch.
            if !self.pending.is_empty() && self.pending_rows + t.rows > self.opts.batch_rows {
                self.flush(conn, out).await?;
            }
            self.pending_rows += t.rows;
            self.pending.push(t);
        }
        Ok(())
    }

    /// Migrates the queued batch in one transaction (retried on serialization failures).
    async fn flush(
        &mut self,
        conn: &mut PgConnection,
        out: &mut dyn Write,
    ) -> Result<(), MigrateError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        let mut attempt = 0;
        let done = loop {
            attempt += 1;
            let mut scratch = BatchOut::default();
            match run_batch(
                conn,
                &batch,
                self.opts,
                self.insert_seq,
                self.trigger,
                &mut scratch,
            )
            .await
            {
                Ok(()) => break scratch,
                Err(e) if e.is_retryable() && attempt < 4 => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let r = &mut self.report;
        for (k, v) in done.by_format {
            *r.by_format.entry(k.to_owned()).or_default() += v;
        }
        for (k, v) in done.chain_classes {
            *r.chain_classes.entry(k.to_owned()).or_default() += v;
        }
        r.attempts_assigned += done.attempts_assigned;
        r.rows_rewritten += done.rows_rewritten;
        r.attestations += done.attestations;
        for fp in done.fingerprints {
            if self.last_fp != Some(fp) {
                r.fingerprints += 1;
                self.last_fp = Some(fp);
            }
        }
        for (kind, l) in &done.lines {
            r.line(out, *kind, l)?;
        }
        Ok(())
    }
}

/// The walk of one run with the connection and output it works on ([`walk_groups`] drives it).
struct Walking<'r, 'a> {
    w: &'r mut Walk<'a>,
    conn: &'r mut PgConnection,
    out: &'r mut dyn Write,
    plan_exists: bool,
}

impl GroupWalk for Walking<'_, '_> {
    type Error = MigrateError;

    async fn page(
        &mut self,
        after: &(String, String),
        size: usize,
    ) -> Result<Vec<Scanned>, MigrateError> {
        Ok(page(self.conn, after, size, self.plan_exists).await?)
    }

    async fn group(&mut self, key: &str, group: Vec<Scanned>) -> Result<(), MigrateError> {
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

/// Runs the migration of the DataStorage database behind `conn`, writing the report's per-ID lines
/// to `out` as they are found (the summary is the returned [`Report`]).
///
/// Memory: one page of the scan, one fingerprint group, one batch and the live RRs
/// (docs/migration.md, "Scale: bounded memory").
pub async fn run(
    conn: &mut PgConnection,
    live: &LiveIndex,
    opts: &Options,
    out: &mut dyn Write,
) -> Result<Report, MigrateError> {
    if !db::has_column(conn, "event_date").await? || !db::has_column(conn, "hash_algorithm").await?
    {
        return Err(MigrateError::NotDataStorage(
            "audit_events has no event_date/hash_algorithm columns (DataStorage after its migration 013)"
                .into(),
        ));
    }
    let insert_seq = db::has_column(conn, "insert_seq").await?;
    let trigger = db::has_immutability_trigger(conn).await?;
    let report = Report {
        source: "kubernaut DataStorage (PostgreSQL)".into(),
        dry_run: opts.dry_run,
        ..Report::default()
    };
    report.write_header(out)?;
    if !opts.dry_run {
        ensure_map_table(conn).await?;
    }
    let map_exists = table_exists(conn, MAP_TABLE).await?;
    let plan_exists = table_exists(conn, PLAN_TABLE).await?;
    let page_size = opts.page.max(1);
    scan(conn, live, page_size).await?;
    let mut w = Walk {
        opts,
        live,
        buckets: LiveBuckets::new(live),
        insert_seq,
        trigger,
        map_exists,
        report,
        pending: Vec::new(),
        pending_rows: 0,
        last_fp: None,
        trailless: Vec::new(),
        planned_live: HashMap::new(),
        held: Held::default(),
    };
    if map_exists {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {MAP_TABLE}"
        )))
        .fetch_one(&mut *conn)
        .await?;
        w.report.previously_migrated = usize::try_from(n).unwrap_or(0);
    }
    walk_groups(
        &mut Walking {
            w: &mut w,
            conn: &mut *conn,
            out: &mut *out,
            plan_exists,
        },
        page_size,
    )
    .await?;
    w.flush(conn, out).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS pg_temp.{SCAN_TABLE}"
    )))
    .execute(&mut *conn)
    .await?;
    let mut report = w.report;
    report.attempts_assigned += w.trailless.len();
    report.peak_ids_held = w.held.peak;
    // The live RRs' IDs as recorded now (dry run: as planned).
    let done = if opts.dry_run || !map_exists {
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

/// What one batch did (merged into the report once the batch committed).
#[derive(Default)]
struct BatchOut {
    by_format: BTreeMap<&'static str, usize>,
    chain_classes: BTreeMap<&'static str, usize>,
    attempts_assigned: usize,
    rows_rewritten: u64,
    attestations: usize,
    /// Fingerprints of the migrated targets, in order.
    fingerprints: Vec<Fingerprint>,
    lines: Vec<(LineKind, Left)>,
}

async fn run_batch(
    conn: &mut PgConnection,
    batch: &[Target],
    opts: &Options,
    insert_seq: bool,
    trigger: bool,
    out: &mut BatchOut,
) -> Result<(), DbError> {
    let mut tx = conn.begin().await?;
    // DataStorage's writers lock a correlation ID before reading its head: take the same locks, in
    // byte order like its batch writer, before anything else.
    let mut ids: Vec<&str> = batch
        .iter()
        .flat_map(|t| {
            t.sources
                .iter()
                .map(|s| s.0.as_str())
                .chain([t.name.as_str()])
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let keys: Vec<i64> = ids.iter().map(|id| db::lock_id(id)).collect();
    // One round trip; unnest yields the keys in array order, so the locks are taken in that order.
    sqlx::query("SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS t(k)")
        .bind(&keys)
        .execute(&mut *tx)
        .await?;
    if !opts.dry_run {
        match opts.bypass {
            Bypass::DisableTrigger if trigger => {
                sqlx::raw_sql(
                    "ALTER TABLE audit_events DISABLE TRIGGER enforce_audit_event_immutability",
                )
                .execute(&mut *tx)
                .await?;
            }
            Bypass::DisableTrigger => {}
            Bypass::ReplicationRole => {
                sqlx::raw_sql("SET LOCAL session_replication_role = replica")
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    for t in batch {
        migrate_target(&mut tx, t, opts, insert_seq, out).await?;
    }
    if opts.dry_run {
        tx.rollback().await?;
        return Ok(());
    }
    if opts.bypass == Bypass::DisableTrigger && trigger {
        sqlx::raw_sql("ALTER TABLE audit_events ENABLE TRIGGER enforce_audit_event_immutability")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The evidence of one old chain, kept in the attestation.
struct OldChain {
    id: String,
    format: &'static str,
    class: ChainClass,
    rows: Vec<Row>,
}

async fn migrate_target(
    conn: &mut PgConnection,
    t: &Target,
    opts: &Options,
    insert_seq: bool,
    out: &mut BatchOut,
) -> Result<(), DbError> {
    let mut ids: Vec<String> = t.sources.iter().map(|s| s.0.clone()).collect();
    ids.push(t.name.clone());
    let rows = db::load(conn, &ids).await?;
    let mut by_id: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for r in rows {
        by_id.entry(r.correlation_id.clone()).or_default().push(r);
    }
    let key = opts.hmac_key.as_ref();
    let mut old = Vec::new();
    let mut blocked = Vec::new();
    for (id, format) in &t.sources {
        let rows = by_id.remove(id).unwrap_or_default();
        let class = match verify::classify(&rows, key) {
            Ok(a) => a.class,
            Err(e) => {
                out.lines.push((
                    LineKind::Failed,
                    Left {
                        correlation_id: id.clone(),
                        reason: hash_reason(&e),
                    },
                ));
                blocked.push(id.clone());
                continue;
            }
        };
        *out.chain_classes.entry(class.as_str()).or_default() += 1;
        let allowed = class == ChainClass::Valid
            || opts.rechain_classes.contains(&class)
            || opts.rechain_ids.contains(id);
        if !allowed {
            out.lines.push((
                LineKind::Unresolved,
                Left {
                    correlation_id: id.clone(),
                    reason: format!(
                        "its chain fails DataStorage's verification ({}); left intact — re-chain \
                         with --rechain-class {} or --rechain-id {id}",
                        class.as_str(),
                        class.as_str()
                    ),
                },
            ));
            blocked.push(id.clone());
        }
        old.push(OldChain {
            id: id.clone(),
            format,
            class,
            rows,
        });
    }
    // Rows already under the new name (an earlier run's trail, or events written since) must verify.
    let existing = by_id.remove(&t.name).unwrap_or_default();
    if !existing.is_empty() {
        match verify::verify(&existing, key) {
            Ok(v) if v.is_valid() => {}
            Ok(_) => {
                out.lines.push((
                    LineKind::Failed,
                    Left {
                        correlation_id: t.name.clone(),
                        reason: "the new name already holds a chain that fails verification".into(),
                    },
                ));
                blocked.push(t.name.clone());
            }
            Err(e) => {
                out.lines.push((
                    LineKind::Failed,
                    Left {
                        correlation_id: t.name.clone(),
                        reason: hash_reason(&e),
                    },
                ));
                blocked.push(t.name.clone());
            }
        }
    }
    if !blocked.is_empty() {
        // The whole remediation stays together: nothing of it moves.
        for o in &old {
            if !blocked.contains(&o.id) {
                out.lines.push((
                    LineKind::Unresolved,
                    Left {
                        correlation_id: o.id.clone(),
                        reason: format!(
                            "left with the rest of its remediation ({}), which cannot move",
                            blocked.join(", ")
                        ),
                    },
                ));
            }
        }
        return Ok(());
    }
    // The new chain: every old row and the rows already under the name, in verification order.
    let mut rows: Vec<Row> = existing;
    let old_seq = if insert_seq {
        Some(insert_seqs(conn, &old, &rows).await?)
    } else {
        None
    };
    for o in &old {
        rows.extend(o.rows.iter().cloned());
    }
    let tail = match verify::rechain(&mut rows, &t.name, key) {
        Ok(tail) => tail,
        Err(e) => {
            out.lines.push((
                LineKind::Failed,
                Left {
                    correlation_id: t.name.clone(),
                    reason: hash_reason(&e),
                },
            ));
            return Ok(());
        }
    };
    let attestation = attestation(t, &old, &rows, tail, key);
    let Ok(attestation) = attestation else {
        out.lines.push((
            LineKind::Failed,
            Left {
                correlation_id: t.name.clone(),
                reason: "cannot hash the attestation".into(),
            },
        ));
        return Ok(());
    };
    for o in &old {
        *out.by_format.entry(o.format).or_default() += 1;
        if o.class != ChainClass::Valid {
            out.lines.push((
                LineKind::Rechained,
                Left {
                    correlation_id: o.id.clone(),
                    reason: o.class.as_str().to_owned(),
                },
            ));
        }
    }
    out.attempts_assigned += 1;
    out.rows_rewritten += old.iter().map(|o| o.rows.len() as u64).sum::<u64>();
    out.attestations += 1;
    out.fingerprints.push(t.fingerprint);
    if opts.dry_run {
        return Ok(());
    }
    update_rows(conn, &rows, old_seq.as_ref()).await?;
    db::insert(conn, std::slice::from_ref(&attestation)).await?;
    for o in &old {
        let tail = o
            .rows
            .iter()
            .filter(|r| r.is_hashed())
            .max_by(|a, b| (a.event_timestamp, &a.event_id).cmp(&(b.event_timestamp, &b.event_id)))
            .and_then(|r| r.event_hash.clone());
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {MAP_TABLE} (legacy_correlation_id, correlation_id, fingerprint, attempt, \
             legacy_format, chain_class, legacy_tail_hash, legacy_events, attestation_event_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::uuid) \
             ON CONFLICT (legacy_correlation_id) DO NOTHING"
        )))
        .bind(&o.id)
        .bind(&t.name)
        .bind(t.fingerprint.to_hex())
        .bind(i32::try_from(t.attempt).unwrap_or(i32::MAX))
        .bind(o.format)
        .bind(o.class.as_str())
        .bind(tail)
        .bind(i64::try_from(o.rows.len()).unwrap_or(i64::MAX))
        .bind(&attestation.event_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

fn hash_reason(e: &HashError) -> String {
    e.to_string()
}

/// The `insert_seq` values of the rows, to be handed out again in the new chain's order.
async fn insert_seqs(
    conn: &mut PgConnection,
    old: &[OldChain],
    existing: &[Row],
) -> Result<HashMap<String, i64>, DbError> {
    let ids: Vec<String> = old
        .iter()
        .flat_map(|o| o.rows.iter())
        .chain(existing)
        .map(|r| r.event_id.clone())
        .collect();
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT event_id::text, insert_seq FROM audit_events WHERE event_id = ANY($1::text[]::uuid[])",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().collect())
}

async fn update_rows(
    conn: &mut PgConnection,
    rows: &[Row],
    old_seq: Option<&HashMap<String, i64>>,
) -> Result<(), DbError> {
    let ids: Vec<String> = rows.iter().map(|r| r.event_id.clone()).collect();
    let dates: Vec<String> = rows.iter().map(|r| r.event_date.to_string()).collect();
    let cids: Vec<String> = rows.iter().map(|r| r.correlation_id.clone()).collect();
    let prevs: Vec<Option<String>> = rows.iter().map(|r| r.previous_event_hash.clone()).collect();
    let hashes: Vec<Option<String>> = rows.iter().map(|r| r.event_hash.clone()).collect();
    match old_seq {
        None => {
            sqlx::query(
                "UPDATE audit_events AS a SET correlation_id = v.cid, previous_event_hash = v.prev, \
                   event_hash = v.hash \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) \
                   AS v(id, d, cid, prev, hash) \
                 WHERE a.event_id = v.id::uuid AND a.event_date = v.d::date",
            )
            .bind(&ids)
            .bind(&dates)
            .bind(&cids)
            .bind(&prevs)
            .bind(&hashes)
            .execute(&mut *conn)
            .await?;
        }
        Some(seq) => {
            // The chain's own insert_seq values, handed out again in chain order: the newer
            // DataStorage's "newest by insert_seq" agrees with the new chain, other chains keep theirs.
            let mut values: Vec<i64> = ids.iter().filter_map(|id| seq.get(id).copied()).collect();
            values.sort_unstable();
            sqlx::query(
                "UPDATE audit_events AS a SET correlation_id = v.cid, previous_event_hash = v.prev, \
                   event_hash = v.hash, insert_seq = v.seq \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[]) \
                   AS v(id, d, cid, prev, hash, seq) \
                 WHERE a.event_id = v.id::uuid AND a.event_date = v.d::date",
            )
            .bind(&ids)
            .bind(&dates)
            .bind(&cids)
            .bind(&prevs)
            .bind(&hashes)
            .bind(&values)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// The row appended to the new chain that keeps the old chains' evidence: each old ID, its format,
/// its verification class, its tail hash and row count, and — for a chain that did not verify —
/// every old `(event_id, previous_event_hash, event_hash)`. Its ID and timestamp are derived from
/// its content, so an interrupted and resumed run writes the same row.
fn attestation(
    t: &Target,
    old: &[OldChain],
    chain: &[Row],
    tail: String,
    key: Option<&HmacKey>,
) -> Result<Row, HashError> {
    let mut legacy = Vec::new();
    let mut seed = Sha256::new();
    seed.update(t.name.as_bytes());
    for o in old {
        let mut hashed: Vec<&Row> = o.rows.iter().filter(|r| r.is_hashed()).collect();
        hashed.sort_by(|a, b| {
            (a.event_timestamp, &a.event_id).cmp(&(b.event_timestamp, &b.event_id))
        });
        let tail_hash = hashed.last().and_then(|r| r.event_hash.clone());
        let mut entry = json!({
            "correlation_id": o.id,
            "format": o.format,
            "chain_class": o.class.as_str(),
            "events": o.rows.len(),
            "hashed_events": hashed.len(),
            "tail_event_hash": tail_hash,
            "algorithms": hashed.iter().map(|r| r.hash_algorithm.as_str()).collect::<BTreeSet<_>>(),
        });
        if o.class != ChainClass::Valid {
            entry["links"] = json!(
                hashed
                    .iter()
                    .map(|r| json!([r.event_id, r.previous_event_hash, r.event_hash]))
                    .collect::<Vec<_>>()
            );
        }
        seed.update(o.id.as_bytes());
        seed.update(tail_hash.unwrap_or_default().as_bytes());
        legacy.push(entry);
    }
    let digest = seed.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let last = chain
        .iter()
        .map(|r| r.event_timestamp)
        .max()
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let at = last
        .checked_add(SignedDuration::from_micros(1))
        .unwrap_or(last);
    let algorithm = if key.is_some() {
        Algorithm::HmacSha256
    } else {
        Algorithm::Sha256
    };
    let mut row = Row {
        event_id: uuid::Uuid::from_bytes(b).to_string(),
        event_timestamp: at,
        event_date: at.to_zoned(jiff::tz::TimeZone::UTC).date(),
        event_version: "1.0".into(),
        event_type: ATTESTATION_TYPE.into(),
        event_category: "gateway".into(),
        event_action: "migrated".into(),
        event_outcome: "success".into(),
        correlation_id: t.name.clone(),
        parent_event_id: None,
        parent_event_date: None,
        resource_type: "RemediationRequest".into(),
        resource_id: t.name.clone(),
        namespace: None,
        cluster_id: None,
        actor_type: "service".into(),
        actor_id: "namegate-migrate".into(),
        actor_ip: None,
        severity: Some("info".into()),
        duration_ms: None,
        error_code: None,
        error_message: None,
        retention_days: 2555,
        is_sensitive: false,
        event_data: json!({
            "event_type": ATTESTATION_TYPE,
            "correlation_id": t.name,
            "fingerprint": t.fingerprint.to_hex(),
            "attempt": t.attempt,
            "legacy": legacy,
        }),
        event_hash: None,
        previous_event_hash: None,
        hash_algorithm: algorithm.as_str().into(),
    };
    let h = row.compute_hash(&tail, key)?;
    row.previous_event_hash = Some(tail);
    row.event_hash = Some(h);
    Ok(row)
}
