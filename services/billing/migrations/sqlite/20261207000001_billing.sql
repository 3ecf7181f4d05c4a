-- billing (SQLite: UUIDs as 16-byte blobs, times as RFC 3339 text, as sqlx encodes them;
-- amounts are INTEGER minor units; line items are JSON text).
CREATE TABLE plans (
    id             BLOB PRIMARY KEY,
    code           TEXT NOT NULL UNIQUE,
    name           TEXT NOT NULL,
    price_minor    INTEGER NOT NULL CHECK (price_minor > 0),
    currency       TEXT NOT NULL,
    period_unit    TEXT NOT NULL,
    metered_json   TEXT NOT NULL,
    active         INTEGER NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

-- plan_id: the plan now; period_plan_id: the plan at the period's start (its price is the
-- period's base line; changes since are in pending_json as proration items). version grows
-- with every change: writers update only the version they read.
CREATE TABLE subscriptions (
    id                   BLOB PRIMARY KEY,
    user_id              BLOB NOT NULL,
    plan_id              BLOB NOT NULL REFERENCES plans (id),
    period_plan_id       BLOB NOT NULL REFERENCES plans (id),
    currency             TEXT NOT NULL,
    status               TEXT NOT NULL,
    period_start         TEXT NOT NULL,
    period_end           TEXT NOT NULL,
    cancel_at_period_end INTEGER NOT NULL,
    pending_json         TEXT NOT NULL,
    version              INTEGER NOT NULL,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);
-- At most one active subscription per user.
CREATE UNIQUE INDEX subscriptions_one_active ON subscriptions (user_id) WHERE status = 'active';
CREATE INDEX subscriptions_due ON subscriptions (status, period_end);

CREATE TABLE usage_records (
    id              BLOB PRIMARY KEY,
    subscription_id BLOB NOT NULL REFERENCES subscriptions (id),
    metric          TEXT NOT NULL,
    quantity        INTEGER NOT NULL CHECK (quantity > 0),
    recorded_at     TEXT NOT NULL,
    invoice_id      BLOB
);
CREATE INDEX usage_records_open ON usage_records (subscription_id, invoice_id);

-- One invoice per subscription and period, whichever instance issues it.
CREATE TABLE invoices (
    id              BLOB PRIMARY KEY,
    user_id         BLOB NOT NULL,
    subscription_id BLOB NOT NULL REFERENCES subscriptions (id),
    period_start    TEXT NOT NULL,
    period_end      TEXT NOT NULL,
    currency        TEXT NOT NULL,
    items_json      TEXT NOT NULL,
    total_minor     INTEGER NOT NULL,
    status          TEXT NOT NULL,
    issued_at       TEXT NOT NULL,
    paid_at         TEXT,
    voided_at       TEXT,
    UNIQUE (subscription_id, period_start)
);
CREATE INDEX invoices_user ON invoices (user_id, id);
