-- kubernaut DataStorage's `audit_events` as effective after its migrations 001–017, written from the
-- facts recorded in docs/migration.md ("The DataStorage database"). Used by the fixture generator and
-- the tests; the migration itself never creates or alters this table. Partitions are added by
-- `fixture::create_partition` (monthly, `audit_events_YYYY_MM`, no DEFAULT partition).
-- `audit_event_lock_id` uses the built-in sha256() where kubernaut uses pgcrypto's digest(): same value.

CREATE TABLE audit_events (
    event_id uuid NOT NULL DEFAULT gen_random_uuid(),
    event_version varchar(10) NOT NULL DEFAULT '1.0',
    event_timestamp timestamptz NOT NULL DEFAULT now(),
    event_date date NOT NULL,
    event_type varchar(100) NOT NULL,
    event_category varchar(50) NOT NULL,
    event_action varchar(50) NOT NULL,
    event_outcome varchar(20) NOT NULL,
    actor_type varchar(50) NOT NULL,
    actor_id varchar(255) NOT NULL,
    actor_ip inet,
    resource_type varchar(100) NOT NULL,
    resource_id varchar(255) NOT NULL,
    resource_name varchar(255),
    correlation_id varchar(255) NOT NULL,
    parent_event_id uuid,
    parent_event_date date,
    trace_id varchar(255),
    span_id varchar(255),
    namespace varchar(253),
    cluster_id varchar(255),
    event_data jsonb NOT NULL,
    event_metadata jsonb,
    severity varchar(20),
    duration_ms integer,
    error_code varchar(50),
    error_message text,
    retention_days integer DEFAULT 2555,
    is_sensitive boolean DEFAULT false,
    event_hash text,
    previous_event_hash text,
    legal_hold boolean DEFAULT false,
    legal_hold_reason text,
    legal_hold_placed_by text,
    legal_hold_placed_at timestamptz,
    hash_algorithm varchar(20) NOT NULL DEFAULT 'sha256-unkeyed',
    PRIMARY KEY (event_id, event_date),
    CHECK (retention_days >= 1 AND retention_days <= 2555)
) PARTITION BY RANGE (event_date);

CREATE INDEX idx_audit_events_event_timestamp ON audit_events (event_timestamp DESC);
CREATE INDEX idx_audit_events_correlation_id ON audit_events (correlation_id, event_timestamp DESC);
CREATE INDEX idx_audit_events_event_type ON audit_events (event_type, event_timestamp DESC);
CREATE INDEX idx_audit_events_resource ON audit_events (resource_type, resource_id, event_timestamp DESC);
CREATE INDEX idx_audit_events_actor ON audit_events (actor_type, actor_id, event_timestamp DESC);
CREATE INDEX idx_audit_events_outcome ON audit_events (event_outcome, event_timestamp DESC);
CREATE INDEX idx_audit_events_event_date ON audit_events (event_date);
CREATE INDEX idx_audit_events_event_data_gin ON audit_events USING GIN (event_data);
CREATE INDEX idx_audit_events_hash ON audit_events (event_hash) WHERE event_hash IS NOT NULL;
CREATE INDEX idx_audit_events_legal_hold ON audit_events (legal_hold) WHERE legal_hold = TRUE;
CREATE INDEX idx_audit_events_target_resource ON audit_events ((event_data->>'target_resource'), event_timestamp DESC)
    WHERE event_type IN ('remediation.workflow_created', 'effectiveness.assessment.completed');
CREATE INDEX idx_audit_events_pre_remediation_spec_hash ON audit_events ((event_data->>'pre_remediation_spec_hash'))
    WHERE event_data->>'pre_remediation_spec_hash' IS NOT NULL;
CREATE INDEX idx_audit_events_post_remediation_spec_hash ON audit_events ((event_data->>'post_remediation_spec_hash'))
    WHERE event_data->>'post_remediation_spec_hash' IS NOT NULL;
CREATE INDEX idx_audit_events_effectiveness_correlation ON audit_events (correlation_id, event_timestamp ASC)
    WHERE event_category = 'effectiveness';
