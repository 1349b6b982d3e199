//! The audit store (docs/audit.md): one behaviour over two engines, chosen by URL.
//!
//! - `sqlite://<path>` — the embedded default for a single process. The file (and its directory) is
//!   created when missing; WAL journal, `synchronous = FULL` (a committed batch survives power loss), and
//!   `BEGIN IMMEDIATE` write transactions, which serialise writers — also across processes sharing the
//!   file.
//! - `postgres://…` — shared by replicas. Appends take a transaction-scoped advisory lock per correlation
//!   ID (in one global order, so two batches never deadlock), read the chain tail and insert, so replicas
//!   appending to the same correlation ID concurrently still form one unbroken chain.
//!
//! Schema migrations are versioned SQL files (`gateway/migrations/{sqlite,postgres}/`, embedded at build
//! time) recorded in `namegate_audit_schema_migrations`; they are applied by [`AuditStore::open`] unless
//! disabled, and by [`AuditStore::migrate`] (`namegate audit migrate-schema`).
//!
//! Rows are append-only (triggers; see the migration files and `docs/audit.md`). Appends are idempotent
//! per `event_id`: an event already stored is skipped, which is what makes spill replay after a lost
//! commit acknowledgement deliver every event exactly once.

pub mod datastorage;
mod postgres;
mod sqlite;
mod sqlite_writer;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use uuid::Uuid;

use super::chain::{self, ChainHasher, HashAlgorithm, HmacKey};
use super::checkpoint::{self, CheckpointError, Checkpointer, Expected};
use super::event::{AuditEvent, CATEGORY};

/// Name of the table in which applied schema migrations are recorded. Dedicated (not sqlx's default
/// `_sqlx_migrations`) so other components' migrations in the same database never collide with ours.
pub const MIGRATIONS_TABLE: &str = "namegate_audit_schema_migrations";

/// Everything needed to open a store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// `sqlite://<path>` or `postgres://…` (`postgresql://` too).
    pub url: String,
    /// When set, new events are chained with HMAC-SHA256 under the key in this file (its bytes, one
    /// trailing newline removed), and `verify` can check `hmac-sha256` rows.
    pub hmac_key_file: Option<PathBuf>,
    /// Apply pending schema migrations on open.
    pub migrate: bool,
    /// Pool size (PostgreSQL). SQLite uses at most this many too, but has one writer at a time anyway.
    pub max_connections: u32,
    /// How long an operation waits for a connection before the store counts as unavailable.
    pub acquire_timeout: Duration,
    /// SQLite: how long a writer waits for another writer's lock before the store counts as unavailable.
    pub busy_timeout: Duration,
    /// Where chain heads are checkpointed after appends (see [`checkpoint`]); `None`: not at all.
    pub checkpoint_path: Option<PathBuf>,
    /// Time between checkpoint lines.
    pub checkpoint_interval: Duration,
    /// DataStorage: the bearer token file (default the pod's ServiceAccount token), re-read per request.
    pub token_file: Option<PathBuf>,
    /// SQLite: each connection's page cache, KiB; `None` keeps SQLite's default (2,000 KiB). The audit
    /// writer's own store sets [`StoreConfig::for_batch_writer`]'s size.
    pub sqlite_page_cache_kib: Option<u32>,
    /// SQLite: whether this store's connections evaluate the `json_valid(event_data)` CHECK. Only the
    /// audit writer's store turns it off ([`StoreConfig::for_batch_writer`]): it stores nothing but
    /// `EventData` text, canonical JSON by construction (docs/audit.md, "Store").
    pub sqlite_check_event_data: bool,
    /// SQLite: appends run synchronously on the calling thread, on a connection of their own
    /// (`rusqlite`), instead of through sqlx's worker thread. Only for a store driven from a thread of
    /// its own: the audit writer's ([`StoreConfig::for_batch_writer`]; docs/audit.md, "The writer's
    /// thread").
    pub sqlite_direct_appends: bool,
}

impl StoreConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            hmac_key_file: None,
            migrate: true,
            max_connections: 5,
            acquire_timeout: Duration::from_secs(3),
            busy_timeout: Duration::from_secs(5),
            checkpoint_path: None,
            checkpoint_interval: checkpoint::DEFAULT_INTERVAL,
            token_file: None,
            sqlite_page_cache_kib: None,
            sqlite_check_event_data: true,
            sqlite_direct_appends: false,
        }
    }

    /// The store of the audit writer, which appends batches of up to thousands of events: with SQLite,
    /// a page cache with room for a whole batch's pages (docs/audit.md, "Store"). Only the writer's
    /// pool gets it (it uses one connection at a time), so the lookup pool's memory stays SQLite's
    /// default. Its SQLite connections also skip the `json_valid` CHECK of `event_data`, which was
    /// 11–16 % of the store's CPU per event: the writer only stores `EventData`, valid JSON by
    /// construction, and every other connection keeps the check (docs/decisions/0002-writer-skips-json-check.md).
    pub fn for_batch_writer(mut self) -> Self {
        self.sqlite_page_cache_kib = Some(sqlite::BATCH_PAGE_CACHE_KIB);
        self.sqlite_check_event_data = false;
        self.sqlite_direct_appends = true;
        self
    }

    pub fn with_checkpoints(mut self, path: impl Into<PathBuf>, interval: Duration) -> Self {
        self.checkpoint_path = Some(path.into());
        self.checkpoint_interval = interval;
        self
    }

    pub fn with_hmac_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.hmac_key_file = Some(path.into());
        self
    }

    pub fn without_migrations(mut self) -> Self {
        self.migrate = false;
        self
    }
}

