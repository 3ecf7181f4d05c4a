-- Authz (SQLite): the same tables as on PostgreSQL; UUIDs as blobs, times as RFC 3339 text.
CREATE TABLE permissions (
    name        TEXT PRIMARY KEY,
    service     TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL
);

CREATE TABLE roles (
    name            TEXT PRIMARY KEY,
    description     TEXT NOT NULL DEFAULT '',
    built_in        BOOLEAN NOT NULL DEFAULT FALSE,
    all_permissions BOOLEAN NOT NULL DEFAULT FALSE,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);

CREATE TABLE role_permissions (
    role       TEXT NOT NULL REFERENCES roles (name) ON DELETE CASCADE,
    permission TEXT NOT NULL REFERENCES permissions (name),
    PRIMARY KEY (role, permission)
);

CREATE TABLE user_roles (
    user_id    BLOB NOT NULL,
    role       TEXT NOT NULL REFERENCES roles (name) ON DELETE CASCADE,
    granted_at TEXT NOT NULL,
    granted_by TEXT NOT NULL,
    PRIMARY KEY (user_id, role)
);
CREATE INDEX user_roles_role ON user_roles (role);

CREATE TABLE policy_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO policy_version (id, version) VALUES (1, 1);
