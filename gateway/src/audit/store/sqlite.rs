//! The SQLite engine: the embedded default store.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::OnceLock;

use futures::TryStreamExt;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::{
    AppendReport, ErrorClass, MIGRATIONS_TABLE, Page, RawEventRow, StoreConfig, StoreError,
};
use crate::audit::chain::ChainHasher;

macro_rules! columns {
    () => {
        "seq, event_id, event_version, event_timestamp, event_type, event_category, event_action, \
         event_outcome, actor_type, actor_id, resource_type, resource_id, correlation_id, \
         legacy_correlation_id, parent_event_id, trace_id, span_id, namespace, cluster_id, fingerprint, \
         event_data, severity, duration_ms, error_code, error_message, event_hash, previous_event_hash, \
         hash_algorithm"
    };
}

/// SQLite result codes as sqlx reports them (the extended code as text).
pub(super) fn classify_code(code: &str) -> ErrorClass {
    match code.parse::<i32>() {
        Ok(extended) => classify_extended(extended),
        Err(_) => ErrorClass::Permanent,
    }
}

/// SQLite result codes (primary code = extended code & 0xff); sqlx's errors and the writer's own
/// connection's ([`super::sqlite_writer`]) alike.
pub(super) fn classify_extended(extended: i32) -> ErrorClass {
    match extended & 0xff {
        // BUSY/LOCKED after busy_timeout: another process holds the write lock for longer than we wait —
        // from the writer's point of view the store is unavailable (retry later, spill meanwhile).
        5 | 6 => ErrorClass::Unavailable,
        // NOMEM, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL: the file or its disk cannot take writes now.
        7 | 8 | 10 | 13 | 14 | 15 => ErrorClass::Unavailable,
        _ => ErrorClass::Permanent,
    }
}

/// The audit writer's page cache, KiB ([`StoreConfig::for_batch_writer`]; SQLite's default is 2,000
/// KiB): room for one full batch's pages.
pub(super) const BATCH_PAGE_CACHE_KIB: u32 = 16 * 1024;

/// The page size of stores created from now on, bytes (SQLite's default is 4 KiB). A page size is
/// fixed when a database is created: an existing store keeps its own (docs/audit.md, "Store"). An
/// audit row is ~2.5 KB, so a 4 KiB page held one row and a third of it stayed empty; 16 KiB pages
/// hold six, and a batch writes fewer, fuller WAL frames (docs/benchmarks.md, "The SQLite store's
/// write path").
pub(super) const NEW_STORE_PAGE_SIZE: u32 = 16 * 1024;

pub(super) async fn connect(config: &StoreConfig) -> Result<SqlitePool, StoreError> {
    let mut options = SqliteConnectOptions::from_str(&config.url)
        .map_err(StoreError::Database)?
        .create_if_missing(true)
        // Only takes effect on a database with no table yet (sqlx issues it first, before the
        // journal mode); on an existing store it changes nothing.
        .page_size(NEW_STORE_PAGE_SIZE)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: a committed batch is on disk, which is what "durable once in the store" promises.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(config.busy_timeout)
        .foreign_keys(true)
        // Each multi-row INSERT's statement journal went to a temporary file: write syscalls on the
        // store's thread (docs/benchmarks.md, "SQLite page cache and statement journals"). It only
        // undoes a failed statement inside its transaction, so memory changes nothing durable.
        .pragma("temp_store", "memory");
    if let Some(kib) = config.sqlite_page_cache_kib {
        // A batch of up to 2,048 events dirties several MiB of pages: with SQLite's default 2 MiB
        // cache the transaction spilled pages into the WAL before its commit (and wrote them again
        // when later rows changed them). Durability is unchanged: the commit writes and syncs the WAL.
        options = options.pragma("cache_size", format!("-{kib}"));
    }
    if !config.sqlite_check_event_data {
        // The writer's connections: `event_data` is `EventData` text, JSON by construction, so the
        // table's `CHECK (json_valid(event_data))` — a second parse of every row, 11–16 % of this
        // thread's CPU — is not evaluated (docs/decisions/0002-writer-skips-json-check.md). It skips
        // CHECK constraints only: NOT NULL, UNIQUE, STRICT column types and the append-only
        // triggers still apply; other connections (lookups, migrations, tools) keep the CHECK.
        options = options.pragma("ignore_check_constraints", "ON");
    }
    let file = options.get_filename();
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: file.to_owned(),
            source,
        })?;
    }
    let pool = SqlitePoolOptions::new()
        .max_connections(config.max_connections.max(1))
        .acquire_timeout(config.acquire_timeout)
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// The database file `config.url` names, and whether it asks to be opened read-only (`mode=ro`, as
/// sqlx reads it); `None` for an in-memory database, which another connection could not share (its
/// appends stay on the pool).
pub(super) fn file_of(
    config: &StoreConfig,
) -> Result<Option<(std::path::PathBuf, bool)>, StoreError> {
    let options = SqliteConnectOptions::from_str(&config.url).map_err(StoreError::Database)?;
    let file = options.get_filename();
    let query = config.url.split_once('?').map_or("", |(_, q)| q);
    let mode = query.split('&').find_map(|kv| kv.strip_prefix("mode="));
    let in_memory = config.url.contains(":memory:") || mode == Some("memory");
    Ok((!in_memory).then(|| (file.to_owned(), mode == Some("ro"))))
}

