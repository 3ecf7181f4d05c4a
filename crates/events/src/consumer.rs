//! Consumer groups: the loop that hands a group's messages to a [`Handler`], commits what it
//! handled, retries what failed and dead-letters what keeps failing.
//!
//! Each fetched batch is split by partition; partitions are handled concurrently, each in
//! offset order, so events with one key are handled in the order they were published. A
//! message is committed once its handler succeeded or it went to the dead-letter topic. A
//! handler is retried with a growing, jittered back-off up to `max_attempts`; then the
//! message goes to `plt.dlq.<group>` with its original headers and value, plus
//! `plt_dlq_topic`, `plt_dlq_partition`, `plt_dlq_offset`, `plt_dlq_attempts` and
//! `plt_dlq_error`. Delivery is at least once: a handler whose effect must happen once keeps
//! an inbox ([`crate::inbox`]).

use crate::{Bus, BusError, Event, Outgoing, Position, Received, config::ConsumerConfig};
use async_trait::async_trait;
use futures_util::FutureExt;
use std::{
    collections::BTreeMap,
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::sync::watch;
use tracing::Instrument as _;

/// Where a group that has committed nothing starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// From the oldest message kept: a durable consumer that must see everything.
    Earliest,
    /// From messages published after it joined: a listener (cache invalidation) whose group
    /// is its own instance.
    Latest,
}

/// Why a handler did not handle a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// It may work later (a dependency is down): retried with back-off, then dead-lettered.
    #[error("{0}")]
    Retry(String),
    /// It never will (the event is malformed for this handler): dead-lettered at once.
    #[error("{0}")]
    Permanent(String),
}

/// Handles one group's events.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, event: &Event, message: &Received) -> Result<(), HandlerError>;
}

/// A consumer group to run: who, what, how.
#[derive(Clone)]
pub struct Subscription {
    pub group: String,
    pub topics: Vec<String>,
    pub start: Start,
    pub handler: Arc<dyn Handler>,
    pub config: ConsumerConfig,
    /// Whether one key's events must be handled in order (the default). `false`: a
    /// fetched batch is handled all at once (a handler that batches its writes, like
    /// audit's group commit, gets them together); commits still never pass a message that
    /// was not settled.
    pub ordered: bool,
}

impl Subscription {
    /// Group `group` reading `topics` from the earliest message, with default settings.
    pub fn new(group: &str, topics: &[&str], handler: Arc<dyn Handler>) -> Self {
        Self {
            group: group.to_owned(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            start: Start::Earliest,
            handler,
            config: ConsumerConfig::default(),
            ordered: true,
        }
    }

    /// Handles each fetched batch all at once, in no particular order.
    pub fn unordered(mut self) -> Self {
        self.ordered = false;
        self
    }

    pub fn start(mut self, start: Start) -> Self {
        self.start = start;
        self
    }

    pub fn config(mut self, config: ConsumerConfig) -> Self {
        self.config = config;
        self
    }

    /// The group's dead-letter topic.
    pub fn dead_letter_topic(&self) -> String {
        dead_letter_topic(&self.group)
    }
}

/// The dead-letter topic of consumer group `group`.
pub fn dead_letter_topic(group: &str) -> String {
    format!("plt.dlq.{group}")
}

/// What a consumer did, for tests and metrics.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    pub handled: AtomicU64,
    /// Failed attempts that were retried.
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub committed_batches: AtomicU64,
}

enum Outcome {
    /// Handled or dead-lettered: commit past it.
    Done,
    /// Stopping before it was settled: not committed, redelivered later.
    Abandoned,
}

struct Worker {
    bus: Arc<dyn Bus>,
    sub: Subscription,
    stats: Arc<ConsumerStats>,
}

/// Waits `d`, or less if stopping turns true; `false` when stopping.
async fn pause(d: Duration, stopping: &mut watch::Receiver<bool>) -> bool {
    if *stopping.borrow() {
        return false;
    }
    tokio::select! {
        _ = stopping.changed() => false,
        _ = tokio::time::sleep(d) => !*stopping.borrow(),
    }
}

impl Worker {
    fn backoff(&self, attempt: u32) -> Duration {
        let c = &self.sub.config;
        let d = c
            .retry_initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        crate::jittered(d.min(c.retry_max_backoff))
    }

