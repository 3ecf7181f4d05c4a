//! The relay: claims due rows of one topic, hands them to the destination, deletes what it
//! acknowledged and reschedules the rest.

use crate::{Delivery, DeliveryError, Destination, Outbox, OutboxConfig, now, sql};
use chrono::{DateTime, Utc};
use plt_db::Db;
use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::sync::watch;
use uuid::Uuid;

/// What a relay did, for tests and the metrics collector.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Messages the destination acknowledged (deleted).
    pub delivered: AtomicU64,
    /// Messages whose delivery attempt failed and will be retried.
    pub failures: AtomicU64,
    /// Messages the destination refused (kept, retried after the longest back-off).
    pub rejected: AtomicU64,
    /// Rows of the topic at the last count.
    pub pending: AtomicU64,
    /// Creation time of the oldest row at the last count, µs since the epoch (0: none).
    oldest_micros: AtomicI64,
}

impl RelayStats {
    /// Age of the oldest undelivered row at the last count (zero when there was none).
    pub fn oldest_age(&self) -> Duration {
        match self.oldest_micros.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            us => DateTime::from_timestamp_micros(us)
                .and_then(|t| (Utc::now() - t).to_std().ok())
                .unwrap_or(Duration::ZERO),
        }
    }
}

/// Delivers one topic of an outbox. Run it with [`Relay::run`] as a background job.
pub struct Relay {
    outbox: Outbox,
    topic: String,
    destination: Arc<dyn Destination>,
    cfg: OutboxConfig,
    stats: Arc<RelayStats>,
    /// Head of line: nothing newer is delivered while an older row waits, and on PostgreSQL
    /// one relay at a time (an advisory lock held on a connection of its own).
    ordered: bool,
    leader: tokio::sync::Mutex<Option<sqlx::PgConnection>>,
}

/// The outcome of one claim-and-deliver round.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub claimed: usize,
    pub delivered: usize,
    /// Messages to retry after a transient failure.
    pub failed: usize,
    pub rejected: usize,
}

