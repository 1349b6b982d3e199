-- namegate audit store, SQLite (contract §8): the same columns as the PostgreSQL schema. Timestamps are
-- TEXT in the fixed-width form YYYY-MM-DDTHH:MM:SS.ffffffZ (sorts chronologically), UUIDs lowercase
-- hyphenated TEXT, event_data JSON TEXT. See docs/audit.md.

CREATE TABLE audit_events (
    -- AUTOINCREMENT: a seq is never reused, so it is monotonically increasing for the store's lifetime.
    seq                   INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id              TEXT    NOT NULL UNIQUE,
    event_version         TEXT    NOT NULL,
    event_timestamp       TEXT    NOT NULL,
    event_type            TEXT    NOT NULL,
    event_category        TEXT    NOT NULL,
    event_action          TEXT    NOT NULL,
    event_outcome         TEXT    NOT NULL,
    actor_type            TEXT,
    actor_id              TEXT,
    resource_type         TEXT,
    resource_id           TEXT,
    correlation_id        TEXT    NOT NULL,
    legacy_correlation_id TEXT,
    parent_event_id       TEXT,
    trace_id              TEXT,
    span_id               TEXT,
    namespace             TEXT,
    cluster_id            TEXT,
    fingerprint           TEXT,
    event_data            TEXT    NOT NULL CHECK (json_valid(event_data)),
    severity              TEXT,
    duration_ms           INTEGER,
    error_code            TEXT,
    error_message         TEXT,
    event_hash            TEXT    NOT NULL,
    previous_event_hash   TEXT,
    hash_algorithm        TEXT    NOT NULL
) STRICT;

CREATE INDEX audit_events_correlation_ts ON audit_events (correlation_id, event_timestamp);
CREATE INDEX audit_events_fingerprint_ts ON audit_events (fingerprint, event_timestamp);
CREATE INDEX audit_events_legacy_correlation ON audit_events (legacy_correlation_id)
    WHERE legacy_correlation_id IS NOT NULL;
CREATE INDEX audit_events_correlation_seq ON audit_events (correlation_id, seq);

-- The migration guard. SQLite has no session variables, so the one-shot correlation-ID migration opens
-- a write transaction, inserts the single row here, rewrites audit rows, deletes the row and commits:
-- SQLite has one writer at a time, so nobody else ever observes the guard held.
CREATE TABLE audit_migration_guard (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    holder      TEXT NOT NULL,
    acquired_at TEXT NOT NULL
) STRICT;

-- Append-only unless the guard is held. Anyone who can write the file can drop these triggers; the
-- chain (and, against that, the HMAC key) is what detects such a rewrite.
CREATE TRIGGER audit_events_refuse_update BEFORE UPDATE ON audit_events
WHEN NOT EXISTS (SELECT 1 FROM audit_migration_guard)
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused');
END;

CREATE TRIGGER audit_events_refuse_delete BEFORE DELETE ON audit_events
WHEN NOT EXISTS (SELECT 1 FROM audit_migration_guard)
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused');
END;
