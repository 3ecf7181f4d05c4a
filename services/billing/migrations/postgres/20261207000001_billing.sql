-- billing (runs with search_path set to the service's schema). Amounts are BIGINT minor
-- units; line items are JSON text (written and read only by the service).
CREATE TABLE plans (
    id             UUID PRIMARY KEY,
    code           TEXT NOT NULL UNIQUE,
    name           TEXT NOT NULL,
    price_minor    BIGINT NOT NULL CHECK (price_minor > 0),
    currency       TEXT NOT NULL,
    period_unit    TEXT NOT NULL,
    metered_json   TEXT NOT NULL,
    active         BOOLEAN NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);

-- plan_id: the plan now; period_plan_id: the plan at the period's start (its price is the
-- period's base line; changes since are in pending_json as proration items). version grows
-- with every change: writers update only the version they read.
CREATE TABLE subscriptions (
    id                   UUID PRIMARY KEY,
    user_id              UUID NOT NULL,
    plan_id              UUID NOT NULL REFERENCES plans (id),
    period_plan_id       UUID NOT NULL REFERENCES plans (id),
    currency             TEXT NOT NULL,
    status               TEXT NOT NULL,
    period_start         TIMESTAMPTZ NOT NULL,
    period_end           TIMESTAMPTZ NOT NULL,
    cancel_at_period_end BOOLEAN NOT NULL,
    pending_json         TEXT NOT NULL,
    version              BIGINT NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL
);
-- At most one active subscription per user.
CREATE UNIQUE INDEX subscriptions_one_active ON subscriptions (user_id) WHERE status = 'active';
CREATE INDEX subscriptions_due ON subscriptions (status, period_end);

CREATE TABLE usage_records (
    id              UUID PRIMARY KEY,
    subscription_id UUID NOT NULL REFERENCES subscriptions (id),
    metric          TEXT NOT NULL,
    quantity        BIGINT NOT NULL CHECK (quantity > 0),
    recorded_at     TIMESTAMPTZ NOT NULL,
    invoice_id      UUID
);
CREATE INDEX usage_records_open ON usage_records (subscription_id, invoice_id);

-- One invoice per subscription and period, whichever instance issues it.
CREATE TABLE invoices (
    id              UUID PRIMARY KEY,
    user_id         UUID NOT NULL,
    subscription_id UUID NOT NULL REFERENCES subscriptions (id),
    period_start    TIMESTAMPTZ NOT NULL,
    period_end      TIMESTAMPTZ NOT NULL,
    currency        TEXT NOT NULL,
    items_json      TEXT NOT NULL,
    total_minor     BIGINT NOT NULL,
    status          TEXT NOT NULL,
    issued_at       TIMESTAMPTZ NOT NULL,
    paid_at         TIMESTAMPTZ,
    voided_at       TIMESTAMPTZ,
    UNIQUE (subscription_id, period_start)
);
CREATE INDEX invoices_user ON invoices (user_id, id);
