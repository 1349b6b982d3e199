//! The audit writer's own SQLite connection: appends driven synchronously on the thread that calls
//! them, with `rusqlite` (docs/audit.md, "The writer's thread").
//!
//! sqlx runs every SQLite connection on a worker thread of its own and hands each statement and its
//! arguments over to it; the writer already has a thread of its own ([`AuditStore`]s opened with
//! [`StoreConfig::for_batch_writer`] belong to `AuditWriter::spawn_dedicated`), so the appends run
//! there directly: one connection, statements prepared once and cached, arguments bound from the rows
//! by reference (docs/benchmarks.md, "The SQLite store's CPU per event"). Everything else of the store
//! — migrations, lookups, `ping`, verification — stays on the sqlx pool.
//!
//! The append is the same transaction as [`super::sqlite::append`]: `BEGIN IMMEDIATE`, skip event IDs
//! already stored, read the chain tails and hash inside it, insert in power-of-two chunks, commit
//! (WAL, `synchronous = FULL`). Errors are classified by SQLite's result code with the same table as
//! sqlx's ([`super::sqlite::classify_code`]).
//!
//! [`AuditStore`]: super::AuditStore
//! [`StoreConfig::for_batch_writer`]: super::StoreConfig::for_batch_writer

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::sqlite::{self, chunk_len, insert_sql};
use super::{AppendReport, RawEventRow, StoreConfig, StoreError};
use crate::audit::chain::{self, CanonicalFields, ChainHasher, EVENT_VERSION, TimestampText};
use crate::audit::event::{AuditEvent, CATEGORY};

/// The writer's connection; `None` once closed.
pub(super) struct Appender {
    conn: Mutex<Option<Connection>>,
}

impl fmt::Debug for Appender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Appender").finish_non_exhaustive()
    }
}

impl Appender {
    /// Opens `file` (the sqlx pool has created it) with the settings of the store's sqlx connections
    /// (`super::sqlite::connect`), in the same order; read-only when the store's URL says `mode=ro`.
    pub(super) fn open(
        file: &Path,
        read_only: bool,
        config: &StoreConfig,
    ) -> Result<Self, StoreError> {
        let access = if read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
        };
        let conn = Connection::open_with_flags(file, access | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.busy_timeout(config.busy_timeout)?;
        conn.pragma_update(None, "page_size", sqlite::NEW_STORE_PAGE_SIZE)?;
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        if let Some(kib) = config.sqlite_page_cache_kib {
            conn.pragma_update(None, "cache_size", -i64::from(kib))?;
        }
        if !config.sqlite_check_event_data {
            conn.pragma_update(None, "ignore_check_constraints", "ON")?;
        }
        // The 9 insert shapes and the two reads stay prepared.
        conn.set_prepared_statement_cache_capacity(16);
        Ok(Self {
            conn: Mutex::new(Some(conn)),
        })
    }

