//! The wallet's changes, each one transaction: claim the idempotency key
//! and lock the wallets it touches (in wallet-id order, so two transfers
//! can never wait on each other in a cycle), ask [`crate::domain`] what to
//! do, write the new balances, the ledger entries, their outbox rows and
//! the key's response together, commit. Either all of it commits or none of it.
//!
//! [`Store`] is that orchestration, over any backend that provides the
//! transaction steps of [`db::WalletTx`]: PostgreSQL in production
//! ([`postgres::PgWalletDb`]), an in-memory model in the simulator.

pub mod db;
pub mod postgres;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::value::RawValue;
use service_kit::auth::{AuthError, Caller};
use uuid::Uuid;
use wallet_events::{Amount, EventKind, IdempotencyKey, UserId};

pub use db::{Change, Claim, DbError, KeyToClaim, Locked, WalletDb, WalletTx};
pub use postgres::{OutboxWake, PgWalletDb};

use crate::domain::{self, IdSource, NewEntry, Refusal};

/// How often a transaction that lost a deadlock or serialization race is
/// retried inside the service before the client sees an error. Locks are
/// taken in id order, so this is a safety net, not a code path.
const CONFLICT_RETRIES_MAX: u32 = 5;

/// A wallet as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Wallet {
    pub id: Uuid,
    pub user_id: String,
    #[serde(with = "wallet_events::money_str")]
    #[schema(value_type = wallet_events::schema::MoneyText, inline)]
    pub balance: Decimal,
    #[serde(serialize_with = "wallet_events::rfc3339::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "wallet_events::rfc3339::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

/// A ledger entry as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LedgerEntry {
    pub id: Uuid,
    pub wallet_id: Uuid,
    pub seq: i64,
    pub kind: EventKind,
    #[serde(with = "wallet_events::money_str")]
    #[schema(value_type = wallet_events::schema::MoneyText, inline)]
    pub amount: Decimal,
    #[serde(with = "wallet_events::money_str")]
    #[schema(value_type = wallet_events::schema::MoneyText, inline)]
    pub balance_after: Decimal,
    pub transfer_id: Option<Uuid>,
    pub counterparty_wallet_id: Option<Uuid>,
    #[serde(serialize_with = "wallet_events::rfc3339::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
}

/// What a transfer returns: both legs.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TransferReceipt {
    pub transfer_id: Uuid,
    pub debit: LedgerEntry,
    pub credit: LedgerEntry,
}

/// An idempotency key with the fingerprint of the request that carries it.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: IdempotencyKey,
    pub fingerprint: String,
}

/// A result that is either new, or the stored data of the first request
/// that carried the same idempotency key.
#[derive(Debug)]
pub enum Outcome<T> {
    /// Applied by this request. `recorded` is the data as JSON when an
    /// idempotency key stored it: the answer reuses that text rather than
    /// serializing the data a second time.
    Fresh {
        data: T,
        recorded: Option<Box<RawValue>>,
    },
    Replayed(serde_json::Value),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("no wallet with id {0}")]
    WalletNotFound(Uuid),
    #[error("idempotency key {0:?} was already used for a different request")]
    IdempotencyKeyReused(String),
    /// The caller may not do this to the wallet it found.
    #[error(transparent)]
    Auth(AuthError),
    /// What cannot happen did: the database holds something the store
    /// never writes. Logged and answered as an internal error.
    #[error("broken invariant: {0}")]
    Invariant(String),
    #[error(transparent)]
    Database(#[from] DbError),
}

/// Where new ids come from: time-ordered random ids in production, a
/// seeded stream under simulation.
#[derive(Clone)]
pub struct Ids(Arc<dyn Fn() -> Uuid + Send + Sync>);

impl Ids {
    pub fn new(next: impl Fn() -> Uuid + Send + Sync + 'static) -> Ids {
        Ids(Arc::new(next))
    }

    /// UUIDv7: time-ordered, random.
    pub fn system() -> Ids {
        Ids::new(Uuid::now_v7)
    }
}

impl IdSource for Ids {
    fn next_id(&mut self) -> Uuid {
        (self.0)()
    }
}

/// The wallet service's changes and reads, over a backend `D`.
#[derive(Clone)]
pub struct Store<D> {
    db: D,
    ids: Ids,
}