pub(super) async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut migrator = sqlx::migrate!("migrations/sqlite");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator.run(pool).await.map_err(StoreError::from_migrate)
}

pub(super) async fn applied_versions(pool: &SqlitePool) -> Result<Vec<i64>, StoreError> {
    let exists: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1")
            .bind(MIGRATIONS_TABLE)
            .fetch_one(pool)
            .await?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    let versions = sqlx::query_scalar(
        "SELECT version FROM namegate_audit_schema_migrations WHERE success ORDER BY version",
    )
    .fetch_all(pool)
    .await?;
    Ok(versions)
}

/// The stored IDs among a JSON array of event IDs (`?1`): an append skips those (replays, retries).
pub(super) const STORED_IDS_SQL: &str =
    "SELECT event_id FROM audit_events WHERE event_id IN (SELECT value FROM json_each(?1))";

/// Each correlation ID of a JSON array (`?1`) with the hash of its chain's last event, if any.
pub(super) const CHAIN_TAILS_SQL: &str = "SELECT value, (SELECT event_hash FROM audit_events \
                        WHERE correlation_id = j.value AND legacy_correlation_id IS NULL \
                        ORDER BY seq DESC LIMIT 1) \
         FROM json_each(?1) AS j";

/// The event IDs of `rows`, as the JSON array [`STORED_IDS_SQL`] takes.
pub(super) fn ids_of(rows: &[RawEventRow]) -> String {
    let ids: Vec<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
    json_array(&ids)
}

/// Drops the rows already stored; returns how many were.
pub(super) fn drop_stored(rows: &mut Vec<RawEventRow>, stored: &HashSet<String>) -> u64 {
    let total = rows.len();
    rows.retain(|r| !stored.contains(&r.event_id));
    (total - rows.len()) as u64
}

/// The distinct correlation IDs of `rows`, as the JSON array [`CHAIN_TAILS_SQL`] takes.
pub(super) fn chain_keys_of(rows: &[RawEventRow]) -> String {
    let mut keys: Vec<&str> = rows.iter().map(|r| r.correlation_id.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    json_array(&keys)
}

pub(super) async fn append(
    pool: &SqlitePool,
    hasher: &ChainHasher,
    rows: &mut Vec<RawEventRow>,
) -> Result<AppendReport, StoreError> {
    // BEGIN IMMEDIATE takes the write lock up front: reading the chain tails and inserting happen with
    // no other writer in between, in this process or any other sharing the file.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;

    let existing: HashSet<String> = sqlx::query_scalar(STORED_IDS_SQL)
        .bind(ids_of(rows))
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
    let duplicates = drop_stored(rows, &existing);
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(AppendReport {
            inserted: 0,
            duplicates,
            local_only: 0,
        });
    }

    let tails: Vec<(String, Option<String>)> = sqlx::query_as(CHAIN_TAILS_SQL)
        .bind(chain_keys_of(rows))
        .fetch_all(&mut *tx)
        .await?;
    let mut tails: HashMap<String, String> = tails
        .into_iter()
        .filter_map(|(k, h)| h.map(|h| (k, h)))
        .collect();
    super::chain_rows(hasher, &mut tails, rows);

    insert_rows(&mut tx, rows).await?;
    tx.commit().await?;
    Ok(AppendReport {
        inserted: rows.len() as u64,
        duplicates,
        local_only: 0,
    })
}

