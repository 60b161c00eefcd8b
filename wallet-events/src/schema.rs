//! The OpenAPI schemas of the text the services exchange, written once
//! with the patterns the parsers stand behind: each service's utoipa
//! attributes name them (`value_type = MoneyText, inline`) instead of
//! repeating a pattern literal.

use utoipa::{
    PartialSchema, ToSchema,
    openapi::{ObjectBuilder, RefOr, Schema, schema::Type},
};

use crate::{AMOUNT_PATTERN, MONEY_SCALE, USER_ID_MAX_CHARS, USER_ID_PATTERN};

/// A regular expression every money value the services answer with
/// matches: a sign, digits, and exactly [`MONEY_SCALE`] fractional digits.
pub const MONEY_PATTERN: &str = r"^-?[0-9]+\.[0-9]{4}$";
const _: () = assert!(MONEY_SCALE == 4, "MONEY_PATTERN spells out the scale");

fn text(pattern: &str, example: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .examples([example])
}

/// Money in an answer: `"100.0000"`.
pub struct MoneyText;

impl PartialSchema for MoneyText {
    fn schema() -> RefOr<Schema> {
        text(MONEY_PATTERN, "100.0000").into()
    }
}

impl ToSchema for MoneyText {}

/// An amount in a request: a positive decimal string, at most four
/// fractional digits, below 10^15 ([`AMOUNT_PATTERN`]).
pub struct AmountText;

impl PartialSchema for AmountText {
    fn schema() -> RefOr<Schema> {
        text(AMOUNT_PATTERN, "30.00")
            .description(Some(
                "A positive decimal string, at most four fractional digits, below 10^15.",
            ))
            .into()
    }
}

impl ToSchema for AmountText {}

/// A user's id: 1 to 100 characters, not blank, no control characters
/// ([`USER_ID_PATTERN`] with its length bounds: exactly what
/// [`crate::UserId::parse`] accepts).
pub struct UserIdText;

impl PartialSchema for UserIdText {
    fn schema() -> RefOr<Schema> {
        text(USER_ID_PATTERN, "alice")
            .description(Some(
                "A user's id: 1 to 100 characters, not blank, no control characters.",
            ))
            .min_length(Some(1))
            .max_length(Some(USER_ID_MAX_CHARS))
            .into()
    }
}

impl ToSchema for UserIdText {}
