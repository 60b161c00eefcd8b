//! The HTTP API, compatible with the original design's clients: the same
//! six endpoints and the `{"success","data","message"}` envelope, plus a
//! `code` on errors. `router` builds the app without I/O; the caller serves it.

use std::time::Duration;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, State, rejection::JsonRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use service_kit::{PathSegment, auth::Auth};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use wallet_events::{Amount, IdempotencyKey, IdempotencyKeyError, UserId, UserIdError};

pub use wallet_events::Envelope;

use crate::{
    error::ApiError,
    openapi::ErrorEnvelope,
    store::{Idempotency, Outcome, PgWalletDb, Store, TransferReceipt, Wallet, WalletDb},
};

/// Request bodies are a few fields; anything bigger is a mistake or abuse.
pub const BODY_MAX_BYTES: usize = 16 * 1024;
/// A health probe that takes longer than this answers "unavailable".
const HEALTH_TIMEOUT_MS: u64 = 2_000;

/// What every handler shares: the store over backend `D` (PostgreSQL in
/// production) and who may call.
#[derive(Clone)]
pub struct AppState<D = PgWalletDb> {
    pub store: Store<D>,
    pub auth: Auth,
}

/// The wallet API over `state`; no I/O happens until it is served.
pub fn router<D: WalletDb>(state: AppState<D>) -> Router {
    Router::new()
        .route("/wallets", post(create_wallet::<D>))
        .route("/wallets/{id}", get(get_wallet::<D>))
        .route("/users/{id}/wallets", get(user_wallets::<D>))
        .route("/wallets/{id}/fund", post(fund::<D>))
        .route("/wallets/{id}/transfer", post(transfer::<D>))
        .route("/health", get(health::<D>))
        .route("/openapi.json", get(openapi_json))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_MAX_BYTES))
        .with_state(state)
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct CreateWallet {
    // The owner. (A doc comment here would wrap the inlined schema in a
    // `oneOf` to carry it; the schema describes itself.)
    #[schema(value_type = wallet_events::schema::UserIdText, inline)]
    user_id: String,
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct Fund {
    #[schema(value_type = wallet_events::schema::AmountText, inline)]
    amount: serde_json::Value,
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct Transfer {
    /// The wallet that receives the money.
    #[schema(value_type = Uuid)]
    to_wallet_id: String,
    #[schema(value_type = wallet_events::schema::AmountText, inline)]
    amount: serde_json::Value,
}

/// This service's OpenAPI document.
async fn openapi_json() -> Response {
    service_kit::openapi::respond(crate::openapi::DOCUMENT.as_str())
}

/// Opens a wallet for a user, with a zero balance.
#[utoipa::path(
    post,
    path = "/wallets",
    tag = "wallets",
    security(("bearer" = [])),
    request_body = CreateWallet,
    params(IdempotencyKeyHeader),
    responses(
        (status = 201, description = "The new wallet; with a key already used by the same request, the wallet that request opened (header `idempotent-replayed: true`)", body = Envelope<Wallet>),
        (status = 400, description = "`invalid_json`, `invalid_request`, `invalid_idempotency_key`", body = ErrorEnvelope),
        (status = 413, description = "`payload_too_large`", body = ErrorEnvelope),
        (status = 415, description = "`unsupported_media_type`", body = ErrorEnvelope),
        (status = 422, description = "`invalid_user_id`, `idempotency_key_reused`", body = ErrorEnvelope),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`", body = ErrorEnvelope),
        (status = 403, description = "`forbidden`: a user opening a wallet for another user", body = ErrorEnvelope),
        (status = 500, description = "`internal_error`", body = ErrorEnvelope),
        (status = 503, description = "`service_unavailable`: retry, with the same key", body = ErrorEnvelope),
    )
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn create_wallet<D: WalletDb>(
    State(state): State<AppState<D>>,
    headers: HeaderMap,
    body: Result<Json<CreateWallet>, JsonRejection>,
) -> Result<Response, ApiError> {
    let caller = state.auth.caller(&headers)?;
    let Json(request) = body?;
    let user_id = UserId::parse(&request.user_id)?;
    caller.require(
        caller.acts_for(user_id.as_str()),
        "open a wallet for another user",
    )?;
    let idempotency = idempotency(&headers, || format!("create {user_id} by {caller}"))?;
    let outcome = state
        .store
        .create_wallet(&user_id, idempotency.as_ref())
        .await?;
    Ok(respond(StatusCode::CREATED, outcome))
}

/// One wallet with its balance.
#[utoipa::path(
    get,
    path = "/wallets/{id}",
    tag = "wallets",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The wallet's id")),
    responses(
        (status = 200, description = "The wallet", body = Envelope<Wallet>),
        (status = 400, description = "`invalid_wallet_id`", body = ErrorEnvelope),
        (status = 404, description = "`wallet_not_found`", body = ErrorEnvelope),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`", body = ErrorEnvelope),
        (status = 403, description = "`forbidden`: another user's wallet", body = ErrorEnvelope),
        (status = 500, description = "`internal_error`", body = ErrorEnvelope),
        (status = 503, description = "`service_unavailable`", body = ErrorEnvelope),
    )
)]
#[tracing::instrument(skip_all, fields(wallet_id))]
pub(crate) async fn get_wallet<D: WalletDb>(
    State(state): State<AppState<D>>,
    headers: HeaderMap,
    id: PathSegment,
) -> Result<Response, ApiError> {
    let caller = state.auth.caller(&headers)?;
    let wallet = state.store.wallet(path_wallet_id(id)?).await?;
    caller.require(
        caller.acts_for(&wallet.user_id),
        "read another user's wallet",
    )?;
    Ok(Json(Envelope::ok(wallet)).into_response())
}

