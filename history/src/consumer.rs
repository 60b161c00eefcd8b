//! The Kafka side of the history service: a consumer group member that
//! reads batches, hands them to [`crate::apply`], and stores each message's
//! offset only after the batch's transaction committed. librdkafka commits
//! stored offsets in the background (and on a clean leave), so a committed
//! offset always points past work that is durable in the history database.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use rdkafka::{
    ClientConfig, ClientContext, Message, Statistics, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    message::BorrowedMessage,
};
use service_kit::Backoff;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::apply::{BatchStats, HistoryDb, Incoming, PgHistoryDb, apply_batch};

/// Messages applied per database transaction at most: the transaction's
/// statements are set-based, so a backlog drains at about this many
/// messages per commit.
pub const BATCH_MAX_DEFAULT: usize = 2_000;
/// How long to wait for more messages before applying a partial batch; a
/// short wait keeps latency low while load still fills batches.
const BATCH_FILL_WAIT_MS: u64 = 2;
/// Backoff between attempts at a batch whose transaction failed (database
/// down); the batch is retried until it commits, never skipped.
const RETRY_FIRST_MS: u64 = 100;
const RETRY_MAX_MS: u64 = 5_000;
/// How long a clean shutdown waits for the final offset commit and the
/// group leave; a clean leave hands the partitions over at once.
const CLOSE_TIMEOUT_MS: u64 = 3_000;
/// librdkafka's longest pause between reconnects to a broker that went
/// away: a restarted broker is found within a fifth of a second.
const RECONNECT_BACKOFF_MAX_MS: u64 = 200;
/// How long a partition's fetch waits after a fetch failed (librdkafka's
/// default is 500 ms, which a restarted broker would wait out first).
const FETCH_ERROR_BACKOFF_MS: u64 = 100;
/// How often the shutdown checks whether the close finished.
const CLOSE_POLL_MS: u64 = 20;
/// Stored offsets are committed this often: the longer, the more a
/// restarted member re-reads (harmless, the duplicate guard drops it).
const AUTO_COMMIT_INTERVAL_MS: u64 = 200;
/// How often librdkafka reports its statistics (each partition's lag).
const STATISTICS_INTERVAL_MS: u64 = 1_000;
/// Pause after a consumer error (broker unreachable) before polling again;
/// librdkafka reconnects on its own meanwhile.
const ERROR_PAUSE_MS: u64 = 100;

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub brokers: String,
    pub topic: String,
    pub group_id: String,
    pub group_instance_id: Option<String>,
    pub session_timeout_ms: u32,
    pub fetch_wait_max_ms: u32,
    pub batch_max: usize,
}

/// What `/health` reports about the consumer.
#[derive(Debug, Clone, Default)]
pub struct ConsumerStatus {
    pub state: &'static str,
    pub assigned_partitions: Vec<i32>,
    pub totals: BatchStats,
    pub last_applied_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

pub type SharedStatus = Arc<Mutex<ConsumerStatus>>;

/// Keeps the assignment in the shared status as the group rebalances.
pub struct StatusContext {
    status: SharedStatus,
}

impl ClientContext for StatusContext {
    /// librdkafka's statistics, every [`STATISTICS_INTERVAL_MS`]: the lag
    /// of each partition this member is assigned, behind the partition's
    /// high watermark, as `consumer_lag{partition}`.
    fn stats(&self, statistics: Statistics) {
        let assigned = self
            .status
            .lock()
            .expect("status lock")
            .assigned_partitions
            .clone();
        for topic in statistics.topics.values() {
            for (partition, figures) in &topic.partitions {
                if assigned.contains(partition) && figures.consumer_lag >= 0 {
                    metrics::gauge!("consumer_lag", "partition" => partition.to_string())
                        .set(figures.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for StatusContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut status = self.status.lock().expect("status lock");
        match rebalance {
            Rebalance::Assign(list) => {
                status.assigned_partitions = partitions(list);
                tracing::info!(partitions = ?status.assigned_partitions, "partitions assigned");
            }
            Rebalance::Revoke(list) => {
                let revoked = partitions(list);
                status.assigned_partitions.retain(|p| !revoked.contains(p));
                tracing::info!(partitions = ?revoked, "partitions revoked");
            }
            Rebalance::Error(err) => {
                tracing::warn!(error = %err, "rebalance error");
            }
        }
    }
}

fn partitions(list: &TopicPartitionList) -> Vec<i32> {
    let mut partitions: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
    partitions.sort_unstable();
    partitions
}

fn create(
    config: &ConsumerConfig,
    status: SharedStatus,
) -> anyhow::Result<StreamConsumer<StatusContext>> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "true")
        // Offsets are stored by hand, after the history transaction commits.
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.commit.interval.ms",
            AUTO_COMMIT_INTERVAL_MS.to_string(),
        )
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (config.session_timeout_ms / 5).max(100).to_string(),
        )
        // Some brokers (nisshi among them) do not wake a waiting fetch when
        // data arrives; a short wait bounds the added latency.
        .set("fetch.wait.max.ms", config.fetch_wait_max_ms.to_string())
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS.to_string())
        .set(
            "reconnect.backoff.max.ms",
            RECONNECT_BACKOFF_MAX_MS.to_string(),
        )
        .set("fetch.error.backoff.ms", FETCH_ERROR_BACKOFF_MS.to_string());
    if let Some(instance) = &config.group_instance_id {
        client.set("group.instance.id", instance);
    }
    let consumer: StreamConsumer<StatusContext> =
        client.create_with_context(StatusContext { status })?;
    consumer.subscribe(&[&config.topic])?;
    Ok(consumer)
}

