-- The inbox (plt-events); see the PostgreSQL migration.
CREATE TABLE inbox (
    consumer   TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    handled_at TEXT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

CREATE INDEX inbox_handled_at ON inbox (handled_at);
