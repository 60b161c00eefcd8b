//! The simulated clients: the same seeded workload as a live run (the
//! `workload` crate), sent to the wallet instances over simulated HTTP with
//! the same retry policy and the same operation log (`run_log::OpRecord`
//! with every attempt). A request cut off by a crash or a lost response
//! is indeterminate, exactly as in a live run.

use std::{cell::RefCell, rc::Rc, time::Duration};

use axum::{
    body::Body,
    http::{Method, Request},
};
use chrono::{DateTime, Utc};
use run_log::{Attempt, Observed, OpKind, OpRecord, Outcome};
use serde_json::{Value, json};
use service_kit::auth::Bearers;
use uuid::Uuid;
use workload::{PlannedWallet, Retry, Workload};

use crate::{
    cluster::{Answer, Cluster},
    exec, pg,
};

/// The operation log of a simulated run.
pub type OpsLog = Rc<RefCell<Vec<OpRecord>>>;

/// How long the clients' tokens last: longer than any simulated run.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Tokens for the admin and every owner of the seed's wallets, as a live
/// run mints them.
pub fn bearers(cluster: &Cluster, workload: &Workload) -> Bearers {
    let owners: Vec<String> = workload.wallets().into_iter().map(|w| w.user_id).collect();
    Bearers::mint(
        &cluster.keys,
        owners.iter().map(String::as_str),
        crate::cluster::unix_now(),
        TOKEN_TTL,
    )
    .expect("the workload's user ids are valid")
}

/// Creates (as each owner) and funds (as the admin) the seed's wallets
/// through wallet instance 0, as a live run's set-up does; returns their
/// ids by index.
pub async fn setup(
    cluster: &Rc<Cluster>,
    workload: &Workload,
    bearers: &Bearers,
    seed: u64,
    ops: &OpsLog,
) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for wallet in workload.wallets() {
        ids.push(setup_wallet(cluster, bearers, seed, &wallet, ops).await);
    }
    ids
}

async fn setup_wallet(
    cluster: &Rc<Cluster>,
    bearers: &Bearers,
    seed: u64,
    wallet: &PlannedWallet,
    ops: &OpsLog,
) -> Uuid {
    let body = json!({"user_id": wallet.user_id}).to_string();
    let started = exec::with(|e| e.now());
    let call = Call {
        instance: 0,
        method: Method::POST,
        path: "/wallets".into(),
        body: Some(body),
        bearer: bearers.user(&wallet.user_id),
        key: None,
        intended: started,
        kind: OpKind::CreateWallet,
    };
    let (attempt, data) = send(cluster, call).await;
    let id = data
        .as_ref()
        .and_then(|v| v["data"]["id"].as_str())
        .and_then(|id| Uuid::parse_str(id).ok())
        .expect("set-up runs before any fault: the wallet is created");
    let base = pending(
        2 * u64::from(wallet.index),
        OpKind::CreateWallet,
        Some(id),
        None,
        None,
        None,
    );
    ops.borrow_mut().push(base.settle(vec![attempt]));
    let key = format!("seed{seed}-setup-fund-{}", wallet.index);
    let body = money_body(Some(wallet.initial_balance));
    let started = exec::with(|e| e.now());
    let path = format!("/wallets/{id}/fund");
    let call = Call {
        instance: 0,
        method: Method::POST,
        path,
        body: Some(body),
        bearer: Some(bearers.admin()),
        key: Some(&key),
        intended: started,
        kind: OpKind::Fund,
    };
    let (attempt, _) = send(cluster, call).await;
    assert_eq!(
        attempt.outcome,
        Outcome::Ok,
        "set-up funding runs before any fault"
    );
    let mut record = pending(
        2 * u64::from(wallet.index) + 1,
        OpKind::Fund,
        Some(id),
        None,
        Some(wallet.initial_balance),
        Some(key),
    );
    record.wallet_index = Some(wallet.index);
    ops.borrow_mut().push(record.settle(vec![attempt]));
    id
}

