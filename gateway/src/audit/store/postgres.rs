//! The PostgreSQL engine: the store shared by replicas.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{
    AppendReport, ErrorClass, MIGRATIONS_TABLE, Page, RawEventRow, StoreConfig, StoreError,
};
use crate::audit::chain::ChainHasher;

/// The select list: text forms identical to what SQLite stores, so one canonical form serves both.
macro_rules! columns {
    () => {
        r#"seq, event_id::text AS event_id, event_version,
           to_char(event_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS event_timestamp,
           event_type, event_category, event_action, event_outcome, actor_type, actor_id, resource_type,
           resource_id, correlation_id, legacy_correlation_id, parent_event_id::text AS parent_event_id,
           trace_id, span_id, namespace, cluster_id, fingerprint, event_data::text AS event_data,
           severity, duration_ms, error_code, error_message, event_hash, previous_event_hash,
           hash_algorithm"#
    };
}

/// SQLSTATE classes: https://www.postgresql.org/docs/15/errcodes-appendix.html
pub(super) fn classify_sqlstate(code: &str) -> ErrorClass {
    match code {
        // admin_shutdown, crash_shutdown, cannot_connect_now: the server is going away or not up yet.
        "57P01" | "57P02" | "57P03" => ErrorClass::Unavailable,
        // serialization_failure, deadlock_detected, lock_not_available, query_canceled.
        "40001" | "40P01" | "55P03" | "57014" => ErrorClass::Transient,
        // 08: connection exception; 53: insufficient resources (disk full, too many connections);
        // 58: system error (I/O).
        c if c.starts_with("08") || c.starts_with("53") || c.starts_with("58") => {
            ErrorClass::Unavailable
        }
        _ => ErrorClass::Permanent,
    }
}

pub(super) fn connect(config: &StoreConfig) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(&config.url)
        .map_err(StoreError::Database)?
        .application_name("namegate-audit");
    // Lazy: connections are opened on use, so a store that is down at this moment surfaces as an
    // unavailable error from the first operation (migrate/ping), classified like any later outage.
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections.max(1))
        .acquire_timeout(config.acquire_timeout)
        .connect_lazy_with(options);
    Ok(pool)
}

pub(super) async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut migrator = sqlx::migrate!("migrations/postgres");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator.run(pool).await.map_err(StoreError::from_migrate)
}

pub(super) async fn applied_versions(pool: &PgPool) -> Result<Vec<i64>, StoreError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(MIGRATIONS_TABLE)
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    let versions = sqlx::query_scalar(
        "SELECT version FROM namegate_audit_schema_migrations WHERE success ORDER BY version",
    )
    .fetch_all(pool)
    .await?;
    Ok(versions)
}

/// The advisory-lock key of a chain: 64 bits of SHA-256 over a namegate-specific prefix, so it is the
/// same in every replica and unlikely to meet another application's advisory locks. A collision between
/// two correlation IDs only serialises them needlessly.
fn chain_lock_key(correlation_id: &str) -> i64 {
    let digest = Sha256::new()
        .chain_update(b"namegate.audit.chain\0")
        .chain_update(correlation_id.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

pub(super) async fn append(
    pool: &PgPool,
    hasher: &ChainHasher,
    rows: &mut Vec<RawEventRow>,
) -> Result<AppendReport, StoreError> {
    let mut tx = pool.begin().await?;

    // Serialise appends per chain across replicas: transaction-scoped advisory locks, taken in
    // ascending key order so two batches sharing chains can never deadlock. Held until commit, so the
    // tail read below is still the tail when we insert.
    let mut keys: Vec<i64> = rows
        .iter()
        .map(|r| chain_lock_key(&r.correlation_id))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    sqlx::query(
        "SELECT count(pg_advisory_xact_lock(k)) \
         FROM (SELECT k FROM unnest($1::int8[]) WITH ORDINALITY AS t(k, n) ORDER BY n) AS ordered",
    )
    .bind(&keys)
    .execute(&mut *tx)
    .await?;

    let ids: Vec<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
    let existing: HashSet<String> = sqlx::query_scalar(
        "SELECT event_id::text FROM audit_events WHERE event_id = ANY($1::text[]::uuid[])",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let total = rows.len();
    rows.retain(|r| !existing.contains(&r.event_id));
    let duplicates = (total - rows.len()) as u64;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(AppendReport {
            inserted: 0,
            duplicates,
            local_only: 0,
        });
    }

    let mut chains: Vec<&str> = rows.iter().map(|r| r.correlation_id.as_str()).collect();
    chains.sort_unstable();
    chains.dedup();
    let tails: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT c, (SELECT event_hash FROM audit_events \
                    WHERE correlation_id = c AND legacy_correlation_id IS NULL \
                    ORDER BY seq DESC LIMIT 1) \
         FROM unnest($1::text[]) AS c",
    )
    .bind(&chains)
    .fetch_all(&mut *tx)
    .await?;
    let mut tails: HashMap<String, String> = tails
        .into_iter()
        .filter_map(|(k, h)| h.map(|h| (k, h)))
        .collect();
    super::chain_rows(hasher, &mut tails, rows);

    // One statement for the whole batch: column arrays, unnested in order (ORDER BY the ordinality so
    // `seq` follows batch order).
    let col =
        |f: fn(&RawEventRow) -> Option<&str>| -> Vec<Option<&str>> { rows.iter().map(f).collect() };
    sqlx::query(
        "INSERT INTO audit_events (event_id, event_version, event_timestamp, event_type, \
         event_category, event_action, event_outcome, actor_type, actor_id, resource_type, resource_id, \
         correlation_id, parent_event_id, trace_id, span_id, namespace, cluster_id, fingerprint, \
         event_data, severity, duration_ms, error_code, error_message, event_hash, previous_event_hash, \
         hash_algorithm) \
         SELECT event_id::uuid, event_version, event_timestamp::timestamptz, event_type, event_category, \
                event_action, event_outcome, actor_type, actor_id, resource_type, resource_id, \
                correlation_id, parent_event_id::uuid, trace_id, span_id, namespace, cluster_id, \
                fingerprint, event_data::json, severity, duration_ms, error_code, error_message, \
                event_hash, previous_event_hash, hash_algorithm \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
                     $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], \
                     $19::text[], $20::text[], $21::int8[], $22::text[], $23::text[], $24::text[], \
                     $25::text[], $26::text[]) \
              WITH ORDINALITY AS t(event_id, event_version, event_timestamp, event_type, \
                   event_category, event_action, event_outcome, actor_type, actor_id, resource_type, \
                   resource_id, correlation_id, parent_event_id, trace_id, span_id, namespace, \
                   cluster_id, fingerprint, event_data, severity, duration_ms, error_code, \
                   error_message, event_hash, previous_event_hash, hash_algorithm, ord) \
         ORDER BY ord",
    )
    .bind(col(|r| Some(r.event_id.as_str())))
    .bind(col(|r| Some(r.event_version.as_str())))
    .bind(col(|r| Some(r.event_timestamp.as_str())))
    .bind(col(|r| Some(r.event_type.as_str())))
    .bind(col(|r| Some(r.event_category.as_str())))
    .bind(col(|r| Some(r.event_action.as_str())))
    .bind(col(|r| Some(r.event_outcome.as_str())))
    .bind(col(|r| r.actor_type.as_deref()))
    .bind(col(|r| r.actor_id.as_deref()))
    .bind(col(|r| r.resource_type.as_deref()))
    .bind(col(|r| r.resource_id.as_deref()))
    .bind(col(|r| Some(r.correlation_id.as_str())))
    .bind(col(|r| r.parent_event_id.as_deref()))
    .bind(col(|r| r.trace_id.as_deref()))
    .bind(col(|r| r.span_id.as_deref()))
    .bind(col(|r| r.namespace.as_deref()))
    .bind(col(|r| r.cluster_id.as_deref()))
    .bind(col(|r| r.fingerprint.as_deref()))
    .bind(col(|r| Some(r.event_data.as_str())))
    .bind(col(|r| r.severity.as_deref()))
    .bind(rows.iter().map(|r| r.duration_ms).collect::<Vec<Option<i64>>>())
    .bind(col(|r| r.error_code.as_deref()))
    .bind(col(|r| r.error_message.as_deref()))
    .bind(col(|r| Some(r.event_hash.as_str())))
    .bind(col(|r| r.previous_event_hash.as_deref()))
    .bind(col(|r| Some(r.hash_algorithm.as_str())))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(AppendReport {
        inserted: rows.len() as u64,
        duplicates,
        local_only: 0,
    })
}

