-- Audit: the append-only, hash-chained log (see the PostgreSQL migration for the chain).
-- SQLite keeps times as RFC 3339 text as sqlx encodes them (UTC, "+00:00", 0, 3 or 6
-- fraction digits), which sorts in time order, so the same range and keyset SQL works.
CREATE TABLE audit_log (
    sequence    INTEGER PRIMARY KEY CHECK (sequence > 0),
    recorded_at TEXT NOT NULL,
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

CREATE INDEX audit_log_time ON audit_log (recorded_at, sequence);
CREATE INDEX audit_log_actor ON audit_log (actor, recorded_at, sequence);
CREATE INDEX audit_log_action ON audit_log (action, recorded_at, sequence);
CREATE INDEX audit_log_resource ON audit_log (resource, recorded_at, sequence);
CREATE INDEX audit_log_outcome ON audit_log (outcome, recorded_at, sequence);

-- Append-only. (SQLite has no TRUNCATE; DELETE without WHERE fires this trigger too.)
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE is not allowed');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: DELETE is not allowed');
END;
