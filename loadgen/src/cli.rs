//! The command line: the experiments a user runs, and the `serve` roles the
//! harness starts this same binary in.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Proving ground for the wallet system: provision it, load it, break it, check it",
    long_about = None,
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the whole system locally (PostgreSQL, broker, wallet, history) and keep it up until Ctrl-C.
    Up(UpArgs),
    /// Run one process role in the foreground (the harness starts these).
    #[command(subcommand)]
    Serve(Serve),
}

#[derive(Debug, Subcommand)]
pub enum Serve {
    /// The wallet service.
    Wallet(wallet::Config),
    /// The history service.
    History(history::Config),
    /// The Kafka-protocol broker.
    Broker(broker::Config),
}

/// Where the system runs: provisioned here, or existing infrastructure.
#[derive(Debug, Clone, Args)]
pub struct InfraArgs {
    /// Admin URL of an existing PostgreSQL server (the run creates its own
    /// databases there). Default: a private cluster in a temporary directory.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// An existing Kafka-protocol broker. Default: start the bundled broker.
    #[arg(long, env = "KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// Topic partitions.
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,

    /// The history consumer's session timeout: how long the group waits
    /// before moving a dead consumer's partitions.
    #[arg(long, default_value_t = 6_000)]
    pub session_timeout_ms: u32,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub infra: InfraArgs,

    /// Wallet HTTP port.
    #[arg(long, default_value_t = 3000)]
    pub wallet_port: u16,

    /// History HTTP port.
    #[arg(long, default_value_t = 3001)]
    pub history_port: u16,

    /// Broker port (when the bundled broker is started).
    #[arg(long, default_value_t = 9092)]
    pub broker_port: u16,

    /// Directory for logs and the broker's storage.
    #[arg(long, default_value = "runs/up")]
    pub dir: PathBuf,

    /// Send a little demo traffic (two wallets, a fund, a transfer) and show the history it produced.
    #[arg(long)]
    pub demo: bool,
}