/// A user's wallets, oldest first (empty for a user with none).
#[utoipa::path(
    get,
    path = "/users/{id}/wallets",
    tag = "wallets",
    security(("bearer" = [])),
    params(("id" = inline(wallet_events::schema::UserIdText), Path, description = "The user's id")),
    responses(
        (status = 200, description = "The user's wallets", body = Envelope<Vec<Wallet>>),
        (status = 422, description = "`invalid_user_id`", body = ErrorEnvelope),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`", body = ErrorEnvelope),
        (status = 403, description = "`forbidden`: another user's wallets", body = ErrorEnvelope),
        (status = 500, description = "`internal_error`", body = ErrorEnvelope),
        (status = 503, description = "`service_unavailable`", body = ErrorEnvelope),
    )
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn user_wallets<D: WalletDb>(
    State(state): State<AppState<D>>,
    headers: HeaderMap,
    PathSegment(user_id): PathSegment,
) -> Result<Response, ApiError> {
    let caller = state.auth.caller(&headers)?;
    let user_id = UserId::parse(&user_id.ok_or(UserIdError)?)?;
    caller.require(
        caller.acts_for(user_id.as_str()),
        "list another user's wallets",
    )?;
    let wallets = state.store.user_wallets(&user_id).await?;
    Ok(Json(Envelope::ok(wallets)).into_response())
}

/// Adds money to a wallet: the only way money enters the system.
#[utoipa::path(
    post,
    path = "/wallets/{id}/fund",
    tag = "wallets",
    security(("bearer" = [])),
    request_body = Fund,
    params(("id" = Uuid, Path, description = "The wallet to fund"), IdempotencyKeyHeader),
    responses(
        (status = 200, description = "The funded wallet (replayed for a key already used by the same request)", body = Envelope<Wallet>),
        (status = 400, description = "`invalid_json`, `invalid_request`, `invalid_amount`, `amount_not_positive`, `amount_too_precise`, `amount_too_large`, `invalid_wallet_id`, `invalid_idempotency_key`", body = ErrorEnvelope),
        (status = 404, description = "`wallet_not_found`", body = ErrorEnvelope),
        (status = 413, description = "`payload_too_large`", body = ErrorEnvelope),
        (status = 415, description = "`unsupported_media_type`", body = ErrorEnvelope),
        (status = 422, description = "`balance_limit_exceeded`, `idempotency_key_reused`", body = ErrorEnvelope),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`", body = ErrorEnvelope),
        (status = 403, description = "`forbidden`: not the admin (funding records a deposit the operator received)", body = ErrorEnvelope),
        (status = 500, description = "`internal_error`", body = ErrorEnvelope),
        (status = 503, description = "`service_unavailable`: retry, with the same key", body = ErrorEnvelope),
    )
)]
#[tracing::instrument(skip_all, fields(wallet_id))]
pub(crate) async fn fund<D: WalletDb>(
    State(state): State<AppState<D>>,
    id: PathSegment,
    headers: HeaderMap,
    body: Result<Json<Fund>, JsonRejection>,
) -> Result<Response, ApiError> {
    let caller = state.auth.caller(&headers)?;
    caller.require(
        caller.may_fund(),
        "fund a wallet (a deposit the operator received: admin only)",
    )?;
    let wallet_id = path_wallet_id(id)?;
    let Json(request) = body?;
    let amount = amount(&request.amount)?;
    let idempotency = idempotency(&headers, || {
        format!("fund {wallet_id} {amount} by {caller}")
    })?;
    let outcome = state
        .store
        .fund(wallet_id, amount, idempotency.as_ref())
        .await?;
    Ok(respond(StatusCode::OK, outcome))
}

