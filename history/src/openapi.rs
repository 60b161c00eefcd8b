//! The history API's OpenAPI 3.1 document, generated from the handlers'
//! annotations (`utoipa`) and served at `GET /openapi.json`; `.ci/run`
//! fuzzes the running service against it with schemathesis.

use std::sync::LazyLock;

use utoipa::OpenApi;

use crate::api::{self, ApiError, HistoryEntry, Page};

/// An error answer, with the history service's codes.
pub type ErrorEnvelope = service_kit::openapi::ErrorEnvelope<ApiError>;

impl service_kit::openapi::ErrorCodes for ApiError {
    const CODES: &'static [&'static str] = &ApiError::CODES;
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "History service",
        description = "Each wallet's history and each user's activity, as the consumer applied \
                       the wallet service's events: newest first, in pages. Every JSON answer is \
                       an envelope: `success` with `data`, or a `message` and a stable `code`."
    ),
    paths(api::wallet_history, api::user_activity, api::health),
    components(schemas(HistoryEntry, Page, ErrorEnvelope)),
    tags((name = "history", description = "What the consumer applied"),
         (name = "operations", description = "Health, metrics and this document")),
)]
pub struct HistoryApi;

/// The document as served: built once.
pub static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| service_kit::openapi::document(HistoryApi::openapi()));
