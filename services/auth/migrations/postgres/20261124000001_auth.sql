-- Auth: signing keys, refresh-token families, and the access-token denylist. Runs with
-- search_path set to the service's schema (auth).

-- Signing keys and their lifecycle: next (published, not yet signing) -> active (signing)
-- -> retiring (published until every token it signed has expired) -> removed (row deleted).
CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY,
    state          TEXT NOT NULL CHECK (state IN ('next', 'active', 'retiring')),
    public_x       TEXT NOT NULL,
    -- XChaCha20-Poly1305(nonce || ciphertext) of the Ed25519 seed, under auth.keys.encryption_key
    encrypted_seed BYTEA NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    activated_at   TIMESTAMPTZ,
    retired_at     TIMESTAMPTZ,
    remove_after   TIMESTAMPTZ
);
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (state) WHERE state = 'active';
CREATE UNIQUE INDEX signing_keys_one_next ON signing_keys (state) WHERE state = 'next';

-- One family per sign-in; every refresh token descends from its sign-in.
CREATE TABLE token_families (
    id            UUID PRIMARY KEY,
    user_id       UUID NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    last_used_at  TIMESTAMPTZ NOT NULL,
    revoked_at    TIMESTAMPTZ,
    revoke_reason TEXT
);
CREATE INDEX token_families_user ON token_families (user_id);

-- Refresh tokens, stored as SHA-256 hashes. A spent token points to its successor; for the
-- short reuse grace window the successor itself is kept sealed so a client whose answer was
-- lost can get the same successor again.
CREATE TABLE refresh_tokens (
    token_hash       BYTEA PRIMARY KEY,
    family_id        UUID NOT NULL REFERENCES token_families (id) ON DELETE CASCADE,
    created_at       TIMESTAMPTZ NOT NULL,
    spent_at         TIMESTAMPTZ,
    successor_hash   BYTEA,
    successor_sealed BYTEA
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

-- Access tokens revoked before their expiry (logout), by jti.
CREATE TABLE revoked_access_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at TIMESTAMPTZ NOT NULL
);
