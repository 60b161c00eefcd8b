//! The whole system under test as real processes: PostgreSQL (a private
//! cluster, or an existing server), the broker (our own, or an existing
//! one), the wallet and the history service, each logging into the run
//! directory.
//!
//! [`System::start`] provisions fresh databases and waits until every part
//! answers; chaos reaches each process through [`System::process_mut`] by
//! [`Role`], so it signals exactly the pids started here. The services are
//! started through a [`Launcher`]: either separate binaries or one
//! multi-call binary (`loadgen serve wallet ...`).

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;

use crate::{
    net::{free_port, wait_for_http_ok, wait_for_tcp},
    postgres::{PgCluster, PgOptions, create_database_on, database_url_on},
    process::{ManagedProcess, ProcessSpec},
};

/// How long a freshly started part may take to answer.
const READY_TIMEOUT_MS: u64 = 60_000;
/// Grace between SIGTERM and SIGKILL when the system is shut down.
const STOP_GRACE_MS: u64 = 10_000;

/// The parts of the system, as chaos names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Postgres,
    Broker,
    Wallet,
    History,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Postgres => "postgres",
            Role::Broker => "broker",
            Role::Wallet => "wallet",
            Role::History => "history",
        }
    }
}

/// How to start each service process.
#[derive(Debug, Clone)]
pub struct Launcher {
    pub program: PathBuf,
    pub wallet_args: Vec<OsString>,
    pub history_args: Vec<OsString>,
    pub broker_args: Vec<OsString>,
}

impl Launcher {
    /// One binary serving each role through `serve <role>` subcommands.
    pub fn multi_call(program: impl Into<PathBuf>) -> Self {
        let sub = |role: &str| vec![OsString::from("serve"), OsString::from(role)];
        Self {
            program: program.into(),
            wallet_args: sub("wallet"),
            history_args: sub("history"),
            broker_args: sub("broker"),
        }
    }
}

impl Launcher {
    /// The multi-call `loadgen` binary of this build, for tests of crates
    /// other than loadgen (which has `CARGO_BIN_EXE_loadgen`): the
    /// `WALLET_SYSTEM_BIN` variable, else `loadgen` beside the running
    /// executable or one directory up (test binaries live in `deps/`).
    /// `cargo test --workspace` builds it before any test runs.
    pub fn locate() -> Result<Self> {
        if let Some(path) = std::env::var_os("WALLET_SYSTEM_BIN") {
            return Ok(Self::multi_call(PathBuf::from(path)));
        }
        let exe = std::env::current_exe().context("locating the running executable")?;
        let candidates: Vec<PathBuf> = exe
            .ancestors()
            .skip(1)
            .take(2)
            .map(|dir| dir.join("loadgen"))
            .collect();
        match candidates.iter().find(|path| path.is_file()) {
            Some(path) => Ok(Self::multi_call(path.clone())),
            None => bail!(
                "the loadgen binary was not found at {candidates:?}: build it first \
                 (`cargo build -p loadgen`, with the same profile) or set WALLET_SYSTEM_BIN"
            ),
        }
    }
}

/// What to start, and where.
#[derive(Debug, Clone)]
pub struct SystemOptions {
    /// Logs (`postgres.log`, `broker.log`, `wallet.log`, `history.log`) and
    /// the broker's storage go here.
    pub run_dir: PathBuf,
    pub launcher: Launcher,
    /// Admin URL of an existing PostgreSQL server; `None` starts a private
    /// cluster.
    pub database_url: Option<String>,
    /// Bootstrap servers of an existing broker; `None` starts ours.
    pub kafka_brokers: Option<String>,
    /// 0 picks a free port.
    pub wallet_port: u16,
    pub history_port: u16,
    pub broker_port: u16,
    pub topic: String,
    pub group_id: String,
    pub partitions: i32,
    pub session_timeout_ms: u32,
    /// Names the run's databases: `<prefix>_wallet`, `<prefix>_history`.
    pub database_prefix: String,
    /// Extra environment for the service processes (e.g. `RUST_LOG`).
    pub service_env: Vec<(String, String)>,
}

impl SystemOptions {
    /// Private everything on free ports, with a unique topic, group and
    /// database names: what a test wants.
    pub fn isolated(run_dir: impl Into<PathBuf>, launcher: Launcher) -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        Self {
            run_dir: run_dir.into(),
            launcher,
            database_url: None,
            kafka_brokers: None,
            wallet_port: 0,
            history_port: 0,
            broker_port: 0,
            topic: format!("wallet-events-{suffix}"),
            group_id: format!("history-{suffix}"),
            partitions: 4,
            session_timeout_ms: 6_000,
            database_prefix: format!("sys_{suffix}"),
            service_env: Vec::new(),
        }
    }
}

/// The running system.
#[derive(Debug)]
pub struct System {
    pub options: SystemOptions,
    pub postgres: Option<PgCluster>,
    pub admin_url: String,
    pub wallet_db: String,
    pub history_db: String,
    pub kafka_brokers: String,
    pub broker: Option<ManagedProcess>,
    pub wallet: ManagedProcess,
    pub history: ManagedProcess,
    pub wallet_url: String,
    pub history_url: String,
    /// A history instance that joined late in a fresh consumer group
    /// (chaos's `history_join`), while it runs.
    pub late_history: Option<ManagedProcess>,
    /// Late instances started so far: names their groups and logs.
    late_joins: u32,
}

