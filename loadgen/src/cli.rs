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
    /// Run a seeded load + chaos experiment, check every invariant and write the run directory with its report.html (exit 0 held, 1 violated, 2 harness failed, 3 threshold missed).
    Run(Box<RunArgs>),
    /// List the built-in scenarios.
    Scenarios,
    /// Start the whole system locally (PostgreSQL, broker, wallet, history) and keep it up until Ctrl-C.
    Up(UpArgs),
    /// Apply the history database's dead letters again (after their cause is fixed); those that now apply leave dead_letters and release their wallets' parked successors.
    ReplayDeadLetters(ReplayArgs),
    /// Deterministic simulation: the real service logic and checker on simulated time, one seed or thousands (exit 0 no violation, 1 violated, 2 bad arguments).
    Sim(sim::cli::SimArgs),
    /// Measure the system against a SQL-only model of a transfer on one private, durable PostgreSQL: throughput, latency at full and half load, history lag, catch-up after a broker outage, CPU per transfer, load generator cost (exit 0 every target met, 1 an invariant violated, 2 the bench failed, 3 a target missed).
    Bench(BenchArgs),
    /// Print a bearer token for a user (--user) or the admin (--admin), signed with AUTH_SECRET: what a client of the services sends as `Authorization: Bearer <token>`.
    Token(TokenArgs),
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
    /// A trivial HTTP endpoint (`GET /` answers `ok`, `POST /transfer` a
    /// receipt-sized body after `--delay-ms`): what `bench` runs bare
    /// goose against.
    #[command(hide = true)]
    Trivial {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Concurrent clients: pgbench connections and goose users.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub clients: u32,

    /// Wallets the transfers choose from (two distinct ones, uniformly).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub wallets: u32,

    /// How long each phase loads the system (at least 10s).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub duration: std::time::Duration,

    /// How long the broker stays down in the outage phase.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub outage: std::time::Duration,

    /// Seed of the service phases' operations.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Topic partitions of the service phases (as `run --partitions`, whose
    /// default is 8). The bench's one history instance needs no more than
    /// 2, and the bundled broker writes each partition of a produce
    /// request in a SQLite transaction of its own and polls each partition
    /// of a waiting fetch: with 8, its CPU per transfer was 32 % higher and
    /// the relay's median latency 3.5x.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(i32).range(1..=256))]
    pub partitions: i32,

    /// Where the bench directory is created.
    #[arg(long, default_value = "runs")]
    pub out_dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("subject").required(true).args(["user", "admin"]))]
pub struct TokenArgs {
    /// The user the token names: it may open, read and move money out of
    /// that user's wallets, nothing else.
    #[arg(long, value_name = "USER_ID")]
    pub user: Option<String>,

    /// A token for the operator: funds wallets, reads everything, opens
    /// wallets for anyone; moves no one's money.
    #[arg(long)]
    pub admin: bool,

    /// How long the token is valid (e.g. 15m, 1h, 30d).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    pub ttl: std::time::Duration,

    /// The services' token secret (at least 32 bytes). `loadgen up` prints
    /// the one it started the services with.
    #[arg(long, env = "AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: String,
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// PostgreSQL URL of the history database.
    #[arg(long, env = "HISTORY_DB")]
    pub history_db: String,
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

    /// Serve the services in open mode: no authentication at all (they
    /// warn loudly), and clients send no tokens. Default: a fresh token
    /// secret; clients send the owner's or the admin's token.
    #[arg(long)]
    pub open: bool,
}

/// A system this run did not start: a deployment, a cluster, or `loadgen
/// up` in another process.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "A system this run did not start")]
pub struct ExternalArgs {
    /// Load and check the system at this wallet URL (`http://host:port`;
    /// repeat for each instance) instead of starting one. Needs
    /// --history-url, --wallet-db and --history-db. Faults act only on what
    /// the harness can reach (latency, drops, partitions and lost answers
    /// on the link to each wallet instance, through a local proxy); the
    /// others are skipped, and the report lists them. The databases should
    /// hold nothing but this run's work: the checker holds every ledger row
    /// to an operation of the run.
    #[arg(long = "wallet-url", value_name = "URL", requires_all = ["history_urls", "wallet_db", "history_db"])]
    pub wallet_urls: Vec<String>,

    /// The history service's URL (repeat for each instance).
    #[arg(long = "history-url", value_name = "URL", requires = "wallet_urls")]
    pub history_urls: Vec<String>,

    /// PostgreSQL URL of the wallet's database (read by the checker).
    #[arg(long, value_name = "URL", requires = "wallet_urls")]
    pub wallet_db: Option<String>,

