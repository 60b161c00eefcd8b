//! The history service: a Kafka consumer group member that applies each
//! wallet event exactly once to its own database, and serves history.
//!
//! - [`consumer`]: the group member; stores offsets only after commit.
//! - [`apply`]: the exactly-once, in-order application of a batch.
//! - [`api`]: the HTTP router (no I/O) and its error codes.
//! - [`openapi`]: the API's OpenAPI document, served at `/openapi.json`.

pub mod api;
pub mod apply;
pub mod consumer;
pub mod openapi;

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
};

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use api::{AppState, router};
pub use consumer::{ConsumerStatus, SharedStatus};

/// Migrations of the history database, applied at start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The history service's command line and environment.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "history",
    version,
    about = "History service: applies wallet events exactly once and serves history"
)]
pub struct Config {
    #[command(flatten)]
    pub connections: service_kit::Connections,

    #[command(flatten)]
    pub auth: service_kit::auth::AuthArgs,

    /// Consumer group.
    #[arg(long, env = "KAFKA_GROUP_ID", default_value = "history-service-group")]
    pub kafka_group_id: String,

    /// Static group membership id (group.instance.id); a restarted member
    /// with the same id gets its partitions back without a rebalance.
    #[arg(long, env = "KAFKA_GROUP_INSTANCE_ID")]
    pub kafka_group_instance_id: Option<String>,

    /// How long the group waits for a silent member before reassigning its
    /// partitions; a killed consumer's partitions move after about this long.
    #[arg(long, env = "KAFKA_SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    pub session_timeout_ms: u32,

    /// Longest a fetch waits at the broker for data (keep short: some
    /// brokers do not wake a waiting fetch when data arrives).
    #[arg(long, env = "KAFKA_FETCH_WAIT_MAX_MS", default_value_t = 50)]
    pub fetch_wait_max_ms: u32,

    /// Messages applied per database transaction at most.
    #[arg(long, env = "BATCH_MAX", default_value_t = consumer::BATCH_MAX_DEFAULT)]
    pub batch_max: usize,

    /// HTTP port.
    #[arg(long, env = "PORT", default_value_t = 3001)]
    pub port: u16,

    /// Address to bind the HTTP listener to.
    #[arg(long, env = "BIND_ADDRESS", default_value = "127.0.0.1")]
    pub bind_address: IpAddr,

    /// Maximum database connections.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 10)]
    pub db_pool_size: u32,
}

/// The whole service: database, consumer, HTTP, until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let auth = config.auth.auth("history")?;
    let metrics = service_kit::metrics::install()?;
    let pool = service_kit::connect_and_migrate(
        &config.connections.database_url,
        config.db_pool_size,
        &MIGRATOR,
    )
    .await
    .context("the history database")?;
    let shutdown = CancellationToken::new();
    tokio::spawn(service_kit::shutdown_on_signal(shutdown.clone()));
    let status: SharedStatus = Arc::new(Mutex::new(ConsumerStatus {
        state: "starting",
        ..ConsumerStatus::default()
    }));

    let consumer_config = consumer::ConsumerConfig {
        brokers: config.connections.kafka_brokers.clone(),
        topic: config.connections.kafka_topic.clone(),
        group_id: config.kafka_group_id.clone(),
        group_instance_id: config.kafka_group_instance_id.clone(),
        session_timeout_ms: config.session_timeout_ms,
        fetch_wait_max_ms: config.fetch_wait_max_ms,
        batch_max: config.batch_max,
    };
    let consumer = tokio::spawn(consumer::run(
        pool.clone(),
        consumer_config,
        status.clone(),
        shutdown.clone(),
    ));

    let listener = TcpListener::bind((config.bind_address, config.port))
        .await
        .with_context(|| format!("binding {}:{}", config.bind_address, config.port))?;
    tracing::info!(address = %listener.local_addr()?, "history listening");
    let app = router(AppState {
        pool: pool.clone(),
        consumer: status.clone(),
        auth,
    })
    .merge(service_kit::metrics::route(
        metrics,
        service_kit::metrics::sampler({
            let pool = pool.clone();
            move || {
                sample_metrics(&pool, &status);
                std::future::ready(())
            }
        }),
    ));
    // The consumer ends only at shutdown; if it ends first (a broken
    // assertion, say), the whole process stops rather than serve a history
    // that no longer advances.
    let consumed = async {
        let result = consumer.await;
        if !shutdown.is_cancelled() {
            tracing::error!("the consumer stopped on its own; shutting down");
            shutdown.cancel();
        }
        result
    };
    let served = async {
        let result = service_kit::serve(listener, app, shutdown.clone()).await;
        shutdown.cancel();
        result
    };
    let (served, consumed) = tokio::join!(served, consumed);
    pool.close().await;
    served?;
    consumed.context("the consumer task failed")??;
    Ok(())
}

/// Right before a scrape: the pool's usage and the consumer's totals since
/// the process started, `history_events_total{result}` with `result` one
/// of `applied`, `duplicate`, `parked`, `dead_lettered`. (Each partition's
/// lag, `consumer_lag{partition}`, comes from librdkafka's statistics:
/// [`consumer::StatusContext`].)
fn sample_metrics(pool: &sqlx::PgPool, status: &SharedStatus) {
    service_kit::metrics::record_pool(pool);
    let totals = status.lock().expect("status lock").totals;
    for (result, count) in [
        ("applied", totals.applied),
        ("duplicate", totals.duplicates),
        ("parked", totals.parked),
        ("dead_lettered", totals.dead_lettered),
    ] {
        metrics::counter!("history_events_total", "result" => result).absolute(count);
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    service_kit::init_tracing("info,sqlx=warn,tower_http=warn,rdkafka=warn");
}
