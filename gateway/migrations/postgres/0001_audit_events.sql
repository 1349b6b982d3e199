-- namegate audit store, PostgreSQL (contract §8). Column names follow kubernaut DataStorage's
-- audit_events where they overlap. See docs/audit.md.

CREATE TABLE audit_events (
    -- Store-local, monotonically increasing: stable ordering of a chain and the pagination cursor.
    seq                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id              UUID        NOT NULL UNIQUE,
    event_version         TEXT        NOT NULL,
    event_timestamp       TIMESTAMPTZ NOT NULL,
    event_type            TEXT        NOT NULL,
    event_category        TEXT        NOT NULL,
    event_action          TEXT        NOT NULL,
    event_outcome         TEXT        NOT NULL,
    actor_type            TEXT,
    actor_id              TEXT,
    resource_type         TEXT,
    resource_id           TEXT,
    correlation_id        TEXT        NOT NULL,
    -- The ID the row was written under, set only by the correlation-ID migration (§9).
    legacy_correlation_id TEXT,
    parent_event_id       UUID,
    trace_id              TEXT,
    span_id               TEXT,
    namespace             TEXT,
    cluster_id            TEXT,
    fingerprint           TEXT,
    -- json, not jsonb: the text is kept byte for byte, and the hash chain covers exactly that text
    -- (jsonb would reorder keys and reformat numbers). ->> still works for ad-hoc queries.
    event_data            JSON        NOT NULL,
    severity              TEXT,
    duration_ms           BIGINT,
    error_code            TEXT,
    error_message         TEXT,
    event_hash            TEXT        NOT NULL,
    previous_event_hash   TEXT,
    hash_algorithm        TEXT        NOT NULL
);

CREATE INDEX audit_events_correlation_ts ON audit_events (correlation_id, event_timestamp);
CREATE INDEX audit_events_fingerprint_ts ON audit_events (fingerprint, event_timestamp);
CREATE INDEX audit_events_legacy_correlation ON audit_events (legacy_correlation_id)
    WHERE legacy_correlation_id IS NOT NULL;
-- The chain tail read on every append: the newest row of one correlation ID.
CREATE INDEX audit_events_correlation_seq ON audit_events (correlation_id, seq);

-- Append-only. UPDATE, DELETE and TRUNCATE are refused unless the transaction has set
-- `SET LOCAL namegate.migration = 'on'`: the controlled path of the one-shot correlation-ID migration.
-- This guards against accidents and against roles that may write rows but not alter the table; the table
-- owner can always disable triggers, which is why the chain (and, against the owner, the HMAC key) exists.
CREATE FUNCTION namegate_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('namegate.migration', true) = 'on' THEN
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'only the correlation-ID migration may rewrite audit rows (SET LOCAL namegate.migration = ''on'')';
END;
$$;

CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION namegate_audit_append_only();

CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION namegate_audit_append_only();
