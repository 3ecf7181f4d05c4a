-- blog (runs with search_path set to the service's schema).
CREATE TABLE posts (
    id           UUID PRIMARY KEY,
    author_id    UUID NOT NULL,
    -- draft, published or unpublished
    status       TEXT NOT NULL,
    slug         TEXT NOT NULL UNIQUE,
    title        TEXT NOT NULL,
    body         TEXT NOT NULL,
    -- ",tag1,tag2," (tags are a-z 0-9 -), so one tag matches with LIKE '%,tag,%'
    tags         TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    published_at TIMESTAMPTZ
);
-- Ids are UUIDv7 (time-ordered): pages newest first by id.
CREATE INDEX posts_status ON posts (status, id);
CREATE INDEX posts_author ON posts (author_id, id);

CREATE TABLE comments (
    id         UUID PRIMARY KEY,
    post_id    UUID NOT NULL,
    author_id  UUID NOT NULL,
    body       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX comments_post ON comments (post_id, id);

-- Attachments: the bytes in the blob store under blob_key.
CREATE TABLE attachments (
    post_id      UUID NOT NULL,
    name         TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size         BIGINT NOT NULL,
    blob_key     TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (post_id, name)
);