/// One user of the load: slots `user, user + users, ...`, each at its
/// intended time, until `end`.
pub async fn user(
    cluster: Rc<Cluster>,
    workload: Rc<Workload>,
    context: Rc<LoadContext>,
    user: u64,
    ops: OpsLog,
) {
    let mut k = 0u64;
    loop {
        let slot = k * context.users + user;
        let intended = context.start + context.interval * u32::try_from(k).unwrap_or(u32::MAX);
        if intended >= context.end {
            return;
        }
        let now = exec::with(|e| e.now());
        if intended > now {
            exec::sleep(intended - now).await;
        }
        let record = operation(&cluster, &workload, &context, slot, intended).await;
        ops.borrow_mut().push(record);
        k += 1;
    }
}

/// What every user shares.
pub struct LoadContext {
    pub seed: u64,
    pub wallet_ids: Vec<Uuid>,
    pub users: u64,
    pub interval: Duration,
    pub start: Duration,
    pub end: Duration,
    pub op_id_base: u64,
    /// Each operation goes out with its wallet owner's token (a fund with
    /// the admin's).
    pub bearers: Bearers,
}

async fn operation(
    cluster: &Rc<Cluster>,
    workload: &Workload,
    context: &LoadContext,
    slot: u64,
    intended: Duration,
) -> OpRecord {
    let planned = workload.op(slot);
    let op_id = context.op_id_base + slot;
    let wallet = context.wallet_ids[planned.wallet_index as usize];
    let to = planned
        .to_wallet_index
        .map(|i| context.wallet_ids[i as usize]);
    let key = planned
        .kind
        .is_mutating()
        .then(|| format!("seed{}-op{op_id}", context.seed));
    let (method, path, body) = match planned.kind {
        OpKind::Transfer => (
            Method::POST,
            format!("/wallets/{wallet}/transfer"),
            Some(transfer_body(to, planned.amount)),
        ),
        OpKind::Fund => (
            Method::POST,
            format!("/wallets/{wallet}/fund"),
            Some(money_body(planned.amount)),
        ),
        OpKind::GetWallet => (Method::GET, format!("/wallets/{wallet}"), None),
        OpKind::GetHistory | OpKind::CreateWallet => {
            unreachable!("the simulated scenario draws neither history reads nor creates")
        }
    };
    let bearer = match planned.kind {
        OpKind::Fund => Some(context.bearers.admin()),
        _ => context.bearers.user(&workload.owner(planned.wallet_index)),
    };
    let instance = (op_id % cluster.wallets as u64) as usize;
    let mut attempts = Vec::new();
    let mut retry = Retry::new();
    let first = exec::with(|e| e.now());
    loop {
        let call = Call {
            instance,
            method: method.clone(),
            path: path.clone(),
            body: body.clone(),
            bearer,
            key: key.as_deref(),
            intended,
            kind: planned.kind,
        };
        let (attempt, _) = send(cluster, call).await;
        attempts.push(attempt);
        let since_first = exec::with(|e| e.now()) - first;
        match retry.next_pause(key.is_some(), &attempts, since_first) {
            Some(pause) => exec::sleep(pause).await,
            None => break,
        }
    }
    let mut record = pending(op_id, planned.kind, Some(wallet), to, planned.amount, key);
    record.wallet_index = Some(planned.wallet_index);
    record.to_wallet_index = planned.to_wallet_index;
    record.intended_at = at(intended);
    record.settle(attempts)
}

