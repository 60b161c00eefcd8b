//! Money as the system writes it: `rust_decimal::Decimal` with four
//! fractional digits, bounded by the databases' DECIMAL(19,4). A client's
//! amount is parsed once at the edge into an [`Amount`], which the ledger
//! rules take: an `Amount` is positive, has at most four fractional digits
//! and fits DECIMAL(19,4), so nothing behind the edge checks that again.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Fractional digits of every amount and balance (DECIMAL(19,4)).
pub const MONEY_SCALE: u32 = 4;

/// A regular expression (ECMA-262, for OpenAPI documents) that only amounts
/// [`parse_amount`] accepts match: a whole part of 1 to 15 digits without a
/// leading zero and up to four fractional digits, or `0.` and up to four
/// fractional digits ending in a non-zero one. (The parser also takes
/// leading zeros and trailing fractional zeros; a pattern for those too
/// would need a look-ahead.)
pub const AMOUNT_PATTERN: &str = r"^([1-9][0-9]{0,14}(\.[0-9]{1,4})?|0\.[0-9]{0,3}[1-9])$";

/// The largest amount DECIMAL(19,4) holds: fifteen nines, four decimals.
pub const MONEY_MAX: Decimal = Decimal::from_parts(0x89E7_FFFF, 0x8AC7_2304, 0, false, 4);

/// Why a client's amount was refused. The variants map to error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount must be a decimal string such as \"10.00\"")]
    NotADecimalString,
    #[error("amount must be greater than zero")]
    NotPositive,
    #[error("amount has more than {MONEY_SCALE} fractional digits")]
    TooPrecise,
    #[error("amount exceeds the largest supported value 999999999999999.9999")]
    TooLarge,
}

/// An amount of money to move: greater than zero, at most
/// [`MONEY_SCALE`] fractional digits, at most [`MONEY_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(Decimal);

impl Amount {
    /// Parses a client's amount (see [`parse_amount`]).
    pub fn parse(text: &str) -> Result<Amount, AmountError> {
        parse_amount(text).map(Amount)
    }

    /// An amount from a value computed in code (a seeded draw, a test).
    pub fn new(value: Decimal) -> Result<Amount, AmountError> {
        if value <= Decimal::ZERO {
            return Err(AmountError::NotPositive);
        }
        if value.normalize().scale() > MONEY_SCALE {
            return Err(AmountError::TooPrecise);
        }
        if value > MONEY_MAX {
            return Err(AmountError::TooLarge);
        }
        Ok(Amount(value))
    }

    pub fn value(self) -> Decimal {
        self.0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_money(self.0))
    }
}

impl From<Amount> for Decimal {
    fn from(amount: Amount) -> Decimal {
        amount.0
    }
}

/// Written as a four-digit decimal string; read with [`Amount::parse`].
impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_money(self.0))
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Amount::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Parses a client's amount: plain decimal notation (`"100"`, `"0.05"`),
/// at most four fractional digits, greater than zero, within DECIMAL(19,4).
/// [`AMOUNT_PATTERN`] describes a subset of what it accepts.
/// No exponent, no sign other than a leading `-` (refused as not positive),
/// no surrounding spaces.
pub fn parse_amount(text: &str) -> Result<Decimal, AmountError> {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits_only = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !digits_only(whole)
        || !digits_only(fraction)
        || (unsigned.contains('.') && fraction.is_empty())
    {
        return Err(AmountError::NotADecimalString);
    }
    if fraction.len() > MONEY_SCALE as usize {
        return Err(AmountError::TooPrecise);
    }
    if whole.trim_start_matches('0').len() > 15 {
        return Err(AmountError::TooLarge);
    }
    let value: Decimal = text.parse().map_err(|_| AmountError::NotADecimalString)?;
    if value <= Decimal::ZERO {
        return Err(AmountError::NotPositive);
    }
    Ok(value)
}

/// Formats money with exactly four fractional digits: `"100.0000"`.
pub fn format_money(value: Decimal) -> String {
    let mut scaled = value;
    scaled.rescale(MONEY_SCALE);
    scaled.to_string()
}

/// Serde adapter: money written as a four-digit decimal string, read as
/// any decimal string (never a JSON number)
/// (`#[serde(with = "wallet_events::money_str")]`).
pub mod serde_str {
    use rust_decimal::Decimal;
    use serde::{
        Deserializer, Serializer,
        de::{Error, Visitor},
    };

