-- The transactional outbox (plt-outbox); see the PostgreSQL migration. payload is JSON
-- text; times are RFC 3339 text as sqlx encodes them (sorting in time order).
CREATE TABLE outbox (
    id              BLOB PRIMARY KEY,
    topic           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT
);

CREATE INDEX outbox_due ON outbox (topic, next_attempt_at);
