-- __name__ (SQLite: UUIDs as 16-byte blobs, times as RFC 3339 text, as sqlx encodes them).
CREATE TABLE __name__ (
    id         BLOB PRIMARY KEY,
    owner_id   BLOB NOT NULL,
    title      TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX __name___owner ON __name__ (owner_id, id);