/// Errors of the store. [`StoreError::is_unavailable`] separates "the store cannot be reached right now,
/// try again / spill" from permanent failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "unsupported audit store URL {url:?}: expected sqlite://<path>, postgres://… or http(s)://<DataStorage>"
    )]
    UnsupportedUrl { url: String },
    #[error("audit store unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("audit store busy, retry: {0}")]
    Transient(#[source] sqlx::Error),
    #[error("audit store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("audit store error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("audit schema migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("audit schema is not installed in this store (run `namegate audit migrate-schema`)")]
    SchemaMissing,
    #[error("event {event_id} cannot be stored: {reason}")]
    InvalidEvent { event_id: Uuid, reason: String },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("stored row seq {seq} is unreadable: {reason}")]
    CorruptRow { seq: i64, reason: String },
    #[error("reading HMAC key file {path}: {source}")]
    HmacKeyFile { path: PathBuf, source: io::Error },
    #[error("HMAC key file {path} is empty")]
    EmptyHmacKey { path: PathBuf },
    #[error("creating the directory of {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// DataStorage unreachable, refusing our credentials, overloaded or failing (docs/audit.md).
    #[error("audit store unavailable: {reason}")]
    Http {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// DataStorage refused a request of several events (400, 413, other 4xx).
    #[error("DataStorage refused the batch ({status}): {detail}")]
    Refused { status: u16, detail: String },
    #[error(
        "{0} is not available when kubernaut DataStorage is the audit store (query DataStorage's API)"
    )]
    NotSupported(&'static str),
    /// DataStorage refused namegate's token (401) or its ServiceAccount's RBAC (403). Unavailable for
    /// the writer (spill until an operator fixes it); a distinct problem for lookups.
    #[error("DataStorage refused namegate's credentials ({status}): {reason}")]
    CredentialsRefused { status: u16, reason: String },
    /// An error of the audit writer's own SQLite connection (`sqlite_direct_appends`), classified by
    /// its result code with the same table as sqlx's SQLite errors.
    #[error("audit store {}: {source}", class.describe())]
    Sqlite {
        class: ErrorClass,
        #[source]
        source: rusqlite::Error,
    },
    /// DataStorage answered a query with something namegate cannot use (an unexpected status, an
    /// unreadable body or row): an upstream fault, not a caller's.
    #[error("DataStorage's answer to a query is unusable: {0}")]
    BadAnswer(String),
}

impl StoreError {
    /// The store cannot be reached (connection refused/reset/closed, pool timeout, server shutting down,
    /// SQLite file locked by another process or its disk failing): retry later; meanwhile spill.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable(_)
                | Self::Timeout(_)
                | Self::Http { .. }
                | Self::CredentialsRefused { .. }
                | Self::Sqlite {
                    class: ErrorClass::Unavailable,
                    ..
                }
        )
    }

    /// DataStorage refused namegate's own credentials (an operator must fix the token or RBAC).
    pub fn is_credentials_refused(&self) -> bool {
        matches!(self, Self::CredentialsRefused { .. })
    }

    /// The audit store's upstream (DataStorage) answered with something unusable.
    pub fn is_bad_answer(&self) -> bool {
        matches!(self, Self::BadAnswer(_))
    }

    /// How long the store asked us to wait (DataStorage's `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Worth retrying soon: unavailable, or a transient conflict (serialisation failure, deadlock).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable(_)
                | Self::Timeout(_)
                | Self::Transient(_)
                | Self::Http { .. }
                | Self::CredentialsRefused { .. }
                | Self::Sqlite {
                    class: ErrorClass::Unavailable | ErrorClass::Transient,
                    ..
                }
        )
    }

    /// Retrying the same operation will fail the same way.
    pub fn is_permanent(&self) -> bool {
        !self.is_retryable()
    }

    /// The caller's input was refused (a bad cursor, an unstorable event): HTTP 400 territory.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, Self::InvalidArgument(_) | Self::InvalidEvent { .. })
    }

    fn from_migrate(e: sqlx::migrate::MigrateError) -> Self {
        use sqlx::migrate::MigrateError as M;
        match e {
            M::Execute(inner) | M::ExecuteMigration(inner, _) => match classify(inner) {
                // A connection failure during migration is an outage, not a broken migration.
                unavailable @ Self::Unavailable(_) => unavailable,
                Self::Transient(inner) | Self::Database(inner) => Self::Migrate(M::Execute(inner)),
                other => other,
            },
            other => Self::Migrate(other),
        }
    }
}

/// Classifies a driver error: unavailable / transient / permanent.
fn classify(e: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    match &e {
        E::Io(_)
        | E::Tls(_)
        | E::Protocol(_)
        | E::PoolTimedOut
        | E::PoolClosed
        | E::WorkerCrashed => StoreError::Unavailable(e),
        E::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            if db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some()
            {
                match postgres::classify_sqlstate(&code) {
                    ErrorClass::Unavailable => StoreError::Unavailable(e),
                    ErrorClass::Transient => StoreError::Transient(e),
                    ErrorClass::Permanent => StoreError::Database(e),
                }
            } else {
                match sqlite::classify_code(&code) {
                    ErrorClass::Unavailable => StoreError::Unavailable(e),
                    ErrorClass::Transient => StoreError::Transient(e),
                    ErrorClass::Permanent => StoreError::Database(e),
                }
            }
        }
        _ => StoreError::Database(e),
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        classify(e)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(source: rusqlite::Error) -> Self {
        let class = match &source {
            rusqlite::Error::SqliteFailure(e, _) => sqlite::classify_extended(e.extended_code),
            // Not SQLite's answer but this side's (a column of an unexpected type, …).
            _ => ErrorClass::Permanent,
        };
        StoreError::Sqlite { class, source }
    }
}

/// What a driver error means for the caller ([`StoreError::is_unavailable`],
/// [`StoreError::is_retryable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The store cannot be reached or written now: retry later, spill meanwhile.
    Unavailable,
    /// A conflict that a retry soon resolves.
    Transient,
    /// Retrying fails the same way.
    Permanent,
}

impl ErrorClass {
    fn describe(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Transient => "busy, retry",
            Self::Permanent => "error",
        }
    }
}

