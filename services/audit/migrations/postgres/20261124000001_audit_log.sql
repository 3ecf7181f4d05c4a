-- Audit: the append-only, hash-chained log. Runs with search_path set to the service's schema
-- (audit), so no schema is named here.
--
-- Each row's hash = SHA-256(prev_hash || canonical form of the row) in lower-case hex, where
-- prev_hash is the hash of the row with the previous sequence (64 zeros for sequence 1).
-- metadata is kept as the exact canonical JSON text that was hashed (not JSONB, which would
-- rewrite it), so verification can recompute every hash from the stored columns.
CREATE TABLE audit_log (
    sequence    BIGINT PRIMARY KEY CHECK (sequence > 0),
    recorded_at TIMESTAMPTZ NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    resource    TEXT NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    metadata    TEXT NOT NULL,
    source_ip   TEXT NOT NULL,
    user_agent  TEXT NOT NULL,
    trace_id    TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);

-- Query: newest first by (recorded_at, sequence), optionally filtered by one field.
CREATE INDEX audit_log_time ON audit_log (recorded_at, sequence);
CREATE INDEX audit_log_actor ON audit_log (actor, recorded_at, sequence);
CREATE INDEX audit_log_action ON audit_log (action, recorded_at, sequence);
CREATE INDEX audit_log_resource ON audit_log (resource, recorded_at, sequence);
CREATE INDEX audit_log_outcome ON audit_log (outcome, recorded_at, sequence);

-- Append-only: every UPDATE, DELETE and TRUNCATE fails. (A superuser can still disable
-- triggers; that is what verification detects.)
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_log_no_update_or_delete
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
