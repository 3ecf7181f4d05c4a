-- Identity: users and their single-use tokens. Runs with search_path set to the service's
-- schema (identity), so no schema is named here.
CREATE TABLE users (
    id               UUID PRIMARY KEY,
    email            TEXT NOT NULL,
    email_normalized TEXT NOT NULL UNIQUE,
    display_name     TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    email_verified   BOOLEAN NOT NULL DEFAULT FALSE,
    password_hash    TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);

-- Verification and password-reset tokens, stored as SHA-256 hashes of the secret sent by mail.
CREATE TABLE user_tokens (
    token_hash BYTEA PRIMARY KEY,
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    TEXT NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    -- the address the token was sent to: a verification token verifies only that address
    email      TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ
);
CREATE INDEX user_tokens_user_id ON user_tokens (user_id, purpose);
