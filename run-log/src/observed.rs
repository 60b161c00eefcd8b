//! How a client reads an answer ([`answered`]), and what a successful
//! response showed it ([`Observed`]), kept in the operation log
//! so the checker can hold it against the databases: what a write said
//! it wrote against the ledger rows of its key, a balance read against the values
//! the wallet could have held while the read was in flight.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{OpKind, Outcome, walk::ShownPage};

/// One ledger entry as a write's response named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedEntry {
    /// The entry's event id (`id` in the API).
    #[serde(alias = "id")]
    pub event_id: Uuid,
    pub wallet_id: Uuid,
    pub seq: i64,
    #[serde(with = "wallet_events::money_str")]
    pub amount: Decimal,
    #[serde(with = "wallet_events::money_str")]
    pub balance_after: Decimal,
}

/// What a 2xx response of a verified operation showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Observed {
    /// `GET /wallets/{id}`: the balance it showed.
    Balance(#[serde(with = "wallet_events::money_str")] Decimal),
    /// A fund: the wallet as the fund left it.
    WalletAfter {
        wallet_id: Uuid,
        #[serde(with = "wallet_events::money_str")]
        balance: Decimal,
    },
    /// A transfer: its debit, then its credit.
    Entries(Vec<ObservedEntry>),
    /// `GET /wallets/{id}/history`: the page it showed.
    HistoryPage(ShownPage),
    /// A 2xx whose body is not what the API promises for this operation.
    Malformed(String),
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: Option<T>,
}

#[derive(Deserialize)]
struct WalletBody {
    id: Uuid,
    #[serde(with = "wallet_events::money_str")]
    balance: Decimal,
}

#[derive(Deserialize)]
struct TransferBody {
    debit: ObservedEntry,
    credit: ObservedEntry,
}

/// How a client reads an HTTP answer: a 2xx is acknowledged; any other
/// status below 500 is a definite refusal; a 5xx may have applied. A
/// refusal's code is the envelope's `code`, or `http_<status>` when the
/// body has none.
pub fn answered(status: u16, body: &[u8]) -> (Outcome, Option<String>) {
    if (200..300).contains(&status) {
        return (Outcome::Ok, None);
    }
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let code = json["code"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("http_{status}"));
    let outcome = if status < 500 {
        Outcome::Failed
    } else {
        Outcome::Indeterminate
    };
    (outcome, Some(code))
}

impl Observed {
    /// What the 2xx `body` of an operation of `kind` showed; `None` for
    /// kinds whose responses are not verified this way.
    pub fn from_body(kind: OpKind, body: &[u8]) -> Option<Observed> {
        fn data<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
            serde_json::from_slice::<Envelope<T>>(body)
                .map_err(|e| e.to_string())?
                .data
                .ok_or_else(|| "no data in the envelope".to_owned())
        }
        let observed = match kind {
            OpKind::GetWallet => data::<WalletBody>(body).map(|w| Observed::Balance(w.balance)),
            OpKind::Fund => data::<WalletBody>(body).map(|w| Observed::WalletAfter {
                wallet_id: w.id,
                balance: w.balance,
            }),
            OpKind::Transfer => match transfer_as_written(body) {
                Some(entries) => Ok(Observed::Entries(entries)),
                None => {
                    data::<TransferBody>(body).map(|t| Observed::Entries(vec![t.debit, t.credit]))
                }
            },
            OpKind::GetHistory => data::<ShownPage>(body).map(Observed::HistoryPage),
            OpKind::CreateWallet => return None,
        };
        Some(observed.unwrap_or_else(|reason| {
            let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            Observed::Malformed(format!("{reason}: {shown}"))
        }))
    }
}

