//! `walk.json`: what the history API showed when, after convergence, the
//! harness read every page of every wallet's history and every page of
//! every user's activity. The checker holds it against the ledger
//! (`history-reads-match`).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One history entry as the history API showed it (`applied_at`, which
/// only history knows, is left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShownEntry {
    pub event_id: Uuid,
    pub wallet_id: Uuid,
    pub user_id: String,
    pub seq: i64,
    pub kind: String,
    #[serde(with = "wallet_events::money_str")]
    pub amount: Decimal,
    #[serde(with = "wallet_events::money_str")]
    pub balance_after: Decimal,
    pub transfer_id: Option<Uuid>,
    pub counterparty_wallet_id: Option<Uuid>,
    pub committed_at: DateTime<Utc>,
}

/// One page of `GET /wallets/{id}/history` or `GET /users/{id}/activity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShownPage {
    pub entries: Vec<ShownEntry>,
    pub next_cursor: Option<String>,
}

/// Every page of one list, joined in the order the API gave them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkedList {
    /// The wallet id or the user id.
    pub id: String,
    pub pages: u32,
    pub entries: Vec<ShownEntry>,
    /// Why the walk of this list stopped early (a request failed, a
    /// cursor led nowhere), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The end-of-run walk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Walk {
    /// Each wallet's history, in wallet id order.
    pub wallets: Vec<WalkedList>,
    /// Each user's activity, in user id order.
    pub users: Vec<WalkedList>,
}
