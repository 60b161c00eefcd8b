//! The history API: a wallet's entries and a user's activity, newest first,
//! paginated by an opaque cursor, in the same envelope as the wallet API;
//! and `/health`, which also reports the consumer.

use std::{fmt::Write, time::Duration};

use axum::{
    Json, Router,
    extract::{Query, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::{DateTime, Datelike, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use service_kit::{
    PathSegment,
    auth::{Auth, AuthError},
};
use sqlx::{PgPool, Row, postgres::PgRow};
use uuid::Uuid;
use wallet_events::{Envelope, EventKind, UserId, UserIdError};

use crate::{consumer::SharedStatus, openapi::ErrorEnvelope};

/// Page size when the client names none.
pub const PAGE_DEFAULT: i64 = 50;
/// The largest page a client may ask for: bounds one query's work.
pub const PAGE_MAX: i64 = 500;
const HEALTH_TIMEOUT_MS: u64 = 2_000;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub consumer: SharedStatus,
    /// Who may call.
    pub auth: Auth,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/wallets/{id}/history", get(wallet_history))
        .route("/users/{id}/activity", get(user_activity))
        .route("/health", get(health))
        .route(
            "/openapi.json",
            get(|| async { service_kit::openapi::respond(crate::openapi::DOCUMENT.as_str()) }),
        )
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0:?} is not a wallet id (a UUID)")]
    InvalidWalletId(String),
    #[error("limit must be a whole number from 1 to {PAGE_MAX}")]
    InvalidLimit,
    #[error("cursor is not one this service handed out")]
    InvalidCursor,
    #[error("invalid query string: {0}")]
    InvalidQuery(String),
    #[error("{0}")]
    InvalidUserId(#[from] UserIdError),
    /// No, a bad or an expired token (401), or a caller the rules refuse
    /// (403).
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("no such endpoint")]
    NotFound,
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    #[error("the service cannot reach its database right now; retry")]
    Unavailable(String),
    #[error("internal error")]
    Internal(sqlx::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        if service_kit::database_unavailable(&err) {
            ApiError::Unavailable(err.to_string())
        } else {
            ApiError::Internal(err)
        }
    }
}

impl ApiError {
    /// Every code [`ApiError::status_and_code`] can give (the OpenAPI
    /// document lists them; a unit test keeps the two in step).
    pub const CODES: [&'static str; 13] = [
        "invalid_wallet_id",
        "invalid_limit",
        "invalid_cursor",
        "invalid_query",
        "invalid_user_id",
        "missing_token",
        "invalid_token",
        "token_expired",
        "forbidden",
        "not_found",
        "method_not_allowed",
        "service_unavailable",
        "internal_error",
    ];

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::InvalidWalletId(_) => (StatusCode::BAD_REQUEST, "invalid_wallet_id"),
            ApiError::InvalidLimit => (StatusCode::BAD_REQUEST, "invalid_limit"),
            ApiError::InvalidCursor => (StatusCode::BAD_REQUEST, "invalid_cursor"),
            ApiError::InvalidQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query"),
            ApiError::InvalidUserId(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_user_id"),
            ApiError::Auth(auth) => auth.status_and_code(),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Auth(auth) = self {
            return auth.into_response();
        }
        if let ApiError::Internal(cause) = &self {
            tracing::error!(error = ?cause, "request failed");
        }
        let (status, code) = self.status_and_code();
        (status, Json(Envelope::<()>::error(code, self.to_string()))).into_response()
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::InvalidQuery(rejection.body_text())
    }
}

/// A page's query string: `limit` (1 to [`PAGE_MAX`], default
/// [`PAGE_DEFAULT`]) and `cursor` (the page before's `next_cursor`).
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// One history entry as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub event_id: Uuid,
    pub wallet_id: Uuid,
    pub user_id: String,
    pub seq: i64,
    #[schema(value_type = EventKind)]
    pub kind: String,
    #[serde(with = "wallet_events::money_str")]
    #[schema(value_type = wallet_events::schema::MoneyText, inline)]
    pub amount: Decimal,
    #[serde(with = "wallet_events::money_str")]
    #[schema(value_type = wallet_events::schema::MoneyText, inline)]
    pub balance_after: Decimal,
    pub transfer_id: Option<Uuid>,
    pub counterparty_wallet_id: Option<Uuid>,
    #[serde(serialize_with = "wallet_events::rfc3339::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub committed_at: DateTime<Utc>,
    #[serde(serialize_with = "wallet_events::rfc3339::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub applied_at: DateTime<Utc>,
}

/// One page of entries, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page {
    pub entries: Vec<HistoryEntry>,
    /// Pass as `cursor` to get the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

