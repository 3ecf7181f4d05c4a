-- blog (SQLite): the same tables as on PostgreSQL; UUIDs as blobs, times as RFC 3339 text.
CREATE TABLE posts (
    id           BLOB PRIMARY KEY,
    author_id    BLOB NOT NULL,
    -- draft, published or unpublished
    status       TEXT NOT NULL,
    slug         TEXT NOT NULL UNIQUE,
    title        TEXT NOT NULL,
    body         TEXT NOT NULL,
    -- ",tag1,tag2," (tags are a-z 0-9 -), so one tag matches with LIKE '%,tag,%'
    tags         TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    published_at TEXT
);
-- Ids are BLOBv7 (time-ordered): pages newest first by id.
CREATE INDEX posts_status ON posts (status, id);
CREATE INDEX posts_author ON posts (author_id, id);

CREATE TABLE comments (
    id         BLOB PRIMARY KEY,
    post_id    BLOB NOT NULL,
    author_id  BLOB NOT NULL,
    body       TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX comments_post ON comments (post_id, id);

-- Attachments: the bytes in the blob store under blob_key.
CREATE TABLE attachments (
    post_id      BLOB NOT NULL,
    name         TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size         BIGINT NOT NULL,
    blob_key     TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (post_id, name)
);
