-- notes (runs with search_path set to the service's schema).
CREATE TABLE notes (
    id         UUID PRIMARY KEY,
    owner_id   UUID NOT NULL,
    title      TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
-- Ids are UUIDv7 (time-ordered): a user's notes page by id.
CREATE INDEX notes_owner ON notes (owner_id, id);
