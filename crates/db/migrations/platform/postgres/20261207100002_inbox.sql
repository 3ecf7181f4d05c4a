-- The inbox (plt-events): ids of the events a consumer has applied, written in the same
-- transaction as the effect, so that a redelivered event changes nothing twice.
CREATE TABLE inbox (
    consumer   TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    handled_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

CREATE INDEX inbox_handled_at ON inbox (handled_at);
