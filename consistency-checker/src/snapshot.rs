//! The checker's picture of a run: plain rows of both databases, the
//! operation log and the fault windows, with no behaviour of their own.
//!
//! Every invariant is a pure function over a [`Snapshot`], so the same code
//! judges a real run (rows read by [`crate::load`]) and rows built in
//! memory (the tests' fixture). The rows therefore assume nothing the
//! databases would enforce for us: history rows are not unique by event id
//! and carry their kind as the text that was written, because a broken
//! consumer could write either, and the checker exists to notice.

use chrono::{DateTime, Utc};
use run_log::{FaultWindow, OpRecord, Walk, summary::Convergence};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use wallet_events::EventKind;

/// A row of the wallet database's `wallets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WalletRow {
    pub id: Uuid,
    pub user_id: String,
    pub balance: Decimal,
    pub last_seq: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A row of `ledger_entries`. Its id is also the event id of the event
/// published for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerRow {
    pub event_id: Uuid,
    pub wallet_id: Uuid,
    pub seq: i64,
    /// The database constrains the kind, so it is typed here.
    pub kind: EventKind,
    /// Magnitude; the kind gives the sign.
    pub amount: Decimal,
    pub balance_after: Decimal,
    pub transfer_id: Option<Uuid>,
    pub counterparty_wallet_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    /// The Idempotency-Key of the request that wrote the entry.
    pub request_key: Option<String>,
}

impl LedgerRow {
    /// The balance change this entry makes.
    pub fn signed_amount(&self) -> Decimal {
        self.kind.signed(self.amount)
    }
}

/// A row of `outbox`, without its payload (the ledger row says the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxRow {
    pub id: i64,
    pub event_id: Uuid,
    pub wallet_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
}

/// A row of the history database's `history_entries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRow {
    pub event_id: Uuid,
    pub wallet_id: Uuid,
    pub user_id: String,
    pub seq: i64,
    /// As written: the history table does not constrain it, so an unknown
    /// kind is a finding, not a load error.
    pub kind: String,
    pub amount: Decimal,
    pub balance_after: Decimal,
    pub transfer_id: Option<Uuid>,
    pub counterparty_wallet_id: Option<Uuid>,
    pub committed_at: DateTime<Utc>,
    pub applied_at: DateTime<Utc>,
    pub source_partition: i32,
    pub source_offset: i64,
}

impl HistoryRow {
    /// The kind, if it is one the system knows.
    pub fn event_kind(&self) -> Option<EventKind> {
        self.kind.parse().ok()
    }

    /// The balance change this row records; `None` for an unknown kind.
    pub fn signed_amount(&self) -> Option<Decimal> {
        self.event_kind().map(|kind| kind.signed(self.amount))
    }
}

/// A row of `parked_events`: an event that arrived ahead of its
/// predecessor and still waits for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParkedRow {
    pub event_id: Uuid,
    pub wallet_id: Uuid,
    pub seq: i64,
    pub source_partition: i32,
    pub source_offset: i64,
    pub parked_at: DateTime<Utc>,
}

/// A row of `dead_letters`, without the raw key and payload bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterRow {
    pub id: i64,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub error: String,
    pub received_at: DateTime<Utc>,
    /// The event id, when the payload decodes as a wallet event: a
    /// genuine event in `dead_letters` is history the consumer dropped.
    #[serde(default)]
    pub event_id: Option<Uuid>,
}

/// Everything the invariants look at.
///
/// Orders, which the invariants rely on for deterministic output:
/// `wallets` by id, `ledger` by (wallet, seq), `outbox` by id, `parked` by
/// (wallet, seq), `dead_letters` by id, and `history` in applied order
/// (`applied_at`, then `seq`): `history-ordered` judges that order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub wallets: Vec<WalletRow>,
    pub ledger: Vec<LedgerRow>,
    pub outbox: Vec<OutboxRow>,
    pub history: Vec<HistoryRow>,
    pub parked: Vec<ParkedRow>,
    pub dead_letters: Vec<DeadLetterRow>,
    /// The operation log of the run (empty when none was given).
    pub ops: Vec<OpRecord>,
    /// The run's fault windows, to place each violation in time.
    pub faults: Vec<FaultWindow>,
    /// How the liveness phase ended, when the caller knows.
    pub convergence: Option<Convergence>,
    /// What the history API showed after convergence (`walk.json`), when
    /// the run walked it.
    pub walk: Option<Walk>,
}
