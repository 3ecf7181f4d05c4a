-- Identity: users and their single-use tokens (SQLite: UUIDs as 16-byte blobs, times as
-- RFC 3339 text, as sqlx encodes them).
CREATE TABLE users (
    id               BLOB PRIMARY KEY,
    email            TEXT NOT NULL,
    email_normalized TEXT NOT NULL UNIQUE,
    display_name     TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    email_verified   BOOLEAN NOT NULL DEFAULT FALSE,
    password_hash    TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);

CREATE TABLE user_tokens (
    token_hash BLOB PRIMARY KEY,
    user_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    TEXT NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    email      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at    TEXT
);
CREATE INDEX user_tokens_user_id ON user_tokens (user_id, purpose);
