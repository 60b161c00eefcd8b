//! One PostgreSQL server per test process ([`test_server`]) and a fresh
//! database per test ([`fresh_database`]); [`sweep_stale_temp_dirs`]
//! cleans up after clusters whose test process is gone.

use std::env;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::signal;
use nix::unistd::Pid;
use tokio::sync::OnceCell;

use super::*;

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
            let cluster = PgCluster::start_with(None, None, None, false)
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

pub(super) fn unique_database_name(prefix: &str) -> String {
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
    u32::try_from(pid).is_ok_and(crate::procfs::is_zombie)
}
