//! Bare goose: the same number of users, the same goose settings as the
//! load, one request of a trivial endpoint per transaction, in this
//! process. Its CPU per request is the floor the load generator is held
//! against.
//!
//! Two floors. `instant`: `GET /` answered at once, as fast as goose
//! goes. `matched`: the same HTTP as a transfer (a POST with a JSON body
//! of a transfer's size and an `Idempotency-Key`), answered after the
//! services' full-load median latency with a body of a receipt's size.
//! A client's CPU per request depends on how long it waits: a user whose
//! answer takes milliseconds parks its thread and is woken again (a
//! context switch or two per request), which a user answered within
//! microseconds never does. `matched` pays what any client at that
//! latency pays, so what the load generator spends above it is its own
//! bookkeeping.

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

/// A transfer's answer: the receipt (two ledger entries, ids, amounts,
/// times) in the envelope. Measured with `loadgen up` and curl: 773 bytes.
pub const RECEIPT_BYTES: usize = 773;

/// What the trivial endpoint and bare goose do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Floor {
    /// `GET /` answered `ok` at once.
    Instant,
    /// A transfer-shaped POST answered after `delay` with `RECEIPT_BYTES`.
    Matched { delay: Duration },
}

/// CPU microseconds per request of bare goose, and the requests it made.
pub async fn goose_cost(
    dir: &std::path::Path,
    users: u32,
    run_time: Duration,
    floor: Floor,
) -> anyhow::Result<(f64, u64)> {
    let port = harness::net::free_port()?;
    let exe = std::env::current_exe().context("locating this executable")?;
    let delay_ms = match floor {
        Floor::Instant => 0,
        Floor::Matched { delay } => u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
    };
    let mut server = ManagedProcess::start(
        ProcessSpec::new("trivial", exe, dir.join("trivial.log")).args([
            "serve".to_owned(),
            "trivial".to_owned(),
            "--port".to_owned(),
            port.to_string(),
            "--delay-ms".to_owned(),
            delay_ms.to_string(),
        ]),
    )?;
    let base = format!("http://127.0.0.1:{port}");
    let result = async {
        harness::net::wait_for_http_ok(&format!("{base}/"), Duration::from_secs(10)).await?;
        attack(&base, users, run_time, floor).await
    }
    .await;
    server.kill().await?;
    result
}

async fn attack(
    base: &str,
    users: u32,
    run_time: Duration,
    floor: Floor,
) -> anyhow::Result<(f64, u64)> {
    let config = crate::attack::goose_config(Some(base.to_owned()), u64::from(users), run_time);
    let requests = Arc::new(AtomicU64::new(0));
    let counted = requests.clone();
    let transaction: TransactionFunction = Arc::new(move |user| {
        let counted = counted.clone();
        Box::pin(async move {
            match floor {
                Floor::Instant => {
                    let _ = user.get("/").await?;
                }
                Floor::Matched { .. } => {
                    let body = serde_json::json!({
                        "to_wallet_id": uuid::Uuid::nil(),
                        "amount": "12.3400",
                    });
                    let builder = user
                        .get_request_builder(&GooseMethod::Post, "/transfer")?
                        .header("Idempotency-Key", "bare-goose")
                        .json(&body);
                    let request = GooseRequest::builder()
                        .method(GooseMethod::Post)
                        .name("/transfer")
                        .set_request_builder(builder)
                        .build();
                    let sent = user.request(request).await?;
                    if let Ok(response) = sent.response {
                        let _ = response.bytes().await;
                    }
                }
            }
            counted.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
    });
    let before = harness::procfs::cpu_seconds(std::process::id()).context("reading our CPU")?;
    GooseAttack::initialize_with_config(config)?
        .register_scenario(
            scenario!("bare").register_transaction(Transaction::new(transaction).set_name("bare")),
        )
        .execute()
        .await?;
    let after = harness::procfs::cpu_seconds(std::process::id()).context("reading our CPU")?;
    let requests = requests.load(Ordering::Relaxed);
    anyhow::ensure!(requests > 0, "bare goose made no request");
    Ok(((after - before) * 1e6 / requests as f64, requests))
}

/// `serve trivial`: `GET /` answers `ok` at once; `POST /transfer`
/// answers a receipt-sized body after `delay`; until killed.
pub async fn serve_trivial(port: u16, delay: Duration) -> anyhow::Result<()> {
    let receipt = axum::body::Bytes::from("x".repeat(RECEIPT_BYTES));
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "ok" }))
        .route(
            "/transfer",
            axum::routing::post(move || {
                let receipt = receipt.clone();
                async move {
                    tokio::time::sleep(delay).await;
                    receipt
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    axum::serve(listener, app).await?;
    Ok(())
}