    async fn handle(&self, msg: &Received, mut stopping: watch::Receiver<bool>) -> Outcome {
        let event = match msg.event() {
            Ok(e) => e,
            Err(e) => return self.dead_letter(msg, &e.to_string(), 0, stopping).await,
        };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            // Each attempt is a consumer span, a child of the producer's (the event's trace).
            let span = tracing::info_span!(
                "process",
                otel.name = %format_args!("process {}", msg.topic),
                otel.kind = "consumer",
                group = %self.sub.group,
                topic = %msg.topic,
                event_id = %event.id,
                trace_id = tracing::field::Empty,
            );
            plt_kernel::trace::continue_from_traceparent(&span, event.traceparent.as_deref());
            plt_kernel::trace::set_attribute(&span, "messaging.operation.type", "process");
            plt_kernel::trace::set_attribute(
                &span,
                "messaging.destination.name",
                msg.topic.clone(),
            );
            plt_kernel::trace::set_attribute(
                &span,
                "messaging.consumer.group.name",
                self.sub.group.clone(),
            );
            plt_kernel::trace::set_attribute(
                &span,
                "messaging.destination.partition.id",
                msg.partition.to_string(),
            );
            plt_kernel::trace::set_attribute(&span, "messaging.kafka.offset", msg.offset);
            plt_kernel::trace::set_attribute(&span, "messaging.message.id", event.id.clone());
            let r = AssertUnwindSafe(self.sub.handler.handle(&event, msg))
                .catch_unwind()
                .instrument(span.clone())
                .await
                .unwrap_or_else(|_| Err(HandlerError::Retry("the handler panicked".into())));
            if let Err(HandlerError::Permanent(why) | HandlerError::Retry(why)) = &r {
                plt_kernel::trace::set_error(&span, why.clone());
            }
            drop(span);
            match r {
                Ok(()) => {
                    self.stats.handled.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("events_handled_total", "group" => self.sub.group.clone(), "topic" => msg.topic.clone())
                        .increment(1);
                    return Outcome::Done;
                }
                Err(HandlerError::Permanent(why)) => {
                    return self.dead_letter(msg, &why, attempt, stopping).await;
                }
                Err(HandlerError::Retry(why)) if attempt >= self.sub.config.max_attempts => {
                    return self.dead_letter(msg, &why, attempt, stopping).await;
                }
                Err(HandlerError::Retry(why)) => {
                    self.stats.retried.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(group = %self.sub.group, topic = %msg.topic, partition = msg.partition,
                        offset = msg.offset, attempt, error = %why, "event handler failed; retrying");
                    if !pause(self.backoff(attempt), &mut stopping).await {
                        return Outcome::Abandoned;
                    }
                }
            }
        }
    }

    async fn dead_letter(
        &self,
        msg: &Received,
        why: &str,
        attempts: u32,
        mut stopping: watch::Receiver<bool>,
    ) -> Outcome {
        let mut headers = msg.headers.clone();
        headers.push(("plt_dlq_topic".into(), msg.topic.clone().into_bytes()));
        headers.push((
            "plt_dlq_partition".into(),
            msg.partition.to_string().into_bytes(),
        ));
        headers.push(("plt_dlq_offset".into(), msg.offset.to_string().into_bytes()));
        headers.push(("plt_dlq_attempts".into(), attempts.to_string().into_bytes()));
        headers.push((
            "plt_dlq_error".into(),
            why.chars().take(2000).collect::<String>().into_bytes(),
        ));
        headers.push(("plt_dlq_group".into(), self.sub.group.clone().into_bytes()));
        let dlq = Outgoing {
            topic: self.sub.dead_letter_topic(),
            key: msg.key.clone(),
            headers,
            value: msg.value.clone(),
        };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.bus.publish(std::slice::from_ref(&dlq)).await.pop() {
                Some(Ok(())) => {
                    self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("events_dead_lettered_total", "group" => self.sub.group.clone(), "topic" => msg.topic.clone())
                        .increment(1);
                    tracing::error!(event = "events.dead_letter", group = %self.sub.group, topic = %msg.topic,
                        partition = msg.partition, offset = msg.offset, attempts, error = %why,
                        dead_letter_topic = %dlq.topic, "an event could not be handled; it went to the dead-letter topic");
                    return Outcome::Done;
                }
                r => {
                    let e = match r {
                        Some(Err(e)) => e,
                        _ => BusError::Unavailable("no answer".into()),
                    };
                    tracing::warn!(group = %self.sub.group, error = %e, "cannot publish to the dead-letter topic; retrying");
                    if !pause(self.backoff(attempt), &mut stopping).await {
                        return Outcome::Abandoned;
                    }
                }
            }
        }
    }

    /// Handles one partition's messages in order; the position past the last settled one.
    async fn partition(
        &self,
        msgs: Vec<Received>,
        stopping: watch::Receiver<bool>,
    ) -> Option<Position> {
        let mut done = None;
        for m in msgs {
            match self.handle(&m, stopping.clone()).await {
                Outcome::Done => {
                    done = Some(Position {
                        topic: m.topic.clone(),
                        partition: m.partition,
                        next: m.offset + 1,
                    })
                }
                Outcome::Abandoned => break,
            }
        }
        done
    }
}

