//! Wire and domain types shared by the wallet, the history consumer and the
//! checker: the event published for every ledger entry, money
//! ([`Amount`]), and the client-made identifiers ([`UserId`],
//! [`IdempotencyKey`]), each parsed once at the edge.
//!
//! An event is one JSON object on the topic, keyed by its wallet id so one
//! wallet's events stay in order on one partition. `schema_version` lets a
//! consumer refuse what it does not understand (into its dead-letter table)
//! instead of guessing. Amounts are decimal strings with exactly
//! [`MONEY_SCALE`] fractional digits; a float never touches money.

pub mod canonical;
mod envelope;
mod ids;
mod money;
pub mod rfc3339;
pub mod schema;

pub use envelope::Envelope;
pub use ids::{
    IDEMPOTENCY_KEY_MAX_CHARS, IdempotencyKey, IdempotencyKeyError, USER_ID_MAX_CHARS,
    USER_ID_PATTERN, UserId, UserIdError,
};
pub use money::{
    AMOUNT_PATTERN, Amount, AmountError, MONEY_MAX, MONEY_SCALE, format_money, parse_amount,
    serde_str as money_str, serde_str_opt as money_str_opt,
};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The version this crate writes and the only one it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The default topic name, as in the original design.
pub const DEFAULT_TOPIC: &str = "wallet-events";

/// What happened to the wallet. The sign of the change follows the kind:
/// `created` carries zero, `funded` and `transfer_in` add, `transfer_out`
/// subtracts.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Created,
    Funded,
    TransferOut,
    TransferIn,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [
        EventKind::Created,
        EventKind::Funded,
        EventKind::TransferOut,
        EventKind::TransferIn,
    ];

    /// The stable name used in the databases and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Funded => "funded",
            EventKind::TransferOut => "transfer_out",
            EventKind::TransferIn => "transfer_in",
        }
    }

    /// The balance change of an entry of this kind with magnitude `amount`.
    pub fn signed(self, amount: Decimal) -> Decimal {
        match self {
            EventKind::Created => Decimal::ZERO,
            EventKind::Funded | EventKind::TransferIn => amount,
            EventKind::TransferOut => -amount,
        }
    }
}

impl std::str::FromStr for EventKind {
    type Err = UnknownKind;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| UnknownKind(text.to_owned()))
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown event kind {0:?}")]
pub struct UnknownKind(pub String);

/// One ledger entry of one wallet, as published on the topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletEvent {
    pub schema_version: u32,
    /// Globally unique; the consumer's duplicate guard.
    pub event_id: Uuid,
    /// The partition key.
    pub wallet_id: Uuid,
    pub user_id: String,
    /// Contiguous per wallet, starting at 1 with `created`.
    pub seq: i64,
    pub kind: EventKind,
    /// Magnitude of the change, never negative.
    #[serde(with = "money::serde_str")]
    pub amount: Decimal,
    #[serde(with = "money::serde_str")]
    pub balance_after: Decimal,
    /// Ties the two legs of a transfer together.
    pub transfer_id: Option<Uuid>,
    pub counterparty_wallet_id: Option<Uuid>,
    /// When the wallet transaction wrote the entry.
    #[serde(with = "rfc3339")]
    pub committed_at: DateTime<Utc>,
}

