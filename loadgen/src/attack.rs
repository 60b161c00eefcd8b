//! The load: a goose attack whose one transaction executes the seed's
//! operations, slot `s` being operation `s`, so the same seed issues the
//! same operations. [`crate::arrivals`] says when each slot starts: closed
//! loop, or arriving on schedule (open model). Latency runs from the
//! intended start. Every attempt goes to the operation log with its
//! outcome.
//!
//! With several service instances, slot `s` goes to wallet (or history)
//! instance `s mod N`, and each retry of it to the next instance: a retry
//! after a lost answer or a dead instance reaches another process, which
//! must honour the idempotency key the first one stored.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use goose::{config::GooseConfiguration, prelude::*};
use run_log::{Attempt, Observed, OpKind, OpRecord, Outcome};
use serde_json::json;
use service_kit::auth::Bearers;
use uuid::Uuid;

use workload::{PlannedOp, Retry, Workload};

use crate::{
    arrivals::{Arrival, Arrivals},
    recorder::Recorder,
    run::OpsSink,
};

pub const CREATE: &str = "POST /wallets";
pub const FUND: &str = "POST /wallets/{id}/fund";
pub const TRANSFER: &str = "POST /wallets/{id}/transfer";
pub const GET_WALLET: &str = "GET /wallets/{id}";
pub const GET_HISTORY: &str = "GET /wallets/{id}/history";

/// Entries a history read asks for: a page a client would show.
const HISTORY_PAGE_LIMIT: u32 = 20;
/// A request that takes longer than this is indeterminate.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;

/// What every goose user shares.
pub struct LoadContext {
    pub workload: Workload,
    pub seed: u64,
    pub wallet_ids: Vec<Uuid>,
    /// Every wallet instance's base URL (at least one).
    pub wallet_urls: Vec<String>,
    /// Every history instance's base URL (at least one).
    pub history_urls: Vec<String>,
    /// When each slot starts, and on which user.
    pub arrivals: Arrivals,
    /// Op ids of the load start after the setup phase's.
    pub op_id_base: u64,
    pub recorder: Arc<Recorder>,
    pub ops: OpsSink,
    pub started_wall: chrono::DateTime<chrono::Utc>,
    /// Each operation goes out with its wallet owner's token (a fund with
    /// the admin's); none against a system in open mode.
    pub bearers: Option<Arc<Bearers>>,
}

/// How long an idle user of an open-model load waits for an arrival before
/// it hands control back to goose (which stops users only between
/// transactions).
const ARRIVAL_WAIT: Duration = Duration::from_millis(200);

/// Runs the attack for `run_time` and returns when every user stopped.
pub async fn run(context: Arc<LoadContext>, run_time: Duration) -> anyhow::Result<()> {
    let config = goose_config(
        context.wallet_urls.first().cloned(),
        context.arrivals.users(),
        run_time,
    );

    let attack_context = context.clone();
    let transaction: TransactionFunction = Arc::new(move |user| {
        let context = attack_context.clone();
        Box::pin(async move { run_slot(&context, user).await })
    });
    let attack = async {
        GooseAttack::initialize_with_config(config)?
            .register_scenario(
                scenario!("wallet-load")
                    .register_transaction(Transaction::new(transaction).set_name("operation")),
            )
            .execute()
            .await?;
        anyhow::Ok(())
    };
    match &context.arrivals {
        Arrivals::Closed(_) => attack.await?,
        Arrivals::Open(open) => {
            let started = context.recorder.started();
            let dispatch = open.dispatch(started, run_time, |arrival| context.dropped(arrival));
            let (attacked, _) = tokio::join!(attack, dispatch);
            attacked?;
            // Handed to a user that goose stopped first: not issued either.
            for arrival in open.untaken() {
                context.dropped(arrival);
            }
        }
    }
    Ok(())
}

/// How every goose attack of this crate is set up: the load, and `bench`'s
/// bare goose that it is measured against.
pub fn goose_config(host: Option<String>, users: u64, run_time: Duration) -> GooseConfiguration {
    let mut config = GooseConfiguration::default();
    config.host = host;
    config.users = Some(users as usize);
    // The recorder measures every operation from its intended start;
    // goose's own metrics would only cost CPU per request.
    config.no_metrics = true;
    // Every user starts at once; the run time counts from then.
    config.increase_rate = Some("100000".into());
    config.run_time = Some(run_time.as_secs().max(1).to_string());
    config.no_print_metrics = true;
    config.no_telnet = true;
    config.quiet = 1;
    config.timeout = Some((REQUEST_TIMEOUT_MS / 1000).to_string());
    config
}