/// Which engine a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Sqlite,
    Postgres,
    #[serde(rename = "datastorage")]
    DataStorage,
}

impl Engine {
    pub fn of_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else if url.starts_with("http://") || url.starts_with("https://") {
            Ok(Self::DataStorage)
        } else {
            Err(StoreError::UnsupportedUrl {
                url: redact_url(url),
            })
        }
    }
}

/// The URL with any password replaced, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// A row as stored, text columns verbatim (timestamps in [`chain::format_timestamp`] form, UUIDs
/// lowercase hyphenated, `event_data` its stored JSON text). What [`chain::canonical`] hashes.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct RawEventRow {
    pub seq: i64,
    pub event_id: String,
    pub event_version: String,
    pub event_timestamp: String,
    pub event_type: String,
    pub event_category: String,
    pub event_action: String,
    pub event_outcome: String,
    pub actor_type: Option<String>,
    pub actor_id: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub correlation_id: String,
    pub legacy_correlation_id: Option<String>,
    pub parent_event_id: Option<String>,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub namespace: Option<String>,
    pub cluster_id: Option<String>,
    pub fingerprint: Option<String>,
    pub event_data: String,
    pub severity: Option<String>,
    pub duration_ms: Option<i64>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub event_hash: String,
    pub previous_event_hash: Option<String>,
    pub hash_algorithm: String,
}

impl RawEventRow {
    /// The chain this row belongs to: `COALESCE(legacy_correlation_id, correlation_id)`, i.e. the ID
    /// it was hashed under (a migrated row stays in its original chain).
    pub fn chain_key(&self) -> &str {
        self.legacy_correlation_id
            .as_deref()
            .unwrap_or(&self.correlation_id)
    }

    /// The row for a new event, chain fields still empty. Timestamps are truncated to microseconds (the
    /// precision both engines store) before anything is hashed.
    fn from_event(ev: &AuditEvent) -> Result<Self, StoreError> {
        validate(ev)?;
        Ok(Self {
            seq: 0,
            event_id: ev.event_id.hyphenated().to_string(),
            event_version: chain::EVENT_VERSION.to_owned(),
            event_timestamp: chain::format_timestamp(chain::truncate_to_micros(ev.event_timestamp)),
            event_type: ev.event_type.as_str().to_owned(),
            event_category: CATEGORY.to_owned(),
            event_action: ev.event_type.action().to_owned(),
            event_outcome: ev.event_outcome.as_str().to_owned(),
            actor_type: ev.actor_type.clone(),
            actor_id: ev.actor_id.clone(),
            resource_type: ev.resource_type.clone(),
            resource_id: ev.resource_id.clone(),
            correlation_id: ev.correlation_id.clone(),
            legacy_correlation_id: None,
            parent_event_id: None,
            trace_id: ev.trace_id.clone(),
            span_id: ev.span_id.clone(),
            namespace: ev.namespace.clone(),
            cluster_id: ev.cluster_id.clone(),
            fingerprint: ev.fingerprint.clone(),
            event_data: ev.event_data.as_str().to_owned(),
            severity: ev.severity.clone(),
            duration_ms: ev.duration_ms,
            error_code: ev.error_code.clone(),
            error_message: ev.error_message.clone(),
            event_hash: String::new(),
            previous_event_hash: None,
            hash_algorithm: String::new(),
        })
    }

    /// What the chain-head checkpoints keep of an appended row (`Checkpointer::record`): its event
    /// ID, chain key and hash; every other column empty.
    fn head(event_id: &str, correlation_id: &str, event_hash: String) -> Self {
        Self {
            seq: 0,
            event_id: event_id.to_owned(),
            event_version: String::new(),
            event_timestamp: String::new(),
            event_type: String::new(),
            event_category: String::new(),
            event_action: String::new(),
            event_outcome: String::new(),
            actor_type: None,
            actor_id: None,
            resource_type: None,
            resource_id: None,
            correlation_id: correlation_id.to_owned(),
            legacy_correlation_id: None,
            parent_event_id: None,
            trace_id: None,
            span_id: None,
            namespace: None,
            cluster_id: None,
            fingerprint: None,
            event_data: String::new(),
            severity: None,
            duration_ms: None,
            error_code: None,
            error_message: None,
            event_hash,
            previous_event_hash: None,
            hash_algorithm: String::new(),
        }
    }

    /// Parses the text columns for consumers.
    pub fn to_stored(&self) -> Result<StoredEvent, StoreError> {
        let corrupt = |reason: String| StoreError::CorruptRow {
            seq: self.seq,
            reason,
        };
        let event_id = Uuid::parse_str(&self.event_id)
            .map_err(|e| corrupt(format!("event_id {:?}: {e}", self.event_id)))?;
        let parent_event_id = match &self.parent_event_id {
            Some(p) => Some(
                Uuid::parse_str(p).map_err(|e| corrupt(format!("parent_event_id {p:?}: {e}")))?,
            ),
            None => None,
        };
        let event_timestamp: Timestamp = self
            .event_timestamp
            .parse()
            .map_err(|e| corrupt(format!("event_timestamp {:?}: {e}", self.event_timestamp)))?;
        let event_data = serde_json::from_str(&self.event_data)
            .map_err(|e| corrupt(format!("event_data: {e}")))?;
        Ok(StoredEvent {
            seq: self.seq,
            event_id,
            event_version: self.event_version.clone(),
            event_timestamp,
            event_type: self.event_type.clone(),
            event_category: self.event_category.clone(),
            event_action: self.event_action.clone(),
            event_outcome: self.event_outcome.clone(),
            correlation_id: self.correlation_id.clone(),
            legacy_correlation_id: self.legacy_correlation_id.clone(),
            fingerprint: self.fingerprint.clone(),
            parent_event_id,
            actor_type: self.actor_type.clone(),
            actor_id: self.actor_id.clone(),
            resource_type: self.resource_type.clone(),
            resource_id: self.resource_id.clone(),
            namespace: self.namespace.clone(),
            cluster_id: self.cluster_id.clone(),
            trace_id: self.trace_id.clone(),
            span_id: self.span_id.clone(),
            severity: self.severity.clone(),
            duration_ms: self.duration_ms,
            error_code: self.error_code.clone(),
            error_message: self.error_message.clone(),
            event_data,
            event_hash: self.event_hash.clone(),
            previous_event_hash: self.previous_event_hash.clone(),
            hash_algorithm: self.hash_algorithm.clone(),
        })
    }
}

