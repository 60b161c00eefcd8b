//! What both services' OpenAPI documents share: the error envelope, whose
//! `code` lists the service's own codes ([`ErrorCodes`]), and the
//! operations every running service serves besides its API
//! (`/openapi.json`, `/metrics`). Each service describes its own routes
//! with `utoipa` and finishes its document with [`document`].

use std::{borrow::Cow, marker::PhantomData};

use utoipa::{
    OpenApi, PartialSchema, ToSchema,
    openapi::{ObjectBuilder, RefOr, Schema, schema::Type},
};

/// A service's error codes, for its document.
pub trait ErrorCodes {
    /// Every code the service answers with.
    const CODES: &'static [&'static str];
}

/// An error answer: `success` false, `data` null, a `message` for people
/// and one of the service's stable codes `C` for programs.
pub struct ErrorEnvelope<C>(PhantomData<C>);

impl<C: ErrorCodes> PartialSchema for ErrorEnvelope<C> {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .description(Some(
                "An error: a message for people, a stable code for programs.",
            ))
            .property(
                "success",
                ObjectBuilder::new()
                    .schema_type(Type::Boolean)
                    .enum_values(Some([false])),
            )
            .required("success")
            .property("data", ObjectBuilder::new().schema_type(Type::Null))
            .required("data")
            .property("message", ObjectBuilder::new().schema_type(Type::String))
            .required("message")
            .property(
                "code",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(C::CODES.iter().copied()))
                    .description(Some("The stable, machine-readable error code.")),
            )
            .required("code")
            .into()
    }
}

impl<C: ErrorCodes> ToSchema for ErrorEnvelope<C> {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ErrorEnvelope")
    }
}

#[derive(OpenApi)]
#[openapi(paths(openapi_json, metrics))]
struct Operations;

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
#[allow(dead_code)] // the route is each service's; this names it in the document
fn openapi_json() {}

/// Prometheus metrics in the text format ([`crate::metrics`]).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Every metric in the Prometheus text format", content_type = "text/plain", body = String))
)]
#[allow(dead_code)] // the route is `crate::metrics::route`'s
fn metrics() {}

/// The scheme every protected operation names (`security(("bearer" =
/// []))`): a JWT bearer token ([`crate::auth`]).
pub const BEARER: &str = "bearer";

/// `api` with the shared operations and the bearer scheme, as served:
/// pretty JSON.
pub fn document(mut api: utoipa::openapi::OpenApi) -> String {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
    api.merge(Operations::openapi());
    api.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A token naming a user or the admin, signed with the system's AUTH_SECRET \
                     (`loadgen token`). A service started with --open checks none.",
                    ))
                    .build(),
            ),
        );
    api.to_pretty_json()
        .expect("an OpenAPI document always serializes")
}

/// Answers `GET /openapi.json` with `document`.
pub fn respond(document: &'static str) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        document,
    )
        .into_response()
}