    /// Written straight into the output, without an intermediate string.
    pub fn serialize<S: Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
        let mut scaled = *value;
        scaled.rescale(super::MONEY_SCALE);
        serializer.collect_str(&scaled)
    }

    /// Parsed from the input in place, without copying it first.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
        deserializer.deserialize_str(MoneyText)
    }

    pub(super) struct MoneyText;

    impl Visitor<'_> for MoneyText {
        type Value = Decimal;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a decimal amount as a string")
        }

        fn visit_str<E: Error>(self, text: &str) -> Result<Decimal, E> {
            text.parse::<Decimal>().map_err(E::custom)
        }
    }
}

/// [`serde_str`] for an optional amount: `null` or a decimal string
/// (`#[serde(with = "wallet_events::money_str_opt")]`).
pub mod serde_str_opt {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(
        value: &Option<Decimal>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(amount) => super::serde_str::serialize(amount, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Decimal>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| text.parse().map_err(D::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn accepts_plain_decimals() {
        assert_eq!(parse_amount("100.00"), Ok(dec!(100)));
        assert_eq!(parse_amount("0.0001"), Ok(dec!(0.0001)));
        assert_eq!(parse_amount("7"), Ok(dec!(7)));
        assert_eq!(parse_amount("999999999999999.9999"), Ok(MONEY_MAX));
    }

    #[test]
    fn refuses_what_is_not_money() {
        for bad in [
            "", "abc", "1e5", " 1", "1 ", "+1", "1.", ".5", "1.2.3", "NaN", "0x10", "１",
        ] {
            assert_eq!(
                parse_amount(bad),
                Err(AmountError::NotADecimalString),
                "{bad:?}"
            );
        }
        assert_eq!(parse_amount("0"), Err(AmountError::NotPositive));
        assert_eq!(parse_amount("0.0000"), Err(AmountError::NotPositive));
        assert_eq!(parse_amount("-5.00"), Err(AmountError::NotPositive));
        assert_eq!(parse_amount("1.00001"), Err(AmountError::TooPrecise));
        assert_eq!(parse_amount("1000000000000000"), Err(AmountError::TooLarge));
        assert_eq!(
            parse_amount("99999999999999999999999999999999"),
            Err(AmountError::TooLarge)
        );
    }

    #[test]
    fn an_amount_is_positive_precise_and_bounded() {
        assert_eq!(Amount::parse("12.50").unwrap().value(), dec!(12.5));
        assert_eq!(Amount::parse("12.5").unwrap().to_string(), "12.5000");
        assert_eq!(Amount::parse("0"), Err(AmountError::NotPositive));
        assert_eq!(Amount::new(dec!(0.00001)), Err(AmountError::TooPrecise));
        assert_eq!(Amount::new(dec!(-1)), Err(AmountError::NotPositive));
        assert_eq!(Amount::new(MONEY_MAX + dec!(1)), Err(AmountError::TooLarge));
        // Trailing zeros beyond four places are still four-place money.
        assert_eq!(Amount::new(dec!(1.500000)).unwrap().value(), dec!(1.5));
        let json = serde_json::to_string(&Amount::new(dec!(3)).unwrap()).unwrap();
        assert_eq!(json, r#""3.0000""#);
        assert!(
            serde_json::from_str::<Amount>("3").is_err(),
            "never a JSON number"
        );
    }

    #[test]
    fn formats_with_four_digits() {
        assert_eq!(format_money(dec!(100)), "100.0000");
        assert_eq!(format_money(dec!(70.5)), "70.5000");
        assert_eq!(format_money(dec!(0.0001)), "0.0001");
        assert_eq!(MONEY_MAX.to_string(), "999999999999999.9999");
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn every_amount_formats_and_parses_back(mantissa in 1i64..=999_999_999_999_999_999i64, scale in 0u32..=4) {
            let value = Decimal::new(mantissa, scale);
            prop_assume!(value <= MONEY_MAX);
            let text = format_money(value);
            prop_assert_eq!(parse_amount(&text), Ok(value));
            let amount = Amount::new(value).unwrap();
            prop_assert_eq!(Amount::parse(&amount.to_string()), Ok(amount));
        }

        #[test]
        fn a_fifth_decimal_is_refused(mantissa in 1i64..1_000_000_000i64) {
            let value = Decimal::new(mantissa * 10 + 3, 5);
            prop_assert_eq!(parse_amount(&value.to_string()), Err(AmountError::TooPrecise));
            prop_assert_eq!(Amount::new(value), Err(AmountError::TooPrecise));
        }
    }
}

#[cfg(test)]
mod pattern_tests {
    use proptest::prelude::*;

    use super::*;
    use crate::unanchored;

    proptest! {
        /// What a fuzzer generates from the OpenAPI pattern is accepted.
        #[test]
        fn every_amount_the_pattern_matches_parses(text in proptest::string::string_regex(unanchored(AMOUNT_PATTERN)).unwrap()) {
            prop_assert!(Amount::parse(&text).is_ok(), "{text:?}");
        }
    }
}