/// Moves money from this wallet to another, both legs in one transaction.
#[utoipa::path(
    post,
    path = "/wallets/{id}/transfer",
    tag = "wallets",
    security(("bearer" = [])),
    request_body = Transfer,
    params(("id" = Uuid, Path, description = "The wallet the money leaves"), IdempotencyKeyHeader),
    responses(
        (status = 200, description = "Both ledger entries (replayed for a key already used by the same request)", body = Envelope<TransferReceipt>),
        (status = 400, description = "`invalid_json`, `invalid_request`, `invalid_amount`, `amount_not_positive`, `amount_too_precise`, `amount_too_large`, `invalid_wallet_id`, `invalid_idempotency_key`", body = ErrorEnvelope),
        (status = 404, description = "`wallet_not_found` (source or target)", body = ErrorEnvelope),
        (status = 413, description = "`payload_too_large`", body = ErrorEnvelope),
        (status = 415, description = "`unsupported_media_type`", body = ErrorEnvelope),
        (status = 422, description = "`insufficient_funds`, `self_transfer`, `balance_limit_exceeded`, `idempotency_key_reused`", body = ErrorEnvelope),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`", body = ErrorEnvelope),
        (status = 403, description = "`forbidden`: not the wallet's owner (the admin included)", body = ErrorEnvelope),
        (status = 500, description = "`internal_error`", body = ErrorEnvelope),
        (status = 503, description = "`service_unavailable`: retry, with the same key", body = ErrorEnvelope),
    )
)]
#[tracing::instrument(skip_all, fields(wallet_id))]
pub(crate) async fn transfer<D: WalletDb>(
    State(state): State<AppState<D>>,
    id: PathSegment,
    headers: HeaderMap,
    body: Result<Json<Transfer>, JsonRejection>,
) -> Result<Response, ApiError> {
    let caller = state.auth.caller(&headers)?;
    let from = path_wallet_id(id)?;
    let Json(request) = body?;
    let to = wallet_id(&request.to_wallet_id)?;
    let amount = amount(&request.amount)?;
    // The caller is part of what is asked: another caller's key is not
    // this request's, and replays nothing to them.
    let idempotency = idempotency(&headers, || {
        format!("transfer {from} {to} {amount} by {caller}")
    })?;
    let outcome = state
        .store
        .transfer(&caller, from, to, amount, idempotency.as_ref())
        .await?;
    Ok(respond(StatusCode::OK, outcome))
}

/// `OK` while the database answers.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses(
        (status = 200, description = "`OK`", content_type = "text/plain", body = String),
        (status = 503, description = "`UNAVAILABLE: ...`: the database does not answer", content_type = "text/plain", body = String),
    )
)]
pub(crate) async fn health<D: WalletDb>(State(state): State<AppState<D>>) -> Response {
    let probe = tokio::time::timeout(Duration::from_millis(HEALTH_TIMEOUT_MS), state.store.ping());
    match probe.await {
        Ok(Ok(())) => (StatusCode::OK, "OK").into_response(),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "health: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE: database unreachable",
            )
                .into_response()
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE: database timed out",
        )
            .into_response(),
    }
}

/// The answer to a change: `status` with its data, fresh or replayed (a
/// replay says so in a header).
fn respond<T: Serialize>(status: StatusCode, outcome: Outcome<T>) -> Response {
    match outcome {
        Outcome::Fresh {
            recorded: Some(json),
            ..
        } => (status, Json(Envelope::ok(json))).into_response(),
        Outcome::Fresh { data, .. } => (status, Json(Envelope::ok(data))).into_response(),
        Outcome::Replayed(data) => {
            let mut response = (status, Json(Envelope::ok(data))).into_response();
            response
                .headers_mut()
                .insert("idempotent-replayed", "true".parse().expect("valid header"));
            response
        }
    }
}

fn wallet_id(text: &str) -> Result<Uuid, ApiError> {
    service_kit::parse_wallet_id(text).map_err(ApiError::InvalidWalletId)
}

/// The wallet id of the path, recorded on the request's span.
fn path_wallet_id(segment: PathSegment) -> Result<Uuid, ApiError> {
    segment.wallet_id().map_err(ApiError::InvalidWalletId)
}

fn amount(value: &serde_json::Value) -> Result<Amount, ApiError> {
    let text = value.as_str().ok_or(ApiError::InvalidAmount(
        wallet_events::AmountError::NotADecimalString,
    ))?;
    Amount::parse(text).map_err(ApiError::InvalidAmount)
}

/// The `Idempotency-Key` header, as the OpenAPI document describes it.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // documentation only: `idempotency` reads the header
struct IdempotencyKeyHeader {
    /// 1 to 200 visible ASCII characters. A request repeated with its key
    /// answers the first result and changes nothing; the key with another
    /// request is refused (`idempotency_key_reused`).
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 200,
        pattern = "^[!-~]+$"
    )]
    idempotency_key: Option<String>,
}

/// Reads the optional `Idempotency-Key` header; the fingerprint names what
/// the request asks for, so a reused key with another request is caught.
fn idempotency(
    headers: &HeaderMap,
    fingerprint: impl FnOnce() -> String,
) -> Result<Option<Idempotency>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().map_err(|_| IdempotencyKeyError)?;
    Ok(Some(Idempotency {
        key: IdempotencyKey::parse(key)?,
        fingerprint: fingerprint(),
    }))
}
