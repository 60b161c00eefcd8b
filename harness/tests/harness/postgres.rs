//! PgCluster and the shared test server against the installed PostgreSQL.

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use harness::postgres::sweep_stale_temp_dirs;
use harness::{PgCluster, PgOptions, fresh_database, test_server};
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row};
use tempfile::TempDir;

use crate::common::{
    OWNER_LOG_DIR_ENV, OWNER_ROLE_ENV, SIGNAL_EFFECT_TIMEOUT_MS, eventually, pid_dead, pid_gone,
    read_owner_report, report_and_wait, start_owner,
};

async fn count_rows(url: &str) -> Result<i64> {
    let mut conn = PgConnection::connect(url).await?;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(count)
}

async fn create_ledger(url: &str, rows: i32) -> Result<()> {
    let mut conn = PgConnection::connect(url).await?;
    sqlx::raw_sql("CREATE TABLE ledger (id int PRIMARY KEY, amount numeric NOT NULL)")
        .execute(&mut conn)
        .await?;
    for id in 0..rows {
        sqlx::query("INSERT INTO ledger (id, amount) VALUES ($1, $2::numeric)")
            .bind(id)
            .bind(format!("{id}.25"))
            .execute(&mut conn)
            .await?;
    }
    conn.close().await?;
    Ok(())
}

fn start_markers(log: &std::path::Path, name: &str) -> Result<usize> {
    let text = std::fs::read_to_string(log)?;
    let prefix = format!("=== harness: starting {name} (pid ");
    Ok(text
        .lines()
        .filter(|line| line.starts_with(&prefix))
        .count())
}

#[tokio::test]
async fn cluster_serves_queries_survives_fast_restart_and_cleans_up_on_drop() -> Result<()> {
    let logs = TempDir::new()?;
    let log = logs.path().join("pg.log");
    let mut pg = PgCluster::start(PgOptions::new(&log)).await?;
    let pid = pg.pid().context("no postmaster pid")?;
    let port = pg.port();
    assert_eq!(
        pg.url(),
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    );

    let url = pg.create_database("wallet_cluster_test").await?;
    assert_eq!(url, pg.database_url("wallet_cluster_test"));
    let mut conn = PgConnection::connect(&url).await?;
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await?;
    assert_eq!(one, 1);
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(db, "wallet_cluster_test");
    let fsync: String = sqlx::query_scalar("SHOW fsync")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(fsync, "off", "a run's cluster trades durability for speed");
    conn.close().await?;
    ensure!(
        pg.create_database("wallet_cluster_test").await.is_err(),
        "duplicate CREATE DATABASE must fail"
    );

    create_ledger(&url, 5).await?;
    pg.restart_fast().await?;
    let new_pid = pg.pid().context("no postmaster pid after restart")?;
    ensure!(new_pid != pid, "restart kept postmaster pid {pid}");
    ensure!(pid_gone(pid), "old postmaster {pid} not reaped");
    assert_eq!(pg.port(), port);
    assert_eq!(count_rows(&url).await?, 5);
    assert_eq!(start_markers(&log, "postgres")?, 2);
    assert_eq!(start_markers(&log, "initdb")?, 1);

    // Drop: the server goes away and so does its temporary directory.
    let temp_root: PathBuf = pg
        .data_dir()
        .parent()
        .context("data dir has no parent")?
        .to_path_buf();
    ensure!(
        temp_root.join("owner.pid").is_file(),
        "no owner.pid in {}",
        temp_root.display()
    );
    drop(pg);
    ensure!(pid_gone(new_pid), "postmaster {new_pid} survived drop");
    ensure!(!temp_root.exists(), "{} survived drop", temp_root.display());
    Ok(())
}

