//! The wallet database: every change is one transaction that locks the
//! wallets it touches (in wallet-id order, so two transfers can never wait
//! on each other in a cycle), asks [`crate::domain`] what to do, and writes
//! the new balances, the ledger entries, their outbox rows and the
//! idempotency record together. Either all of it commits or none of it.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{PgPool, Postgres, Row, Transaction, postgres::PgRow};
use uuid::Uuid;

use crate::domain::{self, NewEntry, Refusal, SystemIds, WalletState};
use wallet_events::{Amount, EventKind, IdempotencyKey, UserId};

/// How often a transaction that lost a deadlock or serialization race is
/// retried inside the service before the client sees an error. Locks are
/// taken in id order, so this is a safety net, not a code path.
const CONFLICT_RETRIES_MAX: u32 = 5;

/// A wallet as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Wallet {
    pub id: Uuid,
    pub user_id: String,
    #[serde(with = "wallet_events::money_str")]
    pub balance: Decimal,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A ledger entry as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerEntry {
    pub id: Uuid,
    pub wallet_id: Uuid,
    pub seq: i64,
    pub kind: EventKind,
    #[serde(with = "wallet_events::money_str")]
    pub amount: Decimal,
    #[serde(with = "wallet_events::money_str")]
    pub balance_after: Decimal,
    pub transfer_id: Option<Uuid>,
    pub counterparty_wallet_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// What a transfer returns: both legs.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    Fresh(T),
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
    /// What cannot happen did: the database holds something the store
    /// never writes. Logged and answered as an internal error.
    #[error("broken invariant: {0}")]
    Invariant(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    fn is_retryable_conflict(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => {
                matches!(db.code().as_deref(), Some("40001" | "40P01"))
            }
            _ => false,
        }
    }
}

/// The wallet service's access to its database.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    pub async fn create_wallet(&self, user_id: &UserId) -> Result<Wallet, StoreError> {
        let (state, entry) = domain::open(user_id, &mut SystemIds);
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO wallets (id, user_id, balance, last_seq, created_at, updated_at)
             VALUES ($1, $2, 0, 1, clock_timestamp(), clock_timestamp())
             RETURNING id, user_id, balance, created_at, updated_at",
        )
        .bind(state.id)
        .bind(&state.user_id)
        .fetch_one(&mut *tx)
        .await?;
        let wallet = wallet_from_row(&row)?;
        write_entries(&mut tx, &[entry], wallet.created_at, None).await?;
        tx.commit().await?;
        Ok(wallet)
    }

    pub async fn wallet(&self, id: Uuid) -> Result<Wallet, StoreError> {
        sqlx::query(
            "SELECT id, user_id, balance, created_at, updated_at FROM wallets WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .map(|row| wallet_from_row(&row))
        .transpose()?
        .ok_or(StoreError::WalletNotFound(id))
    }

    pub async fn user_wallets(&self, user_id: &UserId) -> Result<Vec<Wallet>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, user_id, balance, created_at, updated_at FROM wallets
             WHERE user_id = $1 ORDER BY created_at, id",
        )
        .bind(user_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(wallet_from_row).collect::<Result<_, _>>()?)
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
        let mut tx = self.pool.begin().await?;
        if let Some(replay) = claim_key(&mut tx, idempotency).await? {
            return Ok(Outcome::Replayed(replay));
        }
        let mut locked = lock_wallets(&mut tx, &[wallet_id]).await?;
        let (before, created_at) = locked.pop().ok_or(StoreError::WalletNotFound(wallet_id))?;
        let (after, entry) = domain::fund(&before, amount, &mut SystemIds)?;
        let now = update_wallets(&mut tx, &[&after]).await?;
        write_entries(&mut tx, &[entry], now, idempotency).await?;
        let wallet = Wallet {
            id: after.id,
            user_id: after.user_id,
            balance: after.balance,
            created_at,
            updated_at: now,
        };
        record_response(&mut tx, idempotency, &wallet).await?;
        tx.commit().await?;
        Ok(Outcome::Fresh(wallet))
    }

    pub async fn transfer(
        &self,
        from: Uuid,
        to: Uuid,
        amount: Amount,
        idempotency: Option<&Idempotency>,
    ) -> Result<Outcome<TransferReceipt>, StoreError> {
        retry_conflicts(|| self.transfer_once(from, to, amount, idempotency)).await
    }

    async fn transfer_once(
        &self,
        from: Uuid,
        to: Uuid,
        amount: Amount,
        idempotency: Option<&Idempotency>,
    ) -> Result<Outcome<TransferReceipt>, StoreError> {
        if from == to {
            return Err(Refusal::SelfTransfer.into());
        }
        let mut tx = self.pool.begin().await?;
        if let Some(replay) = claim_key(&mut tx, idempotency).await? {
            return Ok(Outcome::Replayed(replay));
        }
        let locked = lock_wallets(&mut tx, &[from, to]).await?;
        let find = |id: Uuid| {
            locked
                .iter()
                .map(|(wallet, _)| wallet)
                .find(|w| w.id == id)
                .ok_or(StoreError::WalletNotFound(id))
        };
        let planned = domain::transfer(find(from)?, find(to)?, amount, &mut SystemIds)?;
        let now = update_wallets(&mut tx, &[&planned.from, &planned.to]).await?;
        write_entries(
            &mut tx,
            &[planned.debit.clone(), planned.credit.clone()],
            now,
            idempotency,
        )
        .await?;
        let receipt = TransferReceipt {
            transfer_id: planned.transfer_id,
            debit: entry_view(&planned.debit, now),
            credit: entry_view(&planned.credit, now),
        };
        record_response(&mut tx, idempotency, &receipt).await?;
        tx.commit().await?;
        Ok(Outcome::Fresh(receipt))
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
            Err(err) if err.is_retryable_conflict() && tries < CONFLICT_RETRIES_MAX => {
                tries += 1;
                tracing::warn!(tries, error = %err, "transaction conflict, retrying");
            }
            other => return other,
        }
    }
}

