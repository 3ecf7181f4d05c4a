-- See the PostgreSQL migration.
ALTER TABLE outbox ADD COLUMN parked BOOLEAN NOT NULL DEFAULT FALSE;
