//! analytics-service: how many sign-ups, sessions, published posts and issued invoices the
//! platform saw, per day and in total, served over gRPC and HTTP/JSON by the plt runtime.
//!
//! # What is counted
//!
//! The event types listed in `analytics.events` (config.yaml), each under a metric name:
//!
//! | metric | event type (= topic) | published by |
//! |---|---|---|
//! | `signups` | `plt.identity.user.created.v1` | identity |
//! | `sessions` | `plt.auth.session.started.v1` | auth |
//! | `posts_published` | `plt.blog.post.published.v1` | blog |
//! | `invoices_issued` | `plt.billing.invoice.issued.v1` | billing |
//!
//! The consumer group `analytics` ([`plt_events::Subscription`], from the earliest message
//! kept) reads those topics. Each event adds one to `daily_counts (day, type)`, `day` being
//! the UTC date of the event's own `time` (`ce_time`), not of its arrival: a late, replayed
//! or very old event counts on the day it happened, with no retention cut-off. The raw type is
//! what is stored; the metric name is only the API's (a type no longer configured keeps its
//! counts, reachable by `event_type`). The event's data is not read.
//!
//! # Idempotency and delivery
//!
//! Delivery is at least once: the bus redelivers what a consumer did not commit (a killed
//! process, a rebalance), and a publisher's outbox may publish an event again after a crash
//! (same `ce_id`). Each event is therefore counted in **one transaction** that first enters
//! `(<ce_source> <ce_id>)` into the platform's inbox (`plt_events::inbox::first_time`,
//! consumer `analytics`) and, only when it was not there, bumps the day's row. A repeat finds
//! its id and changes nothing; a failure changes nothing either (the transaction rolls back)
//! and the consumer retries it with back-off, then dead-letters it to `plt.dlq.analytics`.
//! The bus's committed offsets only save work: when they are lost (a new group, an offset
//! reset, Kafka's retention) the group reads from the earliest message kept and the inbox
//! makes the replay harmless. The inbox is never pruned by this service, so a replay of any
//! age is absorbed.
//!
//! Partitions are handled concurrently, each in order; counts are commutative, so the order
//! does not matter. A count becomes visible as soon as its transaction commits (the API
//! reads `daily_counts`; seconds behind the publisher at most, on a healthy bus).
//!
//! # API
//!
//! `GetTimeSeries` (`GET /v1/analytics/timeseries?metric=signups&from=2026-12-01&to=2026-12-07`)
//! and `GetTotals` (`GET /v1/analytics/totals?from=&to=`), both behind permission
//! `analytics.stats.read`, which users do not hold by default: an administrator grants it.

pub mod config;
pub mod core;
pub mod store;

use analytics_contract::AnalyticsServiceServe;
use plt_runtime::{Context, Manifest, Parts, Service};
use std::sync::Arc;

/// The consumer group counting the events (also the inbox's consumer name).
pub const GROUP: &str = store::CONSUMER;

/// The analytics service, as the runtime runs it. Exports its store
/// (`Arc<dyn store::CountStore>`).
pub struct Analytics;

static MIGRATIONS: plt_db::Migrations = plt_db::embed_migrations!();

#[async_trait::async_trait]
impl Service for Analytics {
    type Config = config::AnalyticsConfig;
    const MANIFEST: Manifest =
        Manifest::new("analytics", "analytics-service", env!("CARGO_PKG_VERSION"))
            .calls(&["authz"])
            .migrations(&MIGRATIONS)
            .defaults(include_str!("../config.yaml"));

    async fn build(cx: &Context<Self::Config>) -> anyhow::Result<Parts> {
        let cfg = &cx.config.service;
        let store = store::for_db(cx.db()?);
        let counter = Arc::new(core::Counter::new(store.clone()));
        let core = core::AnalyticsCore::new(store.clone(), cfg.clone());
        Ok(Parts::new()
            .subscribe(plt_events::Subscription::new(GROUP, &cfg.topics(), counter))
            .serve(AnalyticsServiceServe(Arc::new(core)))
            .export(store))
    }
}
