//! The set-up phase: create and fund the wallets the seed defines, a few
//! at a time. Every request goes to the operation log like the load's, so
//! the checker judges the set-up too.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, stream};
use run_log::{Attempt, Observed, OpKind, OpRecord, Outcome};
use serde_json::{Value, json};
use uuid::Uuid;

use super::OpsSink;
use service_kit::auth::Bearers;
use workload::{PlannedWallet, Workload};

use crate::attack;

/// Wallet creations and fundings in flight at once during set-up.
const SETUP_CONCURRENCY: usize = 16;

/// Creates (as each owner) and funds (as the admin) the seed's wallets;
/// returns their ids by index. Without `bearers` (open mode) it sends no
/// tokens.
pub async fn seed_wallets(
    workload: &Workload,
    seed: u64,
    wallet_url: &str,
    bearers: Option<&Bearers>,
    ops: &OpsSink,
) -> anyhow::Result<Vec<Uuid>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(attack::REQUEST_TIMEOUT_MS))
        .build()?;
    let results: Vec<anyhow::Result<Uuid>> = stream::iter(workload.wallets())
        .map(|wallet| seed_wallet(&http, wallet_url, seed, bearers, wallet, ops))
        .buffered(SETUP_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn seed_wallet(
    http: &reqwest::Client,
    wallet_url: &str,
    seed: u64,
    bearers: Option<&Bearers>,
    wallet: PlannedWallet,
    ops: &OpsSink,
) -> anyhow::Result<Uuid> {
    let intended_at = chrono::Utc::now();
    let create = json!({"user_id": wallet.user_id});
    let owner = bearers.and_then(|b| b.user(&wallet.user_id));
    let url = format!("{wallet_url}/wallets");
    let (attempt, body) = post(http, url, &create, owner, None).await;
    let id = body
        .and_then(|body| serde_json::from_slice::<Value>(&body).ok())
        .and_then(|body| body["data"]["id"].as_str().map(str::to_owned))
        .as_deref()
        .and_then(|id| Uuid::parse_str(id).ok());
    let record = |kind: OpKind, key: Option<String>, attempt: Attempt| {
        OpRecord {
            op_id: 2 * u64::from(wallet.index) + u64::from(kind == OpKind::Fund),
            kind,
            wallet_index: Some(wallet.index),
            to_wallet_index: None,
            wallet_id: id,
            to_wallet_id: None,
            amount: (kind == OpKind::Fund).then_some(wallet.initial_balance),
            idempotency_key: key,
            outcome: attempt.outcome,
            status: None,
            error_code: None,
            intended_at,
            latency_us: 0,
            attempts: Vec::new(),
        }
        .settle(vec![attempt])
    };
    ops.record(record(OpKind::CreateWallet, None, attempt));
    let id = id.with_context(|| format!("creating wallet {} failed", wallet.index))?;

    let key = format!("seed{seed}-setup-fund-{}", wallet.index);
    let fund = json!({"amount": wallet_events::format_money(wallet.initial_balance)});
    let url = format!("{wallet_url}/wallets/{id}/fund");
    let admin = bearers.map(Bearers::admin);
    let (mut attempt, body) = post(http, url, &fund, admin, Some(&key)).await;
    attempt.observed = body.and_then(|body| Observed::from_body(OpKind::Fund, &body));
    let funded = attempt.outcome == Outcome::Ok;
    ops.record(record(OpKind::Fund, Some(key), attempt));
    if !funded {
        bail!("funding wallet {} failed", wallet.index);
    }
    Ok(id)
}

/// One POST as one attempt, with the body of a success.
async fn post(
    http: &reqwest::Client,
    url: String,
    body: &Value,
    bearer: Option<&str>,
    key: Option<&str>,
) -> (Attempt, Option<Vec<u8>>) {
    let started = Instant::now();
    let mut request = http.post(url).json(body);
    if let Some(bearer) = bearer {
        request = request.header("Authorization", bearer);
    }
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let ((outcome, body), status, error_code) = attack::classify(request.send().await).await;
    let attempt = Attempt {
        outcome,
        status,
        error_code,
        started_us: 0,
        latency_us: started.elapsed().as_micros() as u64,
        observed: None,
    };
    (attempt, body)
}