const COLUMNS: &str = "event_id, wallet_id, user_id, seq, kind, amount, balance_after, transfer_id, \
                       counterparty_wallet_id, committed_at, applied_at";

/// A wallet's history entries, newest first.
#[utoipa::path(
    get,
    path = "/wallets/{id}/history",
    tag = "history",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The wallet's id"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Entries per page (default 50)"),
        ("cursor" = Option<String>, Query, pattern = r"^-?[0-9]{1,18}$", description = "The `next_cursor` of the page before; absent for the newest page"),
    ),
    responses(
        (status = 200, description = "A page of the wallet's entries (empty for a wallet history has not seen)", body = Envelope<Page>),
        (status = 400, description = "`invalid_wallet_id`, `invalid_limit`, `invalid_cursor`, `invalid_query`", body = ErrorEnvelope),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`", body = ErrorEnvelope),
        (status = 403, description = "`forbidden`: another user's wallet", body = ErrorEnvelope),
        (status = 500, description = "`internal_error`", body = ErrorEnvelope),
        (status = 503, description = "`service_unavailable`", body = ErrorEnvelope),
    )
)]
#[tracing::instrument(skip_all, fields(wallet_id))]
pub(crate) async fn wallet_history(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: PathSegment,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Envelope<Page>>, ApiError> {
    let caller = state.auth.caller(&headers)?;
    let wallet_id = id.wallet_id().map_err(ApiError::InvalidWalletId)?;
    let Query(query) = query?;
    let limit = limit(query.limit.as_deref())?;
    let before_seq = match query.cursor.as_deref() {
        None => None,
        Some(text) => Some(text.parse::<i64>().map_err(|_| ApiError::InvalidCursor)?),
    };
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM history_entries
         WHERE wallet_id = $1 AND ($2::bigint IS NULL OR seq < $2)
         ORDER BY seq DESC LIMIT $3"
    ))
    .bind(wallet_id)
    .bind(before_seq)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let page = paginate(rows, limit, |last| last.seq.to_string())?;
    // Every entry names the wallet's owner; a page with none shows nothing.
    if let Some(entry) = page.entries.first() {
        caller.require(
            caller.acts_for(&entry.user_id),
            "read another user's wallet history",
        )?;
    }
    Ok(Json(Envelope::ok(page)))
}

/// A user's entries over all their wallets, newest first.
#[utoipa::path(
    get,
    path = "/users/{id}/activity",
    tag = "history",
    security(("bearer" = [])),
    params(
        ("id" = inline(wallet_events::schema::UserIdText), Path, description = "The user's id"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Entries per page (default 50)"),
        ("cursor" = Option<String>, Query, pattern = r"^[0-9]{1,17}_[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "The `next_cursor` of the page before; absent for the newest page"),
    ),
    responses(
        (status = 200, description = "A page of the user's entries", body = Envelope<Page>),
        (status = 400, description = "`invalid_limit`, `invalid_cursor`, `invalid_query`", body = ErrorEnvelope),
        (status = 422, description = "`invalid_user_id`", body = ErrorEnvelope),
        (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`", body = ErrorEnvelope),
        (status = 403, description = "`forbidden`: another user's activity", body = ErrorEnvelope),
        (status = 500, description = "`internal_error`", body = ErrorEnvelope),
        (status = 503, description = "`service_unavailable`", body = ErrorEnvelope),
    )
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn user_activity(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathSegment(user_id): PathSegment,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Envelope<Page>>, ApiError> {
    let caller = state.auth.caller(&headers)?;
    let user_id = UserId::parse(&user_id.ok_or(UserIdError)?)?;
    caller.require(
        caller.acts_for(user_id.as_str()),
        "read another user's activity",
    )?;
    let Query(query) = query?;
    let limit = limit(query.limit.as_deref())?;
    let cursor = query.cursor.as_deref().map(activity_cursor).transpose()?;
    let (before_time, before_event) = cursor.unzip();
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM history_entries
         WHERE user_id = $1 AND ($2::timestamptz IS NULL OR (committed_at, event_id) < ($2, $3))
         ORDER BY committed_at DESC, event_id DESC LIMIT $4"
    ))
    .bind(user_id.as_str())
    .bind(before_time)
    .bind(before_event)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let page = paginate(rows, limit, |last| {
        format!("{}_{}", last.committed_at.timestamp_micros(), last.event_id)
    })?;
    Ok(Json(Envelope::ok(page)))
}