/// The advisory lock of an ordered relay: service and topic, hashed (FNV-1a, 64 bits).
fn lock_key(service: &str, topic: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "plt-outbox:"
        .bytes()
        .chain(service.bytes())
        .chain([0])
        .chain(topic.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// `d` with equal jitter: between half of it and all of it.
fn jittered(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let r = f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX);
    d.mul_f64(0.5 + r * 0.5)
}

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Relay {
    pub(crate) fn new(
        outbox: Outbox,
        topic: &str,
        destination: Arc<dyn Destination>,
        cfg: OutboxConfig,
    ) -> Self {
        Self {
            outbox,
            topic: topic.to_owned(),
            destination,
            cfg,
            stats: Arc::default(),
            ordered: false,
            leader: tokio::sync::Mutex::new(None),
        }
    }

    /// Delivers in order: a row is never handed to the destination while an older row of the
    /// topic waits (in delivery or backing off), except rows the destination refused (parked),
    /// which hold nothing up. On PostgreSQL only the instance holding the topic's advisory lock
    /// relays; the others stand by and take over when its connection ends.
    pub fn ordered(mut self) -> Self {
        self.ordered = true;
        self
    }

    /// Whether this relay may deliver now: always, but for an ordered relay on PostgreSQL,
    /// which must hold (or take) the topic's advisory lock.
    async fn lead(&self) -> Result<bool, sqlx::Error> {
        use sqlx::Connection as _;
        let Db::Postgres(p) = self.outbox.db() else {
            return Ok(true);
        };
        if !self.ordered {
            return Ok(true);
        }
        let mut leader = self.leader.lock().await;
        if let Some(c) = leader.as_mut() {
            match tokio::time::timeout(self.cfg.timeout, c.ping()).await {
                Ok(Ok(())) => return Ok(true),
                _ => {
                    tracing::warn!(topic = %self.topic, "lost the outbox relay's lock connection");
                    *leader = None;
                }
            }
        }
        let opts = p.connect_options();
        let mut c = tokio::time::timeout(self.cfg.timeout, sqlx::PgConnection::connect_with(&opts))
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        let key = lock_key(self.outbox.service(), &self.topic);
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut c)
            .await?;
        if got {
            tracing::info!(topic = %self.topic, "this instance relays the ordered outbox topic");
            *leader = Some(c);
        } else {
            let _ = c.close().await;
        }
        Ok(got)
    }

    pub fn stats(&self) -> Arc<RelayStats> {
        self.stats.clone()
    }

    /// Publishes `outbox_pending{service,topic}` and `outbox_oldest_age_seconds` at each
    /// `/metrics` render (the counters `outbox_delivered_total` and
    /// `outbox_delivery_failures_total{reason}` are counted as they happen).
    pub fn metrics_collector(&self) -> plt_kernel::metrics::Collector {
        let stats = self.stats.clone();
        let service = self.outbox.service().to_owned();
        let topic = self.topic.clone();
        Arc::new(move || {
            metrics::gauge!("outbox_pending", "service" => service.clone(), "topic" => topic.clone())
                .set(stats.pending.load(Ordering::Relaxed) as f64);
            metrics::gauge!("outbox_oldest_age_seconds", "service" => service.clone(), "topic" => topic.clone())
                .set(stats.oldest_age().as_secs_f64());
        })
    }

    /// Counts the topic's rows (for the gauges).
    pub async fn count(&self) -> Result<u64, sqlx::Error> {
        let (n, oldest) = self.outbox.pending(&self.topic).await?;
        self.stats.pending.store(n, Ordering::Relaxed);
        self.stats.oldest_micros.store(
            oldest.map(|t| t.timestamp_micros()).unwrap_or(0),
            Ordering::Relaxed,
        );
        Ok(n)
    }

    /// One round: claims due rows, delivers them, deletes the acknowledged ones and
    /// reschedules the others (`retry_in` from now after a transient failure). Database
    /// errors are returned; rows claimed but not settled stay leased and come back when the
    /// lease ends.
    pub async fn round(&self, retry_in: Duration) -> Result<Round, sqlx::Error> {
        let db = self.outbox.db();
        if !self.lead().await? {
            return Ok(Round::default());
        }
        let started = now();
        let claimed = sql::claim(
            db,
            &self.topic,
            started,
            started + chrono(self.cfg.lease),
            self.cfg.batch_size,
            self.ordered,
        )
        .await?;
        if claimed.is_empty() {
            return Ok(Round::default());
        }
        let mut results: Vec<Option<Result<(), DeliveryError>>> = claimed
            .iter()
            .map(|(_, broken)| broken.clone().map(|b| Err(DeliveryError::Rejected(b))))
            .collect();
        let deliverable: Vec<Delivery> = claimed
            .iter()
            .filter(|(_, broken)| broken.is_none())
            .map(|(d, _)| d.clone())
            .collect();
        if !deliverable.is_empty() {
            let answers = match tokio::time::timeout(
                self.cfg.timeout,
                self.destination.deliver(&deliverable),
            )
            .await
            {
                Ok(a) if a.len() == deliverable.len() => a,
                Ok(a) => {
                    tracing::error!(
                        topic = %self.topic,
                        expected = deliverable.len(),
                        got = a.len(),
                        "outbox destination answered for the wrong number of messages"
                    );
                    vec![
                        Err(DeliveryError::Retry(
                            "destination answered for the wrong number of messages".into()
                        ));
                        deliverable.len()
                    ]
                }
                Err(_) => vec![
                    Err(DeliveryError::Retry(format!(
                        "no answer within {:?}",
                        self.cfg.timeout
                    )));
                    deliverable.len()
                ],
            };
            let mut answers = answers.into_iter();
            for slot in results.iter_mut().filter(|r| r.is_none()) {
                *slot = answers.next();
            }
        }
        let mut delivered: Vec<Uuid> = Vec::new();
        let mut retry: Vec<Uuid> = Vec::new();
        let mut rejected: Vec<Uuid> = Vec::new();
        let mut retry_error = String::new();
        for ((d, _), r) in claimed.iter().zip(results) {
            match r.unwrap_or_else(|| Err(DeliveryError::Retry("no answer".into()))) {
                Ok(()) => delivered.push(d.id),
                Err(DeliveryError::Rejected(why)) => {
                    tracing::error!(
                        event = "outbox.rejected",
                        topic = %self.topic,
                        id = %d.id,
                        attempts = d.attempts,
                        reason = %why,
                        "the destination refused an outbox message; it is kept and retried after the longest back-off"
                    );
                    rejected.push(d.id);
                    let _ = sql::reschedule(
                        db,
                        &[d.id],
                        now() + chrono(self.cfg.retry_max_backoff),
                        &why,
                        true,
                    )
                    .await;
                }
                Err(DeliveryError::Retry(why)) => {
                    if retry_error.is_empty() {
                        retry_error = why;
                    }
                    retry.push(d.id);
                }
            }
        }
        sql::delete(db, &delivered).await?;
        sql::reschedule(db, &retry, now() + chrono(retry_in), &retry_error, false).await?;
        let svc = self.outbox.service().to_owned();
        let topic = self.topic.clone();
        if !delivered.is_empty() {
            self.stats
                .delivered
                .fetch_add(delivered.len() as u64, Ordering::Relaxed);
            metrics::counter!("outbox_delivered_total", "service" => svc.clone(), "topic" => topic.clone())
                .increment(delivered.len() as u64);
        }
        if !retry.is_empty() {
            self.stats
                .failures
                .fetch_add(retry.len() as u64, Ordering::Relaxed);
            metrics::counter!("outbox_delivery_failures_total", "service" => svc.clone(), "topic" => topic.clone(), "reason" => "retry")
                .increment(retry.len() as u64);
        }
        if !rejected.is_empty() {
            self.stats
                .rejected
                .fetch_add(rejected.len() as u64, Ordering::Relaxed);
            metrics::counter!("outbox_delivery_failures_total", "service" => svc, "topic" => topic, "reason" => "rejected")
                .increment(rejected.len() as u64);
        }
        Ok(Round {
            claimed: claimed.len(),
            delivered: delivered.len(),
            failed: retry.len(),
            rejected: rejected.len(),
        })
    }

    /// Delivers until `stopping` turns `true`: rounds while rows are due, then waits for a
    /// local enqueue or the poll interval. After a failed delivery (or a database error) it
    /// waits a jittered back-off, doubling up to `retry_max_backoff`, before trying again.
    pub async fn run(self, mut stopping: watch::Receiver<bool>) {
        let mut wake = self.outbox.subscribe();
        let mut backoff = self.cfg.retry_initial_backoff;
        let mut failing = false;
        let mut last_count = tokio::time::Instant::now() - self.cfg.poll_interval;
        loop {
            if *stopping.borrow() {
                break;
            }
            if last_count.elapsed() >= self.cfg.poll_interval {
                last_count = tokio::time::Instant::now();
                if let Err(e) = self.count().await {
                    tracing::debug!(error = %e, "counting outbox rows failed");
                }
            }
            let wait = jittered(backoff);
            let pause = match self.round(wait).await {
                Ok(r) if r.failed > 0 => {
                    if !failing {
                        tracing::warn!(topic = %self.topic, failed = r.failed, "outbox delivery failed; retrying with back-off");
                    }
                    failing = true;
                    Some(wait)
                }
                Ok(r) => {
                    if failing && r.delivered > 0 {
                        tracing::info!(topic = %self.topic, "outbox delivery recovered");
                        failing = false;
                    }
                    if r.delivered > 0 || r.rejected > 0 {
                        backoff = self.cfg.retry_initial_backoff;
                    }
                    if r.claimed == self.cfg.batch_size as usize {
                        // More may be due: go on at once.
                        continue;
                    }
                    None
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(topic = %self.topic, error = %e, "outbox relay cannot read its rows; retrying with back-off");
                    }
                    failing = true;
                    Some(wait)
                }
            };
            let sleep = match pause {
                Some(w) => {
                    backoff = (backoff * 2).min(self.cfg.retry_max_backoff);
                    w
                }
                None => self.cfg.poll_interval,
            };
            tokio::select! {
                biased;
                r = stopping.changed() => if r.is_err() { break },
                // A failing destination is not hammered by every enqueue: only the back-off
                // ends a pause after a failure.
                r = wake.changed(), if pause.is_none() => if r.is_err() { break },
                _ = tokio::time::sleep(sleep) => {}
            }
        }
        tracing::debug!(topic = %self.topic, "outbox relay stopped");
    }
}