CREATE INDEX idx_audit_events_cluster_id ON audit_events (cluster_id) WHERE cluster_id IS NOT NULL;

CREATE FUNCTION set_audit_event_date() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.event_date := (NEW.event_timestamp AT TIME ZONE 'UTC')::date;
    RETURN NEW;
END $$;
CREATE TRIGGER trg_set_audit_event_date BEFORE INSERT ON audit_events
    FOR EACH ROW EXECUTE FUNCTION set_audit_event_date();

CREATE FUNCTION prevent_audit_event_tampering() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.event_data IS DISTINCT FROM NEW.event_data THEN
        RAISE EXCEPTION 'AU-9: event_data cannot be modified after creation' USING ERRCODE = '23514';
    ELSIF OLD.event_type IS DISTINCT FROM NEW.event_type THEN
        RAISE EXCEPTION 'AU-9: event_type cannot be modified after creation' USING ERRCODE = '23514';
    ELSIF OLD.event_outcome IS DISTINCT FROM NEW.event_outcome THEN
        RAISE EXCEPTION 'AU-9: event_outcome cannot be modified after creation' USING ERRCODE = '23514';
    ELSIF OLD.actor_id IS DISTINCT FROM NEW.actor_id THEN
        RAISE EXCEPTION 'AU-9: actor_id cannot be modified after creation' USING ERRCODE = '23514';
    ELSIF OLD.actor_type IS DISTINCT FROM NEW.actor_type THEN
        RAISE EXCEPTION 'AU-9: actor_type cannot be modified after creation' USING ERRCODE = '23514';
    ELSIF OLD.correlation_id IS DISTINCT FROM NEW.correlation_id THEN
        RAISE EXCEPTION 'AU-9: correlation_id cannot be modified after creation' USING ERRCODE = '23514';
    ELSIF OLD.event_action IS DISTINCT FROM NEW.event_action THEN
        RAISE EXCEPTION 'AU-9: event_action cannot be modified after creation' USING ERRCODE = '23514';
    ELSIF OLD.resource_type IS DISTINCT FROM NEW.resource_type THEN
        RAISE EXCEPTION 'AU-9: resource_type cannot be modified after creation' USING ERRCODE = '23514';
    ELSIF OLD.resource_id IS DISTINCT FROM NEW.resource_id THEN
        RAISE EXCEPTION 'AU-9: resource_id cannot be modified after creation' USING ERRCODE = '23514';
    ELSIF OLD.event_category IS DISTINCT FROM NEW.event_category THEN
        RAISE EXCEPTION 'AU-9: event_category cannot be modified after creation' USING ERRCODE = '23514';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER enforce_audit_event_immutability BEFORE UPDATE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION prevent_audit_event_tampering();

CREATE FUNCTION prevent_legal_hold_removal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.legal_hold = TRUE AND NEW.legal_hold = FALSE
       AND coalesce(current_setting('kubernaut.legal_hold_release', true), '') <> 'authorized' THEN
        RAISE EXCEPTION 'SOC2 CC6.1: legal_hold cannot be removed via UPDATE' USING ERRCODE = '23514';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER enforce_legal_hold_immutability BEFORE UPDATE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION prevent_legal_hold_removal();

CREATE FUNCTION prevent_legal_hold_deletion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.legal_hold = TRUE THEN
        RAISE EXCEPTION 'Cannot delete audit event with legal hold' USING ERRCODE = '23503';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER enforce_legal_hold BEFORE DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION prevent_legal_hold_deletion();

CREATE FUNCTION prevent_parent_event_deletion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM audit_events
               WHERE parent_event_id = OLD.event_id AND parent_event_date = OLD.event_date) THEN
        RAISE EXCEPTION 'Cannot delete a parent audit event' USING ERRCODE = '23503';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER enforce_parent_immutability BEFORE DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION prevent_parent_event_deletion();

CREATE FUNCTION audit_event_lock_id(text) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT ('x' || encode(substring(sha256(convert_to($1, 'UTF8')) FROM 1 FOR 8), 'hex'))::bit(64)::bigint
$$;
