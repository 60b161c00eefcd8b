//! Money as the system writes it: `rust_decimal::Decimal` with four
//! fractional digits, bounded by the databases' DECIMAL(19,4).

use rust_decimal::Decimal;

/// Fractional digits of every amount and balance (DECIMAL(19,4)).
pub const MONEY_SCALE: u32 = 4;

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

/// Parses a client's amount: plain decimal notation (`"100"`, `"0.05"`),
/// at most four fractional digits, greater than zero, within DECIMAL(19,4).
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
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_money(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse::<Decimal>().map_err(D::Error::custom)
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
    fn formats_with_four_digits() {
        assert_eq!(format_money(dec!(100)), "100.0000");
        assert_eq!(format_money(dec!(70.5)), "70.5000");
        assert_eq!(format_money(dec!(0.0001)), "0.0001");
        assert_eq!(MONEY_MAX.to_string(), "999999999999999.9999");
    }
}