#[tokio::test]
async fn killed_cluster_recovers_committed_rows_on_start_again() -> Result<()> {
    let dir = TempDir::new()?;
    let data_dir = dir.path().join("pgdata");
    let port = harness::net::free_port()?;
    let options = PgOptions {
        data_dir: Some(data_dir.clone()),
        port: Some(port),
        log_path: dir.path().join("pg.log"),
        // Recovery holds either way; durable also checks the setting lands.
        durable: true,
    };
    let mut pg = PgCluster::start(options).await?;
    assert_eq!(pg.port(), port);
    assert_eq!(pg.data_dir(), data_dir);

    let url = pg.create_database("recovery").await?;
    let mut conn = PgConnection::connect(&url).await?;
    for setting in ["fsync", "full_page_writes", "synchronous_commit"] {
        let value: String = sqlx::query_scalar(&format!("SHOW {setting}"))
            .fetch_one(&mut conn)
            .await?;
        assert_eq!(value, "on", "{setting} of a durable cluster");
    }
    for (setting, expected) in [
        ("max_wal_size", "8GB"),
        ("checkpoint_timeout", "30min"),
        ("wal_init_zero", "off"),
    ] {
        let value: String = sqlx::query_scalar(&format!("SHOW {setting}"))
            .fetch_one(&mut conn)
            .await?;
        assert_eq!(
            value, expected,
            "{setting}: no checkpoint or WAL zero-fill stalls a bench"
        );
    }
    drop(conn);
    create_ledger(&url, 7).await?;
    let pid = pg.pid().context("no postmaster pid")?;
    pg.kill().await?;
    ensure!(pid_gone(pid), "postmaster {pid} not reaped after kill");
    assert_eq!(pg.pid(), None);
    ensure!(
        PgConnection::connect(&url).await.is_err(),
        "a killed cluster still accepts connections"
    );

    pg.start_again().await?;
    ensure!(pg.pid().is_some_and(|new| new != pid));
    assert_eq!(
        count_rows(&url).await?,
        7,
        "committed rows lost by crash recovery"
    );
    let log = std::fs::read_to_string(dir.path().join("pg.log"))?;
    ensure!(
        log.contains("database system was interrupted"),
        "no crash recovery in the log:\n{log}"
    );

    // A caller-provided data dir outlives the cluster.
    drop(pg);
    ensure!(data_dir.join("PG_VERSION").is_file());
    Ok(())
}

#[tokio::test]
async fn fresh_databases_are_distinct_and_usable() -> Result<()> {
    let first = fresh_database("Wallet-Test").await?;
    let second = fresh_database("wallet-test").await?;
    ensure!(first != second, "fresh_database returned {first} twice");

    let mut a = PgConnection::connect(&first).await?;
    let mut b = PgConnection::connect(&second).await?;
    let name_a: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut a)
        .await?;
    let name_b: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut b)
        .await?;
    ensure!(
        name_a.starts_with("wallet_test_") && name_a.len() == "wallet_test_".len() + 12,
        "{name_a}"
    );
    ensure!(name_a != name_b);

    sqlx::raw_sql("CREATE TABLE only_in_a (x int)")
        .execute(&mut a)
        .await?;
    let row = sqlx::query("SELECT to_regclass('only_in_a') IS NULL AS missing")
        .fetch_one(&mut b)
        .await?;
    ensure!(row.get::<bool, _>("missing"), "databases are not isolated");
    a.close().await?;
    b.close().await?;
    Ok(())
}

#[tokio::test]
async fn test_server_is_shared_by_the_tests_of_a_process() -> Result<()> {
    // Runs concurrently with the test above on another runtime; both must
    // end up with the same server.
    let first = test_server().await?;
    let second = test_server().await?;
    ensure!(std::ptr::eq(first, second));
    if let Some(cluster) = first.cluster() {
        ensure!(cluster.pid().is_some_and(|pid| !pid_dead(pid)));
        assert_eq!(first.admin_url(), cluster.url());
    }
    let mut conn = PgConnection::connect(first.admin_url()).await?;
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await?;
    assert_eq!(one, 1);
    conn.close().await?;
    Ok(())
}