    /// See [`super::sqlite::append`]: the same transaction, on this thread, written from the events
    /// themselves: their text is bound by reference and hashed from one reused buffer, never copied
    /// into a [`RawEventRow`] first (docs/benchmarks.md, "The audit writer's CPU per event and its
    /// floor"). `events` are distinct and valid (`AuditStore::append_batch` checks both). Returns
    /// the report and, for the chain-head checkpoints, each inserted event's head row (event ID,
    /// chain key and hash; the other columns empty).
    pub(super) fn append(
        &self,
        hasher: &ChainHasher,
        events: &[&AuditEvent],
    ) -> Result<(AppendReport, Vec<RawEventRow>), StoreError> {
        let mut guard = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let conn = guard
            .as_mut()
            .ok_or(StoreError::Unavailable(sqlx::Error::PoolClosed))?;
        let mut rows: Vec<NewRow<'_>> = events.iter().map(|ev| NewRow::of(ev)).collect();
        // Rolls back when dropped uncommitted (any `?` below).
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;

        let existing: HashSet<String> = {
            let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
            let mut stmt = tx.prepare_cached(sqlite::STORED_IDS_SQL)?;
            stmt.query_map([sqlite::json_array(&ids)], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        let total = rows.len();
        if !existing.is_empty() {
            rows.retain(|r| !existing.contains(r.id.as_str()));
        }
        let duplicates = (total - rows.len()) as u64;
        if rows.is_empty() {
            tx.commit()?;
            return Ok((
                AppendReport {
                    inserted: 0,
                    duplicates,
                    local_only: 0,
                },
                Vec::new(),
            ));
        }

        let mut tails: HashMap<&str, String> = {
            let mut keys: Vec<&str> = rows.iter().map(|r| r.ev.correlation_id.as_str()).collect();
            keys.sort_unstable();
            keys.dedup();
            let mut stmt = tx.prepare_cached(sqlite::CHAIN_TAILS_SQL)?;
            let pairs = stmt.query_map([sqlite::json_array(&keys)], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
            })?;
            let mut tails = HashMap::with_capacity(keys.len());
            for pair in pairs {
                if let (key, Some(hash)) = pair?
                    && let Some(k) = keys.iter().find(|k| **k == key)
                {
                    tails.insert(*k, hash);
                }
            }
            tails
        };
        chain(hasher, &mut tails, &mut rows);

        let algorithm = hasher.algorithm().as_str();
        let mut rest: &[NewRow<'_>] = &rows;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(chunk_len(rest.len()));
            let mut stmt = tx.prepare_cached(insert_sql(chunk.len()))?;
            let mut i = 0;
            let mut bind = |stmt: &mut rusqlite::CachedStatement<'_>,
                            v: &dyn rusqlite::ToSql|
             -> rusqlite::Result<()> {
                i += 1;
                stmt.raw_bind_parameter(i, v)
            };
            for r in chunk {
                let ev = r.ev;
                bind(&mut stmt, &r.id.as_str())?;
                bind(&mut stmt, &EVENT_VERSION)?;
                bind(&mut stmt, &r.timestamp.as_str())?;
                bind(&mut stmt, &ev.event_type.as_str())?;
                bind(&mut stmt, &CATEGORY)?;
                bind(&mut stmt, &ev.event_type.action())?;
                bind(&mut stmt, &ev.event_outcome.as_str())?;
                bind(&mut stmt, &ev.actor_type)?;
                bind(&mut stmt, &ev.actor_id)?;
                bind(&mut stmt, &ev.resource_type)?;
                bind(&mut stmt, &ev.resource_id)?;
                bind(&mut stmt, &ev.correlation_id)?;
                bind(&mut stmt, &None::<&str>)?; // parent_event_id
                bind(&mut stmt, &ev.trace_id)?;
                bind(&mut stmt, &ev.span_id)?;
                bind(&mut stmt, &ev.namespace)?;
                bind(&mut stmt, &ev.cluster_id)?;
                bind(&mut stmt, &ev.fingerprint)?;
                bind(&mut stmt, &ev.event_data.as_str())?;
                bind(&mut stmt, &ev.severity)?;
                bind(&mut stmt, &ev.duration_ms)?;
                bind(&mut stmt, &ev.error_code)?;
                bind(&mut stmt, &ev.error_message)?;
                bind(&mut stmt, &r.hash)?;
                bind(&mut stmt, &r.previous)?;
                bind(&mut stmt, &algorithm)?;
            }
            stmt.raw_execute()?;
            rest = tail;
        }
        tx.commit()?;
        let heads = rows
            .into_iter()
            .map(|r| RawEventRow::head(r.id.as_str(), &r.ev.correlation_id, r.hash))
            .collect::<Vec<_>>();
        Ok((
            AppendReport {
                inserted: heads.len() as u64,
                duplicates,
                local_only: 0,
            },
            heads,
        ))
    }

    /// Closes the connection (checkpointing the WAL when it is the file's last); later appends fail
    /// as unavailable, like a closed pool's.
    pub(super) fn close(&self) {
        let conn = self
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(conn) = conn
            && let Err((_, e)) = conn.close()
        {
            tracing::warn!(error = %e, "closing the audit writer's SQLite connection");
        }
    }
}

/// An event on its way into the table: the event, the texts the row has beyond its fields, and its
/// link in the chain.
struct NewRow<'a> {
    ev: &'a AuditEvent,
    id: EventIdText,
    timestamp: TimestampText,
    hash: String,
    previous: Option<String>,
}

impl<'a> NewRow<'a> {
    fn of(ev: &'a AuditEvent) -> Self {
        let mut timestamp = TimestampText::default();
        // Microseconds: what both engines store, before anything is hashed.
        timestamp.set(ev.event_timestamp);
        Self {
            ev,
            id: EventIdText::of(ev),
            timestamp,
            hash: String::new(),
            previous: None,
        }
    }

    /// The hashed columns, as [`RawEventRow::from_event`] would have made them.
    fn canonical_fields(&self) -> CanonicalFields<'_> {
        CanonicalFields::of_event(self.ev, self.id.as_str(), self.timestamp.as_str())
    }
}

/// An event ID as stored: lowercase hyphenated.
struct EventIdText([u8; uuid::fmt::Hyphenated::LENGTH]);

impl EventIdText {
    fn of(ev: &AuditEvent) -> Self {
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        ev.event_id.hyphenated().encode_lower(&mut buf);
        Self(buf)
    }

    fn as_str(&self) -> &str {
        // `encode_lower` writes ASCII hex digits and hyphens only.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// Links `rows` to their chains as [`super::chain_rows`] does, hashing each canonical form from one
/// buffer.
fn chain<'a>(hasher: &ChainHasher, tails: &mut HashMap<&'a str, String>, rows: &mut [NewRow<'a>]) {
    let mut canonical = String::new();
    for row in rows {
        canonical.clear();
        chain::write_canonical(&mut canonical, &row.canonical_fields());
        let key: &'a str = &row.ev.correlation_id;
        let previous = tails.get(key).map_or("", String::as_str);
        row.hash = hasher.hash(previous, &canonical);
        row.previous = tails.insert(key, row.hash.clone());
    }
}
