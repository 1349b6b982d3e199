-- namegate audit store, SQLite: drop the (fingerprint, event_timestamp) index, which no query of
-- namegate's uses. Every append paid for it (one more index B-tree insert per event). See
-- docs/decisions/0003-sqlite-drops-unused-index.md.
DROP INDEX IF EXISTS audit_events_fingerprint_ts;
