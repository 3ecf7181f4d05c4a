-- Ordered relays (plt-outbox) read a topic's rows in id order: this index serves the claim
-- without sorting the whole backlog.
CREATE INDEX outbox_order ON outbox (topic, id);
