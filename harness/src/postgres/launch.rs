//! Starting a cluster's processes: the data directory (owned by an
//! unprivileged user when running as root), `initdb`, and the server on a
//! port of its own, waited for until it accepts connections.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use nix::unistd::{User, chown, geteuid};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tokio::time::{Instant, sleep, timeout};

use super::*;

/// PostgreSQL refuses to run as root, so as root the server runs as the
/// `postgres` OS user.
pub(super) fn server_user() -> Result<Option<User>> {
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

pub(super) fn chown_to(path: &Path, user: &User) -> Result<()> {
    chown(path, Some(user.uid), Some(user.gid))
        .with_context(|| format!("chown {} to {}", path.display(), user.name))
}

/// Creates the data directory (mode 0700, as PostgreSQL demands) and hands it
/// to the server user.
pub(super) fn prepare_data_dir(layout: &Layout) -> Result<()> {
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

pub(super) fn base_spec(layout: &Layout, name: &str, program: &str) -> ProcessSpec {
    let mut spec = ProcessSpec::new(name, layout.bindir.join(program), &layout.log_path)
        // "/" is readable by every user; the caller's cwd may not be
        // (e.g. /root when running as the postgres user).
        .cwd("/");
    spec.run_as = layout.run_as.clone();
    spec
}

pub(super) async fn run_initdb(layout: &Layout) -> Result<()> {
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

pub(super) fn server_spec(layout: &Layout, port: u16) -> ProcessSpec {
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
            "-c",
            "max_connections=300",
            "-c",
            "shared_buffers=128MB",
        ])
        // Safe against process kills (all runs inject); see the module docs.
        // A durable cluster is for measuring (the bench): its checkpoints
        // are spaced beyond a bench's length, so none ends in a measured
        // phase with its burst of fsyncs (one did: a 45 ms second in a
        // half load otherwise at 7-13 ms). Every commit is as durable;
        // recovery after a crash only replays more WAL. New WAL segments are
        // not zero-filled: a bench writes a segment every few seconds, and
        // writing and syncing 16 MB of zeroes stalled the commits queued
        // behind it (half-load p99 of the model 8.2 -> 5.7 ms, of the
        // services 24.1 -> 20.7 ms without it); the WAL is still synced at
        // every commit.
        .args(if layout.durable {
            &[
                "-c",
                "max_wal_size=8GB",
                "-c",
                "checkpoint_timeout=30min",
                "-c",
                "wal_init_zero=off",
            ][..]
        } else {
            &["-c", "fsync=off", "-c", "full_page_writes=off"][..]
        })
        // SIGQUIT is PostgreSQL's immediate shutdown: the postmaster takes its
        // backends down with it when the owner dies.
        .death_signal(Signal::SIGQUIT)
}

/// Starts the postmaster and waits until it accepts connections, relaunching
/// if it exits during startup (see [`START_ATTEMPTS_MAX`]).
pub(super) async fn launch(
    layout: &Layout,
    fixed_port: Option<u16>,
) -> Result<(ManagedProcess, u16)> {
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

pub(super) async fn wait_ready(
    server: &mut ManagedProcess,
    port: u16,
    deadline: Instant,
) -> Result<()> {
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

pub(super) fn log_tail(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES_MAX)..].join("\n")
        }
        Err(err) => format!("(could not read the log: {err})"),
    }
}