/// When the owner of a private cluster is SIGKILLed, the postmaster (running
/// as the `postgres` user when we are root) gets its parent-death SIGQUIT and
/// shuts down; the owner's temporary directory is then swept as stale.
#[tokio::test]
async fn cluster_dies_with_its_sigkilled_owner_and_is_swept() -> Result<()> {
    if std::env::var(OWNER_ROLE_ENV).as_deref() == Ok("postgres") {
        let log_dir = PathBuf::from(std::env::var(OWNER_LOG_DIR_ENV)?);
        let pg = PgCluster::start(PgOptions::new(log_dir.join("pg.log"))).await?;
        let lines = [
            pg.pid().context("no pid")?.to_string(),
            pg.data_dir().display().to_string(),
        ];
        std::mem::forget(pg);
        return report_and_wait(&lines).await;
    }

    let dir = TempDir::new()?;
    let mut owner = start_owner(
        "postgres::cluster_dies_with_its_sigkilled_owner_and_is_swept",
        "postgres",
        dir.path(),
    )?;
    let report = read_owner_report(&mut owner, dir.path()).await?;
    let postmaster: u32 = report.first().context("no pid in report")?.parse()?;
    let data_dir = PathBuf::from(report.get(1).context("no data dir in report")?);
    let temp_root = data_dir.parent().context("no temp root")?.to_path_buf();
    ensure!(
        !pid_dead(postmaster),
        "postmaster not running before the owner died"
    );
    ensure!(temp_root.join("owner.pid").is_file());

    owner.kill().await?;
    eventually(
        "postmaster of the killed owner to die",
        SIGNAL_EFFECT_TIMEOUT_MS,
        || pid_dead(postmaster),
    )
    .await?;
    let log = std::fs::read_to_string(dir.path().join("pg.log"))?;
    ensure!(
        log.contains("received immediate shutdown request"),
        "no SIGQUIT shutdown in the log:\n{log}"
    );

    // Other tests may sweep it first; either way it must go.
    sweep_stale_temp_dirs();
    ensure!(
        !temp_root.exists(),
        "stale {} was not swept",
        temp_root.display()
    );
    Ok(())
}

#[tokio::test]
async fn sweep_never_touches_a_live_owners_dir() -> Result<()> {
    let tmp = std::env::temp_dir();
    let live = tempfile::Builder::new()
        .prefix("wallet-system-pg-live-")
        .tempdir_in(&tmp)?;
    std::fs::write(
        live.path().join("owner.pid"),
        format!("{}\n", std::process::id()),
    )?;
    let unowned = tempfile::Builder::new()
        .prefix("wallet-system-pg-unowned-")
        .tempdir_in(&tmp)?;

    // A pid that surely is dead: a child we have reaped.
    let mut child = std::process::Command::new("true").spawn()?;
    let dead_pid = child.id();
    child.wait()?;
    let stale = tempfile::Builder::new()
        .prefix("wallet-system-pg-stale-")
        .tempdir_in(&tmp)?;
    std::fs::write(stale.path().join("owner.pid"), format!("{dead_pid}\n"))?;
    std::fs::create_dir(stale.path().join("data"))?;

    sweep_stale_temp_dirs();
    ensure!(
        live.path().join("owner.pid").is_file(),
        "swept a live owner's dir"
    );
    ensure!(unowned.path().is_dir(), "swept a dir without owner.pid");
    ensure!(!stale.path().exists(), "left a dead owner's dir");
    Ok(())
}

#[test]
fn database_url_on_replaces_only_the_database() -> Result<()> {
    let url = harness::postgres::database_url_on(
        "postgres://admin:secret@db.example:6543/postgres?sslmode=disable",
        "wallet test",
    )?;
    assert_eq!(
        url,
        "postgres://admin:secret@db.example:6543/wallet%20test?sslmode=disable"
    );
    Ok(())
}
