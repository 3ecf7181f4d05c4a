//! billing-service: plans, subscriptions, usage and invoices, served over gRPC and HTTP/JSON
//! by the plt runtime (registry name `billing`, port 8092 by default; routes under
//! `/v1/billing`, `/api/v1/billing` through the gateway).
//!
//! # No payment provider
//!
//! Billing issues invoices; it does not collect money. There is no payment provider behind
//! it: an operator holding `billing.invoices.manage` marks an invoice **paid** (the money
//! arrived some other way) or **void** (it will not be paid). Only an `open` invoice can be
//! marked; `paid` and `void` are final.
//!
//! # Model
//!
//! - **Plans** (`billing.plans.manage`): a unique code, a name, a price per period in
//!   integer **minor units** (`price_minor`, cents for EUR) with an ISO 4217 currency, the
//!   interval `month` (a period is one calendar month; Jan 31 → Feb 28/29), and optional
//!   metered prices (a unit price per usage metric). A plan's price never changes: create
//!   another plan and move subscribers. Archived plans take no new subscribers. Listing and
//!   reading plans is public.
//! - **Subscriptions** (`billing.subscriptions.write`, granted to every user): one active
//!   subscription per user (a unique partial index), subscribed by the user themself. The
//!   first period starts at subscription. **Changing the plan** takes effect at once, with
//!   **proration**: for the part of the period left, a credit of the old price
//!   (`-prorate(old, remaining, period)`) and a charge of the new price
//!   (`prorate(new, remaining, period)`), kept as the subscription's pending items and billed
//!   on the period's invoice. Currencies must match. **Cancel** ends the subscription at the
//!   end of its period: that period is still invoiced, then it ends.
//! - **Rounding**: [`core::prorate`] is `price × remaining ÷ period` (both in microseconds)
//!   rounded to the nearest minor unit, halves up, each item on its own — so a credit and a
//!   charge can differ from the exact difference by at most one minor unit each.
//! - **Usage** (`billing.usage.write`: services or operators): quantities per metric of an
//!   active subscription, billed on the next invoice at the current plan's unit price for
//!   that metric (0 when the plan does not price it). Usage recorded while an invoice is
//!   being issued goes onto the next one.
//! - **Invoices** are issued **in arrears** by the scheduled job `billing.invoices` (every
//!   `billing.invoice_interval`, 1 m by default; each occurrence runs on one instance,
//!   `plt-scheduler`) for every active subscription whose period ended: a line for the plan
//!   at the period's start, the pending proration items, the usage per metric; the total.
//!   In the same transaction the subscription moves to its next period (or ends, when
//!   canceled), the audit record and the `plt.billing.invoice.issued.v1` event are enqueued,
//!   and the scheduler's fence is checked (`Run::still_owner`). A unique
//!   `(subscription_id, period_start)` makes the invoice of a period exist at most once,
//!   whatever instance, retry or take-over issues it. Users read their own invoices; holders
//!   of `billing.invoices.manage` read anyone's and mark them paid or void.
//!
//! # Idempotency
//!
//! Every mutating method takes an idempotency key (HTTP `Idempotency-Key`, gRPC metadata
//! `idempotency-key`; 1 to 255 visible ASCII characters), scoped to the caller and the
//! method (`plt-idempotency`). Repeats with one key — concurrent or later, for 24 h — have
//! one effect and get the first answer (errors the request caused included); the same key
//! with another request body is `invalid_argument` (400) on field `idempotency_key`; a
//! repeat that waited `billing.idempotency_wait` (10 s) for the first to finish gets 409.
//! The answer is written in the effect's own transaction, so a crash cannot leave an effect
//! without its answer (or the reverse).
//!
//! # Events and audit
//!
//! `plt.billing.subscription.changed.v1` (`created`, `plan_changed`, `canceled`, `ended`)
//! and `plt.billing.invoice.issued.v1`, data as in [`billing_contract::events`], keyed by
//! subscription id, published through the outbox in the change's transaction. Every change
//! writes an audit record in the same transaction (actor: the calling user or service;
//! `billing` for the invoice job): `billing.plan.create`, `billing.plan.archive`,
//! `billing.subscription.create`, `billing.subscription.change_plan`,
//! `billing.subscription.cancel`, `billing.subscription.end`, `billing.usage.record`,
//! `billing.invoice.issue`, `billing.invoice.mark_paid`, `billing.invoice.void`.

