//! The whole system under test as real processes: PostgreSQL (a private
//! cluster, or an existing server), the broker (our own, or an existing
//! one), one or more wallet instances and one or more history instances,
//! each logging into the run directory.
//!
//! [`System::start`] provisions fresh databases and waits until every part
//! answers; chaos reaches each process through [`System::instance_mut`] by
//! [`Role`] and instance index, so it signals exactly the pids started
//! here. Wallet instances share the wallet database (their relays compete
//! for one outbox); history instances share the history database and one
//! consumer group. The services are
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
    proxy::FaultProxy,
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
    /// The first instance's port; 0 picks a free one. Further instances
    /// always take free ports.
    pub wallet_port: u16,
    pub history_port: u16,
    /// How many wallet and history processes to run (each at least 1).
    pub wallet_instances: usize,
    pub history_instances: usize,
    pub broker_port: u16,
    pub topic: String,
    pub group_id: String,
    pub partitions: i32,
    pub session_timeout_ms: u32,
    /// Names the run's databases: `<prefix>_wallet`, `<prefix>_history`.
    pub database_prefix: String,
    /// Extra environment for the service processes (e.g. `RUST_LOG`).
    pub service_env: Vec<(String, String)>,
    /// The secret the services verify bearer tokens with (`AUTH_SECRET`,
    /// at least 32 bytes); `None` serves in open mode (`--open`: nothing
    /// authenticated).
    pub auth_secret: Option<String>,
    /// Put a fault proxy on each network link (client → each wallet
    /// instance, services → PostgreSQL, services → broker) so chaos can
    /// add latency, drop connections, partition and lose responses. Links
    /// to a PostgreSQL or broker this system did not start get none.
    pub network_faults: bool,
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
            wallet_instances: 1,
            history_instances: 1,
            broker_port: 0,
            topic: format!("wallet-events-{suffix}"),
            group_id: format!("history-{suffix}"),
            partitions: 4,
            session_timeout_ms: 6_000,
            database_prefix: format!("sys_{suffix}"),
            service_env: Vec::new(),
            auth_secret: Some(random_secret()),
            network_faults: false,
        }
    }
}

/// A fresh token secret: two random UUIDs in hex (244 random bits).
pub fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Where a system the harness did not start is reached
/// ([`System::attach`]).
#[derive(Debug, Clone)]
pub struct External {
    /// Each wallet instance's base URL (`http://host:port`).
    pub wallet_urls: Vec<String>,
    /// Each history instance's base URL.
    pub history_urls: Vec<String>,
    /// The wallet's and history's databases, which the checker reads.
    pub wallet_db: String,
    pub history_db: String,
}

/// The running system.
#[derive(Debug)]
pub struct System {
    pub options: SystemOptions,
    pub postgres: Option<PgCluster>,
    pub admin_url: String,
    pub wallet_db: String,
    pub history_db: String,
    /// The bootstrap servers the services and the harness's own Kafka
    /// clients use: the broker's proxy when there is one.
    pub kafka_brokers: String,
    /// The broker's own address, which answers only while it runs.
    pub broker_address: String,
    pub broker: Option<ManagedProcess>,
    /// The fault proxies on the network links (see [`Link`]).
    pub proxies: Proxies,
    /// The wallet instances (at least one): relays that compete for one
    /// outbox, each serving the API on its own port.
    pub wallets: Vec<Instance>,
    /// The history instances (at least one): members of one consumer group
    /// sharing one database.
    pub histories: Vec<Instance>,
    /// The first wallet instance's URL, for clients that talk to one.
    pub wallet_url: String,
    /// The first history instance's URL.
    pub history_url: String,
    /// A history instance that joined late in a fresh consumer group
    /// (chaos's `history_join`), while it runs.
    pub late_history: Option<ManagedProcess>,
    /// Late instances started so far: names their groups and logs.
    late_joins: u32,
}

/// One service instance and where it serves.
#[derive(Debug)]
pub struct Instance {
    /// The process, when this system started it (none for a system it
    /// [attached](System::attach) to).
    pub process: Option<ManagedProcess>,
    /// `http://127.0.0.1:<port>`: the process itself (health checks).
    pub url: String,
    /// Where the load reaches it: its client-link proxy, else `url`.
    pub client_url: String,
}

/// A network link chaos can break, through the [`FaultProxy`] the system
/// puts on it when [`SystemOptions::network_faults`] is set.
pub use run_log::Link;

/// The fault proxies of a system; empty without network faults.
#[derive(Default)]
pub struct Proxies {
    /// One per wallet instance, in instance order.
    pub client_wallet: Vec<FaultProxy>,
    pub postgres: Option<FaultProxy>,
    pub broker: Option<FaultProxy>,
}

