//! The project's Kafka-protocol broker: nisshi's library crates behind a
//! small command line.
//!
//! It runs as a process of its own so that the chaos module can SIGKILL it
//! and start it again; with durable storage (`sqlite://FILE` or
//! `postgres://...`) a restarted broker serves every message it acknowledged
//! before the kill. The services never depend on this crate: they speak the
//! plain Kafka protocol and work against any broker named by `KAFKA_BROKERS`.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use nisshi_broker::{
    broker::Broker,
    coordinator::group::administrator::{Controller, GroupCoordinatorConfig},
};
use nisshi_storage::ArcDynStorage;
use url::Url;

/// nisshi's crates trace the return value of nearly every function at INFO:
/// gigabytes of log in a 10-minute run. They log at WARN unless `RUST_LOG`
/// names them.
const CHATTY_TARGETS: [&str; 8] = [
    "nisshi_auth",
    "nisshi_broker",
    "nisshi_model",
    "nisshi_sans_io",
    "nisshi_schema",
    "nisshi_service",
    "nisshi_storage",
    "nisshi_storage_sql",
];

/// Logs to stderr (colours only on a terminal), filtered by `RUST_LOG`,
/// else `info`; nisshi's own tracing at WARN (see [`CHATTY_TARGETS`]).
pub fn init_tracing() {
    use std::io::IsTerminal;
    let requested = std::env::var("RUST_LOG").unwrap_or_default();
    let mut filter = tracing_subscriber::EnvFilter::try_new(&requested)
        .ok()
        .filter(|_| !requested.is_empty())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    for target in CHATTY_TARGETS {
        if !requested.contains(target)
            && let Ok(directive) = format!("{target}=warn").parse()
        {
            filter = filter.add_directive(directive);
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Command line and environment of the broker process.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "broker",
    version,
    about = "Kafka-protocol broker (nisshi) for the wallet system"
)]
pub struct Config {
    /// Address the broker listens on.
    #[arg(long, env = "BROKER_LISTEN", default_value = "127.0.0.1:9092")]
    pub listen: String,

    /// Address advertised to clients; defaults to the listen address.
    #[arg(long, env = "BROKER_ADVERTISED")]
    pub advertised: Option<String>,

    /// Where topics, messages and group offsets live: `sqlite://FILE`
    /// (relative to the working directory) or `postgres://...`; both
    /// survive a SIGKILL. (nisshi's in-memory and object-store engines are
    /// not built in: nothing here uses them, and they cost build time.)
    #[arg(long, env = "BROKER_STORAGE", default_value = "sqlite://broker.db")]
    pub storage: String,

    /// Cluster id recorded in storage; a restart must reuse it.
    #[arg(long, env = "BROKER_CLUSTER_ID", default_value = "wallet-system")]
    pub cluster_id: String,

    /// Node id of this broker.
    #[arg(long, env = "BROKER_NODE_ID", default_value_t = 111)]
    pub node_id: i32,

    /// How long an empty consumer group waits for more members before its
    /// first assignment (Kafka's group.initial.rebalance.delay.ms).
    #[arg(
        long,
        env = "BROKER_INITIAL_REBALANCE_DELAY_MS",
        default_value_t = 3000
    )]
    pub initial_rebalance_delay_ms: u64,
}

/// Builds the broker and serves until the process is signalled.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let listener = tcp_url(&config.listen).context("--listen")?;
    let advertised = match &config.advertised {
        Some(address) => tcp_url(address).context("--advertised")?,
        None => listener.clone(),
    };
    let storage = Url::parse(&config.storage)
        .with_context(|| format!("--storage {:?} is not a URL", config.storage))?;
    if !matches!(storage.scheme(), "sqlite" | "postgres" | "postgresql") {
        bail!("--storage {storage}: use sqlite://FILE or postgres://...");
    }

    let broker = Broker::<Controller<ArcDynStorage>, ArcDynStorage>::builder()
        .node_id(config.node_id)
        .cluster_id(config.cluster_id.clone())
        .incarnation_id(uuid::Uuid::new_v4())
        .listener(listener.clone())
        .advertised_listener(advertised)
        .storage(storage)
        .silent(true)
        .group_coordinator(GroupCoordinatorConfig {
            initial_rebalance_delay: Duration::from_millis(config.initial_rebalance_delay_ms),
            ..GroupCoordinatorConfig::default()
        })
        .build()
        .await
        .context("building the broker")?;

    tracing::info!(%listener, storage = %config.storage, "broker starting");
    // `main` handles SIGINT/SIGTERM with an orderly shutdown; SIGKILL is the
    // chaos module's business.
    match broker.main(tokio::time::Instant::now()).await {
        Ok(_) => Ok(()),
        Err(err) => bail!("broker stopped: {err}"),
    }
}

fn tcp_url(address: &str) -> anyhow::Result<Url> {
    let text = if address.contains("://") {
        address.to_owned()
    } else {
        format!("tcp://{address}")
    };
    Url::parse(&text).with_context(|| format!("{address:?} is not host:port"))
}