/// A running consumer group member.
pub struct Running {
    pub stats: Arc<ConsumerStats>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Runs `sub` on `bus` until `stopping` turns true: joins the group (again and again while
/// the bus is unavailable), handles, commits; at the end finishes the batch in flight,
/// commits it and leaves the group.
pub fn spawn(bus: Arc<dyn Bus>, sub: Subscription, stopping: watch::Receiver<bool>) -> Running {
    let stats = Arc::new(ConsumerStats::default());
    let task = tokio::spawn(plt_kernel::trace::inherit_mark(run(
        bus,
        sub,
        stopping,
        stats.clone(),
    )));
    Running { stats, task }
}

/// How often a consumer reports its lag.
const LAG_EVERY: Duration = Duration::from_secs(5);

/// `events_consumer_lag{group, topic, partition}`: messages of the partitions this member
/// reads that its group has not committed yet.
async fn report_lag(group: &str, consumer: &mut dyn crate::Consumer) {
    for (topic, partition, lag) in consumer.lag().await {
        metrics::gauge!("events_consumer_lag", "group" => group.to_owned(), "topic" => topic, "partition" => partition.to_string())
            .set(lag as f64);
    }
}

/// The loop of [`spawn`].
pub async fn run(
    bus: Arc<dyn Bus>,
    sub: Subscription,
    mut stopping: watch::Receiver<bool>,
    stats: Arc<ConsumerStats>,
) {
    let w = Worker {
        bus: bus.clone(),
        sub: sub.clone(),
        stats,
    };
    let mut failures = 0u32;
    'join: while !*stopping.borrow() {
        let mut consumer = match bus.join(&sub.group, &sub.topics, sub.start).await {
            Ok(c) => c,
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(group = %sub.group, error = %e, "cannot join the consumer group; retrying");
                }
                if !pause(w.backoff(failures), &mut stopping).await {
                    break;
                }
                continue;
            }
        };
        tracing::debug!(group = %sub.group, topics = ?sub.topics, "consumer joined its group");
        let mut lag_reported = std::time::Instant::now();
        loop {
            if lag_reported.elapsed() >= LAG_EVERY {
                lag_reported = std::time::Instant::now();
                report_lag(&sub.group, consumer.as_mut()).await;
            }
            let polled = tokio::select! {
                biased;
                _ = stopping.changed() => break,
                r = consumer.poll(sub.config.batch_size as usize, Duration::from_millis(500)) => r,
            };
            let batch = match polled {
                Ok(b) => {
                    if failures > 0 {
                        tracing::info!(group = %sub.group, "consumer recovered");
                        failures = 0;
                    }
                    b
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(group = %sub.group, error = %e, "consumer cannot fetch; retrying");
                    }
                    if !pause(w.backoff(failures), &mut stopping).await {
                        break;
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                if *stopping.borrow() {
                    break;
                }
                continue;
            }
            let mut parts: BTreeMap<(String, i32), Vec<Received>> = BTreeMap::new();
            for m in batch {
                parts
                    .entry((m.topic.clone(), m.partition))
                    .or_default()
                    .push(m);
            }
            let positions: Vec<Position> = if sub.ordered {
                futures_util::future::join_all(
                    parts
                        .into_values()
                        .map(|msgs| w.partition(msgs, stopping.clone())),
                )
                .await
                .into_iter()
                .flatten()
                .collect()
            } else {
                // Everything at once; each partition commits up to its first unsettled one.
                let w = &w;
                futures_util::future::join_all(parts.into_values().map(|msgs| {
                    let stopping = stopping.clone();
                    async move {
                        let outcomes = futures_util::future::join_all(
                            msgs.iter().map(|m| w.handle(m, stopping.clone())),
                        )
                        .await;
                        let settled = outcomes
                            .iter()
                            .take_while(|o| matches!(o, Outcome::Done))
                            .count();
                        settled.checked_sub(1).map(|i| Position {
                            topic: msgs[i].topic.clone(),
                            partition: msgs[i].partition,
                            next: msgs[i].offset + 1,
                        })
                    }
                }))
                .await
                .into_iter()
                .flatten()
                .collect()
            };
            if !positions.is_empty() {
                if let Err(e) = consumer.commit(&positions).await {
                    // Not lost: the messages come again and the inbox absorbs them.
                    tracing::warn!(group = %sub.group, error = %e, "cannot commit; handled events may be delivered again");
                } else {
                    w.stats.committed_batches.fetch_add(1, Ordering::Relaxed);
                }
            }
            if *stopping.borrow() {
                break;
            }
        }
        consumer.close().await;
        break 'join;
    }
    tracing::debug!(group = %sub.group, "consumer stopped");
}
