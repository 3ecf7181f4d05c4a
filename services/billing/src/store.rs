//! Billing storage: [`BillingStore`] and its PostgreSQL and SQLite implementations, one SQL
//! text for both (numbered `$n` parameters work in both dialects) through one macro.
//!
//! Every change is one transaction holding the change, its audit record and its events
//! (the outbox messages given), and — for a request with an idempotency key — the request's
//! answer ([`Write::done`]): all of it commits or none of it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use plt_contracts::Error;
use plt_idempotency::Completion;
use plt_outbox::Message;
use plt_scheduler::Run;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PlanRecord {
    pub id: Uuid,
    pub code: String,
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
    pub period_unit: String,
    /// `[{"metric": …, "unit_price_minor": …}]`.
    pub metered_json: String,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SubscriptionRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub plan_id: Uuid,
    /// The plan at the start of the current period (its price is the period's base line).
    pub period_plan_id: Uuid,
    pub currency: String,
    /// `active` or `ended`.
    pub status: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub cancel_at_period_end: bool,
    /// Proration line items waiting for the period's invoice (JSON).
    pub pending_json: String,
    /// Grows with every change; writers update only the version they read.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UsageRow {
    pub id: Uuid,
    pub subscription_id: Uuid,
    pub metric: String,
    pub quantity: i64,
    pub recorded_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct InvoiceRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub subscription_id: Uuid,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub currency: String,
    pub items_json: String,
    pub total_minor: i64,
    /// `open`, `paid` or `void`.
    pub status: String,
    pub issued_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub voided_at: Option<DateTime<Utc>>,
}

/// What goes into a change's transaction besides the change.
#[derive(Default, Clone, Copy)]
pub struct Write<'a> {
    /// Its audit record and events (outbox messages).
    pub messages: &'a [Message],
    /// The idempotent request's answer, committed with the change.
    pub done: Option<&'a Completion>,
}

/// An invoice to issue: the invoice, the subscription after it (next period, or ended),
/// the usage it bills.
pub struct Issue<'a> {
    pub invoice: &'a InvoiceRecord,
    /// The subscription as it will be; written only if its version is still `expected`.
    pub next: &'a SubscriptionRecord,
    pub expected_version: i64,
    pub usage_ids: &'a [Uuid],
    pub messages: &'a [Message],
}

/// What became of an [`Issue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issued {
    /// Committed.
    Issued,
    /// Nothing written: the subscription changed since it was read, or the period's
    /// invoice exists already (another instance, an earlier run).
    Skipped,
    /// Nothing written: the scheduler's occurrence belongs to another instance now.
    LostFence,
}