/// Refuses what one engine would store differently from the other: PostgreSQL text cannot hold NUL.
fn validate(ev: &AuditEvent) -> Result<(), StoreError> {
    let invalid = |reason: &str| StoreError::InvalidEvent {
        event_id: ev.event_id,
        reason: reason.to_owned(),
    };
    if ev.correlation_id.is_empty() {
        return Err(invalid("empty correlation_id"));
    }
    let texts = [
        Some(&ev.correlation_id),
        ev.fingerprint.as_ref(),
        ev.actor_type.as_ref(),
        ev.actor_id.as_ref(),
        ev.resource_type.as_ref(),
        ev.resource_id.as_ref(),
        ev.namespace.as_ref(),
        ev.cluster_id.as_ref(),
        ev.trace_id.as_ref(),
        ev.span_id.as_ref(),
        ev.severity.as_ref(),
        ev.error_code.as_ref(),
        ev.error_message.as_ref(),
    ];
    if texts.into_iter().flatten().any(|s| s.contains('\0')) {
        return Err(invalid("a text field contains a NUL character"));
    }
    Ok(())
}

/// A stored event, parsed. Event type/outcome are strings: the store also holds rows the gateway did
/// not write (migrated kubernaut rows).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredEvent {
    pub seq: i64,
    pub event_id: Uuid,
    pub event_version: String,
    #[serde(serialize_with = "serialize_micros")]
    pub event_timestamp: Timestamp,
    pub event_type: String,
    pub event_category: String,
    pub event_action: String,
    pub event_outcome: String,
    pub correlation_id: String,
    pub legacy_correlation_id: Option<String>,
    pub fingerprint: Option<String>,
    pub parent_event_id: Option<Uuid>,
    pub actor_type: Option<String>,
    pub actor_id: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub namespace: Option<String>,
    pub cluster_id: Option<String>,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub severity: Option<String>,
    pub duration_ms: Option<i64>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub event_data: serde_json::Value,
    pub event_hash: String,
    pub previous_event_hash: Option<String>,
    pub hash_algorithm: String,
}

fn serialize_micros<S: serde::Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&chain::format_timestamp(*ts))
}

impl StoredEvent {
    /// See [`RawEventRow::chain_key`].
    pub fn chain_key(&self) -> &str {
        self.legacy_correlation_id
            .as_deref()
            .unwrap_or(&self.correlation_id)
    }

    /// Back to the stored text form (event_data re-serialised canonically, which is how the store
    /// writes it): for tools that recompute hashes.
    pub fn to_raw(&self) -> RawEventRow {
        RawEventRow {
            seq: self.seq,
            event_id: self.event_id.hyphenated().to_string(),
            event_version: self.event_version.clone(),
            event_timestamp: chain::format_timestamp(self.event_timestamp),
            event_type: self.event_type.clone(),
            event_category: self.event_category.clone(),
            event_action: self.event_action.clone(),
            event_outcome: self.event_outcome.clone(),
            actor_type: self.actor_type.clone(),
            actor_id: self.actor_id.clone(),
            resource_type: self.resource_type.clone(),
            resource_id: self.resource_id.clone(),
            correlation_id: self.correlation_id.clone(),
            legacy_correlation_id: self.legacy_correlation_id.clone(),
            parent_event_id: self.parent_event_id.map(|u| u.hyphenated().to_string()),
            trace_id: self.trace_id.clone(),
            span_id: self.span_id.clone(),
            namespace: self.namespace.clone(),
            cluster_id: self.cluster_id.clone(),
            fingerprint: self.fingerprint.clone(),
            event_data: chain::canonical_json(&self.event_data),
            severity: self.severity.clone(),
            duration_ms: self.duration_ms,
            error_code: self.error_code.clone(),
            error_message: self.error_message.clone(),
            event_hash: self.event_hash.clone(),
            previous_event_hash: self.previous_event_hash.clone(),
            hash_algorithm: self.hash_algorithm.clone(),
        }
    }

    /// `event_data.rr_uid`: which RR object the event is about.
    pub fn rr_uid(&self) -> Option<&str> {
        self.event_data.get("rr_uid").and_then(|v| v.as_str())
    }
}

/// What one `append_batch` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendReport {
    pub inserted: u64,
    /// Events whose `event_id` was already stored (a replayed batch whose first commit was
    /// acknowledged too late); skipped, not re-chained.
    pub duplicates: u64,
    /// DataStorage: events of types its schema refuses, logged instead of sent (docs/audit.md).
    pub local_only: u64,
}

/// A page of [`AuditStore::trail`]: rows with `seq > after_seq`, at most `limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub after_seq: Option<i64>,
    pub limit: u32,
}

impl Page {
    pub const MAX_LIMIT: u32 = 10_000;

    pub fn first(limit: u32) -> Self {
        Self {
            after_seq: None,
            limit,
        }
    }

    fn sql_limit(self) -> i64 {
        i64::from(self.limit.clamp(1, Self::MAX_LIMIT))
    }
}

