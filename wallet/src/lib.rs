//! The wallet service: creates wallets, funds them and transfers between
//! them over PostgreSQL; every change writes its ledger entries and outbox
//! rows in the same transaction, and the outbox relay carries them to Kafka.
//!
//! - [`api`]: the HTTP router (no I/O) and the response envelope.
//! - [`store`]: the transactions on the wallet database.
//! - [`domain`]: the ledger rules, pure: no I/O, no clock, ids from a source.
//! - [`relay`]: the outbox relay task.
//! - [`error`]: the API's error codes.
//! - [`openapi`]: the API's OpenAPI document, served at `/openapi.json`.

pub mod api;
pub mod domain;
pub mod error;
pub mod openapi;
pub mod relay;
pub mod store;

use std::net::IpAddr;

use anyhow::Context;
use clap::Parser;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use api::{AppState, router};

/// Migrations of the wallet database, applied at start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The wallet service's command line and environment.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "wallet",
    version,
    about = "Wallet service: create, fund and transfer, with an outbox to Kafka"
)]
pub struct Config {
    #[command(flatten)]
    pub connections: service_kit::Connections,

    #[command(flatten)]
    pub auth: service_kit::auth::AuthArgs,

    /// Partitions to create the topic with if it does not exist yet.
    #[arg(long, env = "KAFKA_TOPIC_PARTITIONS", default_value_t = 8)]
    pub topic_partitions: i32,

    /// HTTP port.
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,

    /// Address to bind the HTTP listener to.
    #[arg(long, env = "BIND_ADDRESS", default_value = "127.0.0.1")]
    pub bind_address: IpAddr,

    /// Maximum database connections.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 20)]
    pub db_pool_size: u32,

    /// Outbox rows published per relay round.
    #[arg(long, env = "RELAY_BATCH_MAX", default_value_t = relay::BATCH_MAX_DEFAULT)]
    pub relay_batch_max: i64,

    /// Do not run the outbox relay in this process (another process relays).
    #[arg(long, env = "NO_RELAY")]
    pub no_relay: bool,
}

/// Connects and migrates, waiting for a database that is still starting.
pub async fn connect(config: &Config) -> anyhow::Result<PgPool> {
    service_kit::connect_and_migrate(
        &config.connections.database_url,
        config.db_pool_size,
        &MIGRATOR,
    )
    .await
    .context("the wallet database")
}

/// The whole service: database, relay, HTTP, until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let auth = config.auth.auth("wallet")?;
    let metrics = service_kit::metrics::install()?;
    let pool = connect(&config).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(service_kit::shutdown_on_signal(shutdown.clone()));

    let store = store::Store::postgres(pool.clone());
    let relay = (!config.no_relay).then(|| {
        let relay_config = relay::RelayConfig {
            brokers: config.connections.kafka_brokers.clone(),
            topic: config.connections.kafka_topic.clone(),
            partitions: config.topic_partitions,
            batch_max: config.relay_batch_max,
        };
        tokio::spawn(relay::run(
            pool.clone(),
            relay_config,
            store.db().outbox_wake().clone(),
            shutdown.clone(),
        ))
    });

    let address = (config.bind_address, config.port);
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {}:{}", config.bind_address, config.port))?;
    tracing::info!(address = %listener.local_addr()?, "wallet listening");
    let state = AppState { store, auth };
    let app = router(state).merge(service_kit::metrics::route(
        metrics,
        service_kit::metrics::sampler({
            let pool = pool.clone();
            move || sample_metrics(pool.clone())
        }),
    ));
    service_kit::serve(listener, app, shutdown.clone()).await?;
    shutdown.cancel();
    if let Some(relay) = relay {
        let _ = relay.await;
    }
    pool.close().await;
    Ok(())
}

/// Right before a scrape: the pool's usage, and the outbox's backlog with
/// the age of its oldest unpublished row (`outbox_backlog`,
/// `outbox_oldest_unpublished_age_seconds`; 0 when it is empty). A
/// database that does not answer leaves the last figures and sets
/// `outbox_sample_failed` to 1.
async fn sample_metrics(pool: PgPool) {
    service_kit::metrics::record_pool(&pool);
    let sampled: Result<(i64, f64), sqlx::Error> = sqlx::query_as(
        "SELECT count(*),
                COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - (
                    SELECT created_at FROM outbox WHERE published_at IS NULL
                    ORDER BY id LIMIT 1)), 0)::float8
         FROM outbox WHERE published_at IS NULL",
    )
    .fetch_one(&pool)
    .await;
    match sampled {
        Ok((backlog, oldest_s)) => {
            metrics::gauge!("outbox_backlog").set(backlog as f64);
            metrics::gauge!("outbox_oldest_unpublished_age_seconds").set(oldest_s);
            metrics::gauge!("outbox_sample_failed").set(0);
        }
        Err(err) => {
            tracing::warn!(error = %err, "metrics: cannot read the outbox backlog");
            metrics::gauge!("outbox_sample_failed").set(1);
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    service_kit::init_tracing("info,sqlx=warn,tower_http=warn,rdkafka=warn");
}