impl std::fmt::Debug for Proxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxies")
            .field("client_wallet", &self.client_wallet.len())
            .field("postgres", &self.postgres.is_some())
            .field("broker", &self.broker.is_some())
            .finish()
    }
}

/// The name of instance `index` (from 0) of a service: `wallet`, then
/// `wallet-2`, `wallet-3`, ...; it names the process's log and the
/// target of a fault in chaos.jsonl. The first keeps the plain name so a
/// one-instance system reads as before.
pub fn instance_name(role: Role, index: usize) -> String {
    if index == 0 {
        role.as_str().to_owned()
    } else {
        format!("{}-{}", role.as_str(), index + 1)
    }
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

/// The given brokers, or the bundled broker started here and answering
/// (behind a proxy it advertises, with network faults): the broker's
/// process, the address clients bootstrap from, its own address, and the
/// proxy.
async fn provision_broker(
    options: &SystemOptions,
    run_dir: &Path,
) -> Result<(Option<ManagedProcess>, String, String, Option<FaultProxy>)> {
    if let Some(brokers) = &options.kafka_brokers {
        return Ok((None, brokers.clone(), brokers.clone(), None));
    }
    let port = pick(options.broker_port)?;
    let address = format!("127.0.0.1:{port}");
    let proxy = if options.network_faults {
        Some(FaultProxy::start("services->broker", 0, address.parse()?).await?)
    } else {
        None
    };
    let advertised = proxy
        .as_ref()
        .map_or_else(|| address.clone(), |p| p.local_addr().to_string());
    let broker = ManagedProcess::start(broker_spec(options, run_dir, port, &advertised))?;
    wait_for_tcp(address.parse()?, Duration::from_millis(READY_TIMEOUT_MS))
        .await
        .with_context(|| log_hint("the broker did not start", &run_dir.join("broker.log")))?;
    Ok((Some(broker), advertised, address, proxy))
}

/// `url` with its port replaced: a database URL that goes through a proxy.
fn with_port(url: &str, port: u16) -> Result<String> {
    let mut url = url::Url::parse(url).with_context(|| format!("parsing {url}"))?;
    url.set_port(Some(port))
        .map_err(|()| anyhow::anyhow!("{url} cannot take a port"))?;
    Ok(url.into())
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

        let (broker, kafka_brokers, broker_address, broker_proxy) =
            provision_broker(&options, &run_dir).await?;
        let mut proxies = Proxies {
            broker: broker_proxy,
            ..Proxies::default()
        };
        // The services reach PostgreSQL through its proxy; the harness and
        // the checker keep the direct URLs.
        let (service_wallet_db, service_history_db) = match &postgres {
            Some(cluster) if options.network_faults => {
                let upstream = format!("127.0.0.1:{}", cluster.port()).parse()?;
                let proxy = FaultProxy::start("services->postgres", 0, upstream).await?;
                let port = proxy.local_addr().port();
                proxies.postgres = Some(proxy);
                (with_port(&wallet_db, port)?, with_port(&history_db, port)?)
            }
            _ => (wallet_db.clone(), history_db.clone()),
        };

        if options.wallet_instances == 0 || options.history_instances == 0 {
            bail!("a system needs at least one wallet and one history instance");
        }
        let start_instances = |role: Role, count: usize, first_port: u16, db: &str| {
            (0..count)
                .map(|index| {
                    let port = pick(if index == 0 { first_port } else { 0 })?;
                    let name = instance_name(role, index);
                    let process = ManagedProcess::start(service_spec(
                        &options,
                        &run_dir,
                        (role, &name),
                        port,
                        db,
                        &kafka_brokers,
                    ))?;
                    let url = format!("http://127.0.0.1:{port}");
                    Ok(Instance {
                        process: Some(process),
                        client_url: url.clone(),
                        url,
                    })
                })
                .collect::<Result<Vec<Instance>>>()
        };
        let mut wallets = start_instances(
            Role::Wallet,
            options.wallet_instances,
            options.wallet_port,
            &service_wallet_db,
        )?;
        let histories = start_instances(
            Role::History,
            options.history_instances,
            options.history_port,
            &service_history_db,
        )?;
        if options.network_faults {
            proxies.client_wallet = client_proxies(&mut wallets).await?;
        }
        let system = System {
            postgres,
            admin_url,
            wallet_db,
            history_db,
            kafka_brokers,
            broker_address,
            broker,
            proxies,
            wallet_url: wallets[0].url.clone(),
            history_url: histories[0].url.clone(),
            wallets,
            histories,
            options: SystemOptions { run_dir, ..options },
            late_history: None,
            late_joins: 0,
        };
        system.wait_ready(Role::Wallet).await?;
        system.wait_ready(Role::History).await?;
        Ok(system)
    }

    /// A system this harness did not start (a deployment, or `loadgen up`
    /// in another process), reached at `external`'s addresses. It has no
    /// process to signal, so chaos can act only on what the harness puts
    /// in between: with [`SystemOptions::network_faults`], a fault proxy on
    /// the link from the load to each wallet instance (the URL's host must
    /// be reachable from here; only plain `http://`). Waits until every
    /// instance answers its health check.
    pub async fn attach(options: SystemOptions, external: External) -> Result<System> {
        std::fs::create_dir_all(&options.run_dir)
            .with_context(|| format!("creating {}", options.run_dir.display()))?;
        let run_dir = std::path::absolute(&options.run_dir)?;
        if external.wallet_urls.is_empty() || external.history_urls.is_empty() {
            bail!("an attached system needs a wallet and a history URL");
        }
        let instances = |urls: &[String]| -> Result<Vec<Instance>> {
            urls.iter()
                .map(|url| {
                    let url = url.trim_end_matches('/').to_owned();
                    if !url.starts_with("http://") {
                        bail!("{url}: only http:// URLs can be reached (and proxied) from here");
                    }
                    Ok(Instance {
                        process: None,
                        client_url: url.clone(),
                        url,
                    })
                })
                .collect()
        };
        let mut wallets = instances(&external.wallet_urls)?;
        let histories = instances(&external.history_urls)?;
        let mut proxies = Proxies::default();
        if options.network_faults {
            proxies.client_wallet = client_proxies(&mut wallets).await?;
        }
        let brokers = options.kafka_brokers.clone().unwrap_or_default();
        let system = System {
            postgres: None,
            admin_url: external.wallet_db.clone(),
            wallet_db: external.wallet_db,
            history_db: external.history_db,
            kafka_brokers: brokers.clone(),
            broker_address: brokers,
            broker: None,
            proxies,
            wallet_url: wallets[0].url.clone(),
            history_url: histories[0].url.clone(),
            wallets,
            histories,
            options: SystemOptions { run_dir, ..options },
            late_history: None,
            late_joins: 0,
        };
        system.wait_ready(Role::Wallet).await?;
        system.wait_ready(Role::History).await?;
        Ok(system)
    }

    /// Waits until every instance of `role` answers: its health endpoint
    /// for the services, its port for the broker and PostgreSQL.
    pub async fn wait_ready(&self, role: Role) -> Result<()> {
        for index in 0..self.instance_count(role) {
            self.wait_instance_ready(role, index).await?;
        }
        Ok(())
    }

    /// Waits until instance `index` of `role` answers (see [`System::wait_ready`]).
    pub async fn wait_instance_ready(&self, role: Role, index: usize) -> Result<()> {
        let within = Duration::from_millis(READY_TIMEOUT_MS);
        let log = self.log_path(role, index);
        let result = match role {
            Role::Wallet | Role::History => match self.service_url(role, index) {
                Some(url) => wait_for_http_ok(&format!("{url}/health"), within).await,
                None => bail!("there is no {}", instance_name(role, index)),
            },
            // An attached system's broker is not known here: nothing to wait for.
            Role::Broker => match self.broker_address.split(',').find(|a| !a.is_empty()) {
                Some(address) => wait_for_tcp(address.parse()?, within).await,
                None if self.broker.is_none() => Ok(()),
                None => bail!("no broker address"),
            },
            Role::Postgres => match &self.postgres {
                Some(cluster) => {
                    wait_for_tcp(format!("127.0.0.1:{}", cluster.port()).parse()?, within).await
                }
                None => Ok(()),
            },
        };
        let name = instance_name(role, index);
        result.with_context(|| log_hint(&format!("{name} is not ready"), &log))
    }

    /// How many instances of `role` this system has: its services' counts;
    /// one broker and one PostgreSQL, started here or not.
    pub fn instance_count(&self, role: Role) -> usize {
        match role {
            Role::Wallet => self.wallets.len(),
            Role::History => self.histories.len(),
            Role::Broker | Role::Postgres => 1,
        }
    }

    /// The service instances of `role` (empty for the broker and PostgreSQL).
    pub fn instances(&self, role: Role) -> &[Instance] {
        match role {
            Role::Wallet => &self.wallets,
            Role::History => &self.histories,
            Role::Broker | Role::Postgres => &[],
        }
    }

    /// Where the load reaches each wallet instance, in instance order:
    /// through its client-link proxy when there is one.
    pub fn wallet_urls(&self) -> Vec<String> {
        self.wallets.iter().map(|i| i.client_url.clone()).collect()
    }

    /// The proxy on `link`, if this system put one there.
    pub fn proxy(&self, link: Link) -> Option<&FaultProxy> {
        match link {
            Link::ClientWallet(index) => self.proxies.client_wallet.get(index),
            Link::Postgres => self.proxies.postgres.as_ref(),
            Link::Broker => self.proxies.broker.as_ref(),
        }
    }

    /// Every history instance's URL, in instance order.
    pub fn history_urls(&self) -> Vec<String> {
        self.histories.iter().map(|i| i.url.clone()).collect()
    }

    fn service_url(&self, role: Role, index: usize) -> Option<&str> {
        self.instances(role).get(index).map(|i| i.url.as_str())
    }

    /// The process of the first instance of `role`, if this system started it.
    pub fn process_mut(&mut self, role: Role) -> Option<&mut ManagedProcess> {
        self.instance_mut(role, 0)
    }

    /// The process of instance `index` of `role`, if this system started it.
    pub fn instance_mut(&mut self, role: Role, index: usize) -> Option<&mut ManagedProcess> {
        match role {
            Role::Wallet => self.wallets.get_mut(index)?.process.as_mut(),
            Role::History => self.histories.get_mut(index)?.process.as_mut(),
            Role::Broker => self.broker.as_mut().filter(|_| index == 0),
            Role::Postgres => self
                .postgres
                .as_mut()
                .filter(|_| index == 0)
                .map(PgCluster::process_mut),
        }
    }

    /// The log of instance `index` of `role` (`wallet-2.log`, ...).
    pub fn log_path(&self, role: Role, index: usize) -> PathBuf {
        self.options
            .run_dir
            .join(format!("{}.log", instance_name(role, index)))
    }

    /// Starts another history instance on the same database and topic, in
    /// a consumer group of its own that has never committed an offset, so
    /// it reads the topic from its start (`history-late-N.log`); returns
    /// its pid once it is started. It is not waited for: it may be meant
    /// to start while another fault holds (PostgreSQL down), and catches
    /// up when it can.
    pub async fn start_late_history(&mut self) -> Result<Option<u32>> {
        if self.late_history.is_some() {
            bail!("a late history instance is already running");
        }
        if self.histories.iter().all(|i| i.process.is_none()) {
            bail!("history was not started by this run: it starts no instance of its own");
        }
        self.late_joins += 1;
        let name = format!("history-late-{}", self.late_joins);
        let port = free_port()?;
        let service_db = match &self.proxies.postgres {
            Some(proxy) => with_port(&self.history_db, proxy.local_addr().port())?,
            None => self.history_db.clone(),
        };
        let spec = service_spec(
            &self.options,
            &self.options.run_dir,
            (Role::History, &name),
            port,
            &service_db,
            &self.kafka_brokers,
        )
        .env(
            "KAFKA_GROUP_ID",
            format!("{}-late-{}", self.options.group_id, self.late_joins),
        );
        let process = ManagedProcess::start(spec)?;
        let pid = process.pid();
        self.late_history = Some(process);
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
        for instance in self.histories.iter_mut().chain(self.wallets.iter_mut()) {
            if let Some(process) = instance.process.as_mut() {
                stop_service(process, grace).await?;
            }
        }
        if let Some(broker) = self.broker.as_mut() {
            broker.terminate(grace).await?;
        }
        let proxies = std::mem::take(&mut self.proxies);
        for proxy in proxies
            .client_wallet
            .into_iter()
            .chain(proxies.postgres)
            .chain(proxies.broker)
        {
            proxy.shutdown().await;
        }
        if let Some(postgres) = self.postgres.as_mut() {
            postgres.fast_shutdown().await?;
        }
        Ok(())
    }
}

