-- The transactional outbox (plt-outbox): messages a service commits in the same transaction
-- as the change they describe, delivered by a relay to their destination (topic) at least
-- once, then deleted. Runs with search_path set to the service's schema.
--
-- id is a UUID v7 (creation order) and is also the message's idempotency id at the
-- destination (the audit record id). attempts counts delivery attempts; next_attempt_at is
-- when a relay may claim the row (claiming leases it by moving next_attempt_at ahead).
CREATE TABLE outbox (
    id              UUID PRIMARY KEY,
    topic           TEXT NOT NULL,
    payload         JSONB NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_error      TEXT
);

CREATE INDEX outbox_due ON outbox (topic, next_attempt_at);