/// Why a row breaks its chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// The row's content (or its stored hash) was changed: its recomputed hash differs.
    HashMismatch,
    /// The row does not link to its predecessor: a row before it was removed, inserted or rewritten.
    PreviousHashMismatch,
    /// `hash_algorithm` names no algorithm this version knows.
    UnknownAlgorithm,
    /// Verified with a key, the row is hashed without one (`sha256`) although it is newer than
    /// `--unkeyed-before` or follows a keyed row of its chain: rewritten as unkeyed (a downgrade).
    Unkeyed,
    /// A checkpointed head is stored with another `event_hash`: the chain was rewritten.
    CheckpointMismatch,
    /// The chain is there but its checkpointed head is not: its newest events were deleted.
    Truncated,
    /// A checkpointed chain has no rows at all: it was deleted.
    ChainMissing,
    /// A checkpoint line whose seal does not match: forged or damaged.
    BadCheckpoint,
}

/// One break found by [`AuditStore::verify`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    pub seq: i64,
    /// As stored (text), so even a row whose ID was mangled can be named.
    pub event_id: String,
    pub correlation_id: String,
    /// The chain the row belongs to (differs from `correlation_id` for migrated rows).
    pub chain_key: String,
    pub kind: BreakKind,
    pub expected: String,
    pub got: String,
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "chain break at event {} (correlation {}",
            self.event_id, self.correlation_id
        )?;
        if self.chain_key != self.correlation_id {
            write!(f, ", chain {}", self.chain_key)?;
        }
        let what = match self.kind {
            BreakKind::HashMismatch => "event_hash",
            BreakKind::PreviousHashMismatch => "previous_event_hash",
            BreakKind::UnknownAlgorithm => "hash_algorithm",
            BreakKind::Unkeyed => "hash_algorithm (unkeyed row under a key)",
            BreakKind::CheckpointMismatch => "checkpointed head rewritten",
            BreakKind::Truncated => "chain truncated after its checkpointed head",
            BreakKind::ChainMissing => "checkpointed chain deleted",
            BreakKind::BadCheckpoint => "checkpoint line",
        };
        write!(f, "): {what}: expected {} got {}", self.expected, self.got)
    }
}

/// The result of [`AuditStore::verify`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub events_checked: u64,
    pub chains_checked: u64,
    pub breaks: Vec<ChainBreak>,
    /// `hmac-sha256` rows checked without the key: their linkage was checked, their content was not.
    /// Checkpoint lines sealed with HMAC and read without the key count here too.
    pub unverifiable: u64,
    /// Checkpointed chain heads compared with the store.
    pub checkpoint_heads_checked: u64,
}

/// What [`AuditStore::verify_with`] checks beyond the chains themselves.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Checkpoint files written by the gateways ([`checkpoint`]); every head in them must be present.
    pub checkpoints: Vec<PathBuf>,
    /// With a key: unkeyed rows older than this are accepted (a store that ran without a key before);
    /// `None` accepts none.
    pub unkeyed_before: Option<jiff::Timestamp>,
}

impl VerifyReport {
    /// No break, and every row's content was checked.
    pub fn is_clean(&self) -> bool {
        self.breaks.is_empty() && self.unverifiable == 0
    }
}

/// Schema state after [`AuditStore::migrate`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MigrationReport {
    /// Versions applied by this call (empty when the schema was already current).
    pub applied: Vec<i64>,
    /// The newest version now installed.
    pub current: Option<i64>,
}

#[derive(Clone, Debug)]
enum Backend {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
    DataStorage(datastorage::Client),
}

/// The audit store. Cheap to clone (pools are shared).
#[derive(Clone, Debug)]
pub struct AuditStore {
    backend: Backend,
    hasher: ChainHasher,
    url: String,
    checkpoints: Option<Arc<Checkpointer>>,
    /// SQLite with [`StoreConfig::sqlite_direct_appends`]: the connection appends go through.
    direct: Option<Arc<sqlite_writer::Appender>>,
}

impl AuditStore {
    /// Opens `url` with default settings (pending migrations applied) and, when given, the HMAC key
    /// in `hmac_key_file`.
    pub async fn open(url: &str, hmac_key_file: Option<&Path>) -> Result<Self, StoreError> {
        let mut config = StoreConfig::new(url);
        config.hmac_key_file = hmac_key_file.map(Path::to_owned);
        Self::open_with(&config).await
    }

    /// Connects (creating a SQLite file if missing), reads the HMAC key, and applies pending migrations
    /// unless `config.migrate` is false (then it checks the store answers).
    pub async fn open_with(config: &StoreConfig) -> Result<Self, StoreError> {
        let key = match &config.hmac_key_file {
            Some(path) => Some(read_hmac_key(path)?),
            None => None,
        };
        let backend = match Engine::of_url(&config.url)? {
            Engine::Sqlite => Backend::Sqlite(sqlite::connect(config).await?),
            Engine::Postgres => Backend::Postgres(postgres::connect(config)?),
            Engine::DataStorage => Backend::DataStorage(datastorage::connect(config)?),
        };
        let is_datastorage = matches!(backend, Backend::DataStorage(_));
        let hasher = ChainHasher::new(key);
        // DataStorage chains and verifies its own rows: nothing to checkpoint here.
        let checkpoints = config
            .checkpoint_path
            .as_ref()
            .filter(|_| !is_datastorage)
            .map(|p| {
                Arc::new(Checkpointer::new(
                    p.clone(),
                    hasher.clone(),
                    config.checkpoint_interval,
                ))
            });
        let direct = match (&backend, config.sqlite_direct_appends) {
            (Backend::Sqlite(_), true) => sqlite::file_of(config)?
                .map(|(file, read_only)| {
                    sqlite_writer::Appender::open(&file, read_only, config).map(Arc::new)
                })
                .transpose()?,
            _ => None,
        };
        let store = Self {
            backend,
            hasher,
            url: redact_url(&config.url),
            checkpoints,
            direct,
        };
        if config.migrate && !is_datastorage {
            store.migrate().await?;
        } else {
            store.ping().await?;
        }
        Ok(store)
    }

