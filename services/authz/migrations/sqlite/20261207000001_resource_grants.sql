-- Resource-level permissions (SQLite): the same tables as on PostgreSQL.
CREATE TABLE permission_relations (
    permission TEXT NOT NULL REFERENCES permissions (name),
    relation   TEXT NOT NULL,
    PRIMARY KEY (permission, relation)
);

CREATE TABLE resource_grants (
    resource   TEXT NOT NULL,
    user_id    BLOB NOT NULL,
    grant_name TEXT NOT NULL,
    granted_at TEXT NOT NULL,
    granted_by TEXT NOT NULL,
    PRIMARY KEY (resource, user_id, grant_name)
);
CREATE INDEX resource_grants_user ON resource_grants (user_id, resource);