/// A transfer's answer laid out exactly as the wallet writes it
/// (`Envelope` of a `TransferReceipt`, serde's field order), read in one
/// pass with `wallet_events::canonical::Cursor`: the same conversions as
/// the serde reader below, at a fraction of its cost (it was 7 % of a
/// simulated seed). Any other layout is `None`, and serde reads it.
fn transfer_as_written(body: &[u8]) -> Option<Vec<ObservedEntry>> {
    use wallet_events::canonical::Cursor;
    fn entry(c: &mut Cursor<'_>) -> Option<ObservedEntry> {
        c.lit(b"{\"id\":")?;
        let event_id = c.uuid()?;
        c.lit(b",\"wallet_id\":")?;
        let wallet_id = c.uuid()?;
        c.lit(b",\"seq\":")?;
        let seq = c.integer()?.parse().ok()?;
        c.lit(b",\"kind\":")?;
        c.string()?;
        c.lit(b",\"amount\":")?;
        let amount = c.money()?;
        c.lit(b",\"balance_after\":")?;
        let balance_after = c.money()?;
        c.lit(b",\"transfer_id\":")?;
        c.optional_uuid()?;
        c.lit(b",\"counterparty_wallet_id\":")?;
        c.optional_uuid()?;
        c.lit(b",\"created_at\":")?;
        c.string()?;
        c.lit(b"}")?;
        Some(ObservedEntry {
            event_id,
            wallet_id,
            seq,
            amount,
            balance_after,
        })
    }
    let mut c = Cursor::new(body);
    c.lit(b"{\"success\":true,\"data\":{\"transfer_id\":")?;
    c.uuid()?;
    c.lit(b",\"debit\":")?;
    let debit = entry(&mut c)?;
    c.lit(b",\"credit\":")?;
    let credit = entry(&mut c)?;
    c.lit(b"},\"message\":null}")?;
    c.done().then(|| vec![debit, credit])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transfer answer as the wallet writes it takes the fast path and
    /// reads as serde reads it; the same answer laid out otherwise is
    /// read by serde alone, to the same entries.
    #[test]
    fn a_transfer_answer_reads_the_same_either_way() {
        let entry = |id: u32, seq: i64, amount: &str, after: &str| {
            format!(
                r#"{{"id":"00000000-0000-0000-0000-0000000000{id:02}","wallet_id":"00000000-0000-0000-0000-000000000009","seq":{seq},"kind":"transfer_out","amount":"{amount}","balance_after":"{after}","transfer_id":"00000000-0000-0000-0000-000000000007","counterparty_wallet_id":null,"created_at":"2026-01-01T00:00:00.123456Z"}}"#
            )
        };
        let body = format!(
            r#"{{"success":true,"data":{{"transfer_id":"00000000-0000-0000-0000-000000000007","debit":{},"credit":{}}},"message":null}}"#,
            entry(1, 3, "1.5000", "8.5000"),
            entry(2, 14, "1.5000", "12.0000")
        );
        let fast = transfer_as_written(body.as_bytes()).expect("the wallet's layout");
        let serde: TransferBody = serde_json::from_str::<Envelope<TransferBody>>(&body)
            .unwrap()
            .data
            .unwrap();
        assert_eq!(fast, vec![serde.debit.clone(), serde.credit.clone()]);
        assert_eq!(fast[1].seq, 14);
        assert_eq!(fast[0].balance_after, Decimal::new(85, 1));

        let spaced = body.replace(r#","credit""#, r#", "credit""#);
        assert_eq!(transfer_as_written(spaced.as_bytes()), None);
        assert_eq!(
            Observed::from_body(OpKind::Transfer, spaced.as_bytes()),
            Some(Observed::Entries(fast.clone()))
        );
        assert_eq!(
            Observed::from_body(OpKind::Transfer, body.as_bytes()),
            Some(Observed::Entries(fast))
        );
    }

    #[test]
    fn reads_a_transfer_a_fund_and_a_balance_as_the_api_writes_them() {
        let entry = |id: u128, seq: i64, after: &str| {
            serde_json::json!({"id": Uuid::from_u128(id), "wallet_id": Uuid::from_u128(9),
                "seq": seq, "kind": "transfer_out", "amount": "1.5000",
                "balance_after": after, "transfer_id": null,
                "counterparty_wallet_id": null, "created_at": "2026-01-01T00:00:00Z"})
        };
        let body = serde_json::json!({"success": true, "message": null,
            "data": {"transfer_id": Uuid::from_u128(7), "debit": entry(1, 3, "8.5000"),
                "credit": entry(2, 4, "2.0000")}});
        let Some(Observed::Entries(entries)) =
            Observed::from_body(OpKind::Transfer, body.to_string().as_bytes())
        else {
            panic!("a transfer's entries")
        };
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].event_id, Uuid::from_u128(1));
        assert_eq!(entries[0].balance_after, Decimal::new(85, 1));
        assert_eq!(entries[1].seq, 4);

        let body = br#"{"success":true,"data":{"id":"00000000-0000-0000-0000-000000000009","user_id":"u","balance":"3.5000"}}"#;
        assert_eq!(
            Observed::from_body(OpKind::Fund, body),
            Some(Observed::WalletAfter {
                wallet_id: Uuid::from_u128(9),
                balance: Decimal::new(35, 1)
            })
        );

        let body = br#"{"success":true,"data":{"id":"00000000-0000-0000-0000-000000000009","balance":"12.0000"}}"#;
        assert_eq!(
            Observed::from_body(OpKind::GetWallet, body),
            Some(Observed::Balance(Decimal::new(12, 0)))
        );
    }

    #[test]
    fn a_body_that_breaks_the_promise_is_malformed_and_a_create_is_not_read() {
        let body = br#"{"success":true,"data":{"balance":12.5}}"#;
        assert!(matches!(
            Observed::from_body(OpKind::GetWallet, body),
            Some(Observed::Malformed(_))
        ));
        assert!(matches!(
            Observed::from_body(OpKind::GetHistory, b"{}"),
            Some(Observed::Malformed(_))
        ));
        assert_eq!(Observed::from_body(OpKind::CreateWallet, b"{}"), None);
    }

    #[test]
    fn reads_a_history_page_as_the_api_writes_it() {
        let body = br#"{"success":true,"message":null,"data":{"entries":[{"event_id":"00000000-0000-0000-0000-000000000001","wallet_id":"00000000-0000-0000-0000-000000000009","user_id":"u-1","seq":2,"kind":"funded","amount":"5.0000","balance_after":"5.0000","transfer_id":null,"counterparty_wallet_id":null,"committed_at":"2026-01-01T00:00:01Z","applied_at":"2026-01-01T00:00:02Z"}],"next_cursor":"2"}}"#;
        let Some(Observed::HistoryPage(page)) = Observed::from_body(OpKind::GetHistory, body)
        else {
            panic!("a history page")
        };
        assert_eq!(page.next_cursor.as_deref(), Some("2"));
        assert_eq!(page.entries.len(), 1);
        assert_eq!(page.entries[0].seq, 2);
        assert_eq!(page.entries[0].user_id, "u-1");
        assert_eq!(page.entries[0].amount, Decimal::new(5, 0));
    }

    #[test]
    fn an_answer_is_acknowledged_refused_or_open_by_its_status() {
        assert_eq!(answered(201, b"not json"), (Outcome::Ok, None));
        let refusal = br#"{"success":false,"code":"insufficient_funds"}"#;
        assert_eq!(
            answered(422, refusal),
            (Outcome::Failed, Some("insufficient_funds".into()))
        );
        assert_eq!(
            answered(503, b""),
            (Outcome::Indeterminate, Some("http_503".into()))
        );
    }

    #[test]
    fn round_trips_through_the_log() {
        let observed = Observed::Balance(Decimal::new(1, 4));
        let line = serde_json::to_string(&observed).unwrap();
        assert_eq!(line, r#"{"balance":"0.0001"}"#);
        assert_eq!(serde_json::from_str::<Observed>(&line).unwrap(), observed);
    }
}