/// The columns an append writes, in bind order.
const INSERT_COLUMNS: &str = "event_id, event_version, event_timestamp, event_type, event_category, \
     event_action, event_outcome, actor_type, actor_id, resource_type, resource_id, correlation_id, \
     parent_event_id, trace_id, span_id, namespace, cluster_id, fingerprint, event_data, severity, \
     duration_ms, error_code, error_message, event_hash, previous_event_hash, hash_algorithm";
const BINDS_PER_ROW: usize = 26;
/// Most rows one INSERT carries (26 binds each; SQLite allows 32,766). A batch goes in chunks of
/// powers of two up to this, so a connection prepares (and caches) at most 9 distinct statements.
const MAX_ROWS_PER_INSERT: usize = 256;

/// `INSERT … VALUES (?, …), (?, …)` for `rows` rows (a power of two ≤ [`MAX_ROWS_PER_INSERT`]).
pub(super) fn insert_sql(rows: usize) -> &'static str {
    static SQL: OnceLock<Vec<String>> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        (0..=MAX_ROWS_PER_INSERT.trailing_zeros())
            .map(|p| {
                let n = 1usize << p;
                let row = format!("({})", vec!["?"; BINDS_PER_ROW].join(", "));
                // OR FAIL, not SQLite's default ABORT: a multi-row statement that may abort keeps a
                // statement journal (a copy of every page it changes, to undo only itself), 18 % of
                // the writer's store samples; one that fails just stops. Either way an error ends the
                // whole append, whose transaction is rolled back (docs/benchmarks.md, "The SQLite
                // store's CPU per event").
                format!(
                    "INSERT OR FAIL INTO audit_events ({INSERT_COLUMNS}) VALUES {}",
                    vec![row.as_str(); n].join(", ")
                )
            })
            .collect()
    });
    &all[rows.trailing_zeros() as usize]
}

/// Inserts `rows` in batch order with as few statements as the chunking allows (each statement is a
/// round trip to sqlx's SQLite worker thread; one per event was the audit trail's bottleneck,
/// docs/benchmarks.md).
///
/// The rows' text is moved into the statement's arguments, not copied (sqlx-sqlite copies a borrowed
/// string into an argument, and takes an owned one as is): afterwards a row keeps only what the
/// checkpoint records of it (`event_id`, its chain key, `event_hash`). On an error the caller
/// rebuilds the rows from the events.
async fn insert_rows(
    conn: &mut sqlx::SqliteConnection,
    rows: &mut [RawEventRow],
) -> Result<(), StoreError> {
    use std::mem::take;
    let mut rest = rows;
    while !rest.is_empty() {
        let n = chunk_len(rest.len());
        let (chunk, tail) = take(&mut rest).split_at_mut(n);
        let mut q = sqlx::query(insert_sql(n));
        for r in chunk {
            q = q
                .bind(r.event_id.clone())
                .bind(take(&mut r.event_version))
                .bind(take(&mut r.event_timestamp))
                .bind(take(&mut r.event_type))
                .bind(take(&mut r.event_category))
                .bind(take(&mut r.event_action))
                .bind(take(&mut r.event_outcome))
                .bind(take(&mut r.actor_type))
                .bind(take(&mut r.actor_id))
                .bind(take(&mut r.resource_type))
                .bind(take(&mut r.resource_id))
                .bind(r.correlation_id.clone())
                .bind(take(&mut r.parent_event_id))
                .bind(take(&mut r.trace_id))
                .bind(take(&mut r.span_id))
                .bind(take(&mut r.namespace))
                .bind(take(&mut r.cluster_id))
                .bind(take(&mut r.fingerprint))
                .bind(take(&mut r.event_data))
                .bind(take(&mut r.severity))
                .bind(r.duration_ms)
                .bind(take(&mut r.error_code))
                .bind(take(&mut r.error_message))
                .bind(r.event_hash.clone())
                .bind(take(&mut r.previous_event_hash))
                .bind(take(&mut r.hash_algorithm));
        }
        q.execute(&mut *conn).await?;
        rest = tail;
    }
    Ok(())
}

