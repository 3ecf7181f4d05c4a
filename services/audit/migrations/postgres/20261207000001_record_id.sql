-- Record ids (issue 15): a caller may give each entry an id (its outbox message id); the log
-- holds each id at most once, so a repeated delivery writes no second entry. Entries
-- without an id (NULL) are not constrained. The id is part of the hashed form when set.
ALTER TABLE audit_log ADD COLUMN record_id UUID;
CREATE UNIQUE INDEX audit_log_record_id ON audit_log (record_id);
