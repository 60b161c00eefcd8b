//! The wallet API's errors: each expected refusal is its own variant with a
//! stable machine-readable code; anything unexpected is an opaque 500 whose
//! full cause is logged, never shown.

use axum::{
    Json,
    extract::rejection::JsonRejection,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use service_kit::auth::AuthError;
use uuid::Uuid;
use wallet_events::{AmountError, IdempotencyKeyError, UserIdError};

use crate::{
    api::Envelope,
    domain::Refusal,
    store::{DbError, StoreError},
};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("request body is larger than {limit_bytes} bytes")]
    PayloadTooLarge { limit_bytes: usize },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidAmount(AmountError),
    #[error("{0:?} is not a wallet id (a UUID)")]
    InvalidWalletId(String),
    #[error("{0}")]
    InvalidUserId(#[from] UserIdError),
    #[error("{0}")]
    InvalidIdempotencyKey(#[from] IdempotencyKeyError),
    #[error("no wallet with id {0}")]
    WalletNotFound(Uuid),
    #[error("{0}")]
    Refused(Refusal),
    #[error("Idempotency-Key {0:?} was already used for a different request")]
    IdempotencyKeyReused(String),
    /// No, a bad or an expired token (401), or a caller the rules refuse
    /// (403).
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("no such endpoint")]
    NotFound,
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    /// The database cannot be reached now (or kept losing a race): the
    /// client may retry, with the same idempotency key.
    #[error("the service cannot reach its database right now; retry")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            InvalidJson(_)
            | InvalidRequest(_)
            | InvalidAmount(_)
            | InvalidWalletId(_)
            | InvalidIdempotencyKey(_) => StatusCode::BAD_REQUEST,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            InvalidUserId(_) | Refused(_) | IdempotencyKeyReused(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            WalletNotFound(_) | NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Auth(auth) => auth.status_and_code().0,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Every code [`ApiError::code`] can give (the OpenAPI document lists
    /// them; a unit test keeps the two in step).
    pub const CODES: [&'static str; 24] = [
        "invalid_json",
        "unsupported_media_type",
        "payload_too_large",
        "invalid_request",
        "amount_not_positive",
        "amount_too_precise",
        "amount_too_large",
        "invalid_amount",
        "invalid_wallet_id",
        "invalid_user_id",
        "invalid_idempotency_key",
        "wallet_not_found",
        "insufficient_funds",
        "self_transfer",
        "balance_limit_exceeded",
        "idempotency_key_reused",
        "missing_token",
        "invalid_token",
        "token_expired",
        "forbidden",
        "not_found",
        "method_not_allowed",
        "service_unavailable",
        "internal_error",
    ];

    /// The stable, machine-readable error code.
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            InvalidJson(_) => "invalid_json",
            UnsupportedMediaType => "unsupported_media_type",
            PayloadTooLarge { .. } => "payload_too_large",
            InvalidRequest(_) => "invalid_request",
            InvalidAmount(AmountError::NotPositive) => "amount_not_positive",
            InvalidAmount(AmountError::TooPrecise) => "amount_too_precise",
            InvalidAmount(AmountError::TooLarge) => "amount_too_large",
            InvalidAmount(AmountError::NotADecimalString) => "invalid_amount",
            InvalidWalletId(_) => "invalid_wallet_id",
            InvalidUserId(_) => "invalid_user_id",
            InvalidIdempotencyKey(_) => "invalid_idempotency_key",
            WalletNotFound(_) => "wallet_not_found",
            Refused(Refusal::InsufficientFunds { .. }) => "insufficient_funds",
            Refused(Refusal::SelfTransfer) => "self_transfer",
            Refused(Refusal::BalanceLimit) => "balance_limit_exceeded",
            IdempotencyKeyReused(_) => "idempotency_key_reused",
            Auth(auth) => auth.status_and_code().1,
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            Unavailable(_) => "service_unavailable",
            Internal(_) => "internal_error",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Refused(refusal) => ApiError::Refused(refusal),
            StoreError::WalletNotFound(id) => ApiError::WalletNotFound(id),
            StoreError::IdempotencyKeyReused(key) => ApiError::IdempotencyKeyReused(key),
            StoreError::Auth(refused) => ApiError::Auth(refused),
            err @ StoreError::Invariant(_) => ApiError::Internal(err.into()),
            StoreError::Database(DbError::Unavailable(cause) | DbError::Conflict(cause)) => {
                ApiError::Unavailable(cause)
            }
            StoreError::Database(db) => ApiError::Internal(db.into()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
                limit_bytes: crate::api::BODY_MAX_BYTES,
            },
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
            _ => match rejection {
                JsonRejection::JsonDataError(err) => ApiError::InvalidRequest(err.body_text()),
                other => ApiError::InvalidJson(other.body_text()),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Auth(auth) = self {
            return auth.into_response();
        }
        match &self {
            ApiError::Internal(cause) => tracing::error!(error = ?cause, "request failed"),
            ApiError::Unavailable(cause) => tracing::warn!(%cause, "database unavailable"),
            _ => {}
        }
        let body = Envelope::<()>::error(self.code(), self.to_string());
        (self.status(), Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    #[test]
    fn every_code_is_listed_once() {
        let every = [
            ApiError::InvalidJson(String::new()),
            ApiError::UnsupportedMediaType,
            ApiError::PayloadTooLarge { limit_bytes: 1 },
            ApiError::InvalidRequest(String::new()),
            ApiError::InvalidAmount(AmountError::NotPositive),
            ApiError::InvalidAmount(AmountError::TooPrecise),
            ApiError::InvalidAmount(AmountError::TooLarge),
            ApiError::InvalidAmount(AmountError::NotADecimalString),
            ApiError::InvalidWalletId(String::new()),
            ApiError::InvalidUserId(UserIdError),
            ApiError::InvalidIdempotencyKey(IdempotencyKeyError),
            ApiError::WalletNotFound(Uuid::nil()),
            ApiError::Refused(Refusal::InsufficientFunds {
                balance: Decimal::ZERO,
                requested: Decimal::ONE,
            }),
            ApiError::Refused(Refusal::SelfTransfer),
            ApiError::Refused(Refusal::BalanceLimit),
            ApiError::IdempotencyKeyReused(String::new()),
            ApiError::Auth(AuthError::MissingToken),
            ApiError::Auth(AuthError::InvalidToken),
            ApiError::Auth(AuthError::TokenExpired),
            ApiError::Auth(AuthError::Forbidden("x")),
            ApiError::NotFound,
            ApiError::MethodNotAllowed,
            ApiError::Unavailable(String::new()),
            ApiError::Internal(anyhow::anyhow!("x")),
        ];
        let codes: Vec<&str> = every.iter().map(ApiError::code).collect();
        assert_eq!(codes, ApiError::CODES);
    }
}