/// The largest power of two ≤ `min(remaining, MAX_ROWS_PER_INSERT)`.
pub(super) fn chunk_len(remaining: usize) -> usize {
    let n = remaining.min(MAX_ROWS_PER_INSERT);
    1 << (usize::BITS - 1 - n.leading_zeros())
}

/// A trail in chain order from a `seq` on: `?1` the ID, `?2` the last `seq` seen, `?3` the limit.
const TRAIL_SQL: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM audit_events \
      WHERE (correlation_id = ?1 OR legacy_correlation_id = ?1) AND seq > ?2 \
      ORDER BY seq LIMIT ?3"
);

/// The new IDs a legacy correlation ID was migrated to.
const LEGACY_IDS_SQL: &str = "SELECT DISTINCT correlation_id FROM audit_events \
     WHERE legacy_correlation_id = ?1 ORDER BY correlation_id";

/// The lookups' page: rows of the IDs in the JSON array `?1` after the cursor (`?2` timestamp, `?3`
/// `seq`; `?2` NULL for the first page), oldest first, `?4` at most. Fixed-width UTC text
/// timestamps compare chronologically.
const ROWS_BY_TIME_SQL: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM audit_events \
      WHERE (correlation_id IN (SELECT value FROM json_each(?1)) \
             OR legacy_correlation_id IN (SELECT value FROM json_each(?1))) \
        AND (?2 IS NULL OR (event_timestamp, seq) > (?2, ?3)) \
      ORDER BY event_timestamp, seq LIMIT ?4"
);

pub(super) async fn trail(
    pool: &SqlitePool,
    correlation_id: &str,
    page: Page,
) -> Result<Vec<RawEventRow>, StoreError> {
    let rows = sqlx::query_as(TRAIL_SQL)
        .bind(correlation_id)
        .bind(page.after_seq.unwrap_or(0))
        .bind(page.sql_limit())
        .fetch_all(pool)
        .await?;
    Ok(rows)
}

pub(super) async fn ids_for_legacy(
    pool: &SqlitePool,
    legacy_id: &str,
) -> Result<Vec<String>, StoreError> {
    let ids = sqlx::query_scalar(LEGACY_IDS_SQL)
        .bind(legacy_id)
        .fetch_all(pool)
        .await?;
    Ok(ids)
}

pub(super) async fn rows_by_time(
    pool: &SqlitePool,
    ids: &[String],
    after: Option<(&str, i64)>,
    limit: i64,
) -> Result<Vec<RawEventRow>, StoreError> {
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (after_ts, after_seq) = match after {
        Some((ts, seq)) => (Some(ts), seq),
        None => (None, 0),
    };
    let rows = sqlx::query_as(ROWS_BY_TIME_SQL)
        .bind(json_array(&ids))
        .bind(after_ts)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(rows)
}

/// Every row in chain order, for `audit verify`.
const VERIFY_SQL: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM audit_events ORDER BY COALESCE(legacy_correlation_id, correlation_id), seq"
);

pub(super) async fn for_each_in_chain_order(
    pool: &SqlitePool,
    mut f: impl FnMut(RawEventRow),
) -> Result<(), StoreError> {
    let mut rows = sqlx::query_as::<_, RawEventRow>(VERIFY_SQL).fetch(pool);
    while let Some(row) = rows.try_next().await? {
        f(row);
    }
    Ok(())
}