    /// Applies pending schema migrations (idempotent; concurrent callers on PostgreSQL serialise on
    /// sqlx's migration lock).
    pub async fn migrate(&self) -> Result<MigrationReport, StoreError> {
        let before = self.applied_versions().await?;
        match &self.backend {
            Backend::Sqlite(pool) => sqlite::migrate(pool).await?,
            Backend::Postgres(pool) => postgres::migrate(pool).await?,
            Backend::DataStorage(_) => return Err(StoreError::NotSupported("migrate-schema")),
        }
        let after = self.applied_versions().await?;
        Ok(MigrationReport {
            applied: after
                .iter()
                .copied()
                .filter(|v| !before.contains(v))
                .collect(),
            current: after.iter().copied().max(),
        })
    }

    /// The newest installed schema version, `None` when the schema is not installed.
    pub async fn schema_version(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.applied_versions().await?.into_iter().max())
    }

    async fn applied_versions(&self) -> Result<Vec<i64>, StoreError> {
        match &self.backend {
            Backend::Sqlite(pool) => sqlite::applied_versions(pool).await,
            Backend::Postgres(pool) => postgres::applied_versions(pool).await,
            Backend::DataStorage(_) => Err(StoreError::NotSupported("the schema version")),
        }
    }

    async fn require_schema(&self) -> Result<(), StoreError> {
        match self.schema_version().await? {
            Some(_) => Ok(()),
            None => Err(StoreError::SchemaMissing),
        }
    }

    pub fn engine(&self) -> Engine {
        match self.backend {
            Backend::Sqlite(_) => Engine::Sqlite,
            Backend::Postgres(_) => Engine::Postgres,
            Backend::DataStorage(_) => Engine::DataStorage,
        }
    }

    /// The URL, password redacted.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The algorithm new events are chained with.
    pub fn hash_algorithm(&self) -> HashAlgorithm {
        self.hasher.algorithm()
    }

    /// Checks the store answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
            Backend::Postgres(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
            Backend::DataStorage(client) => client.ping().await?,
        }
        Ok(())
    }

    /// Appends events in one transaction: skips events already stored (by `event_id`), links each new
    /// event to its correlation ID's chain tail (events of one correlation ID in slice order) and
    /// inserts them. Either every new event of the batch is stored or none is.
    pub async fn append_batch(&self, events: &[AuditEvent]) -> Result<AppendReport, StoreError> {
        if events.is_empty() {
            return Ok(AppendReport::default());
        }
        if let Backend::DataStorage(client) = &self.backend {
            return client.append(events).await;
        }
        if let (Backend::Sqlite(_), Some(direct)) = (&self.backend, &self.direct) {
            // Synchronous: this store belongs to a thread of its own (`sqlite_direct_appends`). The
            // rows are written from the events themselves (`sqlite_writer`).
            let mut distinct = Vec::with_capacity(events.len());
            let mut seen = std::collections::HashSet::with_capacity(events.len());
            for ev in events {
                if seen.insert(ev.event_id) {
                    validate(ev)?;
                    distinct.push(ev);
                }
            }
            let (mut report, heads) = direct.append(&self.hasher, &distinct)?;
            if let Some(cp) = &self.checkpoints {
                cp.record(&heads);
            }
            report.duplicates += (events.len() - distinct.len()) as u64;
            return Ok(report);
        }
        let mut rows = Vec::with_capacity(events.len());
        let mut seen = std::collections::HashSet::with_capacity(events.len());
        for ev in events {
            // A batch holding one event twice would otherwise chain it twice.
            if seen.insert(ev.event_id) {
                rows.push(RawEventRow::from_event(ev)?);
            }
        }
        let in_batch_duplicates = (events.len() - rows.len()) as u64;
        // The engines leave exactly the inserted rows, chained, in `rows` (SQLite moves their text
        // into its statement; what the checkpoint records of a row stays).
        let mut report = match &self.backend {
            Backend::Sqlite(pool) => sqlite::append(pool, &self.hasher, &mut rows).await?,
            Backend::Postgres(pool) => postgres::append(pool, &self.hasher, &mut rows).await?,
            Backend::DataStorage(_) => unreachable!("handled above"),
        };
        if let Some(cp) = &self.checkpoints {
            cp.record(&rows);
        }
        report.duplicates += in_batch_duplicates;
        Ok(report)
    }

    /// Events of `correlation_id` in chain (storage) order, oldest first: rows whose `correlation_id`
    /// or `legacy_correlation_id` equals it, so a legacy ID finds its migrated rows and the new ID finds
    /// them too.
    pub async fn trail(
        &self,
        correlation_id: &str,
        page: Page,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = match &self.backend {
            Backend::Sqlite(pool) => sqlite::trail(pool, correlation_id, page).await?,
            Backend::Postgres(pool) => postgres::trail(pool, correlation_id, page).await?,
            Backend::DataStorage(_) => return Err(StoreError::NotSupported("the audit trail")),
        };
        rows.iter().map(RawEventRow::to_stored).collect()
    }

    /// DataStorage as the store: the events at positions `[start, start + n)` of `correlation_id`'s
    /// trail, oldest first, and the trail's length (`total`: the length last seen, if any; see
    /// [`datastorage::Client::ascending`]). `None` for the other engines.
    pub(crate) async fn datastorage_slice(
        &self,
        correlation_id: &str,
        start: u64,
        n: usize,
        total: Option<u64>,
    ) -> Result<Option<(Vec<StoredEvent>, u64)>, StoreError> {
        match &self.backend {
            Backend::DataStorage(client) => client
                .ascending(correlation_id, start, n, total)
                .await
                .map(Some),
            _ => Ok(None),
        }
    }

    /// The correlation IDs that rows migrated from `legacy_id` now carry.
    pub async fn correlation_ids_for_legacy(
        &self,
        legacy_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        match &self.backend {
            Backend::Sqlite(pool) => sqlite::ids_for_legacy(pool, legacy_id).await,
            Backend::Postgres(pool) => postgres::ids_for_legacy(pool, legacy_id).await,
            Backend::DataStorage(_) => Err(StoreError::NotSupported("the audit trail")),
        }
    }

    /// Rows whose `correlation_id` or `legacy_correlation_id` is one of `ids`, ordered by
    /// `(event_timestamp, seq)`, strictly after `after` (a timestamp in stored form and a seq).
    pub(crate) async fn rows_by_time(
        &self,
        ids: &[String],
        after: Option<(&str, i64)>,
        limit: u32,
    ) -> Result<Vec<RawEventRow>, StoreError> {
        let limit = i64::from(limit.clamp(1, Page::MAX_LIMIT));
        match &self.backend {
            Backend::Sqlite(pool) => sqlite::rows_by_time(pool, ids, after, limit).await,
            Backend::Postgres(pool) => postgres::rows_by_time(pool, ids, after, limit).await,
            Backend::DataStorage(_) => Err(StoreError::NotSupported("the audit trail")),
        }
    }

    /// Number of stored events.
    pub async fn count(&self) -> Result<u64, StoreError> {
        let n: i64 = match &self.backend {
            Backend::Sqlite(pool) => {
                sqlx::query_scalar("SELECT count(*) FROM audit_events")
                    .fetch_one(pool)
                    .await?
            }
            Backend::Postgres(pool) => {
                sqlx::query_scalar("SELECT count(*) FROM audit_events")
                    .fetch_one(pool)
                    .await?
            }
            Backend::DataStorage(_) => return Err(StoreError::NotSupported("counting events")),
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Recomputes every chain (rows grouped by chain key, in `seq` order) and reports each break.
    /// Memory use is constant: the database sorts, this streams.
    pub async fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.verify_with(&VerifyOptions::default()).await
    }

    /// [`AuditStore::verify`], also requiring the heads of `options.checkpoints` and refusing unkeyed
    /// rows under a key (see [`VerifyOptions`]).
    pub async fn verify_with(&self, options: &VerifyOptions) -> Result<VerifyReport, StoreError> {
        if let Backend::DataStorage(_) = &self.backend {
            // DataStorage verifies its own chains with its own key (docs/audit.md).
            return Err(StoreError::NotSupported(
                "verify (DataStorage verifies its own chains: POST /api/v1/audit/verify-chain per correlation ID)",
            ));
        }
        self.require_schema().await?;
        let expected = checkpoint::load(&options.checkpoints, &self.hasher)?;
        let mut verifier = Verifier::new(&self.hasher, expected, options.unkeyed_before);
        match &self.backend {
            Backend::Sqlite(pool) => {
                sqlite::for_each_in_chain_order(pool, |row| verifier.check(row)).await?
            }
            Backend::Postgres(pool) => {
                postgres::for_each_in_chain_order(pool, |row| verifier.check(row)).await?
            }
            Backend::DataStorage(_) => unreachable!("refused above"),
        }
        Ok(verifier.finish())
    }

    /// Writes the pending chain heads to the checkpoint file now.
    pub fn flush_checkpoint(&self) {
        if let Some(cp) = &self.checkpoints
            && let Err(e) = cp.flush()
        {
            tracing::error!(error = %e, path = %cp.path().display(), "cannot write audit checkpoint");
        }
    }

    /// Closes the pools (waits for checked-out connections to come back).
    pub async fn close(&self) {
        self.flush_checkpoint();
        if let Some(direct) = &self.direct {
            direct.close();
        }
        match &self.backend {
            Backend::Sqlite(pool) => pool.close().await,
            Backend::Postgres(pool) => pool.close().await,
            Backend::DataStorage(_) => {}
        }
    }
}

