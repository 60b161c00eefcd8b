//! The wallet service: creates wallets, funds them and transfers between
//! them over PostgreSQL; every change writes its ledger entries and outbox
//! rows in the same transaction, and the outbox relay carries them to Kafka.
//!
//! - [`api`]: the HTTP router (no I/O) and the response envelope.
//! - [`store`]: the transactions on the wallet database.
//! - [`domain`]: the ledger rules, pure, shared with the simulator.
//! - [`relay`]: the outbox relay task.
//! - [`error`]: the API's error codes.

pub mod api;
pub mod domain;
pub mod error;
pub mod relay;
pub mod store;

use std::{net::IpAddr, time::Duration};

use anyhow::Context;
use clap::Parser;
use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use api::{AppState, router};

/// Migrations of the wallet database, applied at start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long start-up keeps trying to reach the database (it may be
/// restarting, for instance under chaos) before giving up.
const DATABASE_WAIT_MS: u64 = 60_000;

/// The wallet service's command line and environment.
#[derive(Debug, Clone, Parser)]
#[command(name = "wallet", version, about = "Wallet service: create, fund and transfer, with an outbox to Kafka")]
pub struct Config {
    /// PostgreSQL URL of the wallet database (migrated at start-up).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,

    /// Kafka bootstrap servers, comma-separated.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Topic the outbox relay publishes to.
    #[arg(long, env = "KAFKA_TOPIC", default_value = wallet_events::DEFAULT_TOPIC)]
    pub kafka_topic: String,

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

/// Connects lazily and runs the migrations, retrying while the database is
/// not reachable yet.
pub async fn connect(config: &Config) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(config.db_pool_size)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(&config.database_url)
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(DATABASE_WAIT_MS);
    loop {
        match MIGRATOR.run(&pool).await {
            Ok(()) => return Ok(pool),
            Err(err) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %err, "database not ready, retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => return Err(err).context("migrating the wallet database"),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets
/// requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("serving HTTP")
}

/// The whole service: database, relay, HTTP, until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let pool = connect(&config).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_on_signal(shutdown.clone()));

    let relay = (!config.no_relay).then(|| {
        let relay_config = relay::RelayConfig {
            brokers: config.kafka_brokers.clone(),
            topic: config.kafka_topic.clone(),
            partitions: config.topic_partitions,
            batch_max: config.relay_batch_max,
        };
        tokio::spawn(relay::run(pool.clone(), relay_config, shutdown.clone()))
    });

    let address = (config.bind_address, config.port);
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {}:{}", config.bind_address, config.port))?;
    tracing::info!(address = %listener.local_addr()?, "wallet listening");
    let state = AppState { store: store::Store::new(pool.clone()) };
    serve(listener, router(state), shutdown.clone()).await?;
    shutdown.cancel();
    if let Some(relay) = relay {
        let _ = relay.await;
    }
    pool.close().await;
    Ok(())
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
pub async fn shutdown_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn,tower_http=warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}