pub(super) async fn trail(
    pool: &PgPool,
    correlation_id: &str,
    page: Page,
) -> Result<Vec<RawEventRow>, StoreError> {
    let rows = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM audit_events \
          WHERE (correlation_id = $1 OR legacy_correlation_id = $1) AND seq > $2 \
          ORDER BY seq LIMIT $3"
    ))
    .bind(correlation_id)
    .bind(page.after_seq.unwrap_or(0))
    .bind(page.sql_limit())
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

pub(super) async fn ids_for_legacy(
    pool: &PgPool,
    legacy_id: &str,
) -> Result<Vec<String>, StoreError> {
    let ids = sqlx::query_scalar(
        "SELECT DISTINCT correlation_id FROM audit_events WHERE legacy_correlation_id = $1 \
         ORDER BY correlation_id",
    )
    .bind(legacy_id)
    .fetch_all(pool)
    .await?;
    Ok(ids)
}

pub(super) async fn rows_by_time(
    pool: &PgPool,
    ids: &[String],
    after: Option<(&str, i64)>,
    limit: i64,
) -> Result<Vec<RawEventRow>, StoreError> {
    let (after_ts, after_seq) = match after {
        Some((ts, seq)) => (Some(ts), seq),
        None => (None, 0),
    };
    let rows = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM audit_events \
          WHERE (correlation_id = ANY($1::text[]) OR legacy_correlation_id = ANY($1::text[])) \
            AND ($2::text IS NULL OR (event_timestamp, seq) > ($2::text::timestamptz, $3)) \
          ORDER BY event_timestamp, seq LIMIT $4"
    ))
    .bind(ids)
    .bind(after_ts)
    .bind(after_seq)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

pub(super) async fn for_each_in_chain_order(
    pool: &PgPool,
    mut f: impl FnMut(RawEventRow),
) -> Result<(), StoreError> {
    let mut rows = sqlx::query_as::<_, RawEventRow>(concat!(
        "SELECT ",
        columns!(),
        " FROM audit_events ORDER BY COALESCE(legacy_correlation_id, correlation_id), seq"
    ))
    .fetch(pool);
    while let Some(row) = rows.try_next().await? {
        f(row);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        assert_eq!(chain_lock_key("rr-a"), chain_lock_key("rr-a"));
        assert_ne!(chain_lock_key("rr-a"), chain_lock_key("rr-b"));
    }

    #[test]
    fn sqlstates() {
        assert!(matches!(
            classify_sqlstate("57P01"),
            ErrorClass::Unavailable
        ));
        assert!(matches!(
            classify_sqlstate("08006"),
            ErrorClass::Unavailable
        ));
        assert!(matches!(classify_sqlstate("40P01"), ErrorClass::Transient));
        assert!(matches!(classify_sqlstate("23505"), ErrorClass::Permanent));
        assert!(matches!(classify_sqlstate("42501"), ErrorClass::Permanent));
    }
}