/// `{"amount": "..."}`. Written out rather than built as a JSON value (a
/// map per request): ids and formatted money need no escaping. A missing
/// part is `null`, as the live client sends it.
fn money_body(amount: Option<rust_decimal::Decimal>) -> String {
    format!(r#"{{"amount":{}}}"#, json_money(amount))
}

/// `{"to_wallet_id": "...", "amount": "..."}`, as [`money_body`].
fn transfer_body(to: Option<Uuid>, amount: Option<rust_decimal::Decimal>) -> String {
    let to = to.map_or("null".to_owned(), |id| format!(r#""{id}""#));
    format!(r#"{{"to_wallet_id":{to},"amount":{}}}"#, json_money(amount))
}

fn json_money(amount: Option<rust_decimal::Decimal>) -> String {
    amount.map_or("null".to_owned(), |a| {
        format!(r#""{}""#, wallet_events::format_money(a))
    })
}

/// The record of an operation before its attempts settle it.
fn pending(
    op_id: u64,
    kind: OpKind,
    wallet_id: Option<Uuid>,
    to_wallet_id: Option<Uuid>,
    amount: Option<rust_decimal::Decimal>,
    idempotency_key: Option<String>,
) -> OpRecord {
    OpRecord {
        op_id,
        kind,
        wallet_index: None,
        to_wallet_index: None,
        wallet_id,
        to_wallet_id,
        amount,
        idempotency_key,
        outcome: Outcome::Indeterminate,
        status: None,
        error_code: None,
        intended_at: at(exec::with(|e| e.now())),
        latency_us: 0,
        attempts: Vec::new(),
    }
}

/// Simulated time as a wall-clock instant (the database's origin).
pub fn at(since_start: Duration) -> DateTime<Utc> {
    let origin =
        pg::clock_timestamp() - chrono::Duration::from_std(exec::with(|e| e.now())).expect("fits");
    origin + chrono::Duration::from_std(since_start).expect("fits")
}

/// One HTTP request of an operation.
#[derive(Clone)]
struct Call<'a> {
    instance: usize,
    method: Method,
    path: String,
    /// JSON text.
    body: Option<String>,
    /// The `Authorization` header.
    bearer: Option<&'a str>,
    key: Option<&'a str>,
    /// The operation's intended start: attempts are timed from it.
    intended: Duration,
    /// What the request does: a create's body is parsed (set-up needs the
    /// new wallet's id); what other successes show is observed.
    kind: OpKind,
}

/// One attempt: the request, its outcome as a live client classifies it,
/// and the body of a success.
async fn send(cluster: &Rc<Cluster>, call: Call<'_>) -> (Attempt, Option<Value>) {
    let Call {
        instance,
        method,
        path,
        body,
        bearer,
        key,
        intended,
        kind,
    } = call;
    let started = exec::with(|e| e.now());
    let mut request = Request::builder().method(method).uri(path);
    if let Some(bearer) = bearer {
        request = request.header("Authorization", bearer);
    }
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let request = match body {
        Some(body) => request
            .header("content-type", "application/json")
            .body(Body::from(body)),
        None => request.body(Body::empty()),
    }
    .expect("a valid request");
    let answer = cluster.call_wallet(instance, request).await;
    let ended = exec::with(|e| e.now());
    let (outcome, status, error_code, data) = classify(answer);
    let observed = data
        .as_deref()
        .and_then(|body| Observed::from_body(kind, body));
    let data = data
        .filter(|_| kind == OpKind::CreateWallet)
        .map(|body| serde_json::from_slice(&body).unwrap_or_default());
    let attempt = Attempt {
        outcome,
        status,
        error_code,
        started_us: micros(started.saturating_sub(intended)),
        latency_us: micros(ended - started),
        observed,
    };
    (attempt, data)
}

/// An answer as a live client classifies it, with the body of a success.
fn classify(answer: Answer) -> (Outcome, Option<u16>, Option<String>, Option<Vec<u8>>) {
    match answer {
        Answer::Response { status, body } => {
            let (outcome, code) = run_log::answered(status, &body);
            let body = (outcome == Outcome::Ok).then_some(body);
            (outcome, Some(status), code, body)
        }
        Answer::Refused => (Outcome::Failed, None, Some("connect_refused".into()), None),
        Answer::Reset => (
            Outcome::Indeterminate,
            None,
            Some("connection_error".into()),
            None,
        ),
        Answer::TimedOut => (Outcome::Indeterminate, None, Some("timeout".into()), None),
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
