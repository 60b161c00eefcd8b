//! One contract, two backends: the steps the services' logic relies on,
//! checked against the simulator's models and against the real thing
//! (PostgreSQL, the bundled broker). A model that drifts from what it
//! stands for fails here, next to the real backend passing the same test.

// Contract tests run under tokio against real servers: not the simulated
// path, so the wall clock and random ids are fine here.
#![allow(clippy::disallowed_methods)]

mod backends;
mod history;
mod log;
mod store;

use std::time::Duration;

/// How long a step that must wait is watched before it is declared
/// waiting: long enough for a real server to answer an unblocked query.
pub const STILL_WAITING: Duration = Duration::from_millis(400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_contract_model() {
    let (db, outbox) = backends::model_wallet();
    store::contract(db, outbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_contract_postgres() {
    let (db, outbox) = backends::postgres_wallet().await;
    store::contract(db, outbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_contract_model() {
    history::contract(backends::model_history()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_contract_postgres() {
    history::contract(backends::postgres_history().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_contract_model() {
    log::contract(&backends::ModelLog::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_contract_broker() {
    let broker = backends::RealLog::start().await;
    log::contract(&broker).await;
    broker.stop().await;
}
