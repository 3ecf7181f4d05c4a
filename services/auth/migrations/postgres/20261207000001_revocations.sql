-- Sessions (kind 'session': every access token of a refresh-token family) and single access
-- tokens (kind 'token', by jti) ended before their expiry, published to every verifier
-- (GET /v1/auth/revocations) until expires_at, when no token they cover is valid anyway.
CREATE TABLE revocations (
    kind       TEXT NOT NULL CHECK (kind IN ('session', 'token')),
    id         TEXT NOT NULL,
    revoked_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX revocations_revoked_at ON revocations (revoked_at);
