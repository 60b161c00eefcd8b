//! The seam beneath the store: the steps of a wallet transaction, as a
//! backend must provide them. [`super::Store`] orchestrates these steps
//! (claim the key, lock, ask the rules, write, record, commit); PostgreSQL
//! ([`super::postgres::PgWalletDb`]) is the production backend, and the
//! simulator's in-memory model is another. The steps are few on purpose:
//! each is one round trip to PostgreSQL, so a transfer costs four (begin,
//! claim and lock, write, commit). Both pass one contract test
//! suite, so the orchestration means the same on either.
//!
//! The contract each backend keeps:
//! - a transaction sees committed data and its own writes; nothing of it
//!   is visible to others until [`WalletTx::commit`]; dropping it
//!   uncommitted rolls it back;
//! - [`WalletTx::claim_and_lock`] waits while another open transaction
//!   holds the same key, then either claims it or reports the committed
//!   claim; once claimed, it takes the wallets' locks in id order, waiting
//!   while another transaction holds one, and reads the time after;
//! - every UNIQUE and CHECK constraint of `migrations/0001_ledger.sql`
//!   fails the statement (`DbError::Constraint`);
//! - an outbox row's id is taken when it is written and becomes visible
//!   when its transaction commits, so ids can commit out of order.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use uuid::Uuid;
use wallet_events::{IdempotencyKey, UserId};

use super::Wallet;
use crate::domain::{NewEntry, WalletState};

/// Why a database step failed, as the orchestration needs to tell apart.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A serialization failure or deadlock: the transaction is lost and
    /// may be run again from the start.
    #[error("transaction conflict: {0}")]
    Conflict(String),
    /// A UNIQUE or CHECK constraint refused the statement.
    #[error("constraint violated: {0}")]
    Constraint(String),
    /// The database cannot be reached right now (down, restarting, the
    /// connection broke: a commit's outcome is then unknown).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a query that went wrong.
    #[error(transparent)]
    Other(anyhow::Error),
}

/// An idempotency key to claim, with the fingerprint of the request that
/// carries it.
#[derive(Debug, Clone, Copy)]
pub struct KeyToClaim<'a> {
    pub key: &'a IdempotencyKey,
    pub fingerprint: &'a str,
}

/// The wallets a transaction locked, and the database's time once it
/// holds them: the time its change carries (balances' `updated_at`, the
/// entries' `created_at`, the events' `committed_at`).
#[derive(Debug, Clone, PartialEq)]
pub struct Locked {
    /// The wallets that exist among those asked for, in id order, with
    /// their creation times.
    pub wallets: Vec<(WalletState, DateTime<Utc>)>,
    pub now: DateTime<Utc>,
}

/// What claiming an idempotency key and locking the wallets found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The key (if any) is this transaction's now, and the wallets are
    /// locked.
    Locked(Locked),
    /// A committed request holds the key, with its fingerprint and
    /// response; nothing was locked.
    Taken {
        fingerprint: String,
        response: Option<serde_json::Value>,
    },
}

/// The writes of one change, made together: new balances and sequence
/// numbers of locked wallets, ledger entries with their outbox rows, and
/// the response stored under the claimed key.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    pub wallets: &'a [&'a WalletState],
    pub entries: &'a [NewEntry],
    /// The change's time: [`Locked::now`], or a new wallet's creation time.
    pub at: DateTime<Utc>,
    /// The claimed key, recorded on the entries; its response, stored.
    pub key: Option<&'a IdempotencyKey>,
    pub response: Option<&'a RawValue>,
}

/// A wallet database: transactions, and the reads the API needs.
pub trait WalletDb: Clone + Send + Sync + 'static {
    type Tx: WalletTx;

    fn begin(&self) -> impl Future<Output = Result<Self::Tx, DbError>> + Send;

    fn wallet(&self, id: Uuid) -> impl Future<Output = Result<Option<Wallet>, DbError>> + Send;

    /// The user's wallets, oldest first.
    fn user_wallets(
        &self,
        user_id: &UserId,
    ) -> impl Future<Output = Result<Vec<Wallet>, DbError>> + Send;

    fn ping(&self) -> impl Future<Output = Result<(), DbError>> + Send;
}

/// One open transaction on the wallet database.
pub trait WalletTx: Send {
    /// Inserts a new wallet (balance 0, `last_seq` 1) stamped with the
    /// database's clock.
    fn insert_wallet(
        &mut self,
        wallet: &WalletState,
    ) -> impl Future<Output = Result<Wallet, DbError>> + Send;

    /// Claims `key` (when given) and, once it is this transaction's, locks
    /// the wallets that exist among `ids` in id order. A key another open
    /// transaction holds waits for it to commit (then [`Claim::Taken`])
    /// or roll back (then claimed). One round trip on PostgreSQL.
    fn claim_and_lock(
        &mut self,
        key: Option<KeyToClaim<'_>>,
        ids: &[Uuid],
    ) -> impl Future<Output = Result<Claim, DbError>> + Send;

    /// Writes the change; see [`Change`]. One round trip on PostgreSQL.
    fn write(&mut self, change: Change<'_>) -> impl Future<Output = Result<(), DbError>> + Send;

    fn commit(self) -> impl Future<Output = Result<(), DbError>> + Send;
}