impl LoadContext {
    /// An arrival not issued, counted under its operation's endpoint and
    /// the second it was due.
    fn dropped(&self, arrival: Arrival) {
        let endpoint = endpoint_of(self.workload.op(arrival.slot).kind);
        let second = arrival
            .intended
            .saturating_duration_since(self.recorder.started())
            .as_secs();
        self.recorder.record_dropped(second, endpoint);
    }
}

async fn run_slot(context: &LoadContext, user: &mut GooseUser) -> TransactionResult {
    let u = user.weighted_users_index;
    let Some(arrival) = context.arrivals.next(u, ARRIVAL_WAIT).await else {
        return Ok(());
    };
    let result = run_arrival(context, user, arrival).await;
    context.arrivals.done(u);
    result
}

async fn run_arrival(
    context: &LoadContext,
    user: &mut GooseUser,
    Arrival { slot, intended }: Arrival,
) -> TransactionResult {
    let (pending, request) = context.operation(slot, intended);
    let attempts = attempt_until_settled(user, &request, context.bases(&request), intended).await?;
    let record = pending.settle(attempts);
    context.recorder.record(
        request.endpoint,
        record.outcome,
        Duration::from_micros(record.latency_us),
        record.error_code.as_deref(),
    );
    context.ops.record(record);
    Ok(())
}

/// The HTTP request that carries an operation, the same on every attempt
/// but for the instance it goes to.
struct OpRequest<'a> {
    kind: OpKind,
    endpoint: &'static str,
    method: GooseMethod,
    /// The path and query, after an instance's base URL.
    path: String,
    body: Option<serde_json::Value>,
    key: Option<String>,
    /// The `Authorization` header.
    bearer: Option<&'a str>,
    /// The slot: picks the instance of the first attempt.
    slot: u64,
}

impl OpRequest<'_> {
    /// Attempt `attempt`'s URL: instance `slot + attempt` of `bases`.
    fn url(&self, bases: &[String], attempt: usize) -> String {
        let turn = self.slot.wrapping_add(attempt as u64);
        let base = usize::try_from(turn % bases.len().max(1) as u64)
            .ok()
            .and_then(|index| bases.get(index))
            .map_or("", String::as_str);
        format!("{base}{}", self.path)
    }
}

impl LoadContext {
    /// Slot `slot`'s operation: its record before any attempt, and its
    /// request.
    fn operation(&self, slot: u64, intended: Instant) -> (OpRecord, OpRequest<'_>) {
        let planned = self.workload.op(slot);
        let op_id = self.op_id_base + slot;
        let wallet = self.wallet_ids[planned.wallet_index as usize];
        let to = planned.to_wallet_index.map(|i| self.wallet_ids[i as usize]);
        let key = planned
            .kind
            .is_mutating()
            .then(|| format!("seed{}-op{op_id}", self.seed));
        let endpoint = endpoint_of(planned.kind);
        let (method, path, body) = self.request_of(&planned, wallet, to);
        let intended_at = self.started_wall
            + chrono::Duration::from_std(
                intended.saturating_duration_since(self.recorder.started()),
            )
            .unwrap_or_default();
        let pending = OpRecord {
            op_id,
            kind: planned.kind,
            wallet_index: Some(planned.wallet_index),
            to_wallet_index: planned.to_wallet_index,
            wallet_id: Some(wallet),
            to_wallet_id: to,
            amount: planned.amount,
            idempotency_key: key.clone(),
            // Settled from the attempts.
            outcome: Outcome::Indeterminate,
            status: None,
            error_code: None,
            intended_at,
            latency_us: 0,
            attempts: Vec::new(),
        };
        let bearer = self
            .bearers
            .as_deref()
            .and_then(|bearers| match planned.kind {
                OpKind::Fund => Some(bearers.admin()),
                _ => bearers.user(&self.workload.owner(planned.wallet_index)),
            });
        let request = OpRequest {
            kind: planned.kind,
            endpoint,
            method,
            path,
            body,
            key,
            bearer,
            slot,
        };
        (pending, request)
    }

    /// The instances a request may go to.
    fn bases(&self, request: &OpRequest<'_>) -> &[String] {
        match request.kind {
            OpKind::GetHistory => &self.history_urls,
            _ => &self.wallet_urls,
        }
    }