impl Store<PgWalletDb> {
    /// The production store: PostgreSQL, UUIDv7 ids.
    pub fn postgres(pool: sqlx::PgPool) -> Self {
        Store::new(PgWalletDb::new(pool), Ids::system())
    }
}

impl<D: WalletDb> Store<D> {
    pub fn new(db: D, ids: Ids) -> Self {
        Self { db, ids }
    }

    pub fn db(&self) -> &D {
        &self.db
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        Ok(self.db.ping().await?)
    }

    /// Opens a wallet for `user_id`. With an idempotency key, a retry of
    /// the same request answers the wallet the first one opened instead of
    /// opening another.
    pub async fn create_wallet(
        &self,
        user_id: &UserId,
        idempotency: Option<&Idempotency>,
    ) -> Result<Outcome<Wallet>, StoreError> {
        retry_conflicts(|| self.create_wallet_once(user_id, idempotency)).await
    }

    async fn create_wallet_once(
        &self,
        user_id: &UserId,
        idempotency: Option<&Idempotency>,
    ) -> Result<Outcome<Wallet>, StoreError> {
        let (state, entry) = domain::open(user_id, &mut self.ids.clone());
        let mut tx = self.db.begin().await?;
        // Without a key there is nothing to claim and nothing to lock.
        if idempotency.is_some()
            && let Err(replay) = claim_and_lock(&mut tx, idempotency, &[]).await?
        {
            return Ok(Outcome::Replayed(replay));
        }
        let wallet = tx.insert_wallet(&state).await?;
        let recorded = recorded_response(idempotency, &wallet);
        tx.write(Change {
            wallets: &[],
            entries: &[entry],
            at: wallet.created_at,
            key: idempotency.map(|i| &i.key),
            response: recorded.as_deref(),
        })
        .await?;
        tx.commit().await?;
        Ok(Outcome::Fresh {
            data: wallet,
            recorded,
        })
    }

    pub async fn wallet(&self, id: Uuid) -> Result<Wallet, StoreError> {
        self.db
            .wallet(id)
            .await?
            .ok_or(StoreError::WalletNotFound(id))
    }

    pub async fn user_wallets(&self, user_id: &UserId) -> Result<Vec<Wallet>, StoreError> {
        Ok(self.db.user_wallets(user_id).await?)
    }

    pub async fn fund(
        &self,
        wallet_id: Uuid,
        amount: Amount,
        idempotency: Option<&Idempotency>,
    ) -> Result<Outcome<Wallet>, StoreError> {
        retry_conflicts(|| self.fund_once(wallet_id, amount, idempotency)).await
    }

    async fn fund_once(
        &self,
        wallet_id: Uuid,
        amount: Amount,
        idempotency: Option<&Idempotency>,
    ) -> Result<Outcome<Wallet>, StoreError> {
        let mut tx = self.db.begin().await?;
        let Locked { mut wallets, now } =
            match claim_and_lock(&mut tx, idempotency, &[wallet_id]).await? {
                Ok(locked) => locked,
                Err(replay) => return Ok(Outcome::Replayed(replay)),
            };
        let (before, created_at) = wallets.pop().ok_or(StoreError::WalletNotFound(wallet_id))?;
        let (after, entry) = domain::fund(&before, amount, &mut self.ids.clone())?;
        let wallet = Wallet {
            id: after.id,
            user_id: after.user_id.clone(),
            balance: after.balance,
            created_at,
            updated_at: now,
        };
        let recorded = recorded_response(idempotency, &wallet);
        tx.write(Change {
            wallets: &[&after],
            entries: &[entry],
            at: now,
            key: idempotency.map(|i| &i.key),
            response: recorded.as_deref(),
        })
        .await?;
        tx.commit().await?;
        Ok(Outcome::Fresh {
            data: wallet,
            recorded,
        })
    }

    /// Moves `amount` from `from` to `to` on `caller`'s word: refused
    /// unless the caller may move money out of `from` (its owner, checked
    /// under the wallet's lock).
    pub async fn transfer(
        &self,
        caller: &Caller,
        from: Uuid,
        to: Uuid,
        amount: Amount,
        idempotency: Option<&Idempotency>,
    ) -> Result<Outcome<TransferReceipt>, StoreError> {
        retry_conflicts(|| self.transfer_once(caller, from, to, amount, idempotency)).await
    }

