//! Private PostgreSQL clusters for tests and proving-ground runs.
//!
//! [`PgCluster`] runs `initdb` and then the `postgres` server binary directly
//! as a [`ManagedProcess`] (not through `pg_ctl`), so the harness owns the
//! postmaster's pid and chaos can SIGKILL, SIGSTOP or restart the database
//! exactly like any other process. The server runs with fsync off: we only
//! ever kill processes, never the machine, and a killed process loses nothing
//! that has reached the kernel's page cache, so crash recovery still sees
//! every committed transaction.
//!
//! Tests share one server per test process through [`test_server`] and get
//! isolation from [`fresh_database`]: either the server named by
//! `TEST_DATABASE_URL`, or a private cluster started on first use. That
//! cluster lives in a `static`, is never dropped, and is shut down by its
//! parent-death signal when the test process exits; its temporary directory
//! is swept by a later run once the owner is gone (see `owner.pid`).

use std::env;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::{Pid, User, chown, geteuid};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tempfile::TempDir;
use tokio::sync::OnceCell;
use tokio::time::{Instant, sleep, timeout};

use crate::net::free_port;
use crate::process::{ManagedProcess, ProcessSpec};

/// How long a starting server may take to accept connections.
const READY_TIMEOUT_MS: u64 = 30_000;
/// Pause between readiness probes.
const READY_RETRY_MS: u64 = 50;
/// Upper bound for one readiness connection attempt.
const CONNECT_ATTEMPT_TIMEOUT_MS: u64 = 2_000;
/// How long `initdb` may take (it is seconds on an idle machine; a loaded
/// 2-core CI box running other builds can be much slower).
const INITDB_TIMEOUT_MS: u64 = 120_000;
/// Bound on launches per start. A launch fails and is retried when the port
/// picked by `free_port` was taken in between, or when backends of a killed
/// postmaster still hold the old shared memory segment for a moment.
const START_ATTEMPTS_MAX: u32 = 20;
/// Pause before relaunching a server that exited during startup.
const START_RETRY_MS: u64 = 200;
/// Fast shutdown (SIGINT) budget before falling back to immediate shutdown.
const FAST_SHUTDOWN_TIMEOUT_MS: u64 = 30_000;
/// Immediate shutdown (SIGQUIT) budget before SIGKILL.
const IMMEDIATE_SHUTDOWN_TIMEOUT_MS: u64 = 10_000;
/// Fast shutdown budget in `Drop`, which blocks its thread.
const DROP_FAST_SHUTDOWN_TIMEOUT_MS: u64 = 10_000;
/// Log lines quoted in startup errors.
const LOG_TAIL_LINES_MAX: usize = 40;

/// Name prefix of the temporary directories of private clusters; the sweep
/// of stale directories only ever looks at directories with this prefix.
const TEMP_DIR_PREFIX: &str = "wallet-system-pg-";
/// File in a private cluster's temporary directory holding the pid of the
/// process that owns the cluster.
const OWNER_PID_FILE: &str = "owner.pid";

/// The cluster superuser created by `initdb -U`.
const SUPERUSER: &str = "postgres";

const NOT_FOUND: &str = "PostgreSQL server binaries (initdb, postgres) not found: install \
    Debian's `postgresql` package (`apt-get install postgresql`) or set PG_BINDIR";

/// The directory holding `initdb` and `postgres`.
///
/// Order: `PG_BINDIR`; the real directory (after symlinks) of `initdb` on
/// `PATH` if `postgres` lives there too; the highest-numbered
/// `/usr/lib/postgresql/<N>/bin`.
pub fn server_bindir() -> Result<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();

    if let Some(dir) = env::var_os("PG_BINDIR").filter(|dir| !dir.is_empty()) {
        let dir = PathBuf::from(dir);
        if has_both(&dir) {
            return Ok(dir);
        }
        bail!(
            "PG_BINDIR={} does not contain both initdb and postgres",
            dir.display()
        );
    }

    if let Some(path) = env::var_os("PATH") {
        for dir in env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if !initdb.is_file() {
                continue;
            }
            // Debian puts symlinks on PATH; `postgres` must come from the
            // same installation as `initdb`, i.e. the link target's directory.
            if let Ok(real) = fs::canonicalize(&initdb)
                && let Some(real_dir) = real.parent()
                && has_both(real_dir)
            {
                return Ok(real_dir.to_path_buf());
            }
        }
    }

    let versions = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            has_both(&bin).then_some((version, bin))
        });
    if let Some((_, bin)) = versions.max_by_key(|(version, _)| *version) {
        return Ok(bin);
    }
    bail!(NOT_FOUND)
}