/// Streaming chain verification: rows arrive grouped by chain key, oldest first.
struct Verifier<'h> {
    hasher: &'h ChainHasher,
    report: VerifyReport,
    chain: Option<String>,
    /// `event_hash` of the previous row of the current chain ("" before the first).
    tail: String,
    /// Checkpointed heads of chains not reached yet.
    expected: std::collections::HashMap<String, Vec<checkpoint::Head>>,
    /// The current chain's checkpointed heads not seen yet.
    awaiting: Vec<checkpoint::Head>,
    /// The current chain's last row: (seq, event_id).
    last: (i64, String),
    /// The current chain has had a keyed row.
    keyed_seen: bool,
    /// With a key: unkeyed rows at or after this stored timestamp are breaks.
    unkeyed_cutoff: Option<String>,
}

impl<'h> Verifier<'h> {
    fn new(
        hasher: &'h ChainHasher,
        expected: Expected,
        unkeyed_before: Option<jiff::Timestamp>,
    ) -> Self {
        let mut report = VerifyReport {
            unverifiable: expected.unverifiable_lines,
            ..VerifyReport::default()
        };
        for (at, why) in expected.bad_lines {
            report.breaks.push(ChainBreak {
                seq: 0,
                event_id: String::new(),
                correlation_id: at.clone(),
                chain_key: at,
                kind: BreakKind::BadCheckpoint,
                expected: "a sealed checkpoint line".into(),
                got: why,
            });
        }
        let unkeyed_cutoff = hasher
            .has_key()
            .then(|| unkeyed_before.map_or_else(String::new, chain::format_timestamp));
        Self {
            hasher,
            report,
            chain: None,
            tail: String::new(),
            expected: expected.heads,
            awaiting: Vec::new(),
            last: (0, String::new()),
            keyed_seen: false,
            unkeyed_cutoff,
        }
    }