pub(super) fn json_array(items: &[&str]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_go_in_power_of_two_chunks() {
        let chunks = |mut n: usize| {
            let mut out = Vec::new();
            while n > 0 {
                let c = chunk_len(n);
                out.push(c);
                n -= c;
            }
            out
        };
        assert_eq!(chunks(2048), vec![256; 8]);
        assert_eq!(chunks(7), vec![4, 2, 1]);
        assert_eq!(chunks(1), vec![1]);
        assert_eq!(chunks(257), vec![256, 1]);
    }

    /// An integer `PRAGMA` as a connection of `pool` sees it.
    async fn pragma(pool: &SqlitePool, name: &'static str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("PRAGMA {name}")))
            .fetch_one(pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_writers_connections_keep_a_batch_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("audit.db").display());
        // The lookup pool keeps SQLite's default page cache; the writer's gets room for a batch.
        let plain = connect(&StoreConfig::new(url.clone())).await.unwrap();
        let cache = pragma(&plain, "cache_size").await;
        assert_eq!(cache, -2000);
        plain.close().await;
        let pool = connect(&StoreConfig::new(url).for_batch_writer())
            .await
            .unwrap();
        let cache = pragma(&pool, "cache_size").await;
        assert_eq!(cache, -i64::from(BATCH_PAGE_CACHE_KIB));
        // 2 = MEMORY.
        let temp = pragma(&pool, "temp_store").await;
        assert_eq!(temp, 2);
        // And durability is what docs/audit.md promises: WAL, synchronous = FULL (2).
        let sync = pragma(&pool, "synchronous").await;
        assert_eq!(sync, 2);
        pool.close().await;
    }

    /// docs/audit.md, "Store": the writer's connections do not evaluate the table's `json_valid`
    /// CHECK (it only ever stores `EventData`, canonical JSON text by construction); every other
    /// connection still does, so no other writer can store text that is not JSON.
    #[tokio::test]
    async fn only_the_writers_connections_skip_the_event_data_check() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("audit.db").display());
        let lookups = connect(&StoreConfig::new(url.clone())).await.unwrap();
        migrate(&lookups).await.unwrap();
        assert_eq!(pragma(&lookups, "ignore_check_constraints").await, 0);
        let bad = "INSERT INTO audit_events (event_id, event_version, event_timestamp, event_type, \
                   event_category, event_action, event_outcome, correlation_id, event_data, \
                   event_hash, hash_algorithm) \
                   VALUES ('e1', '1.0', 't', 'x', 'c', 'a', 'o', 'k', 'not json', 'h', 'sha256')";
        let err = sqlx::query(bad).execute(&lookups).await.unwrap_err();
        assert!(err.to_string().contains("CHECK"), "{err}");
        lookups.close().await;
        let writer = connect(&StoreConfig::new(url).for_batch_writer())
            .await
            .unwrap();
        assert_eq!(pragma(&writer, "ignore_check_constraints").await, 1);
        writer.close().await;
    }

    #[tokio::test]
    async fn a_new_store_gets_16_kib_pages() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("audit.db").display());
        // Created by the lookup pool (which applies the migrations in `serve`), then reopened.
        let pool = connect(&StoreConfig::new(url.clone())).await.unwrap();
        migrate(&pool).await.unwrap();
        pool.close().await;
        let pool = connect(&StoreConfig::new(url).for_batch_writer())
            .await
            .unwrap();
        let page = pragma(&pool, "page_size").await;
        assert_eq!(page, i64::from(NEW_STORE_PAGE_SIZE));
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        // SQLite's own checkpoint threshold, 1,000 pages: with 16 KiB pages the WAL is checkpointed
        // at ~16 MiB (docs/audit.md, "Store").
        let ckpt = pragma(&pool, "wal_autocheckpoint").await;
        assert_eq!(ckpt, 1000);
        pool.close().await;
    }

    /// What `INSERT OR FAIL` relies on: a statement that fails midway leaves its earlier rows in
    /// the transaction, and the append's rollback removes them with everything else.
    #[tokio::test]
    async fn an_insert_that_fails_midway_leaves_nothing_after_the_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("audit.db").display());
        let pool = connect(&StoreConfig::new(url)).await.unwrap();
        migrate(&pool).await.unwrap();
        assert!(insert_sql(2).starts_with("INSERT OR FAIL INTO audit_events"));
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        // Two rows with one event_id: the second violates UNIQUE after the first is in.
        let mut q = sqlx::query(insert_sql(2));
        for _row in 0..2 {
            for column in 0..BINDS_PER_ROW {
                q = match column {
                    20 => q.bind(None::<i64>), // duration_ms
                    18 => q.bind("{}"),        // event_data
                    _ => q.bind("same"),
                };
            }
        }
        let err = q.execute(&mut *tx).await.unwrap_err();
        let db = err.as_database_error().expect("a database error");
        assert!(db.is_unique_violation(), "{err}");
        tx.rollback().await.unwrap();
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(rows, 0);
        pool.close().await;
    }

    /// Every index is paid for by every append (docs/decisions/0003-sqlite-drops-unused-index.md):
    /// the store keeps only indexes that a query of namegate's uses (appends, lookups,
    /// verification), and the `(fingerprint, event_timestamp)` index, which none uses, is gone.
    #[tokio::test]
    async fn the_store_has_only_the_indexes_its_queries_use() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("audit.db").display());
        let pool = connect(&StoreConfig::new(url)).await.unwrap();
        migrate(&pool).await.unwrap();
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_events' \
             ORDER BY name",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(
            indexes,
            [
                "audit_events_correlation_seq",
                // The lookups' pages after a cursor may range over it (the planner chooses).
                "audit_events_correlation_ts",
                "audit_events_legacy_correlation",
                // UNIQUE (event_id): exactly-once appends.
                "sqlite_autoindex_audit_events_1",
            ]
        );
        let used = indexes_used(&pool).await;
        for must in [
            "audit_events_correlation_seq",
            "audit_events_legacy_correlation",
            "sqlite_autoindex_audit_events_1",
        ] {
            assert!(used.iter().any(|u| u == must), "{must} unused: {used:?}");
        }
        assert!(used.iter().all(|u| indexes.contains(u)), "{used:?}");
        // The index migration 0002 drops was used by no query before it either: with it back, no
        // plan picks it.
        sqlx::raw_sql(
            "CREATE INDEX audit_events_fingerprint_ts ON audit_events (fingerprint, event_timestamp)",
        )
        .execute(&pool)
        .await
        .unwrap();
        let used = indexes_used(&pool).await;
        assert!(
            !used.iter().any(|u| u == "audit_events_fingerprint_ts"),
            "{used:?}"
        );
        pool.close().await;
    }

    /// The indexes the plans of the store's queries use.
    async fn indexes_used(pool: &SqlitePool) -> Vec<String> {
        let queries = [
            STORED_IDS_SQL.to_owned(),
            CHAIN_TAILS_SQL.to_owned(),
            TRAIL_SQL.replace("?2", "0").replace("?3", "10"),
            LEGACY_IDS_SQL.to_owned(),
            ROWS_BY_TIME_SQL
                .replace("?2", "NULL")
                .replace("?3", "0")
                .replace("?4", "10"),
            ROWS_BY_TIME_SQL
                .replace("?2", "'2026-11-30T00:00:00.000000Z'")
                .replace("?3", "5")
                .replace("?4", "10"),
            VERIFY_SQL.to_owned(),
        ];
        let mut used = HashSet::new();
        for sql in queries {
            let sql = sql.replace("?1", "'[\"rr-a\"]'");
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .fetch_all(pool)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            for (_, _, _, step) in plan {
                // "SEARCH audit_events USING [COVERING] INDEX <name> (…)".
                let name = ["USING INDEX ", "USING COVERING INDEX "]
                    .iter()
                    .find_map(|p| step.split_once(p))
                    .and_then(|(_, rest)| rest.split_whitespace().next());
                if let Some(name) = name {
                    used.insert(name.to_owned());
                }
            }
        }
        let mut used: Vec<String> = used.into_iter().collect();
        used.sort();
        used
    }

    #[test]
    fn insert_statements_have_one_bind_per_column() {
        for p in 0..=MAX_ROWS_PER_INSERT.trailing_zeros() {
            let rows = 1usize << p;
            let sql = insert_sql(rows);
            assert_eq!(sql.matches('?').count(), rows * BINDS_PER_ROW);
            assert_eq!(INSERT_COLUMNS.split(',').count(), BINDS_PER_ROW);
        }
    }
}