/// Why a payload could not be read as a [`WalletEvent`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a wallet event: {0}")]
    Json(#[from] serde_json::Error),
    #[error("schema version {found} is not supported (this build reads {SCHEMA_VERSION})")]
    Version { found: u32 },
    #[error("invalid event: {0}")]
    Invalid(&'static str),
}

impl WalletEvent {
    pub fn to_json(&self) -> Vec<u8> {
        self.to_json_text().into_bytes()
    }

    /// The payload as text, as the outbox stores it: byte for byte what
    /// `serde_json` writes for this struct (a test holds the two
    /// together), written field by field. Ids, money, kinds and times need
    /// no escaping, and serde_json scans every byte of every string for
    /// escapes: this was most of a transfer's serialization cost.
    pub fn to_json_text(&self) -> String {
        use std::fmt::Write;
        fn id(out: &mut String, id: Option<&Uuid>) {
            match id {
                Some(id) => {
                    out.push('"');
                    out.push_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
                    out.push('"');
                }
                None => out.push_str("null"),
            }
        }
        fn money(out: &mut String, value: Decimal) {
            let mut scaled = value;
            scaled.rescale(money::MONEY_SCALE);
            let _ = write!(out, "\"{scaled}\"");
        }
        let mut out = String::with_capacity(384);
        let _ = write!(out, "{{\"schema_version\":{}", self.schema_version);
        out.push_str(",\"event_id\":");
        id(&mut out, Some(&self.event_id));
        out.push_str(",\"wallet_id\":");
        id(&mut out, Some(&self.wallet_id));
        out.push_str(",\"user_id\":");
        out.push_str(&serde_json::to_string(&self.user_id).expect("a string serializes"));
        let _ = write!(
            out,
            ",\"seq\":{},\"kind\":\"{}\"",
            self.seq,
            self.kind.as_str()
        );
        out.push_str(",\"amount\":");
        money(&mut out, self.amount);
        out.push_str(",\"balance_after\":");
        money(&mut out, self.balance_after);
        out.push_str(",\"transfer_id\":");
        id(&mut out, self.transfer_id.as_ref());
        out.push_str(",\"counterparty_wallet_id\":");
        id(&mut out, self.counterparty_wallet_id.as_ref());
        out.push_str(",\"committed_at\":");
        rfc3339::push_quoted(&mut out, &self.committed_at);
        out.push('}');
        out
    }

    /// Reads and validates one payload from the topic.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        #[derive(Deserialize)]
        struct Version {
            schema_version: u32,
        }
        // One parse on the common path; only a payload that is not this
        // version's shape is read again, to say which version it claims.
        let parsed = match canonical::decode(payload) {
            Some(event) => Ok(event),
            None => serde_json::from_slice(payload),
        };
        let event: WalletEvent = match parsed {
            Ok(event) => event,
            Err(error) => {
                return Err(match serde_json::from_slice::<Version>(payload) {
                    Ok(Version { schema_version }) if schema_version != SCHEMA_VERSION => {
                        DecodeError::Version {
                            found: schema_version,
                        }
                    }
                    _ => DecodeError::Json(error),
                });
            }
        };
        if event.schema_version != SCHEMA_VERSION {
            return Err(DecodeError::Version {
                found: event.schema_version,
            });
        }
        if event.seq < 1 {
            return Err(DecodeError::Invalid("seq must start at 1"));
        }
        if event.amount.is_sign_negative() {
            return Err(DecodeError::Invalid("amount must not be negative"));
        }
        if (event.kind == EventKind::Created) != (event.seq == 1) {
            return Err(DecodeError::Invalid(
                "created is exactly the event with seq 1",
            ));
        }
        let is_transfer = matches!(event.kind, EventKind::TransferIn | EventKind::TransferOut);
        if is_transfer != event.transfer_id.is_some() {
            return Err(DecodeError::Invalid(
                "only transfer legs carry a transfer_id",
            ));
        }
        Ok(event)
    }

    /// The balance change this entry makes.
    pub fn signed_amount(&self) -> Decimal {
        self.kind.signed(self.amount)
    }
}