    /// The current chain ended: any checkpointed head not seen means its tail was cut.
    fn end_chain(&mut self) {
        let Some(chain) = self.chain.clone() else {
            return;
        };
        for head in std::mem::take(&mut self.awaiting) {
            self.report.breaks.push(ChainBreak {
                seq: self.last.0,
                event_id: head.event_id.clone(),
                correlation_id: chain.clone(),
                chain_key: chain.clone(),
                kind: BreakKind::Truncated,
                expected: format!("event {} (checkpointed head)", head.event_id),
                got: format!("chain ends at event {}", self.last.1),
            });
        }
    }

    fn finish(mut self) -> VerifyReport {
        self.end_chain();
        let mut missing: Vec<(String, Vec<checkpoint::Head>)> = self.expected.drain().collect();
        missing.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (chain, heads) in missing {
            for head in heads {
                self.report.checkpoint_heads_checked += 1;
                self.report.breaks.push(ChainBreak {
                    seq: 0,
                    event_id: head.event_id.clone(),
                    correlation_id: chain.clone(),
                    chain_key: chain.clone(),
                    kind: BreakKind::ChainMissing,
                    expected: format!("a chain up to event {}", head.event_id),
                    got: "no events".into(),
                });
            }
        }
        self.report
    }

    fn check(&mut self, row: RawEventRow) {
        self.report.events_checked += 1;
        if self.chain.as_deref() != Some(row.chain_key()) {
            self.end_chain();
            self.chain = Some(row.chain_key().to_owned());
            self.tail.clear();
            self.keyed_seen = false;
            self.awaiting = self.expected.remove(row.chain_key()).unwrap_or_default();
            self.report.checkpoint_heads_checked += self.awaiting.len() as u64;
            self.report.chains_checked += 1;
        }
        self.last = (row.seq, row.event_id.clone());
        let stored_prev = row.previous_event_hash.as_deref().unwrap_or("");
        let mut breaks = Vec::new();
        if stored_prev != self.tail {
            breaks.push((
                BreakKind::PreviousHashMismatch,
                describe_hash(&self.tail),
                describe_hash(stored_prev),
            ));
        }
        // Recompute from the row's own link, so one removed row is reported once (at its successor's
        // link) and one rewritten row once (at itself).
        match HashAlgorithm::parse(&row.hash_algorithm) {
            None => breaks.push((
                BreakKind::UnknownAlgorithm,
                "sha256 or hmac-sha256".to_owned(),
                row.hash_algorithm.clone(),
            )),
            Some(algorithm) => {
                match self
                    .hasher
                    .rehash(algorithm, stored_prev, &chain::canonical(&row))
                {
                    Some(expected) if expected != row.event_hash => {
                        breaks.push((BreakKind::HashMismatch, expected, row.event_hash.clone()));
                    }
                    Some(_) => {}
                    None => self.report.unverifiable += 1,
                }
            }
        }
        match HashAlgorithm::parse(&row.hash_algorithm) {
            Some(HashAlgorithm::HmacSha256) => self.keyed_seen = true,
            Some(HashAlgorithm::Sha256) => {
                if let Some(cutoff) = &self.unkeyed_cutoff
                    && (self.keyed_seen || row.event_timestamp >= *cutoff)
                {
                    breaks.push((
                        BreakKind::Unkeyed,
                        HashAlgorithm::HmacSha256.as_str().to_owned(),
                        row.hash_algorithm.clone(),
                    ));
                }
            }
            None => {}
        }
        if let Some(i) = self
            .awaiting
            .iter()
            .position(|h| h.event_id == row.event_id)
        {
            let head = self.awaiting.swap_remove(i);
            if head.event_hash != row.event_hash {
                breaks.push((
                    BreakKind::CheckpointMismatch,
                    head.event_hash,
                    row.event_hash.clone(),
                ));
            }
        }
        for (kind, expected, got) in breaks {
            self.report.breaks.push(ChainBreak {
                seq: row.seq,
                event_id: row.event_id.clone(),
                correlation_id: row.correlation_id.clone(),
                chain_key: row.chain_key().to_owned(),
                kind,
                expected,
                got,
            });
        }
        self.tail.clone_from(&row.event_hash);
    }
}

fn describe_hash(h: &str) -> String {
    if h.is_empty() {
        "(none: first event of the chain)".to_owned()
    } else {
        h.to_owned()
    }
}

/// Links `rows` (in order) to `tails` (chain key → newest hash) and fills their chain columns.
fn chain_rows(
    hasher: &ChainHasher,
    tails: &mut std::collections::HashMap<String, String>,
    rows: &mut [RawEventRow],
) {
    let algorithm = hasher.algorithm().as_str();
    for row in rows {
        let prev = tails.get(&row.correlation_id).cloned().unwrap_or_default();
        row.hash_algorithm = algorithm.to_owned();
        row.event_hash = hasher.hash(&prev, &chain::canonical(row));
        row.previous_event_hash = (!prev.is_empty()).then_some(prev);
        tails.insert(row.correlation_id.clone(), row.event_hash.clone());
    }
}

fn read_hmac_key(path: &Path) -> Result<HmacKey, StoreError> {
    let bytes = std::fs::read(path).map_err(|source| StoreError::HmacKeyFile {
        path: path.to_owned(),
        source,
    })?;
    HmacKey::from_file_bytes(bytes).ok_or_else(|| StoreError::EmptyHmacKey {
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@db:5432/x?sslmode=require"),
            "postgres://u:***@db:5432/x?sslmode=require"
        );
        assert_eq!(redact_url("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(
            redact_url("sqlite:///var/lib/a.db"),
            "sqlite:///var/lib/a.db"
        );
    }

    #[test]
    fn engine_by_scheme() {
        assert_eq!(Engine::of_url("sqlite://a.db").unwrap(), Engine::Sqlite);
        assert_eq!(
            Engine::of_url("postgresql://h/d").unwrap(),
            Engine::Postgres
        );
        let err = Engine::of_url("mysql://u:pw@h/d").unwrap_err();
        assert!(err.to_string().contains("u:***@h"), "{err}");
        assert!(err.is_permanent());
    }
}
