//! The Kafka bus, through librdkafka (rdkafka).
//!
//! The producer waits for every replica (`acks=all`) and keeps each partition in order:
//! idempotent (`events.kafka.idempotent`: a retried send is written once) or with one
//! request in flight per broker (a retried send may be written twice; inboxes absorb it). A publish waits for every message's
//! acknowledgement, at most `events.kafka.publish_timeout` (`message.timeout.ms`). Topics
//! that do not exist are created on first use (`events.kafka.partitions`,
//! `replication_factor`). Consumers commit explicitly (`enable.auto.commit=false`) the
//! positions the consumer loop settled, never more.

use crate::{
    Bus, BusError, Consumer, Headers, Outgoing, Position, Received, Start, config::KafkaConfig,
};
use async_trait::async_trait;
use futures_util::FutureExt;
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{CommitMode, Consumer as _, StreamConsumer},
    error::{KafkaError, RDKafkaErrorCode},
    message::{BorrowedMessage, Header, Headers as _, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::Duration,
};

/// Publishes to and consumes from Kafka.
pub struct KafkaBus {
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    cfg: KafkaConfig,
    client_id: String,
    /// Topics known to exist.
    known: Mutex<HashSet<String>>,
}

fn base(cfg: &KafkaConfig, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("client.id", client_id)
        // Reconnect quickly after the broker comes back.
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "2000")
        .set("log_level", "4");
    c
}

fn millis(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

fn unavailable(e: &KafkaError) -> BusError {
    BusError::Unavailable(e.to_string())
}

fn send_error(e: &KafkaError) -> BusError {
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::InvalidRecord,
        ) => BusError::Rejected(e.to_string()),
        _ => unavailable(e),
    }
}

impl KafkaBus {
    /// A bus on `cfg.brokers`; connects lazily (a broker that is down is not an error here).
    pub fn new(cfg: &KafkaConfig, client_id: &str) -> Result<Self, BusError> {
        let mut producer = base(cfg, client_id);
        if cfg.idempotent {
            producer.set("enable.idempotence", "true");
        } else {
            // In order without idempotence: one request in flight per broker.
            producer
                .set("enable.idempotence", "false")
                .set("max.in.flight.requests.per.connection", "1");
        }
        let producer: FutureProducer = producer
            .set("acks", "all")
            .set("linger.ms", millis(cfg.linger))
            .set("message.timeout.ms", millis(cfg.publish_timeout))
            .set("compression.type", "none")
            .create()
            .map_err(|e| BusError::Config(e.to_string()))?;
        let admin: AdminClient<DefaultClientContext> = base(cfg, client_id)
            .create()
            .map_err(|e| BusError::Config(e.to_string()))?;
        Ok(Self {
            producer,
            admin,
            cfg: cfg.clone(),
            client_id: client_id.to_owned(),
            known: Mutex::new(HashSet::new()),
        })
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates the topics of `names` that are not known to exist.
    pub async fn ensure_topics(&self, names: &[&str]) -> Result<(), BusError> {
        let missing: Vec<&str> = {
            let known = self.known();
            let mut m: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| !known.contains(*n))
                .collect();
            m.sort_unstable();
            m.dedup();
            m
        };
        if missing.is_empty() {
            return Ok(());
        }
        let replication = i32::try_from(self.cfg.replication_factor).unwrap_or(1);
        let partitions = i32::try_from(self.cfg.partitions).unwrap_or(1);
        let topics: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(replication)))
            .collect();
        let opts = AdminOptions::new()
            .request_timeout(Some(self.cfg.publish_timeout))
            .operation_timeout(Some(self.cfg.publish_timeout));
        let results = self
            .admin
            .create_topics(topics.iter(), &opts)
            .await
            .map_err(|e| unavailable(&e))?;
        for r in results {
            match r {
                Ok(name) | Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    self.known().insert(name);
                }
                Err((name, RDKafkaErrorCode::InvalidTopic)) => {
                    return Err(BusError::Rejected(format!("invalid topic name {name:?}")));
                }
                Err((name, code)) => {
                    return Err(BusError::Unavailable(format!(
                        "cannot create topic {name}: {code}"
                    )));
                }
            }
        }
        Ok(())
    }
}

fn owned_headers(h: &Headers) -> OwnedHeaders {
    h.iter()
        .fold(OwnedHeaders::new_with_capacity(h.len()), |acc, (k, v)| {
            acc.insert(Header {
                key: k,
                value: Some(v.as_slice()),
            })
        })
}

