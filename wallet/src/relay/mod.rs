//! The outbox relay: a task in the wallet process that carries committed
//! outbox rows to the topic, round after round ([`round::publish_round`],
//! whose opening comment states the invariant it keeps).
//!
//! Here is the production wiring: the outbox on PostgreSQL
//! ([`PgOutbox`]: `FOR UPDATE SKIP LOCKED`, so several wallet processes can
//! relay at once without publishing a row twice in parallel), an
//! idempotent rdkafka producer (acks=all, key = wallet id:
//! [`KafkaPublisher`]), and the loop: rounds back to back while rows wait,
//! an idle wait woken by this process's commits ([`OutboxWake`]) or the
//! idle poll, bounded backoff after a failed round. With one relay a
//! wallet's events reach the topic in order; with several, one relay may
//! publish a wallet's later row while another still holds an earlier one,
//! and the consumer parks an early event until its predecessor arrives.

pub mod round;

use std::time::Duration;

use anyhow::Context;
use futures::future::join_all;
use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    error::RDKafkaErrorCode,
    producer::{FutureProducer, FutureRecord, Producer},
};
use round::{Outbox, OutboxRound, OutboxRow, Publisher, publish_round};
use service_kit::Backoff;
use sqlx::{PgPool, Row};

use crate::store::{DbError, OutboxWake};
use tokio_util::sync::CancellationToken;

/// Rows published per round: a round costs a few round trips and one wait
/// for the broker however many rows it carries, so fewer, larger rounds
/// drain a backlog (after a broker outage) with fewer commits. In `bench`'s
/// outage phase 500 and 2,000 both drained 6,000-8,600 rows/s, the broker's
/// intake being the bound. A failed round re-publishes at most this many
/// (duplicates the consumer drops).
pub const BATCH_MAX_DEFAULT: i64 = 2_000;
/// How long the broker may take to acknowledge a message before the round
/// fails and is retried (librdkafka retries inside this window).
const MESSAGE_TIMEOUT_MS: u64 = 10_000;
/// Backoff after a failed round: doubles from the first to the last value.
const BACKOFF_FIRST_MS: u64 = 100;
const BACKOFF_MAX_MS: u64 = 5_000;
/// How long a stopping relay waits for messages still queued in the
/// producer; their rows stay unpublished if this runs out, so the next
/// relay publishes them again.
const FLUSH_ON_STOP_MS: u64 = 5_000;
/// The producer waits this long to fill a batch: a little batching for a
/// small added latency.
const LINGER_MS: u64 = 2;
/// librdkafka's longest pause between reconnects to a broker that went
/// away, and between retries of a failed produce request: a restarted
/// broker is found within a fifth of a second (a second let the backlog
/// wait most of a second after the restart in `bench`'s outage phase).
const RECONNECT_BACKOFF_MAX_MS: u64 = 200;
/// How long the broker may take to create the topic.
const TOPIC_CREATE_TIMEOUT_MS: u64 = 10_000;
/// With no wake-up, look for rows this often anyway: rows another wallet
/// process committed while its own relay cannot publish them.
pub const IDLE_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub brokers: String,
    pub topic: String,
    pub partitions: i32,
    pub batch_max: i64,
}

