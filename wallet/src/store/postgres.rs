//! The production backend of the store: the transaction steps as SQL on
//! PostgreSQL, through a sqlx pool. Locks are row locks (`FOR UPDATE`),
//! the idempotency key is claimed by inserting it (a concurrent insert of
//! the same key waits on the unique index), and time is the database's
//! `clock_timestamp()`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgPool, Postgres, Row, Transaction, postgres::PgRow};
use uuid::Uuid;
use wallet_events::{IdempotencyKey, UserId};

use super::{
    Wallet,
    db::{DbError, KeyClaim, WalletDb, WalletTx},
};
use crate::domain::{NewEntry, WalletState};

/// The wallet database on PostgreSQL.
#[derive(Clone)]
pub struct PgWalletDb {
    pool: PgPool,
}

impl PgWalletDb {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Serialization failures and deadlocks may be retried; constraint
/// violations (class 23) and values a column cannot hold (class 22: too
/// long, out of range, a NUL in text) are the statement's fault; the rest
/// is the database's.
impl From<sqlx::Error> for DbError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err {
            match db.code().as_deref() {
                Some("40001" | "40P01") => return DbError::Conflict(db.message().to_owned()),
                Some(code) if code.starts_with("23") || code.starts_with("22") => {
                    return DbError::Constraint(db.message().to_owned());
                }
                _ => {}
            }
        }
        if service_kit::database_unavailable(&err) {
            return DbError::Unavailable(err.to_string());
        }
        DbError::Other(err.into())
    }
}

impl WalletDb for PgWalletDb {
    type Tx = PgWalletTx;

    async fn begin(&self) -> Result<PgWalletTx, DbError> {
        Ok(PgWalletTx(self.pool.begin().await?))
    }

    async fn wallet(&self, id: Uuid) -> Result<Option<Wallet>, DbError> {
        let row = sqlx::query(
            "SELECT id, user_id, balance, created_at, updated_at FROM wallets WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| wallet_from_row(&row)).transpose()?)
    }

    async fn user_wallets(&self, user_id: &UserId) -> Result<Vec<Wallet>, DbError> {
        let rows = sqlx::query(
            "SELECT id, user_id, balance, created_at, updated_at FROM wallets
             WHERE user_id = $1 ORDER BY created_at, id",
        )
        .bind(user_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(wallet_from_row).collect::<Result<_, _>>()?)
    }

    async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// An open transaction; dropped uncommitted, sqlx rolls it back.
pub struct PgWalletTx(Transaction<'static, Postgres>);

impl WalletTx for PgWalletTx {
    async fn insert_wallet(&mut self, wallet: &WalletState) -> Result<Wallet, DbError> {
        let row = sqlx::query(
            "INSERT INTO wallets (id, user_id, balance, last_seq, created_at, updated_at)
             VALUES ($1, $2, 0, 1, clock_timestamp(), clock_timestamp())
             RETURNING id, user_id, balance, created_at, updated_at",
        )
        .bind(wallet.id)
        .bind(&wallet.user_id)
        .fetch_one(&mut *self.0)
        .await?;
        Ok(wallet_from_row(&row)?)
    }

    async fn claim_key(
        &mut self,
        key: &IdempotencyKey,
        fingerprint: &str,
    ) -> Result<KeyClaim, DbError> {
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (key, fingerprint) VALUES ($1, $2)
             ON CONFLICT (key) DO NOTHING RETURNING key",
        )
        .bind(key.as_str())
        .bind(fingerprint)
        .fetch_optional(&mut *self.0)
        .await?;
        if claimed.is_some() {
            return Ok(KeyClaim::Claimed);
        }
        let row = sqlx::query("SELECT fingerprint, response FROM idempotency_keys WHERE key = $1")
            .bind(key.as_str())
            .fetch_one(&mut *self.0)
            .await?;
        Ok(KeyClaim::Taken {
            fingerprint: row.try_get("fingerprint")?,
            response: row.try_get("response")?,
        })
    }

    /// ORDER BY is applied before FOR UPDATE takes the row locks, so the
    /// locks are taken in id order.
    async fn lock_wallets(
        &mut self,
        ids: &[Uuid],
    ) -> Result<Vec<(WalletState, DateTime<Utc>)>, DbError> {
        let rows = sqlx::query(
            "SELECT id, user_id, balance, last_seq, created_at FROM wallets
             WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .bind(ids)
        .fetch_all(&mut *self.0)
        .await?;
        let locked = rows
            .iter()
            .map(|row| {
                let state = WalletState {
                    id: row.try_get("id")?,
                    user_id: row.try_get("user_id")?,
                    balance: row.try_get("balance")?,
                    last_seq: row.try_get("last_seq")?,
                };
                Ok((state, row.try_get("created_at")?))
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(locked)
    }

    async fn update_wallets(&mut self, wallets: &[&WalletState]) -> Result<DateTime<Utc>, DbError> {
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
        .fetch_one(&mut *self.0)
        .await?;
        Ok(row.try_get("now")?)
    }

    async fn write_entries(
        &mut self,
        entries: &[NewEntry],
        committed_at: DateTime<Utc>,
        key: Option<&IdempotencyKey>,
    ) -> Result<(), DbError> {
        let column = |f: fn(&NewEntry) -> Option<Uuid>| entries.iter().map(f).collect::<Vec<_>>();
        let event_ids: Vec<Uuid> = entries.iter().map(|e| e.event_id).collect();
        let wallet_ids: Vec<Uuid> = entries.iter().map(|e| e.wallet_id).collect();
        let seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
        let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
        let amounts: Vec<Decimal> = entries.iter().map(|e| e.amount).collect();
        let balances: Vec<Decimal> = entries.iter().map(|e| e.balance_after).collect();
        let payloads: Vec<String> = entries
            .iter()
            .map(|e| e.event(committed_at).to_json_text())
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
        .bind(key.map(IdempotencyKey::as_str))
        .execute(&mut *self.0)
        .await?;
        sqlx::query(
            "INSERT INTO outbox (event_id, wallet_id, payload)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[])",
        )
        .bind(&event_ids)
        .bind(&wallet_ids)
        .bind(&payloads)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn record_response(
        &mut self,
        key: &IdempotencyKey,
        response: Box<serde_json::value::RawValue>,
    ) -> Result<(), DbError> {
        sqlx::query("UPDATE idempotency_keys SET response = $2 WHERE key = $1")
            .bind(key.as_str())
            .bind(sqlx::types::Json(response))
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn commit(self) -> Result<(), DbError> {
        Ok(self.0.commit().await?)
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
