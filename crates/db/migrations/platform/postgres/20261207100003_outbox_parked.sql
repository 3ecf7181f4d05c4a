-- A message its destination refused (plt-outbox): kept and retried after the longest
-- back-off, but an ordered relay does not hold the messages behind it for it.
ALTER TABLE outbox ADD COLUMN parked BOOLEAN NOT NULL DEFAULT FALSE;
