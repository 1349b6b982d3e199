//! `namegate-bench store-cost --variants floor,…`: the least CPU per event that durably appending the
//! audit store's events to a hash-chained SQLite table costs on this machine (docs/benchmarks.md,
//! "The audit writer's CPU per event and its floor").
//!
//! The same events as the store's variants ([`super::storecost`]), appended from a thread named like
//! the gateway's writer, in transactions of one batch, to a fresh file with the store's durability
//! and page settings (WAL, `synchronous = FULL`, 16 KiB pages, a 16 MiB page cache, temporary data in
//! memory). Per event only what such an append cannot do without: the row's texts (event ID and
//! timestamp formatted into buffers, every other text bound from the event), its canonical form
//! written into one reused buffer, SHA-256 of the chain's previous hash and that text, and one
//! execution of one prepared single-row `INSERT`. Nothing else: no stored-ID check (no exactly-once
//! replay), chain tails kept in memory (one writer), no `CHECK`, no `AUTOINCREMENT`.
//!
//! Variants: `floor` (the table's rowid only, no secondary index), `floor-unique` (plus the
//! `UNIQUE (event_id)` that exactly-once replay needs), `floor-schema` (the store's own table and
//! indexes, i.e. the store's B-tree work with the floor's write path).

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use namegate::audit::AuditEvent;
use namegate::audit::chain::{self, CanonicalFields, ChainHasher, EVENT_VERSION, TimestampText};
use namegate::audit::event::CATEGORY;
use rusqlite::{Connection, params};

use super::storecost::{Run, event, fresh_db, on_writer_thread, thread_cpu_ns};

/// The columns, as the store's table has them (without its `CHECK` and `AUTOINCREMENT`).
const COLUMNS: &str = "seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL, event_version TEXT NOT NULL, \
     event_timestamp TEXT NOT NULL, event_type TEXT NOT NULL, event_category TEXT NOT NULL, \
     event_action TEXT NOT NULL, event_outcome TEXT NOT NULL, actor_type TEXT, actor_id TEXT, \
     resource_type TEXT, resource_id TEXT, correlation_id TEXT NOT NULL, legacy_correlation_id TEXT, \
     parent_event_id TEXT, trace_id TEXT, span_id TEXT, namespace TEXT, cluster_id TEXT, \
     fingerprint TEXT, event_data TEXT NOT NULL, severity TEXT, duration_ms INTEGER, \
     error_code TEXT, error_message TEXT, event_hash TEXT NOT NULL, previous_event_hash TEXT, \
     hash_algorithm TEXT NOT NULL";

/// The store's own schema (`gateway/migrations/sqlite/`), table and indexes.
const STORE_SCHEMA: [&str; 2] = [
    include_str!("../../gateway/migrations/sqlite/0001_audit_events.sql"),
    include_str!("../../gateway/migrations/sqlite/0002_drop_unused_index.sql"),
];

const INSERT: &str = "INSERT INTO audit_events (event_id, event_version, event_timestamp, \
     event_type, event_category, event_action, event_outcome, actor_type, actor_id, resource_type, \
     resource_id, correlation_id, parent_event_id, trace_id, span_id, namespace, cluster_id, \
     fingerprint, event_data, severity, duration_ms, error_code, error_message, event_hash, \
     previous_event_hash, hash_algorithm) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, \
     ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)";

pub fn is_floor(variant: &str) -> bool {
    matches!(variant, "floor" | "floor-unique" | "floor-schema")
}

fn schema(variant: &str) -> String {
    match variant {
        "floor" => format!("CREATE TABLE audit_events ({COLUMNS}) STRICT;"),
        "floor-unique" => format!(
            "CREATE TABLE audit_events ({COLUMNS}) STRICT; \
             CREATE UNIQUE INDEX audit_events_event_id ON audit_events (event_id);"
        ),
        _ => STORE_SCHEMA.concat(),
    }
}

fn open(path: &Path, variant: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "page_size", 16 * 1024)?;
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", -16 * 1024)?;
    // The store's schema declares the `json_valid` CHECK, which its writer does not evaluate.
    conn.pragma_update(None, "ignore_check_constraints", "ON")?;
    conn.execute_batch(&schema(variant))?;
    Ok(conn)
}

/// One batch in one transaction.
fn append(
    conn: &mut Connection,
    hasher: &ChainHasher,
    tails: &mut HashMap<String, String>,
    canonical: &mut String,
    events: &[AuditEvent],
) -> rusqlite::Result<()> {
    let algorithm = hasher.algorithm().as_str();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached(INSERT)?;
        let mut timestamp = TimestampText::default();
        let mut id = [0u8; 36];
        for ev in events {
            let id: &str = ev.event_id.hyphenated().encode_lower(&mut id);
            let timestamp = timestamp.set(ev.event_timestamp);
            canonical.clear();
            chain::write_canonical(canonical, &CanonicalFields::of_event(ev, id, timestamp));
            let previous = tails.get(&ev.correlation_id);
            let hash = hasher.hash(previous.map_or("", String::as_str), canonical);
            insert.execute(params![
                id,
                EVENT_VERSION,
                timestamp,
                ev.event_type.as_str(),
                CATEGORY,
                ev.event_type.action(),
                ev.event_outcome.as_str(),
                ev.actor_type,
                ev.actor_id,
                ev.resource_type,
                ev.resource_id,
                ev.correlation_id,
                None::<&str>,
                ev.trace_id,
                ev.span_id,
                ev.namespace,
                ev.cluster_id,
                ev.fingerprint,
                ev.event_data.as_str(),
                ev.severity,
                ev.duration_ms,
                ev.error_code,
                ev.error_message,
                hash,
                previous,
                algorithm,
            ])?;
            match tails.get_mut(&ev.correlation_id) {
                Some(tail) => *tail = hash,
                None => {
                    tails.insert(ev.correlation_id.clone(), hash);
                }
            }
        }
    }
    tx.commit()
}

/// One run of a floor `variant`, measured like the store's variants.
pub fn run(dir: &Path, variant: &str, events: u64, batch: usize) -> Result<Run, String> {
    let path = fresh_db(dir, variant);
    let variant = variant.to_owned();
    on_writer_thread(move || {
        let mut conn = open(&path, &variant).map_err(|e| e.to_string())?;
        let hasher = ChainHasher::default();
        let all: Vec<AuditEvent> = (0..events).map(|n| event(n, 64)).collect();
        let mut tails = HashMap::new();
        let mut canonical = String::new();
        let before = thread_cpu_ns();
        let started = Instant::now();
        for chunk in all.chunks(batch) {
            append(&mut conn, &hasher, &mut tails, &mut canonical, chunk)
                .map_err(|e| e.to_string())?;
        }
        let wall_s = started.elapsed().as_secs_f64();
        let after = thread_cpu_ns();
        conn.close().map_err(|(_, e)| e.to_string())?;
        Ok(Run::measured(variant, events, wall_s, &before, &after))
    })
}