/// Consumes until `shutdown`; then commits what is stored and leaves the
/// group cleanly so the partitions move on at once.
pub async fn run(
    pool: PgPool,
    config: ConsumerConfig,
    status: SharedStatus,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let consumer = create(&config, status.clone())?;
    let db = PgHistoryDb::new(pool);
    set_state(&status, "running");
    let mut batch: Vec<Incoming> = Vec::with_capacity(config.batch_max);
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            received = consumer.recv() => received,
        };
        match first {
            Ok(message) => batch.push(incoming(&message)),
            Err(err) => {
                tracing::debug!(error = %err, "consumer error");
                status.lock().expect("status lock").last_error = Some(err.to_string());
                tokio::time::sleep(Duration::from_millis(ERROR_PAUSE_MS)).await;
                continue;
            }
        }
        while batch.len() < config.batch_max {
            let wait = Duration::from_millis(BATCH_FILL_WAIT_MS);
            match tokio::time::timeout(wait, consumer.recv()).await {
                Ok(Ok(message)) => batch.push(incoming(&message)),
                _ => break,
            }
        }
        let clock = WallClock {
            shutdown: shutdown.clone(),
        };
        if !process_batch(&db, &consumer, &batch, &status, &clock).await {
            break;
        }
        batch.clear();
    }
    set_state(&status, "stopping");
    // Committing and leaving the group talk to the broker, which may be
    // gone; a plain thread bounds the wait (a blocking task would hold up
    // the runtime's shutdown), and exiting the process abandons it.
    let closing = std::thread::spawn(move || {
        if let Err(err) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %err, "final commit");
        }
        drop(consumer);
    });
    let deadline = tokio::time::Instant::now() + Duration::from_millis(CLOSE_TIMEOUT_MS);
    while !closing.is_finished() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(CLOSE_POLL_MS)).await;
    }
    set_state(&status, "stopped");
    Ok(())
}

/// Where a batch's offsets go once its transaction committed.
pub trait OffsetStore {
    /// Stores `offset` as processed; the next commit of the group covers it.
    fn store_offset(&self, topic: &str, partition: i32, offset: i64) -> Result<(), String>;
}

impl<C: ConsumerContext> OffsetStore for StreamConsumer<C> {
    fn store_offset(&self, topic: &str, partition: i32, offset: i64) -> Result<(), String> {
        Consumer::store_offset(self, topic, partition, offset).map_err(|err| err.to_string())
    }
}

/// Time as the consumer sees it: the wall clock and tokio's timers in the
/// service, simulated time in the simulator.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;

    /// Waits `pause`; false if the consumer is stopping meanwhile.
    fn sleep(&self, pause: Duration) -> impl Future<Output = bool> + Send;
}

/// The service's clock: wall time, tokio timers, woken by shutdown.
pub struct WallClock {
    pub shutdown: CancellationToken,
}

impl Clock for WallClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep(&self, pause: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(pause) => true,
            () = self.shutdown.cancelled() => false,
        }
    }
}

/// One batch, the consumer's contract kept: apply it in one transaction,
/// retried with bounded backoff until it commits (never skipped), and only
/// then store its offsets. If the clock says the consumer is stopping
/// between attempts, the batch's offsets are not stored, so it will be
/// delivered again. Returns false if it stopped.
pub async fn process_batch<D, O, C>(
    db: &D,
    offsets: &O,
    batch: &[Incoming],
    status: &SharedStatus,
    clock: &C,
) -> bool
where
    D: HistoryDb,
    O: OffsetStore + ?Sized,
    C: Clock,
{
    let early = service_kit::canary::enabled("offset-before-commit");
    if early {
        store_offsets(offsets, batch);
    }
    let mut backoff = Backoff::new(
        Duration::from_millis(RETRY_FIRST_MS),
        Duration::from_millis(RETRY_MAX_MS),
    );
    loop {
        match apply_batch(db, batch).await {
            Ok(stats) => {
                let mut status = status.lock().expect("status lock");
                status.totals.applied += stats.applied;
                status.totals.duplicates += stats.duplicates;
                status.totals.parked += stats.parked;
                status.totals.dead_lettered += stats.dead_lettered;
                status.last_applied_at = Some(clock.now());
                status.state = "running";
                break;
            }
            Err(err) => {
                tracing::warn!(error = %err, messages = batch.len(), "applying batch failed, retrying");
                {
                    let mut status = status.lock().expect("status lock");
                    status.state = "retrying";
                    status.last_error = Some(err.to_string());
                }
                if !clock.sleep(backoff.next_pause()).await {
                    return false;
                }
            }
        }
    }
    if !early {
        store_offsets(offsets, batch);
    }
    true
}

fn store_offsets<O: OffsetStore + ?Sized>(offsets: &O, batch: &[Incoming]) {
    for message in batch {
        // Fails only for a partition revoked meanwhile: its new owner
        // re-reads the message and the duplicate guard drops it.
        if let Err(err) = offsets.store_offset(&message.topic, message.partition, message.offset) {
            tracing::debug!(error = %err, partition = message.partition, "offset not stored");
        }
    }
}

fn incoming(message: &BorrowedMessage<'_>) -> Incoming {
    Incoming {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec),
    }
}

fn set_state(status: &SharedStatus, state: &'static str) {
    status.lock().expect("status lock").state = state;
}