/// How to start a [`PgCluster`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Data directory; `None` creates a fresh temporary one, removed when the
    /// cluster is dropped. An existing, initialised directory is reused.
    pub data_dir: Option<PathBuf>,
    /// `None` picks a free port.
    pub port: Option<u16>,
    /// Output of `initdb` and of the server, appended.
    pub log_path: PathBuf,
}

impl PgOptions {
    /// A fresh temporary cluster on a free port, logging to `log_path`.
    pub fn new(log_path: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: None,
            port: None,
            log_path: log_path.into(),
        }
    }
}

/// What stays the same across launches of one cluster.
#[derive(Debug)]
struct Layout {
    bindir: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    run_as: Option<User>,
}

/// A private PostgreSQL cluster whose postmaster is our child process.
#[derive(Debug)]
pub struct PgCluster {
    server: ManagedProcess,
    port: u16,
    layout: Layout,
    /// Held only for its Drop (removes the directory). Declared after
    /// `server`: fields drop in order, so the directory is
    /// removed only after the server is gone.
    _temp_dir: Option<TempDir>,
}

impl PgCluster {
    /// Initialises the data directory if needed, starts the server and waits
    /// until it accepts connections.
    pub async fn start(options: PgOptions) -> Result<PgCluster> {
        Self::start_with(options.data_dir, options.port, Some(options.log_path)).await
    }

