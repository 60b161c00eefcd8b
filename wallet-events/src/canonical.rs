//! The fast path of [`WalletEvent::decode`]: a payload laid out exactly as
//! [`WalletEvent::to_json_text`] writes it (every producer of this
//! project) is read field by field, with the same conversions serde's
//! derived reader applies (`Uuid::try_parse`, `Decimal`'s `FromStr`,
//! `EventKind`'s names, RFC 3339). Anything else (another field order,
//! whitespace, an escape in a string, a number serde would refuse)
//! returns `None` and goes to `serde_json`, so what is accepted and what
//! it means never differs; a test holds the two readers together.
//!
//! Decoding was the history consumer's largest cost per event (and 12 %
//! of a simulated seed).
//!
//! [`WalletEvent::decode`]: crate::WalletEvent::decode
//! [`WalletEvent::to_json_text`]: crate::WalletEvent::to_json_text

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::{EventKind, WalletEvent};

/// A reader of JSON laid out exactly as this project writes it: each
/// method consumes one expected piece or returns `None` (then the caller
/// hands the whole input to serde). Also used by `run_log` for the
/// transfer responses a client verifies.
pub struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(input: &'a [u8]) -> Cursor<'a> {
        Cursor { rest: input }
    }

    /// Whether everything was read.
    pub fn done(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn lit(&mut self, expected: &[u8]) -> Option<()> {
        self.rest = self.rest.strip_prefix(expected)?;
        Some(())
    }

    /// A string without escapes or control characters, in one pass.
    pub fn string(&mut self) -> Option<&'a str> {
        self.lit(b"\"")?;
        let mut end = None;
        for (i, &b) in self.rest.iter().enumerate() {
            if b == b'"' {
                end = Some(i);
                break;
            }
            if b == b'\\' || b < 0x20 {
                return None;
            }
        }
        let (text, rest) = self.rest.split_at(end?);
        self.rest = &rest[1..];
        std::str::from_utf8(text).ok()
    }

    /// An integer as JSON writes it: an optional minus, then `0` or digits
    /// without a leading zero.
    pub fn integer(&mut self) -> Option<&'a str> {
        let negative = usize::from(self.rest.first() == Some(&b'-'));
        let digits = self.rest[negative..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let number = &self.rest[..negative + digits];
        let leading_zero = digits > 1 && self.rest[negative] == b'0';
        let continues = matches!(self.rest.get(negative + digits), Some(b'.' | b'e' | b'E'));
        if digits == 0 || leading_zero || continues {
            return None;
        }
        self.rest = &self.rest[negative + digits..];
        std::str::from_utf8(number).ok()
    }

    /// A hyphenated id (36 ASCII characters between quotes) is parsed in
    /// place; any other string form goes through [`Uuid::try_parse`],
    /// which is what serde's reader calls.
    pub fn uuid(&mut self) -> Option<Uuid> {
        if let [b'"', text @ .., b'"'] = self.rest.get(..38)?
            && let Ok(id) = Uuid::try_parse_ascii(text)
        {
            self.rest = &self.rest[38..];
            return Some(id);
        }
        Uuid::try_parse(self.string()?).ok()
    }

    pub fn optional_uuid(&mut self) -> Option<Option<Uuid>> {
        if self.lit(b"null").is_some() {
            return Some(None);
        }
        self.uuid().map(Some)
    }

    pub fn money(&mut self) -> Option<Decimal> {
        self.string()?.parse().ok()
    }
}