#[async_trait]
pub trait BillingStore: Send + Sync + 'static {
    /// A duplicate code is `already_exists` on field `code`.
    async fn insert_plan(&self, plan: &PlanRecord, w: Write<'_>) -> Result<(), Error>;
    /// False when the plan is not there or already archived.
    async fn archive_plan(&self, id: Uuid, at: DateTime<Utc>, w: Write<'_>) -> Result<bool, Error>;
    async fn get_plan(&self, id: Uuid) -> Result<Option<PlanRecord>, Error>;
    /// Plans by code; only active ones when `active_only`.
    async fn list_plans(&self, active_only: bool) -> Result<Vec<PlanRecord>, Error>;

    /// A second active subscription of the user is `already_exists`.
    async fn insert_subscription(&self, s: &SubscriptionRecord, w: Write<'_>) -> Result<(), Error>;
    async fn get_subscription(&self, id: Uuid) -> Result<Option<SubscriptionRecord>, Error>;
    async fn active_subscription(&self, user: Uuid) -> Result<Option<SubscriptionRecord>, Error>;
    /// Writes `s` (its version already the next one) if the stored version is still
    /// `expected`; false otherwise.
    async fn update_subscription(
        &self,
        s: &SubscriptionRecord,
        expected: i64,
        w: Write<'_>,
    ) -> Result<bool, Error>;

    async fn insert_usage(&self, u: &UsageRow, w: Write<'_>) -> Result<(), Error>;
    /// The usage of `subscription` no invoice billed yet.
    async fn open_usage(&self, subscription: Uuid) -> Result<Vec<UsageRow>, Error>;

    /// Active subscriptions whose period ended by `now`, earliest first, at most `limit`.
    async fn due_subscriptions(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<SubscriptionRecord>, Error>;
    /// Issues an invoice in one transaction (fenced by `run` when given): the subscription
    /// moves on, the usage is marked billed, the messages are enqueued.
    async fn issue(&self, issue: &Issue<'_>, run: Option<&Run>) -> Result<Issued, Error>;

    async fn get_invoice(&self, id: Uuid) -> Result<Option<InvoiceRecord>, Error>;
    /// `user`'s invoices newest first, with ids before `before`, at most `limit`.
    async fn list_invoices(
        &self,
        user: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<InvoiceRecord>, Error>;
    /// Moves an `open` invoice to `status` (`paid` / `void`) at `at`; false when it is not
    /// open (or not there).
    async fn settle_invoice(
        &self,
        id: Uuid,
        status: &str,
        at: DateTime<Utc>,
        w: Write<'_>,
    ) -> Result<bool, Error>;
}

/// A database failure as the contract's error: 503 while the database is unreachable,
/// otherwise an internal error (logged, details not sent).
fn db_error(e: sqlx::Error) -> Error {
    if plt_db::is_unavailable(&e) {
        Error::dependency_unavailable("the database", "billing store", &e)
    } else {
        Error::internal("billing store", &e)
    }
}

fn is_unique(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

const PLAN_COLUMNS: &str = "id, code, name, price_minor, currency, period_unit, metered_json, active, created_at, updated_at";
const SUB_COLUMNS: &str = "id, user_id, plan_id, period_plan_id, currency, status, period_start, period_end, cancel_at_period_end, pending_json, version, created_at, updated_at";
const USAGE_COLUMNS: &str = "id, subscription_id, metric, quantity, recorded_at";
const INVOICE_COLUMNS: &str = "id, user_id, subscription_id, period_start, period_end, currency, items_json, total_minor, status, issued_at, paid_at, voided_at";

macro_rules! sql_store {
    ($name:ident, $pool:ty, $db:ty, $conn:ty) => {
        pub struct $name(pub $pool);

        impl $name {
            /// Writes `s` if the stored version is `expected`.
            async fn update_sub(conn: &mut $conn, s: &SubscriptionRecord, expected: i64) -> Result<bool, Error> {
                let r = sqlx::query(
                    "UPDATE subscriptions SET plan_id = $1, period_plan_id = $2, status = $3, period_start = $4, \
                     period_end = $5, cancel_at_period_end = $6, pending_json = $7, version = $8, updated_at = $9 \
                     WHERE id = $10 AND version = $11",
                )
                .bind(s.plan_id)
                .bind(s.period_plan_id)
                .bind(&s.status)
                .bind(s.period_start)
                .bind(s.period_end)
                .bind(s.cancel_at_period_end)
                .bind(&s.pending_json)
                .bind(s.version)
                .bind(s.updated_at)
                .bind(s.id)
                .bind(expected)
                .execute(conn)
                .await
                .map_err(db_error)?;
                Ok(r.rows_affected() == 1)
            }

            /// Enqueues the messages and writes the answer, then commits.
            async fn finish(
                mut tx: sqlx::Transaction<'static, $db>,
                w: Write<'_>,
            ) -> Result<(), Error> {
                plt_outbox::enqueue(&mut *tx, w.messages).await.map_err(db_error)?;
                if let Some(done) = w.done {
                    done.write(&mut *tx).await?;
                }
                tx.commit().await.map_err(db_error)
            }
        }

        #[async_trait]
        impl BillingStore for $name {
            async fn insert_plan(&self, p: &PlanRecord, w: Write<'_>) -> Result<(), Error> {
                let mut tx = self.0.begin().await.map_err(db_error)?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO plans ({PLAN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                )))
                .bind(p.id)
                .bind(&p.code)
                .bind(&p.name)
                .bind(p.price_minor)
                .bind(&p.currency)
                .bind(&p.period_unit)
                .bind(&p.metered_json)
                .bind(p.active)
                .bind(p.created_at)
                .bind(p.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    if is_unique(&e) {
                        Error::already_exists("a plan with this code exists")
                            .with_violation("code", "is taken")
                    } else {
                        db_error(e)
                    }
                })?;
                Self::finish(tx, w).await
            }

            async fn archive_plan(&self, id: Uuid, at: DateTime<Utc>, w: Write<'_>) -> Result<bool, Error> {
                let mut tx = self.0.begin().await.map_err(db_error)?;
                let r = sqlx::query("UPDATE plans SET active = $1, updated_at = $2 WHERE id = $3 AND active = $4")
                    .bind(false)
                    .bind(at)
                    .bind(id)
                    .bind(true)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                if r.rows_affected() != 1 {
                    return Ok(false);
                }
                Self::finish(tx, w).await.map(|()| true)
            }

            async fn get_plan(&self, id: Uuid) -> Result<Option<PlanRecord>, Error> {
                sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {PLAN_COLUMNS} FROM plans WHERE id = $1")))
                    .bind(id)
                    .fetch_optional(&self.0)
                    .await
                    .map_err(db_error)
            }

            async fn list_plans(&self, active_only: bool) -> Result<Vec<PlanRecord>, Error> {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {PLAN_COLUMNS} FROM plans WHERE active = $1 OR $2 ORDER BY code"
                )))
                .bind(true)
                .bind(!active_only)
                .fetch_all(&self.0)
                .await
                .map_err(db_error)
            }

            async fn insert_subscription(&self, s: &SubscriptionRecord, w: Write<'_>) -> Result<(), Error> {
                let mut tx = self.0.begin().await.map_err(db_error)?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO subscriptions ({SUB_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
                )))
                .bind(s.id)
                .bind(s.user_id)
                .bind(s.plan_id)
                .bind(s.period_plan_id)
                .bind(&s.currency)
                .bind(&s.status)
                .bind(s.period_start)
                .bind(s.period_end)
                .bind(s.cancel_at_period_end)
                .bind(&s.pending_json)
                .bind(s.version)
                .bind(s.created_at)
                .bind(s.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    if is_unique(&e) {
                        Error::already_exists("you already have an active subscription")
                            .with_violation("plan_id", "change the plan of your active subscription instead")
                    } else {
                        db_error(e)
                    }
                })?;
                Self::finish(tx, w).await
            }

            async fn get_subscription(&self, id: Uuid) -> Result<Option<SubscriptionRecord>, Error> {
                sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {SUB_COLUMNS} FROM subscriptions WHERE id = $1")))
                    .bind(id)
                    .fetch_optional(&self.0)
                    .await
                    .map_err(db_error)
            }

            async fn active_subscription(&self, user: Uuid) -> Result<Option<SubscriptionRecord>, Error> {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {SUB_COLUMNS} FROM subscriptions WHERE user_id = $1 AND status = 'active'"
                )))
                .bind(user)
                .fetch_optional(&self.0)
                .await
                .map_err(db_error)
            }

            async fn update_subscription(&self, s: &SubscriptionRecord, expected: i64, w: Write<'_>) -> Result<bool, Error> {
                let mut tx = self.0.begin().await.map_err(db_error)?;
                if !Self::update_sub(&mut tx, s, expected).await? {
                    return Ok(false);
                }
                Self::finish(tx, w).await.map(|()| true)
            }

            async fn insert_usage(&self, u: &UsageRow, w: Write<'_>) -> Result<(), Error> {
                let mut tx = self.0.begin().await.map_err(db_error)?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO usage_records ({USAGE_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
                )))
                .bind(u.id)
                .bind(u.subscription_id)
                .bind(&u.metric)
                .bind(u.quantity)
                .bind(u.recorded_at)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                Self::finish(tx, w).await
            }

            async fn open_usage(&self, subscription: Uuid) -> Result<Vec<UsageRow>, Error> {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {USAGE_COLUMNS} FROM usage_records WHERE subscription_id = $1 AND invoice_id IS NULL ORDER BY id"
                )))
                .bind(subscription)
                .fetch_all(&self.0)
                .await
                .map_err(db_error)
            }

            async fn due_subscriptions(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<SubscriptionRecord>, Error> {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {SUB_COLUMNS} FROM subscriptions WHERE status = 'active' AND period_end <= $1 ORDER BY period_end LIMIT $2"
                )))
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(&self.0)
                .await
                .map_err(db_error)
            }

            async fn issue(&self, issue: &Issue<'_>, run: Option<&Run>) -> Result<Issued, Error> {
                let mut tx = self.0.begin().await.map_err(db_error)?;
                if let Some(run) = run
                    && !run.still_owner(&mut *tx).await.map_err(db_error)?
                {
                    return Ok(Issued::LostFence);
                }
                // The subscription first: its row lock orders this against a plan change
                // or a cancel, and a changed version means the read is stale.
                if !Self::update_sub(&mut tx, issue.next, issue.expected_version).await? {
                    return Ok(Issued::Skipped);
                }
                let i = issue.invoice;
                let r = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO invoices ({INVOICE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                     ON CONFLICT (subscription_id, period_start) DO NOTHING"
                )))
                .bind(i.id)
                .bind(i.user_id)
                .bind(i.subscription_id)
                .bind(i.period_start)
                .bind(i.period_end)
                .bind(&i.currency)
                .bind(&i.items_json)
                .bind(i.total_minor)
                .bind(&i.status)
                .bind(i.issued_at)
                .bind(i.paid_at)
                .bind(i.voided_at)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                if r.rows_affected() != 1 {
                    return Ok(Issued::Skipped);
                }
                for id in issue.usage_ids {
                    sqlx::query("UPDATE usage_records SET invoice_id = $1 WHERE id = $2 AND invoice_id IS NULL")
                        .bind(i.id)
                        .bind(*id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                }
                Self::finish(tx, Write { messages: issue.messages, done: None }).await?;
                Ok(Issued::Issued)
            }

            async fn get_invoice(&self, id: Uuid) -> Result<Option<InvoiceRecord>, Error> {
                sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {INVOICE_COLUMNS} FROM invoices WHERE id = $1")))
                    .bind(id)
                    .fetch_optional(&self.0)
                    .await
                    .map_err(db_error)
            }

            async fn list_invoices(&self, user: Uuid, before: Option<Uuid>, limit: u32) -> Result<Vec<InvoiceRecord>, Error> {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {INVOICE_COLUMNS} FROM invoices WHERE user_id = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
                )))
                .bind(user)
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(&self.0)
                .await
                .map_err(db_error)
            }

            async fn settle_invoice(&self, id: Uuid, status: &str, at: DateTime<Utc>, w: Write<'_>) -> Result<bool, Error> {
                let mut tx = self.0.begin().await.map_err(db_error)?;
                let column = if status == "paid" { "paid_at" } else { "voided_at" };
                let r = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE invoices SET status = $1, {column} = $2 WHERE id = $3 AND status = 'open'"
                )))
                .bind(status)
                .bind(at)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                if r.rows_affected() != 1 {
                    return Ok(false);
                }
                Self::finish(tx, w).await.map(|()| true)
            }
        }
    };
}

sql_store!(
    PgBillingStore,
    plt_db::PgPool,
    sqlx::Postgres,
    sqlx::PgConnection
);
sql_store!(
    SqliteBillingStore,
    plt_db::SqlitePool,
    sqlx::Sqlite,
    sqlx::SqliteConnection
);

/// The store on the configured database.
pub fn for_db(db: &plt_db::Db) -> Arc<dyn BillingStore> {
    match db {
        plt_db::Db::Postgres(p) => Arc::new(PgBillingStore(p.clone())),
        plt_db::Db::Sqlite(p) => Arc::new(SqliteBillingStore(p.clone())),
    }
}