    /// `log_path: None` puts the log inside the temporary directory, so it is
    /// swept together with it.
    async fn start_with(
        data_dir: Option<PathBuf>,
        port: Option<u16>,
        log_path: Option<PathBuf>,
    ) -> Result<PgCluster> {
        let bindir = server_bindir()?;
        let run_as = server_user()?;

        let (temp_dir, data_dir) = match data_dir {
            Some(dir) => (None, std::path::absolute(&dir)?),
            None => {
                sweep_stale_temp_dirs();
                let temp = tempfile::Builder::new()
                    .prefix(TEMP_DIR_PREFIX)
                    .tempdir()
                    .context("creating a temporary directory for PostgreSQL")?;
                fs::write(
                    temp.path().join(OWNER_PID_FILE),
                    format!("{}\n", std::process::id()),
                )
                .context("writing owner.pid")?;
                if let Some(user) = &run_as {
                    // The server user must be able to reach the data dir.
                    chown_to(temp.path(), user)?;
                }
                let data = temp.path().join("data");
                (Some(temp), data)
            }
        };
        let log_path = match (log_path, &temp_dir) {
            (Some(path), _) => std::path::absolute(path)?,
            (None, Some(temp)) => temp.path().join("postgres.log"),
            (None, None) => data_dir.with_extension("log"),
        };
        let layout = Layout {
            bindir,
            data_dir,
            log_path,
            run_as,
        };

        prepare_data_dir(&layout)?;
        if !layout.data_dir.join("PG_VERSION").exists() {
            run_initdb(&layout).await?;
        }
        let (server, port) = launch(&layout, port).await?;
        tracing::info!(
            port,
            data_dir = %layout.data_dir.display(),
            log = %layout.log_path.display(),
            "PostgreSQL cluster ready"
        );
        Ok(PgCluster {
            server,
            port,
            layout,
            _temp_dir: temp_dir,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's pid, `None` while it is down.
    pub fn pid(&self) -> Option<u32> {
        self.server.pid()
    }

    pub fn data_dir(&self) -> &Path {
        &self.layout.data_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.layout.log_path
    }

    /// The postmaster process, for chaos beyond the methods here (for
    /// example `pause`/`resume`).
    pub fn process(&self) -> &ManagedProcess {
        &self.server
    }

    pub fn process_mut(&mut self) -> &mut ManagedProcess {
        &mut self.server
    }

    /// Superuser URL of the `postgres` database.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// Superuser URL of database `db` (no check that it exists).
    pub fn database_url(&self, db: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/{}",
            self.port,
            encode_path_segment(db)
        )
    }

    /// `CREATE DATABASE` (name quoted as an identifier); returns its URL.
    pub async fn create_database(&self, name: &str) -> Result<String> {
        create_database_on(&self.url(), name).await?;
        Ok(self.database_url(name))
    }

    /// Fast shutdown (SIGINT: sessions are terminated, a checkpoint is
    /// written); after 30 s immediate shutdown (SIGQUIT), and SIGKILL as the
    /// last resort. The postmaster is reaped in all cases.
    pub async fn fast_shutdown(&mut self) -> Result<()> {
        if !self.server.is_running() {
            return Ok(());
        }
        self.server.signal(Signal::SIGINT)?;
        // A paused server must run to act on the signal.
        self.server.signal(Signal::SIGCONT)?;
        if self
            .server
            .wait_exit(Duration::from_millis(FAST_SHUTDOWN_TIMEOUT_MS))
            .await
            .is_some()
        {
            return Ok(());
        }
        tracing::warn!(
            port = self.port,
            "PostgreSQL fast shutdown timed out; immediate shutdown"
        );
        self.server.signal(Signal::SIGQUIT)?;
        if self
            .server
            .wait_exit(Duration::from_millis(IMMEDIATE_SHUTDOWN_TIMEOUT_MS))
            .await
            .is_some()
        {
            return Ok(());
        }
        self.server.kill().await
    }

    /// Starts the server again on the same data directory and port and waits
    /// until it is ready (running crash recovery first if it was killed).
    pub async fn start_again(&mut self) -> Result<()> {
        if self.server.is_running() {
            bail!("PostgreSQL on port {} is still running", self.port);
        }
        let (server, _) = launch(&self.layout, Some(self.port)).await?;
        self.server = server;
        Ok(())
    }

    /// [`PgCluster::fast_shutdown`] then [`PgCluster::start_again`].
    pub async fn restart_fast(&mut self) -> Result<()> {
        self.fast_shutdown().await?;
        self.start_again().await
    }

    /// SIGKILLs the postmaster and reaps it. Its backends notice the
    /// postmaster's death and exit on their own; the next start runs crash
    /// recovery.
    pub async fn kill(&mut self) -> Result<()> {
        self.server.kill().await
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if !self.server.is_running() {
            return;
        }
        // Blocking, bounded: fast shutdown, then immediate shutdown. Whatever
        // is left is SIGTERMed/SIGKILLed by ManagedProcess's own Drop.
        let _ = self.server.signal(Signal::SIGINT);
        let _ = self.server.signal(Signal::SIGCONT);
        if self
            .server
            .wait_exit_blocking(Duration::from_millis(DROP_FAST_SHUTDOWN_TIMEOUT_MS))
            .is_none()
        {
            let _ = self.server.signal(Signal::SIGQUIT);
            self.server
                .wait_exit_blocking(Duration::from_millis(IMMEDIATE_SHUTDOWN_TIMEOUT_MS));
        }
    }
}

/// The server shared by the tests of one test process: see [`test_server`].
#[derive(Debug)]
pub struct TestServer {
    admin_url: String,
    /// `None` when the server came from `TEST_DATABASE_URL`.
    cluster: Option<PgCluster>,
}

impl TestServer {
    /// Admin URL (a role allowed to create databases).
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// The private cluster, unless `TEST_DATABASE_URL` named a server.
    pub fn cluster(&self) -> Option<&PgCluster> {
        self.cluster.as_ref()
    }

    /// The admin URL with its database replaced by `db`.
    pub fn database_url(&self, db: &str) -> Result<String> {
        database_url_on(&self.admin_url, db)
    }

    /// `CREATE DATABASE` (name quoted as an identifier); returns its URL.
    pub async fn create_database(&self, name: &str) -> Result<String> {
        create_database_on(&self.admin_url, name).await?;
        self.database_url(name)
    }
}

/// No pool is kept here: each test runs its own Tokio runtime, and a pool
/// bound to the first test's runtime breaks once that test finishes.
static TEST_SERVER: OnceCell<TestServer> = OnceCell::const_new();

/// The PostgreSQL server for tests: `TEST_DATABASE_URL` (an admin URL of an
/// existing server) if set, otherwise one private [`PgCluster`] per test
/// process, started on first use and shut down by its parent-death signal
/// when the process exits.
pub async fn test_server() -> Result<&'static TestServer> {
    TEST_SERVER
        .get_or_try_init(|| async {
            if let Some(url) = env::var("TEST_DATABASE_URL")
                .ok()
                .filter(|url| !url.is_empty())
            {
                return Ok(TestServer {
                    admin_url: url,
                    cluster: None,
                });
            }
            let cluster = PgCluster::start_with(None, None, None)
                .await
                .context("starting the private PostgreSQL cluster for tests")?;
            Ok(TestServer {
                admin_url: cluster.url(),
                cluster: Some(cluster),
            })
        })
        .await
}

/// Creates a uniquely named, empty database on the [`test_server`] and
/// returns its URL. The name is `prefix` (lowercased, non-identifier
/// characters replaced by `_`) plus `_` and 12 hex digits of a UUID.
pub async fn fresh_database(prefix: &str) -> Result<String> {
    let name = unique_database_name(prefix);
    test_server().await?.create_database(&name).await
}

fn unique_database_name(prefix: &str) -> String {
    // 63 bytes is PostgreSQL's identifier limit; 40 + 1 + 12 stays below.
    const PREFIX_CHARS_MAX: usize = 40;
    let mut name: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(PREFIX_CHARS_MAX)
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
        name.insert_str(0, "db");
    }
    if !name.ends_with('_') {
        name.push('_');
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    name.push_str(&id[..12]);
    name
}

/// `admin_url` (any PostgreSQL URL) with its database replaced by `db`.
pub fn database_url_on(admin_url: &str, db: &str) -> Result<String> {
    let mut url = url::Url::parse(admin_url)
        .with_context(|| format!("parsing the PostgreSQL URL {admin_url}"))?;
    url.set_path(&format!("/{}", encode_path_segment(db)));
    Ok(url.into())
}

/// `CREATE DATABASE` (name quoted as an identifier) on the server of
/// `admin_url`, which needs a role allowed to create databases.
pub async fn create_database_on(admin_url: &str, name: &str) -> Result<()> {
    let mut conn = PgConnection::connect(admin_url)
        .await
        .context("connecting to the PostgreSQL admin database")?;
    let sql = format!("CREATE DATABASE {}", quote_identifier(name));
    let result = sqlx::raw_sql(&sql).execute(&mut conn).await;
    let _ = conn.close().await;
    result.with_context(|| format!("creating database {name}"))?;
    Ok(())
}

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// PostgreSQL refuses to run as root, so as root the server runs as the
/// `postgres` OS user.
fn server_user() -> Result<Option<User>> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    match User::from_name("postgres") {
        Ok(Some(user)) => Ok(Some(user)),
        Ok(None) => {
            bail!("running as root needs a `postgres` OS user; install Debian's postgresql package")
        }
        Err(err) => Err(err).context("looking up the `postgres` OS user"),
    }
}