    /// The method, path and body that carry `planned`.
    fn request_of(
        &self,
        planned: &PlannedOp,
        wallet: Uuid,
        to: Option<Uuid>,
    ) -> (GooseMethod, String, Option<serde_json::Value>) {
        let amount = planned.amount.map(wallet_events::format_money);
        match planned.kind {
            OpKind::Transfer => (
                GooseMethod::Post,
                format!("/wallets/{wallet}/transfer"),
                Some(json!({"to_wallet_id": to, "amount": amount})),
            ),
            OpKind::Fund => (
                GooseMethod::Post,
                format!("/wallets/{wallet}/fund"),
                Some(json!({"amount": amount})),
            ),
            OpKind::GetWallet => (GooseMethod::Get, format!("/wallets/{wallet}"), None),
            OpKind::GetHistory => (
                GooseMethod::Get,
                format!("/wallets/{wallet}/history?limit={HISTORY_PAGE_LIMIT}"),
                None,
            ),
            OpKind::CreateWallet => {
                unreachable!("the load draws no creates: wallets are made in setup")
            }
        }
    }
}

/// The endpoint operations of `kind` go to: the recorder's key.
pub fn endpoint_of(kind: OpKind) -> &'static str {
    match kind {
        OpKind::CreateWallet => CREATE,
        OpKind::Fund => FUND,
        OpKind::Transfer => TRANSFER,
        OpKind::GetWallet => GET_WALLET,
        OpKind::GetHistory => GET_HISTORY,
    }
}

/// Sends `request` until [`Retry`] says its outcome is settled (or the
/// retries are spent); every attempt, timed from the intended start.
async fn attempt_until_settled(
    user: &mut GooseUser,
    request: &OpRequest<'_>,
    bases: &[String],
    intended: Instant,
) -> Result<Vec<Attempt>, Box<TransactionError>> {
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut retry = Retry::new();
    let first = Instant::now();
    loop {
        let url = request.url(bases, attempts.len());
        let mut builder = user.get_request_builder(&request.method, &url)?;
        if let Some(key) = &request.key {
            builder = builder.header("Idempotency-Key", key);
        }
        if let Some(bearer) = request.bearer {
            builder = builder.header("Authorization", bearer);
        }
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        let goose_request = GooseRequest::builder()
            .method(request.method)
            .name(endpoint_path(request.endpoint))
            .set_request_builder(builder)
            .build();
        let started = Instant::now();
        let mut sent = user.request(goose_request).await?;
        let ((outcome, body), status, error_code) = classify(sent.response).await;
        let observed = body.and_then(|body| Observed::from_body(request.kind, &body));
        // A definite refusal is an expected answer, not a load failure.
        if outcome == Outcome::Failed && status.is_some() {
            let _ = user.set_success(&mut sent.request);
        }
        attempts.push(Attempt {
            outcome,
            status,
            error_code,
            started_us: micros(started.saturating_duration_since(intended)),
            latency_us: micros(started.elapsed()),
            observed,
        });
        match retry.next_pause(request.key.is_some(), &attempts, first.elapsed()) {
            Some(pause) => tokio::time::sleep(pause).await,
            None => return Ok(attempts),
        }
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn endpoint_path(endpoint: &'static str) -> &'static str {
    endpoint
        .split_once(' ')
        .map(|(_, path)| path)
        .unwrap_or(endpoint)
}

/// One attempt's outcome: ok (2xx), failed (4xx: a definite refusal, or a
/// connection that was never made), indeterminate (5xx, timeout, reset: it
/// may have applied); with the body of a success, whose content the
/// checker verifies.
///
/// A connect error is a definite "not delivered" because reqwest (hyper's
/// pooled client) reports it only when no connection to the service could
/// be made for this request. A pooled connection that turns out closed is
/// replaced by a new one only if not a byte of the request was written to
/// it (hyper retries just such "canceled" requests); once the request was
/// written, a failure is a send or body error, never a connect error.
pub async fn classify(
    response: Result<reqwest::Response, reqwest::Error>,
) -> ((Outcome, Option<Vec<u8>>), Option<u16>, Option<String>) {
    match response {
        Ok(response) => {
            let status = response.status().as_u16();
            // A body cut off mid-read still leaves the status's verdict;
            // a success then has nothing to verify.
            let body = response.bytes().await.ok();
            let (outcome, code) = run_log::answered(status, body.as_deref().unwrap_or_default());
            let body = body.filter(|_| outcome == Outcome::Ok).map(|b| b.to_vec());
            ((outcome, body), Some(status), code)
        }
        Err(err) if err.is_connect() => (
            (Outcome::Failed, None),
            None,
            Some("connect_refused".into()),
        ),
        Err(err) if err.is_timeout() => {
            ((Outcome::Indeterminate, None), None, Some("timeout".into()))
        }
        Err(_) => (
            (Outcome::Indeterminate, None),
            None,
            Some("connection_error".into()),
        ),
    }
}
