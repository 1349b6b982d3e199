//! Reading and writing DataStorage rows on PostgreSQL.

use jiff::Timestamp;
use jiff::civil::Date;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row as _};

use super::canonical::Row;

/// The columns the verifier reads, as it reads them. `actor_ip` is PostgreSQL's `inet` *output*
/// (`10.0.0.7`, not `text(inet)`'s `10.0.0.7/32`); the timestamp travels as exact microseconds.
pub const SELECT_COLUMNS: &str = "event_id::text AS event_id, \
    (extract(epoch FROM event_timestamp) * 1000000)::bigint AS ts_us, \
    event_date::text AS event_date, event_version, event_type, event_category, event_action, \
    event_outcome, correlation_id, parent_event_id::text AS parent_event_id, \
    parent_event_date::text AS parent_event_date, resource_type, resource_id, namespace, cluster_id, \
    actor_type, actor_id, \
    CASE WHEN actor_ip IS NULL THEN NULL \
         WHEN masklen(actor_ip) = (CASE family(actor_ip) WHEN 4 THEN 32 ELSE 128 END) THEN host(actor_ip) \
         ELSE actor_ip::text END AS actor_ip, \
    severity, duration_ms, error_code, error_message, coalesce(retention_days, 2555) AS retention_days, \
    coalesce(is_sensitive, false) AS is_sensitive, event_data::text AS event_data, event_hash, \
    previous_event_hash, hash_algorithm";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("row {event_id}: column {column} holds {value:?}, which cannot be read")]
    Decode {
        event_id: String,
        column: &'static str,
        value: String,
    },
}

impl DbError {
    /// A serialization failure or deadlock: the transaction can be retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Sql(sqlx::Error::Database(e)) => {
                matches!(e.code().as_deref(), Some("40001" | "40P01"))
            }
            _ => false,
        }
    }
}

fn date(event_id: &str, column: &'static str, s: &str) -> Result<Date, DbError> {
    s.parse().map_err(|_| DbError::Decode {
        event_id: event_id.to_owned(),
        column,
        value: s.to_owned(),
    })
}

pub fn decode(r: &PgRow) -> Result<Row, DbError> {
    let event_id: String = r.try_get("event_id")?;
    let ts_us: i64 = r.try_get("ts_us")?;
    let event_timestamp = Timestamp::from_microsecond(ts_us).map_err(|_| DbError::Decode {
        event_id: event_id.clone(),
        column: "event_timestamp",
        value: ts_us.to_string(),
    })?;
    let event_date = date(
        &event_id,
        "event_date",
        &r.try_get::<String, _>("event_date")?,
    )?;
    let parent_event_date = match r.try_get::<Option<String>, _>("parent_event_date")? {
        Some(s) => Some(date(&event_id, "parent_event_date", &s)?),
        None => None,
    };
    let data: String = r.try_get("event_data")?;
    let event_data = serde_json::from_str(&data).map_err(|_| DbError::Decode {
        event_id: event_id.clone(),
        column: "event_data",
        value: data.chars().take(80).collect(),
    })?;
    Ok(Row {
        event_timestamp,
        event_date,
        event_version: r.try_get("event_version")?,
        event_type: r.try_get("event_type")?,
        event_category: r.try_get("event_category")?,
        event_action: r.try_get("event_action")?,
        event_outcome: r.try_get("event_outcome")?,
        correlation_id: r.try_get("correlation_id")?,
        parent_event_id: r.try_get("parent_event_id")?,
        parent_event_date,
        resource_type: r.try_get("resource_type")?,
        resource_id: r.try_get("resource_id")?,
        namespace: r.try_get("namespace")?,
        cluster_id: r.try_get("cluster_id")?,
        actor_type: r.try_get("actor_type")?,
        actor_id: r.try_get("actor_id")?,
        actor_ip: r.try_get("actor_ip")?,
        severity: r.try_get("severity")?,
        duration_ms: r.try_get("duration_ms")?,
        error_code: r.try_get("error_code")?,
        error_message: r.try_get("error_message")?,
        retention_days: r.try_get("retention_days")?,
        is_sensitive: r.try_get("is_sensitive")?,
        event_data,
        event_hash: r.try_get("event_hash")?,
        previous_event_hash: r.try_get("previous_event_hash")?,
        hash_algorithm: r.try_get("hash_algorithm")?,
        event_id,
    })
}

