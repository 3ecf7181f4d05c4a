-- Resource-level permissions: grants on one object (post:<id>), against broken object-level
-- authorization. A change bumps policy_version like every other policy change.

-- The relations on one resource that imply a declared permission there (declared by the
-- permission's service: blog.posts.edit <- owner, editor).
CREATE TABLE permission_relations (
    permission TEXT NOT NULL REFERENCES permissions (name),
    relation   TEXT NOT NULL,
    PRIMARY KEY (permission, relation)
);

-- A user's grant on one resource: a relation (owner, editor, viewer, ...) or a declared
-- permission.
CREATE TABLE resource_grants (
    resource   TEXT NOT NULL,
    user_id    UUID NOT NULL,
    grant_name TEXT NOT NULL,
    granted_at TIMESTAMPTZ NOT NULL,
    -- A user id, or the service that asked.
    granted_by TEXT NOT NULL,
    PRIMARY KEY (resource, user_id, grant_name)
);
CREATE INDEX resource_grants_user ON resource_grants (user_id, resource);