/// Runs until `shutdown` is cancelled; then finishes the round in flight.
/// `wake` is raised by the commits of this process that wrote outbox rows.
pub async fn run(pool: PgPool, config: RelayConfig, wake: OutboxWake, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(
        Duration::from_millis(BACKOFF_FIRST_MS),
        Duration::from_millis(BACKOFF_MAX_MS),
    );
    let mut topic_ready = false;
    let outbox = PgOutbox::new(pool.clone());
    let mut publisher: Option<KafkaPublisher> = None;
    while !shutdown.is_cancelled() {
        if !topic_ready {
            match ensure_topic(&config).await {
                Ok(()) => topic_ready = true,
                Err(err) => {
                    tracing::warn!(
                        error = format!("{err:#}"),
                        "relay: topic not ready, will retry"
                    );
                    backoff.wait(&shutdown).await;
                    continue;
                }
            }
        }
        let publisher = match &publisher {
            Some(p) if p.producer.client().fatal_error().is_none() => p,
            _ => match new_producer(&config.brokers) {
                Ok(producer) => publisher.insert(KafkaPublisher {
                    producer,
                    topic: config.topic.clone(),
                }),
                Err(err) => {
                    tracing::error!(error = %err, "relay: cannot create producer");
                    backoff.wait(&shutdown).await;
                    continue;
                }
            },
        };
        let round_started = std::time::Instant::now();
        let round = publish_round(&outbox, publisher, config.batch_max).await;
        record_round(&round, round_started.elapsed());
        match round {
            Ok(report) if report.locked == 0 => {
                backoff.reset();
                tokio::select! {
                    _ = wake.raised() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
            Ok(report) => {
                backoff.reset();
                match &report.failure {
                    Some(err) => {
                        tracing::warn!(error = %err, marked = report.marked, "relay: partial round")
                    }
                    None => tracing::debug!(
                        published = report.marked,
                        round_ms = round_started.elapsed().as_secs_f64() * 1e3,
                        "relay: round published"
                    ),
                }
            }
            Err(err) => {
                tracing::warn!(
                    error = format!("{err:#}"),
                    "relay: round failed, will retry"
                );
                backoff.wait(&shutdown).await;
            }
        }
    }
    if let Some(publisher) = publisher
        && let Err(err) = publisher
            .producer
            .flush(Duration::from_millis(FLUSH_ON_STOP_MS))
    {
        tracing::warn!(error = %err, "relay: messages left unflushed at stop");
    }
    tracing::info!("relay stopped");
}

/// The round in the process's metrics: `relay_rounds_total{outcome}`
/// (`ok`, `idle`: nothing to publish, `partial`: some rows acknowledged,
/// `failed`), `relay_events_published_total`, and the duration of rounds
/// that published.
fn record_round(round: &Result<round::RoundReport, round::RoundError>, took: Duration) {
    let outcome = match round {
        Ok(report) if report.locked == 0 => "idle",
        Ok(report) if report.failure.is_some() => "partial",
        Ok(_) => "ok",
        Err(_) => "failed",
    };
    metrics::counter!("relay_rounds_total", "outcome" => outcome).increment(1);
    if let Ok(report) = round {
        metrics::counter!("relay_events_published_total").increment(report.marked as u64);
        if report.locked > 0 {
            metrics::histogram!("relay_round_duration_seconds").record(took.as_secs_f64());
        }
    }
}

fn new_producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS.to_string())
        .set("linger.ms", LINGER_MS.to_string())
        .set(
            "reconnect.backoff.max.ms",
            RECONNECT_BACKOFF_MAX_MS.to_string(),
        )
        .set("retry.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS.to_string())
        .create()
        .context("creating the Kafka producer")
}

/// Creates the topic with the configured partition count unless it exists
/// (auto-creation would pick the broker's default count instead).
pub async fn ensure_topic(config: &RelayConfig) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .create()
        .context("creating the Kafka admin client")?;
    let topic = NewTopic::new(&config.topic, config.partitions, TopicReplication::Fixed(1));
    let options =
        AdminOptions::new().operation_timeout(Some(Duration::from_millis(TOPIC_CREATE_TIMEOUT_MS)));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .context("asking the broker to create the topic")?;
    for result in results {
        match result {
            Ok(_) => {
                tracing::info!(topic = %config.topic, partitions = config.partitions, "topic created")
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("creating topic {name}: {code}"),
        }
    }
    Ok(())
}

/// The outbox on PostgreSQL.
pub struct PgOutbox {
    pool: PgPool,
}

impl PgOutbox {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

pub struct PgRound(sqlx::Transaction<'static, sqlx::Postgres>);

impl Outbox for PgOutbox {
    type Round = PgRound;

    async fn lock_unpublished(&self, batch_max: i64) -> Result<(PgRound, Vec<OutboxRow>), DbError> {
        // The round's commit records only which rows were published: it
        // need not wait for its WAL to reach disk. Should the server crash
        // before it does, the rows are unpublished again and the next round
        // publishes them a second time, which the consumer drops (the
        // invariant in [`round`] is kept). Durable commits stay on for every
        // write of the wallet's own. One round trip, as a plain BEGIN.
        let mut tx = self
            .pool
            .begin_with("BEGIN; SET LOCAL synchronous_commit = off")
            .await?;
        let rows = sqlx::query(
            "SELECT id, wallet_id, payload FROM outbox WHERE published_at IS NULL
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(batch_max)
        .fetch_all(&mut *tx)
        .await?;
        let rows = rows
            .iter()
            .map(|row| {
                Ok(OutboxRow {
                    id: row.try_get("id")?,
                    wallet_id: row.try_get("wallet_id")?,
                    payload: row.try_get("payload")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok((PgRound(tx), rows))
    }
}

impl OutboxRound for PgRound {
    async fn mark_sent(&mut self, ids: &[i64]) -> Result<(), DbError> {
        sqlx::query("UPDATE outbox SET published_at = clock_timestamp() WHERE id = ANY($1)")
            .bind(ids)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn commit(self) -> Result<(), DbError> {
        Ok(self.0.commit().await?)
    }
}

/// The topic through an idempotent rdkafka producer.
pub struct KafkaPublisher {
    producer: FutureProducer,
    topic: String,
}

impl Publisher for KafkaPublisher {
    async fn publish(&self, rows: &[OutboxRow]) -> Vec<Result<(), String>> {
        let queued = std::time::Instant::now();
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in rows {
            let key = row.wallet_id.to_string();
            let record = FutureRecord::to(&self.topic)
                .key(&key)
                .payload(&row.payload);
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                // The local queue is full: publish what was queued, the
                // rest goes next round.
                Err((err, _)) => {
                    tracing::debug!(error = %err, "relay: producer queue full");
                    break;
                }
            }
        }
        let answers = join_all(deliveries).await;
        tracing::debug!(
            rows = answers.len(),
            acked_ms = queued.elapsed().as_secs_f64() * 1e3,
            "relay: broker answered"
        );
        answers
            .into_iter()
            .map(|delivery| match delivery {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((err, _))) => Err(err.to_string()),
                Err(_) => Err("producer dropped".to_owned()),
            })
            .collect()
    }
}