/// Claims the idempotency key inside the transaction. Returns the stored
/// response when the key was already used by an identical request. A
/// concurrent request with the same key waits here on the unique index until
/// the first commits (then replays it) or rolls back (then proceeds).
async fn claim_key(
    tx: &mut Transaction<'_, Postgres>,
    idempotency: Option<&Idempotency>,
) -> Result<Option<serde_json::Value>, StoreError> {
    let Some(idempotency) = idempotency else {
        return Ok(None);
    };
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (key, fingerprint) VALUES ($1, $2)
         ON CONFLICT (key) DO NOTHING RETURNING key",
    )
    .bind(idempotency.key.as_str())
    .bind(&idempotency.fingerprint)
    .fetch_optional(&mut **tx)
    .await?;
    if claimed.is_some() {
        return Ok(None);
    }
    let row = sqlx::query("SELECT fingerprint, response FROM idempotency_keys WHERE key = $1")
        .bind(idempotency.key.as_str())
        .fetch_one(&mut **tx)
        .await?;
    let fingerprint: String = row.try_get("fingerprint")?;
    if fingerprint != idempotency.fingerprint {
        return Err(StoreError::IdempotencyKeyReused(
            idempotency.key.as_str().to_owned(),
        ));
    }
    let response: Option<serde_json::Value> = row.try_get("response")?;
    // A committed key always has its response: both are written by the
    // same transaction. A replay of nothing would tell the client that an
    // operation applied without saying what it did.
    match response {
        Some(response) if !response.is_null() => Ok(Some(response)),
        _ => Err(StoreError::Invariant(format!(
            "idempotency key {} is stored without its response",
            idempotency.key
        ))),
    }
}