    /// PostgreSQL URL of the history database (read by the checker).
    #[arg(long, value_name = "URL", requires = "wallet_urls")]
    pub history_db: Option<String>,

    /// The attached services' token secret, to mint the load's tokens
    /// (with --open: none, for a system in open mode). A system this run
    /// starts gets a fresh secret instead.
    #[arg(long, env = "AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,
}

impl ExternalArgs {
    /// The system to attach to and the secret to mint tokens with (none
    /// when it is `open`), or `None` to start one.
    pub fn attach(
        &self,
        open: bool,
    ) -> anyhow::Result<Option<(harness::system::External, Option<String>)>> {
        if self.wallet_urls.is_empty() {
            return Ok(None);
        }
        let (Some(wallet_db), Some(history_db)) = (&self.wallet_db, &self.history_db) else {
            anyhow::bail!("--wallet-url needs --wallet-db and --history-db");
        };
        let secret = match (open, self.auth_secret.as_deref().filter(|s| !s.is_empty())) {
            (true, _) => None,
            (false, Some(secret)) => Some(secret.to_owned()),
            (false, None) => anyhow::bail!(
                "the system at {} checks tokens: set AUTH_SECRET to its services' secret \
                 (or pass --open if it runs in open mode)",
                self.wallet_urls[0]
            ),
        };
        let external = harness::system::External {
            wallet_urls: self.wallet_urls.clone(),
            history_urls: self.history_urls.clone(),
            wallet_db: wallet_db.clone(),
            history_db: history_db.clone(),
        };
        Ok(Some((external, secret)))
    }
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

    /// Also write the system's URLs, database URLs and credentials
    /// (AUTH_SECRET, ADMIN_TOKEN) to FILE as KEY=value lines, for scripts
    /// (`set -a; . FILE`) and `run --wallet-url ...`.
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A built-in scenario (see `loadgen scenarios`); ignored with --scenario-file.
    #[arg(default_value = "smoke")]
    pub scenario: String,

    /// A scenario written in TOML (see README, "Scenario files").
    #[arg(long, value_name = "FILE")]
    pub scenario_file: Option<PathBuf>,

    /// Seed of every random choice: wallets, operations, amounts, faults. Default: drawn and printed.
    #[arg(long, env = "LOADGEN_SEED")]
    pub seed: Option<u64>,

    /// Override the scenario's load duration (e.g. 90s, 2m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<std::time::Duration>,

    /// Override the scenario's number of goose users (closed loop, rate 0).
    #[arg(long)]
    pub users: Option<u32>,

    /// Override the scenario's rate in operations per second, arriving on
    /// schedule (open model); 0 runs the users as fast as they go (closed loop).
    #[arg(long)]
    pub rate: Option<u32>,

    /// Override the open model's bound on operations in flight; arrivals
    /// beyond it are dropped and counted.
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<u32>,

    /// Override the scenario's wallet count.
    #[arg(long)]
    pub wallets: Option<u32>,

    /// Override the scenario's number of wallet service processes (the load
    /// is spread over them; their relays compete for the outbox).
    #[arg(long, value_name = "N")]
    pub wallet_instances: Option<u32>,

    /// Override the scenario's number of history service processes (one
    /// consumer group).
    #[arg(long, value_name = "M")]
    pub history_instances: Option<u32>,

    /// Inject no faults.
    #[arg(long, conflicts_with = "faults")]
    pub no_faults: bool,

    /// Inject the scenario's faults even where it has them off by default.
    #[arg(long)]
    pub faults: bool,

    /// How long history may take to catch up once load stops and faults heal.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub converge_timeout: std::time::Duration,

    /// Fail the run (exit 3) when a latency bound is missed: `p99<200ms`,
    /// `max<2s`, or per endpoint `POST /wallets/{id}/transfer:p90<50ms`. Repeatable.
    #[arg(long = "threshold", value_name = "BOUND")]
    pub thresholds: Vec<String>,

    /// Where run directories are created.
    #[arg(long, default_value = "runs")]
    pub out_dir: PathBuf,

    #[command(flatten)]
    pub infra: InfraArgs,

    #[command(flatten)]
    pub external: ExternalArgs,

    /// Set by a caller that runs experiments as a library (`bench`): the
    /// command recorded as the way to replay the run, instead of this
    /// process's own command line.
    #[arg(skip)]
    pub command_line: Option<String>,

    /// Set by such a caller: processes it started (name, pid) whose CPU
    /// the run also accounts, with their children (a PostgreSQL server).
    #[arg(skip)]
    pub also_account: Vec<(String, u32)>,
}