/// The given server, or a private cluster started here.
async fn provision_postgres(
    options: &SystemOptions,
    run_dir: &Path,
) -> Result<(Option<PgCluster>, String)> {
    if let Some(url) = &options.database_url {
        return Ok((None, url.clone()));
    }
    let cluster = PgCluster::start(PgOptions::new(run_dir.join("postgres.log")))
        .await
        .context("starting PostgreSQL")?;
    let url = cluster.url();
    Ok((Some(cluster), url))
}

/// The given brokers, or the bundled broker started here and answering.
async fn provision_broker(
    options: &SystemOptions,
    run_dir: &Path,
) -> Result<(Option<ManagedProcess>, String)> {
    if let Some(brokers) = &options.kafka_brokers {
        return Ok((None, brokers.clone()));
    }
    let port = pick(options.broker_port)?;
    let broker = ManagedProcess::start(broker_spec(options, run_dir, port))?;
    let address = format!("127.0.0.1:{port}");
    wait_for_tcp(address.parse()?, Duration::from_millis(READY_TIMEOUT_MS))
        .await
        .with_context(|| log_hint("the broker did not start", &run_dir.join("broker.log")))?;
    Ok((Some(broker), address))
}

impl System {
    /// Starts every part in dependency order and waits until each answers.
    pub async fn start(options: SystemOptions) -> Result<System> {
        std::fs::create_dir_all(&options.run_dir)
            .with_context(|| format!("creating {}", options.run_dir.display()))?;
        let run_dir = std::path::absolute(&options.run_dir)?;

        let (postgres, admin_url) = provision_postgres(&options, &run_dir).await?;
        let wallet_name = format!("{}_wallet", options.database_prefix);
        let history_name = format!("{}_history", options.database_prefix);
        create_database_on(&admin_url, &wallet_name).await?;
        create_database_on(&admin_url, &history_name).await?;
        let wallet_db = database_url_on(&admin_url, &wallet_name)?;
        let history_db = database_url_on(&admin_url, &history_name)?;

        let (broker, kafka_brokers) = provision_broker(&options, &run_dir).await?;

        let wallet_port = pick(options.wallet_port)?;
        let history_port = pick(options.history_port)?;
        let wallet = ManagedProcess::start(service_spec(
            &options,
            &run_dir,
            (Role::Wallet, "wallet"),
            wallet_port,
            &wallet_db,
            &kafka_brokers,
        ))?;
        let history = ManagedProcess::start(service_spec(
            &options,
            &run_dir,
            (Role::History, "history"),
            history_port,
            &history_db,
            &kafka_brokers,
        ))?;
        let system = System {
            postgres,
            admin_url,
            wallet_db,
            history_db,
            kafka_brokers,
            broker,
            wallet,
            history,
            wallet_url: format!("http://127.0.0.1:{wallet_port}"),
            history_url: format!("http://127.0.0.1:{history_port}"),
            options: SystemOptions { run_dir, ..options },
            late_history: None,
            late_joins: 0,
        };
        system.wait_ready(Role::Wallet).await?;
        system.wait_ready(Role::History).await?;
        Ok(system)
    }

    /// Waits until `role` answers: its health endpoint for the services,
    /// its port for the broker and PostgreSQL.
    pub async fn wait_ready(&self, role: Role) -> Result<()> {
        let within = Duration::from_millis(READY_TIMEOUT_MS);
        let log = self.log_path(role);
        let result = match role {
            Role::Wallet => wait_for_http_ok(&format!("{}/health", self.wallet_url), within).await,
            Role::History => {
                wait_for_http_ok(&format!("{}/health", self.history_url), within).await
            }
            Role::Broker => match self.kafka_brokers.split(',').next() {
                Some(address) => wait_for_tcp(address.parse()?, within).await,
                None => bail!("no broker address"),
            },
            Role::Postgres => match &self.postgres {
                Some(cluster) => {
                    wait_for_tcp(format!("127.0.0.1:{}", cluster.port()).parse()?, within).await
                }
                None => Ok(()),
            },
        };
        result.with_context(|| log_hint(&format!("{} is not ready", role.as_str()), &log))
    }

    /// The process of `role`, if this system started it.
    pub fn process_mut(&mut self, role: Role) -> Option<&mut ManagedProcess> {
        match role {
            Role::Wallet => Some(&mut self.wallet),
            Role::History => Some(&mut self.history),
            Role::Broker => self.broker.as_mut(),
            Role::Postgres => self.postgres.as_mut().map(PgCluster::process_mut),
        }
    }

    pub fn log_path(&self, role: Role) -> PathBuf {
        self.options.run_dir.join(format!("{}.log", role.as_str()))
    }