fn chown_to(path: &Path, user: &User) -> Result<()> {
    chown(path, Some(user.uid), Some(user.gid))
        .with_context(|| format!("chown {} to {}", path.display(), user.name))
}

/// Creates the data directory (mode 0700, as PostgreSQL demands) and hands it
/// to the server user.
fn prepare_data_dir(layout: &Layout) -> Result<()> {
    let dir = &layout.data_dir;
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    if !dir.join("PG_VERSION").exists() {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 0700 {}", dir.display()))?;
        if let Some(user) = &layout.run_as {
            chown_to(dir, user)?;
        }
    }
    Ok(())
}

fn base_spec(layout: &Layout, name: &str, program: &str) -> ProcessSpec {
    let mut spec = ProcessSpec::new(name, layout.bindir.join(program), &layout.log_path)
        // "/" is readable by every user; the caller's cwd may not be
        // (e.g. /root when running as the postgres user).
        .cwd("/");
    spec.run_as = layout.run_as.clone();
    spec
}

async fn run_initdb(layout: &Layout) -> Result<()> {
    let spec = base_spec(layout, "initdb", "initdb")
        .arg("-D")
        .arg(&layout.data_dir)
        .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8"])
        // Byte-order collation: deterministic, and present on every machine
        // (unlike whatever LANG names).
        .arg("--locale=C")
        .args(["--no-sync", "--no-instructions"]);
    let mut initdb = ManagedProcess::start(spec)?;
    match initdb
        .wait_exit(Duration::from_millis(INITDB_TIMEOUT_MS))
        .await
    {
        Some(status) if status.success() => Ok(()),
        Some(status) => bail!(
            "initdb failed ({status}); last lines of {}:\n{}",
            layout.log_path.display(),
            log_tail(&layout.log_path)
        ),
        None => {
            initdb.kill().await?;
            bail!(
                "initdb did not finish within {INITDB_TIMEOUT_MS} ms; last lines of {}:\n{}",
                layout.log_path.display(),
                log_tail(&layout.log_path)
            )
        }
    }
}

fn server_spec(layout: &Layout, port: u16) -> ProcessSpec {
    let data_dir: OsString = layout.data_dir.clone().into_os_string();
    base_spec(layout, "postgres", "postgres")
        .arg("-D")
        .arg(&data_dir)
        .arg("-p")
        .arg(port.to_string())
        // Unix socket in the data dir: no clash with a system server's
        // /var/run/postgresql, and no write access needed there.
        .arg("-k")
        .arg(&data_dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            // Safe against process kills (all we inject); see the module docs.
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=300",
            "-c",
            "shared_buffers=128MB",
        ])
        // SIGQUIT is PostgreSQL's immediate shutdown: the postmaster takes its
        // backends down with it when the owner dies.
        .death_signal(Signal::SIGQUIT)
}