/// A fault proxy in front of each wallet instance, which the load then
/// reaches through ([`Instance::client_url`]).
async fn client_proxies(wallets: &mut [Instance]) -> Result<Vec<FaultProxy>> {
    let mut proxies = Vec::new();
    for (index, wallet) in wallets.iter_mut().enumerate() {
        let authority = wallet
            .url
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let upstream = tokio::net::lookup_host(authority)
            .await
            .with_context(|| format!("resolving {}", wallet.url))?
            .next()
            .with_context(|| format!("{} resolves to no address", wallet.url))?;
        let name = Link::ClientWallet(index).name();
        let proxy = FaultProxy::start(&name, 0, upstream).await?;
        wallet.client_url = format!("http://{}", proxy.local_addr());
        proxies.push(proxy);
    }
    Ok(proxies)
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

fn broker_spec(
    options: &SystemOptions,
    run_dir: &Path,
    port: u16,
    advertised: &str,
) -> ProcessSpec {
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
    .arg("--advertised")
    .arg(advertised)
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
    // Both set, so a value the harness's own environment holds is never
    // inherited (an empty AUTH_SECRET counts as none).
    spec = match &options.auth_secret {
        Some(secret) => spec.env("AUTH_SECRET", secret).env("AUTH_OPEN", "false"),
        None => spec.env("AUTH_SECRET", "").env("AUTH_OPEN", "true"),
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
