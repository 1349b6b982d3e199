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
use crate::audit::chain::ChainHasher;

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

    /// See [`super::sqlite::append`]: the same transaction, on this thread.
    pub(super) fn append(
        &self,
        hasher: &ChainHasher,
        rows: &mut Vec<RawEventRow>,
    ) -> Result<AppendReport, StoreError> {
        let mut guard = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let conn = guard
            .as_mut()
            .ok_or(StoreError::Unavailable(sqlx::Error::PoolClosed))?;
        // Rolls back when dropped uncommitted (any `?` below).
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;

        let existing: HashSet<String> = {
            let mut stmt = tx.prepare_cached(sqlite::STORED_IDS_SQL)?;
            stmt.query_map([sqlite::ids_of(rows)], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        let duplicates = sqlite::drop_stored(rows, &existing);
        if rows.is_empty() {
            tx.commit()?;
            return Ok(AppendReport {
                inserted: 0,
                duplicates,
                local_only: 0,
            });
        }

        let mut tails: HashMap<String, String> = {
            let mut stmt = tx.prepare_cached(sqlite::CHAIN_TAILS_SQL)?;
            let pairs = stmt.query_map([sqlite::chain_keys_of(rows)], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
            })?;
            let mut tails = HashMap::new();
            for pair in pairs {
                if let (key, Some(hash)) = pair? {
                    tails.insert(key, hash);
                }
            }
            tails
        };
        super::chain_rows(hasher, &mut tails, rows);

        let mut rest: &[RawEventRow] = rows;
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
                bind(&mut stmt, &r.event_id)?;
                bind(&mut stmt, &r.event_version)?;
                bind(&mut stmt, &r.event_timestamp)?;
                bind(&mut stmt, &r.event_type)?;
                bind(&mut stmt, &r.event_category)?;
                bind(&mut stmt, &r.event_action)?;
                bind(&mut stmt, &r.event_outcome)?;
                bind(&mut stmt, &r.actor_type)?;
                bind(&mut stmt, &r.actor_id)?;
                bind(&mut stmt, &r.resource_type)?;
                bind(&mut stmt, &r.resource_id)?;
                bind(&mut stmt, &r.correlation_id)?;
                bind(&mut stmt, &r.parent_event_id)?;
                bind(&mut stmt, &r.trace_id)?;
                bind(&mut stmt, &r.span_id)?;
                bind(&mut stmt, &r.namespace)?;
                bind(&mut stmt, &r.cluster_id)?;
                bind(&mut stmt, &r.fingerprint)?;
                bind(&mut stmt, &r.event_data)?;
                bind(&mut stmt, &r.severity)?;
                bind(&mut stmt, &r.duration_ms)?;
                bind(&mut stmt, &r.error_code)?;
                bind(&mut stmt, &r.error_message)?;
                bind(&mut stmt, &r.event_hash)?;
                bind(&mut stmt, &r.previous_event_hash)?;
                bind(&mut stmt, &r.hash_algorithm)?;
            }
            stmt.raw_execute()?;
            rest = tail;
        }
        tx.commit()?;
        Ok(AppendReport {
            inserted: rows.len() as u64,
            duplicates,
            local_only: 0,
        })
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