#[async_trait]
impl Bus for KafkaBus {
    fn backend(&self) -> &'static str {
        "kafka"
    }

    async fn publish(&self, messages: &[Outgoing]) -> Vec<Result<(), BusError>> {
        let topics: Vec<&str> = messages.iter().map(|m| m.topic.as_str()).collect();
        if let Err(e) = self.ensure_topics(&topics).await {
            return vec![Err(e); messages.len()];
        }
        let mut pending = Vec::with_capacity(messages.len());
        for m in messages {
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&m.topic)
                .payload(m.value.as_slice())
                .headers(owned_headers(&m.headers));
            if let Some(k) = &m.key {
                record = record.key(k.as_slice());
            }
            // A full local queue is waited out (briefly), as backpressure.
            let mut record = Some(record);
            let mut waited = Duration::ZERO;
            let sent = loop {
                match self.producer.send_result(record.take().expect("set")) {
                    Ok(f) => break Ok(f),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                        if waited < self.cfg.publish_timeout =>
                    {
                        record = Some(r);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        waited += Duration::from_millis(5);
                    }
                    Err((e, _)) => break Err(send_error(&e)),
                }
            };
            pending.push(sent);
        }
        let mut results = Vec::with_capacity(pending.len());
        for p in pending {
            results.push(match p {
                Err(e) => Err(e),
                Ok(f) => match f.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(send_error(&e)),
                    Err(_) => Err(BusError::Unavailable("the producer was closed".into())),
                },
            });
        }
        results
    }

    async fn join(
        &self,
        group: &str,
        topics: &[String],
        start: Start,
    ) -> Result<Box<dyn Consumer>, BusError> {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        self.ensure_topics(&names).await?;
        let consumer: StreamConsumer = base(&self.cfg, &self.client_id)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set(
                "auto.offset.reset",
                match start {
                    Start::Earliest => "earliest",
                    Start::Latest => "latest",
                },
            )
            .set("session.timeout.ms", millis(self.cfg.session_timeout))
            .set(
                "heartbeat.interval.ms",
                millis(self.cfg.session_timeout / 4),
            )
            .set("topic.metadata.refresh.interval.ms", "5000")
            .set("fetch.wait.max.ms", millis(self.cfg.fetch_wait))
            .create()
            .map_err(|e| BusError::Config(e.to_string()))?;
        consumer.subscribe(&names).map_err(|e| unavailable(&e))?;
        Ok(Box::new(KafkaConsumer {
            consumer: Some(consumer),
            last_commit: None,
            committed: HashMap::new(),
        }))
    }
}

fn received(m: &BorrowedMessage<'_>) -> Received {
    Received {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        headers: m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default(),
        value: m.payload().unwrap_or_default().to_vec(),
    }
}

/// The longest a settled position waits to be committed.
const COMMIT_EVERY: Duration = Duration::from_millis(200);

struct KafkaConsumer {
    consumer: Option<StreamConsumer>,
    last_commit: Option<std::time::Instant>,
    /// Everything committed so far: committed again, synchronously, when leaving.
    committed: HashMap<(String, i32), i64>,
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Received>, BusError> {
        let Some(c) = &self.consumer else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        match tokio::time::timeout(wait, c.recv()).await {
            Err(_) => return Ok(out),
            Ok(Err(e)) => return Err(unavailable(&e)),
            Ok(Ok(m)) => out.push(received(&m)),
        }
        while out.len() < max {
            match c.recv().now_or_never() {
                Some(Ok(m)) => out.push(received(&m)),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn commit(&mut self, positions: &[Position]) -> Result<(), BusError> {
        let Some(c) = &self.consumer else {
            return Ok(());
        };
        for p in positions {
            self.committed
                .insert((p.topic.clone(), p.partition), p.next);
        }
        // At most one commit request per COMMIT_EVERY (a broker writes each one): what is
        // settled meanwhile goes with the next, or with the final commit when leaving.
        // After a crash, at most that much is delivered again (inboxes absorb it).
        if self.last_commit.is_some_and(|t| t.elapsed() < COMMIT_EVERY) {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in &self.committed {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(|e| unavailable(&e))?;
        }
        self.last_commit = Some(std::time::Instant::now());
        c.commit(&tpl, CommitMode::Async)
            .map_err(|e| unavailable(&e))
    }

    /// The partitions' high watermarks (asked of the broker: a blocking call, made off the
    /// async threads' duty with `block_in_place`) minus the positions committed.
    async fn lag(&mut self) -> Vec<(String, i32, i64)> {
        let Some(c) = &self.consumer else {
            return Vec::new();
        };
        if tokio::runtime::Handle::current().runtime_flavor()
            != tokio::runtime::RuntimeFlavor::MultiThread
        {
            return Vec::new();
        }
        let Ok(assigned) = c.assignment() else {
            return Vec::new();
        };
        assigned
            .elements()
            .iter()
            .filter_map(|e| {
                let (_, high) = tokio::task::block_in_place(|| {
                    c.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(1))
                })
                .ok()?;
                if high < 0 {
                    return None;
                }
                let committed = self
                    .committed
                    .get(&(e.topic().to_owned(), e.partition()))
                    .copied()
                    .unwrap_or(0);
                Some((
                    e.topic().to_owned(),
                    e.partition(),
                    (high - committed).max(0),
                ))
            })
            .collect()
    }

    async fn close(mut self: Box<Self>) {
        let Some(c) = self.consumer.take() else {
            return;
        };
        let mut committed = TopicPartitionList::new();
        for ((topic, partition), next) in &self.committed {
            let _ = committed.add_partition_offset(topic, *partition, Offset::Offset(*next));
        }
        // Committing synchronously and leaving the group block: off the async threads.
        let _ = tokio::task::spawn_blocking(move || {
            if committed.count() > 0
                && let Err(e) = c.commit(&committed, CommitMode::Sync)
            {
                tracing::warn!(error = %e, "final commit failed; the last events may be delivered again");
            }
            c.unsubscribe();
            drop(c);
        })
        .await;
    }
}