/// Starts the postmaster and waits until it accepts connections, relaunching
/// if it exits during startup (see [`START_ATTEMPTS_MAX`]).
async fn launch(layout: &Layout, fixed_port: Option<u16>) -> Result<(ManagedProcess, u16)> {
    let deadline = Instant::now() + Duration::from_millis(READY_TIMEOUT_MS);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = match fixed_port {
            Some(port) => port,
            None => free_port()?,
        };
        let mut server = ManagedProcess::start(server_spec(layout, port))?;
        let err = match wait_ready(&mut server, port, deadline).await {
            Ok(()) => return Ok((server, port)),
            Err(err) => err,
        };
        let exited = !server.is_running();
        if exited && attempt < START_ATTEMPTS_MAX && Instant::now() < deadline {
            tracing::debug!(port, attempt, %err, "PostgreSQL exited during startup; retrying");
            sleep(Duration::from_millis(START_RETRY_MS)).await;
            continue;
        }
        if let Err(kill_err) = server.kill().await {
            tracing::warn!(port, %kill_err, "could not kill a PostgreSQL that failed to start");
        }
        return Err(err.context(format!(
            "starting PostgreSQL on port {port} (attempt {attempt}); last lines of {}:\n{}",
            layout.log_path.display(),
            log_tail(&layout.log_path)
        )));
    }
}

async fn wait_ready(server: &mut ManagedProcess, port: u16, deadline: Instant) -> Result<()> {
    let url = format!("postgres://{SUPERUSER}@127.0.0.1:{port}/postgres");
    loop {
        if !server.is_running() {
            let status = server.exit_status();
            bail!("PostgreSQL exited during startup ({status:?})");
        }
        let attempt_budget = deadline.saturating_duration_since(Instant::now()).clamp(
            Duration::from_millis(1),
            Duration::from_millis(CONNECT_ATTEMPT_TIMEOUT_MS),
        );
        let last_err = match timeout(attempt_budget, PgConnection::connect(&url)).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                return Ok(());
            }
            Ok(Err(err)) => anyhow!(err),
            Err(_) => anyhow!("connection attempt timed out"),
        };
        if Instant::now() >= deadline {
            return Err(last_err.context(format!(
                "PostgreSQL on port {port} not ready within {READY_TIMEOUT_MS} ms"
            )));
        }
        sleep(Duration::from_millis(READY_RETRY_MS)).await;
    }
}

fn log_tail(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES_MAX)..].join("\n")
        }
        Err(err) => format!("(could not read the log: {err})"),
    }
}

/// Removes temporary directories of private clusters whose owner process is
/// gone (the per-test-process cluster is never dropped, so nobody else
/// cleans up after it). Best effort: a directory is only touched when its
/// `owner.pid` names a dead process and its postmaster is not running.
pub fn sweep_stale_temp_dirs() {
    let Ok(entries) = fs::read_dir(env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(TEMP_DIR_PREFIX)
        {
            continue;
        }
        let path = entry.path();
        if !entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            continue;
        }
        // No owner.pid: maybe a directory another process is creating now.
        let Some(owner) = read_pid(&path.join(OWNER_PID_FILE)) else {
            continue;
        };
        if pid_alive(owner) {
            continue;
        }
        if read_pid(&path.join("data").join("postmaster.pid")).is_some_and(pid_alive) {
            continue;
        }
        match fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::debug!(dir = %path.display(), owner, "removed stale PostgreSQL temp dir")
            }
            Err(err) => {
                tracing::debug!(dir = %path.display(), %err, "could not remove stale PostgreSQL temp dir")
            }
        }
    }
}

/// The pid on the first line of `path`.
fn read_pid(path: &Path) -> Option<i32> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Whether `pid` names a live (non-zombie) process. Errs on the side of
/// "alive", since the only caller deletes things when this says "dead".
fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        // kill() would address process groups; never treat those as dead.
        return true;
    }
    match signal::kill(Pid::from_raw(pid), None) {
        Err(Errno::ESRCH) => false,
        // Exists (EPERM: exists but not ours). A zombie still answers kill()
        // until its parent (possibly an init that never reaps) collects it.
        _ => !is_zombie(pid),
    }
}

fn is_zombie(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": comm may contain spaces and parentheses, so the
    // state is the first field after the last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state == "Z" || state == "X")
}
