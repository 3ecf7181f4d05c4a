-- Authz: declared permissions, roles, role contents, user-role grants and the policy
-- version. Runs with search_path set to the service's schema (authz).

-- Permissions declared by services (service.resource.action). Never deleted: roles and
-- callers refer to them by name.
CREATE TABLE permissions (
    name        TEXT PRIMARY KEY,
    service     TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL
);

-- Roles. all_permissions marks the built-in admin: it holds every declared permission,
-- including ones declared after it was created, and has no rows in role_permissions.
CREATE TABLE roles (
    name            TEXT PRIMARY KEY,
    description     TEXT NOT NULL DEFAULT '',
    built_in        BOOLEAN NOT NULL DEFAULT FALSE,
    all_permissions BOOLEAN NOT NULL DEFAULT FALSE,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE role_permissions (
    role       TEXT NOT NULL REFERENCES roles (name) ON DELETE CASCADE,
    permission TEXT NOT NULL REFERENCES permissions (name),
    PRIMARY KEY (role, permission)
);

CREATE TABLE user_roles (
    user_id    UUID NOT NULL,
    role       TEXT NOT NULL REFERENCES roles (name) ON DELETE CASCADE,
    granted_at TIMESTAMPTZ NOT NULL,
    -- Who granted it: a user id, or "authz-service" (bootstrap), "authz-service-cli".
    granted_by TEXT NOT NULL,
    PRIMARY KEY (user_id, role)
);
CREATE INDEX user_roles_role ON user_roles (role);

-- One row: bumped in the same transaction as every change of the tables above. Each
-- instance polls it (at half the staleness bound) and drops its cached decisions when it
-- moved.
CREATE TABLE policy_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO policy_version (id, version) VALUES (1, 1);
