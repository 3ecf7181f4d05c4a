-- __name__ (runs with search_path set to the service's schema).
CREATE TABLE __name__ (
    id         UUID PRIMARY KEY,
    owner_id   UUID NOT NULL,
    title      TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
-- Ids are UUIDv7 (time-ordered): a user's __name__ page by id.
CREATE INDEX __name___owner ON __name__ (owner_id, id);