async fn record_response(
    tx: &mut Transaction<'_, Postgres>,
    idempotency: Option<&Idempotency>,
    response: &impl Serialize,
) -> Result<(), StoreError> {
    if let Some(idempotency) = idempotency {
        let json = serde_json::to_value(response).expect("responses always serialize");
        sqlx::query("UPDATE idempotency_keys SET response = $2 WHERE key = $1")
            .bind(idempotency.key.as_str())
            .bind(json)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Locks the wallets in id order (ORDER BY is applied before FOR UPDATE
/// takes the row locks), so concurrent transfers never deadlock. Each wallet
/// comes with its creation time, which the API shows.
async fn lock_wallets(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[Uuid],
) -> Result<Vec<(WalletState, DateTime<Utc>)>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, user_id, balance, last_seq, created_at FROM wallets
         WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|row| {
            let state = WalletState {
                id: row.try_get("id")?,
                user_id: row.try_get("user_id")?,
                balance: row.try_get("balance")?,
                last_seq: row.try_get("last_seq")?,
            };
            Ok((state, row.try_get("created_at")?))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// Writes the new balances and returns the database time at which the
/// (locked) change happened: the entries' commit time.
async fn update_wallets(
    tx: &mut Transaction<'_, Postgres>,
    wallets: &[&WalletState],
) -> Result<DateTime<Utc>, StoreError> {
    let ids: Vec<Uuid> = wallets.iter().map(|w| w.id).collect();
    let balances: Vec<Decimal> = wallets.iter().map(|w| w.balance).collect();
    let seqs: Vec<i64> = wallets.iter().map(|w| w.last_seq).collect();
    let row = sqlx::query(
        "WITH changed AS (
             UPDATE wallets w SET balance = c.balance, last_seq = c.last_seq,
                                  updated_at = clock_timestamp()
             FROM UNNEST($1::uuid[], $2::numeric[], $3::bigint[]) AS c(id, balance, last_seq)
             WHERE w.id = c.id
             RETURNING w.updated_at)
         SELECT max(updated_at) AS now FROM changed",
    )
    .bind(&ids)
    .bind(&balances)
    .bind(&seqs)
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get("now")?)
}

/// Writes ledger entries and, in the same transaction, the outbox rows that
/// carry them to the topic.
async fn write_entries(
    tx: &mut Transaction<'_, Postgres>,
    entries: &[NewEntry],
    committed_at: DateTime<Utc>,
    idempotency: Option<&Idempotency>,
) -> Result<(), StoreError> {
    let column = |f: fn(&NewEntry) -> Option<Uuid>| entries.iter().map(f).collect::<Vec<_>>();
    let event_ids: Vec<Uuid> = entries.iter().map(|e| e.event_id).collect();
    let wallet_ids: Vec<Uuid> = entries.iter().map(|e| e.wallet_id).collect();
    let seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    let amounts: Vec<Decimal> = entries.iter().map(|e| e.amount).collect();
    let balances: Vec<Decimal> = entries.iter().map(|e| e.balance_after).collect();
    let payloads: Vec<String> = entries
        .iter()
        .map(|e| String::from_utf8(e.event(committed_at).to_json()).expect("JSON is UTF-8"))
        .collect();
    sqlx::query(
        "INSERT INTO ledger_entries (id, wallet_id, seq, kind, amount, balance_after,
                                     transfer_id, counterparty_wallet_id, created_at, request_key)
         SELECT *, $9::timestamptz, $10::text FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::text[],
                                               $5::numeric[], $6::numeric[], $7::uuid[], $8::uuid[])",
    )
    .bind(&event_ids)
    .bind(&wallet_ids)
    .bind(&seqs)
    .bind(&kinds)
    .bind(&amounts)
    .bind(&balances)
    .bind(column(|e| e.transfer_id))
    .bind(column(|e| e.counterparty_wallet_id))
    .bind(committed_at)
    .bind(idempotency.map(|i| i.key.as_str()))
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO outbox (event_id, wallet_id, payload)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[])",
    )
    .bind(&event_ids)
    .bind(&wallet_ids)
    .bind(&payloads)
    .execute(&mut **tx)
    .await?;
    Ok(())
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

fn wallet_from_row(row: &PgRow) -> Result<Wallet, sqlx::Error> {
    Ok(Wallet {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        balance: row.try_get("balance")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
