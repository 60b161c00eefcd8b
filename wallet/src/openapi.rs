//! The wallet API's OpenAPI 3.1 document, generated from the handlers'
//! annotations (`utoipa`) and served at `GET /openapi.json`. Every route,
//! body, status and error code the service answers is in it; `.ci/run`
//! fuzzes the running service against it with schemathesis.

use std::sync::LazyLock;

use utoipa::OpenApi;

use crate::{
    api,
    error::ApiError,
    store::{LedgerEntry, TransferReceipt, Wallet},
};

/// An error answer, with the wallet's codes.
pub type ErrorEnvelope = service_kit::openapi::ErrorEnvelope<ApiError>;

impl service_kit::openapi::ErrorCodes for ApiError {
    const CODES: &'static [&'static str] = &ApiError::CODES;
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Wallet service",
        description = "Create wallets, fund them and transfer between them. Amounts are decimal \
                       strings with at most four fractional digits. Every JSON answer is an \
                       envelope: `success` with `data`, or a `message` and a stable `code`."
    ),
    paths(
        api::create_wallet,
        api::get_wallet,
        api::user_wallets,
        api::fund,
        api::transfer,
        api::health,
    ),
    components(schemas(Wallet, LedgerEntry, TransferReceipt, ErrorEnvelope)),
    tags((name = "wallets", description = "Wallets and the money in them"),
         (name = "operations", description = "Health, metrics and this document")),
)]
pub struct WalletApi;

/// The document as served: built once.
pub static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| service_kit::openapi::document(WalletApi::openapi()));
