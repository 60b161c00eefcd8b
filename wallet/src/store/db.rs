//! The seam beneath the store: the steps of a wallet transaction, as a
//! backend must provide them. [`super::Store`] orchestrates these steps
//! (claim the key, lock, ask the rules, write, record, commit); PostgreSQL
//! ([`super::postgres::PgWalletDb`]) is the production backend, and the
//! simulator's in-memory model is another. Both pass one contract test
//! suite, so the orchestration means the same on either.
//!
//! The contract each backend keeps:
//! - a transaction sees committed data and its own writes; nothing of it
//!   is visible to others until [`WalletTx::commit`]; dropping it
//!   uncommitted rolls it back;
//! - [`WalletTx::lock_wallets`] takes the rows' locks in id order and waits
//!   while another transaction holds one;
//! - [`WalletTx::claim_key`] waits while another open transaction holds the
//!   same key, then either claims it or reports the committed claim;
//! - every UNIQUE and CHECK constraint of `migrations/0001_ledger.sql`
//!   fails the statement (`DbError::Constraint`);
//! - an outbox row's id is taken when it is written and becomes visible
//!   when its transaction commits, so ids can commit out of order.

use std::future::Future;

use chrono::{DateTime, Utc};
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

/// What claiming an idempotency key found.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyClaim {
    /// The key is this transaction's now.
    Claimed,
    /// A committed request holds it, with its fingerprint and response.
    Taken {
        fingerprint: String,
        response: Option<serde_json::Value>,
    },
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

    fn claim_key(
        &mut self,
        key: &IdempotencyKey,
        fingerprint: &str,
    ) -> impl Future<Output = Result<KeyClaim, DbError>> + Send;

    /// Locks the wallets that exist among `ids`, in id order, and returns
    /// them with their creation times.
    fn lock_wallets(
        &mut self,
        ids: &[Uuid],
    ) -> impl Future<Output = Result<Vec<(WalletState, DateTime<Utc>)>, DbError>> + Send;

    /// Writes the new balances and sequence numbers of locked wallets and
    /// returns the database time of the change (the entries' commit time).
    fn update_wallets(
        &mut self,
        wallets: &[&WalletState],
    ) -> impl Future<Output = Result<DateTime<Utc>, DbError>> + Send;

    /// Writes ledger entries and, in the same transaction, their outbox
    /// rows; `key` is recorded on the entries.
    fn write_entries(
        &mut self,
        entries: &[NewEntry],
        committed_at: DateTime<Utc>,
        key: Option<&IdempotencyKey>,
    ) -> impl Future<Output = Result<(), DbError>> + Send;

    /// Stores the response of a claimed key.
    fn record_response(
        &mut self,
        key: &IdempotencyKey,
        response: Box<serde_json::value::RawValue>,
    ) -> impl Future<Output = Result<(), DbError>> + Send;

    fn commit(self) -> impl Future<Output = Result<(), DbError>> + Send;
}
