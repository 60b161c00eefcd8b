//! The HTTP API, compatible with the original design's clients: the same
//! six endpoints and the `{"success","data","message"}` envelope, plus a
//! `code` on errors. `router` builds the app without I/O; the caller serves it.

use std::time::Duration;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Path, State, rejection::JsonRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use wallet_events::{Amount, IdempotencyKey, IdempotencyKeyError, UserId};

pub use wallet_events::Envelope;

use crate::{
    error::ApiError,
    store::{Idempotency, Outcome, PgWalletDb, Store, WalletDb},
};

/// Request bodies are a few fields; anything bigger is a mistake or abuse.
pub const BODY_MAX_BYTES: usize = 16 * 1024;
/// A health probe that takes longer than this answers "unavailable".
const HEALTH_TIMEOUT_MS: u64 = 2_000;

/// What every handler shares: the store over backend `D` (PostgreSQL in
/// production).
#[derive(Clone)]
pub struct AppState<D = PgWalletDb> {
    pub store: Store<D>,
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
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_MAX_BYTES))
        .with_state(state)
}

#[derive(Deserialize)]
struct CreateWallet {
    user_id: String,
}

#[derive(Deserialize)]
struct Fund {
    amount: serde_json::Value,
}

#[derive(Deserialize)]
struct Transfer {
    to_wallet_id: String,
    amount: serde_json::Value,
}

#[tracing::instrument(skip_all)]
async fn create_wallet<D: WalletDb>(
    State(state): State<AppState<D>>,
    body: Result<Json<CreateWallet>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    let user_id = UserId::parse(&request.user_id)?;
    let wallet = state.store.create_wallet(&user_id).await?;
    Ok((StatusCode::CREATED, Json(Envelope::ok(wallet))).into_response())
}

#[tracing::instrument(skip_all, fields(wallet_id = %id))]
async fn get_wallet<D: WalletDb>(
    State(state): State<AppState<D>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let wallet = state.store.wallet(wallet_id(&id)?).await?;
    Ok(Json(Envelope::ok(wallet)).into_response())
}

#[tracing::instrument(skip_all)]
async fn user_wallets<D: WalletDb>(
    State(state): State<AppState<D>>,
    Path(user_id): Path<String>,
) -> Result<Response, ApiError> {
    let wallets = state.store.user_wallets(&UserId::parse(&user_id)?).await?;
    Ok(Json(Envelope::ok(wallets)).into_response())
}

#[tracing::instrument(skip_all, fields(wallet_id = %id))]
async fn fund<D: WalletDb>(
    State(state): State<AppState<D>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<Fund>, JsonRejection>,
) -> Result<Response, ApiError> {
    let wallet_id = wallet_id(&id)?;
    let Json(request) = body?;
    let amount = amount(&request.amount)?;
    let idempotency = idempotency(&headers, || format!("fund {wallet_id} {amount}"))?;
    let outcome = state
        .store
        .fund(wallet_id, amount, idempotency.as_ref())
        .await?;
    Ok(respond(outcome))
}

#[tracing::instrument(skip_all, fields(wallet_id = %id))]
async fn transfer<D: WalletDb>(
    State(state): State<AppState<D>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<Transfer>, JsonRejection>,
) -> Result<Response, ApiError> {
    let from = wallet_id(&id)?;
    let Json(request) = body?;
    let to = wallet_id(&request.to_wallet_id)?;
    let amount = amount(&request.amount)?;
    let idempotency = idempotency(&headers, || format!("transfer {from} {to} {amount}"))?;
    let outcome = state
        .store
        .transfer(from, to, amount, idempotency.as_ref())
        .await?;
    Ok(respond(outcome))
}

/// `OK` while the database answers.
async fn health<D: WalletDb>(State(state): State<AppState<D>>) -> Response {
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

fn respond<T: Serialize>(outcome: Outcome<T>) -> Response {
    match outcome {
        Outcome::Fresh {
            recorded: Some(json),
            ..
        } => Json(Envelope::ok(json)).into_response(),
        Outcome::Fresh { data, .. } => Json(Envelope::ok(data)).into_response(),
        Outcome::Replayed(data) => {
            let mut response = Json(Envelope::ok(data)).into_response();
            response
                .headers_mut()
                .insert("idempotent-replayed", "true".parse().expect("valid header"));
            response
        }
    }
}

fn wallet_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::InvalidWalletId(text.chars().take(64).collect()))
}

fn amount(value: &serde_json::Value) -> Result<Amount, ApiError> {
    let text = value.as_str().ok_or(ApiError::InvalidAmount(
        wallet_events::AmountError::NotADecimalString,
    ))?;
    Amount::parse(text).map_err(ApiError::InvalidAmount)
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