/// A pattern without `^` and `$`, for proptest's string generator (which
/// makes whole matches and takes no anchors).
#[cfg(test)]
pub(crate) fn unanchored(pattern: &str) -> &str {
    pattern
        .strip_prefix('^')
        .and_then(|p| p.strip_suffix('$'))
        .expect("an anchored pattern")
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The hand-written payload is serde_json's, byte for byte, and
        /// reads back as the same event.
        #[test]
        fn the_payload_text_is_exactly_serde_jsons(
            ids in proptest::array::uniform4(proptest::prelude::any::<u128>()),
            legs in proptest::prelude::any::<bool>(),
            user_id in "\\PC{0,12}|[\"\\\\\u{0}-\u{1f}a-z]{0,8}",
            seq in 1i64..i64::MAX,
            kind in 0usize..4,
            cents in proptest::prelude::any::<(i64, i64)>(),
            scales in (0u32..=8, 0u32..=8),
            micros in 0i64..253_402_300_799_000_000,
        ) {
            let event = WalletEvent {
                schema_version: SCHEMA_VERSION,
                event_id: Uuid::from_u128(ids[0]),
                wallet_id: Uuid::from_u128(ids[1]),
                user_id,
                seq,
                kind: EventKind::ALL[kind],
                amount: Decimal::new(cents.0, scales.0),
                balance_after: Decimal::new(cents.1, scales.1),
                transfer_id: legs.then(|| Uuid::from_u128(ids[2])),
                counterparty_wallet_id: legs.then(|| Uuid::from_u128(ids[3])),
                committed_at: DateTime::from_timestamp_micros(micros).expect("in range"),
            };
            let text = event.to_json_text();
            proptest::prop_assert_eq!(&text, &serde_json::to_string(&event).unwrap());
            let back: WalletEvent = serde_json::from_str(&text).unwrap();
            let mut expected = event.clone();
            for value in [&mut expected.amount, &mut expected.balance_after] {
                value.rescale(money::MONEY_SCALE);
            }
            proptest::prop_assert_eq!(back.user_id, expected.user_id);
            proptest::prop_assert_eq!(back.committed_at, expected.committed_at);
        }
    }
    use rust_decimal_macros::dec;

    fn event(kind: EventKind, seq: i64) -> WalletEvent {
        WalletEvent {
            schema_version: SCHEMA_VERSION,
            event_id: Uuid::from_u128(1),
            wallet_id: Uuid::from_u128(2),
            user_id: "alice".into(),
            seq,
            kind,
            amount: dec!(12.5),
            balance_after: dec!(12.5),
            transfer_id: None,
            counterparty_wallet_id: None,
            committed_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        }
    }

    #[test]
    fn amounts_travel_as_four_digit_strings() {
        let json = String::from_utf8(event(EventKind::Funded, 2).to_json()).unwrap();
        assert!(json.contains(r#""amount":"12.5000""#), "{json}");
        assert!(json.contains(r#""kind":"funded""#), "{json}");
    }

    #[test]
    fn round_trips() {
        let original = event(EventKind::Funded, 2);
        assert_eq!(WalletEvent::decode(&original.to_json()).unwrap(), original);
    }

    #[test]
    fn refuses_other_versions_and_garbage() {
        let mut newer = event(EventKind::Funded, 2);
        newer.schema_version = 2;
        assert!(matches!(
            WalletEvent::decode(&newer.to_json()),
            Err(DecodeError::Version { found: 2 })
        ));
        // A later version with another shape is named by its version, not
        // by the field this build misses.
        assert!(matches!(
            WalletEvent::decode(br#"{"schema_version":3,"entries":[]}"#),
            Err(DecodeError::Version { found: 3 })
        ));
        assert!(matches!(
            WalletEvent::decode(b"not json"),
            Err(DecodeError::Json(_))
        ));
        let numeric = br#"{"schema_version":1,"amount":1.5}"#;
        assert!(WalletEvent::decode(numeric).is_err());
    }

    #[test]
    fn refuses_inconsistent_events() {
        assert!(WalletEvent::decode(&event(EventKind::Funded, 1).to_json()).is_err());
        assert!(WalletEvent::decode(&event(EventKind::TransferIn, 3).to_json()).is_err());
        let mut negative = event(EventKind::Funded, 2);
        negative.amount = dec!(-1);
        assert!(WalletEvent::decode(&negative.to_json()).is_err());
    }

    #[test]
    fn kinds_sign_their_amounts() {
        assert_eq!(EventKind::TransferOut.signed(dec!(3)), dec!(-3));
        assert_eq!(EventKind::Created.signed(dec!(3)), dec!(0));
        assert_eq!(
            "transfer_in".parse::<EventKind>().unwrap(),
            EventKind::TransferIn
        );
    }
}
