//! Private PostgreSQL clusters for tests and proving-ground runs.
//!
//! [`PgCluster`] runs `initdb` and then the `postgres` server binary directly
//! as a [`ManagedProcess`] (not through `pg_ctl`), so the harness owns the
//! postmaster's pid and can SIGKILL, SIGSTOP or restart the database exactly
//! like any other process (chaos's `postgres_restart` is a fast shutdown and
//! a start). The server runs with fsync off: we only
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
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use nix::unistd::User;
use tempfile::TempDir;

mod databases;
mod launch;
mod test_server;

pub use databases::{create_database_on, database_url_on};
pub use test_server::{TestServer, fresh_database, sweep_stale_temp_dirs, test_server};

use crate::net::free_port;
use crate::process::{ManagedProcess, ProcessSpec};
use databases::encode_path_segment;
use launch::{chown_to, launch, prepare_data_dir, run_initdb, server_user};

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
    /// Commits wait for the disk (`fsync` and full-page writes on), as in
    /// production. Off by default: runs only kill processes (see the module
    /// docs). The bench turns it on, so its figures are a durable system's.
    pub durable: bool,
}

impl PgOptions {
    /// A fresh temporary cluster on a free port, logging to `log_path`.
    pub fn new(log_path: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: None,
            port: None,
            log_path: log_path.into(),
            durable: false,
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
    durable: bool,
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
        Self::start_with(
            options.data_dir,
            options.port,
            Some(options.log_path),
            options.durable,
        )
        .await
    }

    /// `log_path: None` puts the log inside the temporary directory, so it is
    /// swept together with it.
    async fn start_with(
        data_dir: Option<PathBuf>,
        port: Option<u16>,
        log_path: Option<PathBuf>,
        durable: bool,
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
            durable,
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
