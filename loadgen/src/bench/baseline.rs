//! Bare goose: the same number of users, the same goose settings as the
//! load, one GET of a trivial endpoint per transaction, in this process.
//! Its CPU per request is the floor the load generator is held against.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use goose::prelude::*;
use harness::process::{ManagedProcess, ProcessSpec};

/// CPU microseconds per request of bare goose, and the requests it made.
pub async fn goose_cost(
    dir: &std::path::Path,
    users: u32,
    run_time: Duration,
) -> anyhow::Result<(f64, u64)> {
    let port = harness::net::free_port()?;
    let exe = std::env::current_exe().context("locating this executable")?;
    let mut server = ManagedProcess::start(
        ProcessSpec::new("trivial", exe, dir.join("trivial.log")).args([
            "serve",
            "trivial",
            "--port",
            &port.to_string(),
        ]),
    )?;
    let base = format!("http://127.0.0.1:{port}");
    let result = async {
        harness::net::wait_for_http_ok(&format!("{base}/"), Duration::from_secs(10)).await?;
        attack(&base, users, run_time).await
    }
    .await;
    server.kill().await?;
    result
}

async fn attack(base: &str, users: u32, run_time: Duration) -> anyhow::Result<(f64, u64)> {
    let config = crate::attack::goose_config(Some(base.to_owned()), u64::from(users), run_time);
    let requests = Arc::new(AtomicU64::new(0));
    let counted = requests.clone();
    let transaction: TransactionFunction = Arc::new(move |user| {
        let counted = counted.clone();
        Box::pin(async move {
            let _ = user.get("/").await?;
            counted.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
    });
    let before = harness::procfs::cpu_seconds(std::process::id()).context("reading our CPU")?;
    GooseAttack::initialize_with_config(config)?
        .register_scenario(
            scenario!("bare").register_transaction(Transaction::new(transaction).set_name("get")),
        )
        .execute()
        .await?;
    let after = harness::procfs::cpu_seconds(std::process::id()).context("reading our CPU")?;
    let requests = requests.load(Ordering::Relaxed);
    anyhow::ensure!(requests > 0, "bare goose made no request");
    Ok(((after - before) * 1e6 / requests as f64, requests))
}

/// `serve trivial`: `GET /` answers `ok`, until killed.
pub async fn serve_trivial(port: u16) -> anyhow::Result<()> {
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    axum::serve(listener, app).await?;
    Ok(())
}