pub fn decode(payload: &[u8]) -> Option<WalletEvent> {
    let mut c = Cursor::new(payload);
    c.lit(b"{\"schema_version\":")?;
    let schema_version = c.integer()?.parse().ok()?;
    c.lit(b",\"event_id\":")?;
    let event_id = c.uuid()?;
    c.lit(b",\"wallet_id\":")?;
    let wallet_id = c.uuid()?;
    c.lit(b",\"user_id\":")?;
    let user_id = c.string()?.to_owned();
    c.lit(b",\"seq\":")?;
    let seq = c.integer()?.parse().ok()?;
    c.lit(b",\"kind\":")?;
    let kind: EventKind = c.string()?.parse().ok()?;
    c.lit(b",\"amount\":")?;
    let amount = c.money()?;
    c.lit(b",\"balance_after\":")?;
    let balance_after = c.money()?;
    c.lit(b",\"transfer_id\":")?;
    let transfer_id = c.optional_uuid()?;
    c.lit(b",\"counterparty_wallet_id\":")?;
    let counterparty_wallet_id = c.optional_uuid()?;
    c.lit(b",\"committed_at\":")?;
    let committed_at = DateTime::parse_from_rfc3339(c.string()?)
        .ok()?
        .with_timezone(&Utc);
    c.lit(b"}")?;
    if !c.done() {
        return None;
    }
    Some(WalletEvent {
        schema_version,
        event_id,
        wallet_id,
        user_id,
        seq,
        kind,
        amount,
        balance_after,
        transfer_id,
        counterparty_wallet_id,
        committed_at,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn event(ids: [u128; 4], legs: bool, user_id: String, seq: i64, micros: i64) -> WalletEvent {
        WalletEvent {
            schema_version: crate::SCHEMA_VERSION,
            event_id: Uuid::from_u128(ids[0]),
            wallet_id: Uuid::from_u128(ids[1]),
            user_id,
            seq,
            kind: EventKind::ALL[(ids[2] % 4) as usize],
            amount: Decimal::new((ids[3] % 1_000_000_000) as i64, 4),
            balance_after: Decimal::new((ids[0] % 1_000_000_000) as i64, 4),
            transfer_id: legs.then(|| Uuid::from_u128(ids[2])),
            counterparty_wallet_id: legs.then(|| Uuid::from_u128(ids[3])),
            committed_at: DateTime::from_timestamp_micros(micros).expect("in range"),
        }
    }

    proptest! {
        /// Every payload this project writes takes the fast path and
        /// reads as serde reads it.
        #[test]
        fn reads_what_to_json_text_writes_as_serde_does(
            ids in proptest::array::uniform4(any::<u128>()),
            legs in any::<bool>(),
            user_id in "[a-z0-9 ._-]{0,12}|\\PC{0,6}",
            seq in any::<i64>(),
            micros in 0i64..253_402_300_799_000_000,
        ) {
            let plain = !user_id.chars().any(|c| c == '"' || c == '\\' || c < ' ');
            let text = event(ids, legs, user_id, seq, micros).to_json_text();
            let serde: WalletEvent = serde_json::from_str(&text).unwrap();
            match decode(text.as_bytes()) {
                Some(fast) => prop_assert_eq!(fast, serde),
                // Only a user id JSON escapes leaves the fast path.
                None => prop_assert!(!plain, "{}", text),
            }
        }

        /// A payload changed anywhere is read by the fast path only if
        /// serde reads it the same; otherwise serde decides.
        #[test]
        fn never_accepts_what_serde_would_read_differently(
            ids in proptest::array::uniform4(any::<u128>()),
            at in any::<prop::sample::Index>(),
            byte in prop::sample::select(b" \\\"0-.e{}nul1a9Z:,".to_vec()),
            delete in any::<bool>(),
        ) {
            let mut payload = event(ids, true, "u1".into(), 7, 1_700_000_000_000_000)
                .to_json_text()
                .into_bytes();
            let index = at.index(payload.len());
            if delete {
                payload.remove(index);
            } else {
                payload.insert(index, byte);
            }
            if let Some(fast) = decode(&payload) {
                let serde: Result<WalletEvent, _> = serde_json::from_slice(&payload);
                prop_assert_eq!(Some(fast), serde.ok());
            }
        }
    }

    #[test]
    fn escapes_and_other_layouts_go_to_serde() {
        let text = event([1, 2, 3, 4], false, "a\"b".into(), 3, 0).to_json_text();
        assert!(text.contains(r#""user_id":"a\"b""#));
        assert_eq!(decode(text.as_bytes()), None);
        let spaced = event([1, 2, 5, 4], false, "ab".into(), 3, 0)
            .to_json_text()
            .replace(",\"seq\"", ", \"seq\"");
        assert_eq!(decode(spaced.as_bytes()), None);
        assert!(crate::WalletEvent::decode(spaced.as_bytes()).is_ok());
        assert_eq!(decode(b"{\"schema_version\":01"), None);
    }
}