    /// Starts another history instance on the same database and topic, in
    /// a consumer group of its own that has never committed an offset, so
    /// it reads the topic from its start (`history-late-N.log`); returns
    /// its pid once it answers.
    pub async fn start_late_history(&mut self) -> Result<Option<u32>> {
        if self.late_history.is_some() {
            bail!("a late history instance is already running");
        }
        self.late_joins += 1;
        let name = format!("history-late-{}", self.late_joins);
        let port = free_port()?;
        let spec = service_spec(
            &self.options,
            &self.options.run_dir,
            (Role::History, &name),
            port,
            &self.history_db,
            &self.kafka_brokers,
        )
        .env(
            "KAFKA_GROUP_ID",
            format!("{}-late-{}", self.options.group_id, self.late_joins),
        );
        let process = ManagedProcess::start(spec)?;
        let pid = process.pid();
        self.late_history = Some(process);
        let log = self.options.run_dir.join(format!("{name}.log"));
        wait_for_http_ok(
            &format!("http://127.0.0.1:{port}/health"),
            Duration::from_millis(READY_TIMEOUT_MS),
        )
        .await
        .with_context(|| log_hint(&format!("{name} is not ready"), &log))?;
        Ok(pid)
    }

    /// Stops the late history instance, if one runs (SIGTERM, then SIGKILL
    /// after a grace); returns the pid it had.
    pub async fn stop_late_history(&mut self) -> Result<Option<u32>> {
        let Some(mut process) = self.late_history.take() else {
            return Ok(None);
        };
        let pid = process.pid();
        stop_service(&mut process, Duration::from_millis(STOP_GRACE_MS)).await?;
        Ok(pid)
    }

    /// Stops the services (SIGTERM, then SIGKILL after a grace), then the
    /// broker and PostgreSQL; every child is reaped.
    pub async fn shutdown(mut self) -> Result<()> {
        let grace = Duration::from_millis(STOP_GRACE_MS);
        self.stop_late_history().await?;
        for process in [&mut self.history, &mut self.wallet] {
            stop_service(process, grace).await?;
        }
        if let Some(broker) = self.broker.as_mut() {
            broker.terminate(grace).await?;
        }
        if let Some(postgres) = self.postgres.as_mut() {
            postgres.fast_shutdown().await?;
        }
        Ok(())
    }
}

/// SIGTERM, then SIGKILL after `grace`; reaped. A paused process is
/// continued first: it cannot act on SIGTERM.
async fn stop_service(process: &mut ManagedProcess, grace: Duration) -> Result<()> {
    if process.is_running() {
        let _ = process.resume();
    }
    process.terminate(grace).await?;
    Ok(())
}

fn pick(port: u16) -> Result<u16> {
    if port == 0 { free_port() } else { Ok(port) }
}

fn broker_spec(options: &SystemOptions, run_dir: &Path, port: u16) -> ProcessSpec {
    let storage_dir = run_dir.join("broker-data");
    let _ = std::fs::create_dir_all(&storage_dir);
    ProcessSpec::new(
        "broker",
        &options.launcher.program,
        run_dir.join("broker.log"),
    )
    .args(options.launcher.broker_args.clone())
    .arg("--listen")
    .arg(format!("127.0.0.1:{port}"))
    // Durable: a SIGKILLed broker serves every acknowledged message again.
    .arg("--storage")
    .arg("sqlite://broker.db")
    // New groups get their assignment quickly; nothing waits for
    // stragglers in a harness-run system.
    .arg("--initial-rebalance-delay-ms")
    .arg("300")
    .cwd(storage_dir)
    .death_signal(Signal::SIGKILL)
}

/// A service process; `name` names its log (`<name>.log`).
fn service_spec(
    options: &SystemOptions,
    run_dir: &Path,
    (role, name): (Role, &str),
    port: u16,
    database_url: &str,
    brokers: &str,
) -> ProcessSpec {
    let args = match role {
        Role::Wallet => options.launcher.wallet_args.clone(),
        _ => options.launcher.history_args.clone(),
    };
    let mut spec = ProcessSpec::new(
        name,
        &options.launcher.program,
        run_dir.join(format!("{name}.log")),
    )
    .args(args)
    .env("DATABASE_URL", database_url)
    .env("KAFKA_BROKERS", brokers)
    .env("KAFKA_TOPIC", &options.topic)
    .env("PORT", port.to_string())
    .env("BIND_ADDRESS", "127.0.0.1")
    .death_signal(Signal::SIGKILL);
    spec = match role {
        Role::Wallet => spec.env("KAFKA_TOPIC_PARTITIONS", options.partitions.to_string()),
        _ => spec.env("KAFKA_GROUP_ID", &options.group_id).env(
            "KAFKA_SESSION_TIMEOUT_MS",
            options.session_timeout_ms.to_string(),
        ),
    };
    for (key, value) in &options.service_env {
        spec = spec.env(key, value);
    }
    spec
}

fn log_hint(what: &str, log: &Path) -> String {
    let tail = std::fs::read_to_string(log)
        .map(|text| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        })
        .unwrap_or_default();
    format!("{what}; last lines of {}:\n{tail}", log.display())
}