/// Every row of the given correlation IDs.
pub async fn load(conn: &mut PgConnection, ids: &[String]) -> Result<Vec<Row>, DbError> {
    let sql = format!(
        "SELECT {SELECT_COLUMNS} FROM audit_events WHERE correlation_id = ANY($1) \
         ORDER BY event_timestamp, event_id"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(decode).collect()
}

/// Inserts rows as they are (hashes included), `event_date` given explicitly.
pub async fn insert(conn: &mut PgConnection, rows: &[Row]) -> Result<(), DbError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut c = Columns::default();
    for r in rows {
        c.push(r);
    }
    sqlx::query(
        "INSERT INTO audit_events (event_id, event_timestamp, event_date, event_version, event_type, \
         event_category, event_action, event_outcome, correlation_id, parent_event_id, parent_event_date, \
         resource_type, resource_id, namespace, cluster_id, actor_type, actor_id, actor_ip, severity, \
         duration_ms, error_code, error_message, retention_days, is_sensitive, event_data, event_hash, \
         previous_event_hash, hash_algorithm) \
         SELECT v.event_id::uuid, 'epoch'::timestamptz + v.ts_us * interval '1 microsecond', \
                v.event_date::date, v.event_version, v.event_type, v.event_category, v.event_action, \
                v.event_outcome, v.correlation_id, v.parent_event_id::uuid, v.parent_event_date::date, \
                v.resource_type, v.resource_id, v.namespace, v.cluster_id, v.actor_type, v.actor_id, \
                v.actor_ip::inet, v.severity, v.duration_ms, v.error_code, v.error_message, v.retention_days, \
                v.is_sensitive, v.event_data::jsonb, v.event_hash, v.previous_event_hash, v.hash_algorithm \
         FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
                     $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], \
                     $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], $20::int[], $21::text[], \
                     $22::text[], $23::int[], $24::bool[], $25::text[], $26::text[], $27::text[], $28::text[]) \
           AS v(event_id, ts_us, event_date, event_version, event_type, event_category, event_action, \
                event_outcome, correlation_id, parent_event_id, parent_event_date, resource_type, resource_id, \
                namespace, cluster_id, actor_type, actor_id, actor_ip, severity, duration_ms, error_code, \
                error_message, retention_days, is_sensitive, event_data, event_hash, previous_event_hash, \
                hash_algorithm)",
    )
    .bind(c.event_id)
    .bind(c.ts_us)
    .bind(c.event_date)
    .bind(c.event_version)
    .bind(c.event_type)
    .bind(c.event_category)
    .bind(c.event_action)
    .bind(c.event_outcome)
    .bind(c.correlation_id)
    .bind(c.parent_event_id)
    .bind(c.parent_event_date)
    .bind(c.resource_type)
    .bind(c.resource_id)
    .bind(c.namespace)
    .bind(c.cluster_id)
    .bind(c.actor_type)
    .bind(c.actor_id)
    .bind(c.actor_ip)
    .bind(c.severity)
    .bind(c.duration_ms)
    .bind(c.error_code)
    .bind(c.error_message)
    .bind(c.retention_days)
    .bind(c.is_sensitive)
    .bind(c.event_data)
    .bind(c.event_hash)
    .bind(c.previous_event_hash)
    .bind(c.hash_algorithm)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[derive(Default)]
struct Columns {
    event_id: Vec<String>,
    ts_us: Vec<i64>,
    event_date: Vec<String>,
    event_version: Vec<String>,
    event_type: Vec<String>,
    event_category: Vec<String>,
    event_action: Vec<String>,
    event_outcome: Vec<String>,
    correlation_id: Vec<String>,
    parent_event_id: Vec<Option<String>>,
    parent_event_date: Vec<Option<String>>,
    resource_type: Vec<String>,
    resource_id: Vec<String>,
    namespace: Vec<Option<String>>,
    cluster_id: Vec<Option<String>>,
    actor_type: Vec<String>,
    actor_id: Vec<String>,
    actor_ip: Vec<Option<String>>,
    severity: Vec<Option<String>>,
    duration_ms: Vec<Option<i32>>,
    error_code: Vec<Option<String>>,
    error_message: Vec<Option<String>>,
    retention_days: Vec<i32>,
    is_sensitive: Vec<bool>,
    event_data: Vec<String>,
    event_hash: Vec<Option<String>>,
    previous_event_hash: Vec<Option<String>>,
    hash_algorithm: Vec<String>,
}

impl Columns {
    fn push(&mut self, r: &Row) {
        self.event_id.push(r.event_id.clone());
        self.ts_us.push(r.event_timestamp.as_microsecond());
        self.event_date.push(r.event_date.to_string());
        self.event_version.push(r.event_version.clone());
        self.event_type.push(r.event_type.clone());
        self.event_category.push(r.event_category.clone());
        self.event_action.push(r.event_action.clone());
        self.event_outcome.push(r.event_outcome.clone());
        self.correlation_id.push(r.correlation_id.clone());
        self.parent_event_id.push(r.parent_event_id.clone());
        self.parent_event_date
            .push(r.parent_event_date.map(|d| d.to_string()));
        self.resource_type.push(r.resource_type.clone());
        self.resource_id.push(r.resource_id.clone());
        self.namespace.push(r.namespace.clone());
        self.cluster_id.push(r.cluster_id.clone());
        self.actor_type.push(r.actor_type.clone());
        self.actor_id.push(r.actor_id.clone());
        self.actor_ip.push(r.actor_ip.clone());
        self.severity.push(r.severity.clone());
        self.duration_ms.push(r.duration_ms);
        self.error_code.push(r.error_code.clone());
        self.error_message.push(r.error_message.clone());
        self.retention_days.push(r.retention_days);
        self.is_sensitive.push(r.is_sensitive);
        self.event_data.push(r.event_data.to_string());
        self.event_hash.push(r.event_hash.clone());
        self.previous_event_hash.push(r.previous_event_hash.clone());
        self.hash_algorithm.push(r.hash_algorithm.clone());
    }
}

/// Whether `audit_events` has the column (schema variants: `insert_seq`).
pub async fn has_column(conn: &mut PgConnection, column: &str) -> Result<bool, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = 'audit_events' AND column_name = $1)",
    )
    .bind(column)
    .fetch_one(&mut *conn)
    .await?)
}

/// Whether the AU-9 immutability trigger is installed.
pub async fn has_immutability_trigger(conn: &mut PgConnection) -> Result<bool, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
         WHERE c.relname = 'audit_events' AND c.relnamespace = current_schema()::regnamespace \
           AND t.tgname = 'enforce_audit_event_immutability')",
    )
    .fetch_one(&mut *conn)
    .await?)
}

/// DataStorage's advisory lock key of a correlation ID: the first 8 bytes of SHA-256 as a signed
/// big-endian integer (its `audit_event_lock_id`).
pub fn lock_id(correlation_id: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(correlation_id.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    i64::from_be_bytes(b)
}