/// `OK` while the database answers, then one `key: value` line per fact
/// about the consumer.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses(
        (status = 200, description = "`OK`, then `key: value` lines about the consumer", content_type = "text/plain", body = String),
        (status = 503, description = "`UNAVAILABLE: ...`, then the same lines", content_type = "text/plain", body = String),
    )
)]
pub(crate) async fn health(State(state): State<AppState>) -> Response {
    let probe = sqlx::query("SELECT 1").execute(&state.pool);
    let database_ok = matches!(
        tokio::time::timeout(Duration::from_millis(HEALTH_TIMEOUT_MS), probe).await,
        Ok(Ok(_))
    );
    let consumer = state.consumer.lock().expect("status lock").clone();
    let mut body = String::from(if database_ok {
        "OK\n"
    } else {
        "UNAVAILABLE: database unreachable\n"
    });
    let partitions: Vec<String> = consumer
        .assigned_partitions
        .iter()
        .map(i32::to_string)
        .collect();
    let _ = writeln!(body, "consumer: {}", consumer.state);
    let _ = writeln!(body, "assigned_partitions: {}", partitions.join(","));
    let _ = writeln!(body, "events_applied: {}", consumer.totals.applied);
    let _ = writeln!(body, "duplicates_skipped: {}", consumer.totals.duplicates);
    let _ = writeln!(body, "events_parked: {}", consumer.totals.parked);
    let _ = writeln!(body, "dead_letters: {}", consumer.totals.dead_lettered);
    if let Some(at) = consumer.last_applied_at {
        let _ = writeln!(body, "last_applied_at: {}", at.to_rfc3339());
    }
    let status = if database_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

fn limit(text: Option<&str>) -> Result<i64, ApiError> {
    match text {
        None => Ok(PAGE_DEFAULT),
        Some(text) => match text.parse::<i64>() {
            Ok(n) if (1..=PAGE_MAX).contains(&n) => Ok(n),
            _ => Err(ApiError::InvalidLimit),
        },
    }
}

/// Reads a cursor [`user_activity`] handed out: the last entry's commit
/// time in microseconds, `_`, its event id. A time outside years 1 to
/// 9999 was never handed out (and may lie outside PostgreSQL's range).
fn activity_cursor(text: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let (micros, event_id) = text.split_once('_').ok_or(ApiError::InvalidCursor)?;
    let micros: i64 = micros.parse().map_err(|_| ApiError::InvalidCursor)?;
    let time = DateTime::from_timestamp_micros(micros)
        .filter(|time| (1..=9999).contains(&time.year()))
        .ok_or(ApiError::InvalidCursor)?;
    let event_id = Uuid::parse_str(event_id).map_err(|_| ApiError::InvalidCursor)?;
    Ok((time, event_id))
}

fn paginate(
    rows: Vec<PgRow>,
    limit: i64,
    cursor_of: impl Fn(&HistoryEntry) -> String,
) -> Result<Page, sqlx::Error> {
    let mut entries = rows.iter().map(entry).collect::<Result<Vec<_>, _>>()?;
    let more = entries.len() as i64 > limit;
    entries.truncate(limit as usize);
    let next_cursor = if more {
        entries.last().map(cursor_of)
    } else {
        None
    };
    Ok(Page {
        entries,
        next_cursor,
    })
}

fn entry(row: &PgRow) -> Result<HistoryEntry, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    debug_assert!(kind.parse::<EventKind>().is_ok());
    Ok(HistoryEntry {
        event_id: row.try_get("event_id")?,
        wallet_id: row.try_get("wallet_id")?,
        user_id: row.try_get("user_id")?,
        seq: row.try_get("seq")?,
        kind,
        amount: row.try_get("amount")?,
        balance_after: row.try_get("balance_after")?,
        transfer_id: row.try_get("transfer_id")?,
        counterparty_wallet_id: row.try_get("counterparty_wallet_id")?,
        committed_at: row.try_get("committed_at")?,
        applied_at: row.try_get("applied_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_listed_once() {
        let every = [
            ApiError::InvalidWalletId(String::new()),
            ApiError::InvalidLimit,
            ApiError::InvalidCursor,
            ApiError::InvalidQuery(String::new()),
            ApiError::InvalidUserId(UserIdError),
            ApiError::Auth(AuthError::MissingToken),
            ApiError::Auth(AuthError::InvalidToken),
            ApiError::Auth(AuthError::TokenExpired),
            ApiError::Auth(AuthError::Forbidden("x")),
            ApiError::NotFound,
            ApiError::MethodNotAllowed,
            ApiError::Unavailable(String::new()),
            ApiError::Internal(sqlx::Error::RowNotFound),
        ];
        let codes: Vec<&str> = every.iter().map(|e| e.status_and_code().1).collect();
        assert_eq!(codes, ApiError::CODES);
    }
}
