-- Sessions and single access tokens ended before their expiry (see the PostgreSQL migration).
CREATE TABLE revocations (
    kind       TEXT NOT NULL CHECK (kind IN ('session', 'token')),
    id         TEXT NOT NULL,
    revoked_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX revocations_revoked_at ON revocations (revoked_at);
