-- Auth (SQLite): the same tables as on PostgreSQL; UUIDs as blobs, times as RFC 3339 text.
CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY,
    state          TEXT NOT NULL CHECK (state IN ('next', 'active', 'retiring')),
    public_x       TEXT NOT NULL,
    encrypted_seed BLOB NOT NULL,
    created_at     TEXT NOT NULL,
    activated_at   TEXT,
    retired_at     TEXT,
    remove_after   TEXT
);
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (state) WHERE state = 'active';
CREATE UNIQUE INDEX signing_keys_one_next ON signing_keys (state) WHERE state = 'next';

CREATE TABLE token_families (
    id            BLOB PRIMARY KEY,
    user_id       BLOB NOT NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    last_used_at  TEXT NOT NULL,
    revoked_at    TEXT,
    revoke_reason TEXT
);
CREATE INDEX token_families_user ON token_families (user_id);

CREATE TABLE refresh_tokens (
    token_hash       BLOB PRIMARY KEY,
    family_id        BLOB NOT NULL REFERENCES token_families (id) ON DELETE CASCADE,
    created_at       TEXT NOT NULL,
    spent_at         TEXT,
    successor_hash   BLOB,
    successor_sealed BLOB
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE revoked_access_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at TEXT NOT NULL
);