    async fn transfer_once(
        &self,
        caller: &Caller,
        from: Uuid,
        to: Uuid,
        amount: Amount,
        idempotency: Option<&Idempotency>,
    ) -> Result<Outcome<TransferReceipt>, StoreError> {
        if from == to {
            return Err(Refusal::SelfTransfer.into());
        }
        let mut tx = self.db.begin().await?;
        let Locked { wallets, now } =
            match claim_and_lock(&mut tx, idempotency, &[from, to]).await? {
                Ok(locked) => locked,
                Err(replay) => return Ok(Outcome::Replayed(replay)),
            };
        let find = |id: Uuid| {
            wallets
                .iter()
                .map(|(wallet, _)| wallet)
                .find(|w| w.id == id)
                .ok_or(StoreError::WalletNotFound(id))
        };
        let source = find(from)?;
        caller
            .require(
                caller.may_debit(&source.user_id),
                "move money out of another user's wallet",
            )
            .map_err(StoreError::Auth)?;
        let planned = domain::transfer(source, find(to)?, amount, &mut self.ids.clone())?;
        let receipt = TransferReceipt {
            transfer_id: planned.transfer_id,
            debit: entry_view(&planned.debit, now),
            credit: entry_view(&planned.credit, now),
        };
        let recorded = recorded_response(idempotency, &receipt);
        tx.write(Change {
            wallets: &[&planned.from, &planned.to],
            entries: &[planned.debit, planned.credit],
            at: now,
            key: idempotency.map(|i| &i.key),
            response: recorded.as_deref(),
        })
        .await?;
        tx.commit().await?;
        Ok(Outcome::Fresh {
            data: receipt,
            recorded,
        })
    }
}

async fn retry_conflicts<T, F, Fut>(mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Err(StoreError::Database(DbError::Conflict(cause))) if tries < CONFLICT_RETRIES_MAX => {
                tries += 1;
                tracing::warn!(tries, %cause, "transaction conflict, retrying");
            }
            other => return other,
        }
    }
}

/// Claims the idempotency key and locks `ids` inside the transaction.
/// `Err` holds the stored response when the key was already used by an
/// identical request. A concurrent request with the same key waits in the
/// backend until the first commits (then replays it) or rolls back (then
/// proceeds).
async fn claim_and_lock(
    tx: &mut impl WalletTx,
    idempotency: Option<&Idempotency>,
    ids: &[Uuid],
) -> Result<Result<Locked, serde_json::Value>, StoreError> {
    let key = idempotency.map(|i| KeyToClaim {
        key: &i.key,
        fingerprint: &i.fingerprint,
    });
    let (fingerprint, response) = match tx.claim_and_lock(key, ids).await? {
        Claim::Locked(locked) => return Ok(Ok(locked)),
        Claim::Taken {
            fingerprint,
            response,
        } => (fingerprint, response),
    };
    let Some(idempotency) = idempotency else {
        return Err(StoreError::Invariant(
            "a key was reported taken though none was claimed".into(),
        ));
    };
    if fingerprint != idempotency.fingerprint {
        return Err(StoreError::IdempotencyKeyReused(
            idempotency.key.as_str().to_owned(),
        ));
    }
    // A committed key always has its response: both are written by the
    // same transaction. A replay of nothing would tell the client that an
    // operation applied without saying what it did.
    match response {
        Some(response) if !response.is_null() => Ok(Err(response)),
        _ => Err(StoreError::Invariant(format!(
            "idempotency key {} is stored without its response",
            idempotency.key
        ))),
    }
}

/// The response to store under the claimed key, as JSON text (serialized
/// once: the answer reuses it).
fn recorded_response(
    idempotency: Option<&Idempotency>,
    response: &impl Serialize,
) -> Option<Box<RawValue>> {
    idempotency
        .map(|_| serde_json::value::to_raw_value(response).expect("responses always serialize"))
}

fn entry_view(entry: &NewEntry, created_at: DateTime<Utc>) -> LedgerEntry {
    LedgerEntry {
        id: entry.event_id,
        wallet_id: entry.wallet_id,
        seq: entry.seq,
        kind: entry.kind,
        amount: entry.amount,
        balance_after: entry.balance_after,
        transfer_id: entry.transfer_id,
        counterparty_wallet_id: entry.counterparty_wallet_id,
        created_at,
    }
}