pub mod config;
pub mod core;
pub mod store;

use billing_contract::BillingServiceServe;
use plt_contracts::audit::AuditServiceClient;
use plt_idempotency::{Idempotency, IdempotencyConfig};
use plt_outbox::OutboxConfig;
use plt_runtime::{Context, Manifest, Parts, Service};
use plt_scheduler::{Job, Schedule};
use std::{sync::Arc, time::Duration};

/// The billing service, as the runtime runs it.
pub struct Billing;

/// The scheduled job that issues invoices.
pub const INVOICE_JOB: &str = "billing.invoices";
/// The scheduled job that forgets old idempotency keys.
pub const PRUNE_JOB: &str = "billing.idempotency.prune";

static MIGRATIONS: plt_db::Migrations = plt_db::embed_migrations!();

#[async_trait::async_trait]
impl Service for Billing {
    type Config = config::BillingConfig;
    const MANIFEST: Manifest =
        Manifest::new("billing", "billing-service", env!("CARGO_PKG_VERSION"))
            .calls(&["authz", "audit"])
            .migrations(&MIGRATIONS)
            .defaults(include_str!("../config.yaml"));

    async fn build(cx: &Context<Self::Config>) -> anyhow::Result<Parts> {
        let cfg = &cx.config.service;
        let db = cx.db()?;
        let idem = Idempotency::new(db, cx.name).with_config(IdempotencyConfig {
            wait: cfg.idempotency_wait,
            ttl: cfg.idempotency_ttl,
            ..IdempotencyConfig::default()
        });
        idem.install().await?;
        let core = Arc::new(core::BillingCore::new(
            store::for_db(db),
            cfg.clone(),
            idem.clone(),
            cx.publisher(),
        ));
        let job_core = core.clone();
        let scheduler = cx
            .scheduler()?
            .job(Job::new(
                INVOICE_JOB,
                Schedule::every(cfg.invoice_interval)?,
                move |run| {
                    let core = job_core.clone();
                    async move {
                        core.issue_due(chrono::Utc::now(), Some(&run))
                            .await
                            .map(|n| {
                                if n > 0 {
                                    tracing::info!(event = "billing.invoices.issued", count = n);
                                }
                            })
                    }
                },
            ))?
            .job(Job::new(
                PRUNE_JOB,
                Schedule::every(Duration::from_secs(3600))?,
                move |_run| {
                    let idem = idem.clone();
                    async move { idem.prune().await.map(drop) }
                },
            ))?;
        // Audit records committed with the changes, delivered to audit (or its topic).
        let audit = match cx.extension::<Arc<dyn AuditServiceClient>>() {
            Some(a) => a.clone(),
            None => cx
                .clients
                .client::<dyn AuditServiceClient>()
                .await
                .map_err(|e| anyhow::anyhow!("audit client: {e}"))?,
        };
        let outbox_cfg: OutboxConfig = cx.config.source.section("outbox")?;
        let relay = cx.outbox()?.relay(
            plt_outbox::audit::TOPIC,
            cx.audit_destination(audit, outbox_cfg.timeout),
            &outbox_cfg,
        );
        Ok(Parts::new()
            .serve(BillingServiceServe(core.clone()))
            .scheduler(scheduler)
            .metrics_collector(relay.metrics_collector())
            .job(relay.run(cx.stopping.clone()))
            .export(core))
    }
}
