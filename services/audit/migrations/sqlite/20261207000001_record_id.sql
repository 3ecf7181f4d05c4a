-- Record ids: see the PostgreSQL migration. SQLite's unique index admits many NULLs too.
ALTER TABLE audit_log ADD COLUMN record_id BLOB;
CREATE UNIQUE INDEX audit_log_record_id ON audit_log (record_id);
