//! The production backend of the store: the transaction steps as SQL on
//! PostgreSQL, through a sqlx pool, each step one statement. Locks are row
//! locks (`FOR UPDATE`), the idempotency key is claimed by inserting it (a
//! concurrent insert of the same key waits on the unique index), and time
//! is the database's `clock_timestamp()`. A commit that wrote outbox rows
//! wakes this process's relay ([`OutboxWake`]).

use std::sync::Arc;

use rust_decimal::Decimal;
use sqlx::{PgPool, Postgres, Row, Transaction, postgres::PgRow};
use uuid::Uuid;
use wallet_events::{IdempotencyKey, UserId};

use super::{
    Wallet,
    db::{Change, Claim, DbError, KeyToClaim, Locked, WalletDb, WalletTx},
};
use crate::domain::{NewEntry, WalletState};

/// The wallet database on PostgreSQL.
#[derive(Clone)]
pub struct PgWalletDb {
    pool: PgPool,
    wake: OutboxWake,
}

/// Raised after each commit of this process that wrote outbox rows; the
/// relay waits on it when idle. In-process on purpose: a NOTIFY from the
/// committing transaction (the first design) takes a cluster-wide lock
/// that PostgreSQL holds until the commit is durable, so every notifying
/// commit waited for the one before it to reach the disk. Measured with
/// the bench's model on one durable cluster, 16 clients: 1,794 and 1,904
/// transactions/s with the trigger, 2,899/s without. Rows committed by
/// another wallet process are found by that process's relay, or by the
/// idle poll.
#[derive(Clone, Default)]
pub struct OutboxWake(Arc<tokio::sync::Notify>);

impl OutboxWake {
    /// Wakes the relay; a wake with no relay waiting is kept for its next
    /// wait (one, however many commits came meanwhile).
    pub fn raise(&self) {
        self.0.notify_one();
    }

    /// Completes at the next raise, or at once if one is kept.
    pub async fn raised(&self) {
        self.0.notified().await;
    }
}

impl PgWalletDb {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            wake: OutboxWake::default(),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// What this database's commits raise when they wrote outbox rows.
    pub fn outbox_wake(&self) -> &OutboxWake {
        &self.wake
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
        Ok(PgWalletTx {
            tx: self.pool.begin().await?,
            wake: self.wake.clone(),
            wrote_outbox: false,
        })
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
pub struct PgWalletTx {
    tx: Transaction<'static, Postgres>,
    wake: OutboxWake,
    /// Whether [`WalletTx::write`] wrote ledger entries (each with its
    /// outbox row): its commit has rows to publish.
    wrote_outbox: bool,
}

impl WalletTx for PgWalletTx {
    async fn insert_wallet(&mut self, wallet: &WalletState) -> Result<Wallet, DbError> {
        let row = sqlx::query(
            "INSERT INTO wallets (id, user_id, balance, last_seq, created_at, updated_at)
             VALUES ($1, $2, 0, 1, clock_timestamp(), clock_timestamp())
             RETURNING id, user_id, balance, created_at, updated_at",
        )
        .bind(wallet.id)
        .bind(&wallet.user_id)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(wallet_from_row(&row)?)
    }

    /// One statement: the claim is an insert that waits on the unique index
    /// while another transaction holds the key; the lock is taken only if
    /// the claim succeeded (ORDER BY is applied before FOR UPDATE, so in id
    /// order); the time is read after every lock is held (the aggregate
    /// over the locked rows completes first).
    async fn claim_and_lock(
        &mut self,
        key: Option<KeyToClaim<'_>>,
        ids: &[Uuid],
    ) -> Result<Claim, DbError> {
        let rows = sqlx::query(
            "WITH claim AS (
                 INSERT INTO idempotency_keys (key, fingerprint)
                 SELECT $2::text, $3::text WHERE $2::text IS NOT NULL
                 ON CONFLICT (key) DO NOTHING RETURNING key),
             locked AS (
                 SELECT id, user_id, balance, last_seq, created_at FROM wallets
                 WHERE id = ANY($1) AND ($2::text IS NULL OR EXISTS (SELECT FROM claim))
                 ORDER BY id FOR UPDATE),
             stamp AS (
                 SELECT clock_timestamp() AS now, (SELECT count(*) FROM claim) AS claimed
                 FROM (SELECT count(*) FROM locked) AS all_locked)
             SELECT s.now, s.claimed, l.id, l.user_id, l.balance, l.last_seq, l.created_at
             FROM stamp s LEFT JOIN locked l ON true ORDER BY l.id",
        )
        .bind(ids)
        .bind(key.map(|k| k.key.as_str()))
        .bind(key.map(|k| k.fingerprint))
        .fetch_all(&mut *self.tx)
        .await?;
        let first = rows
            .first()
            .ok_or_else(|| DbError::Other(anyhow::anyhow!("claim and lock returned no row")))?;
        let claimed: i64 = first.try_get("claimed")?;
        if let Some(key) = key
            && claimed == 0
        {
            let row =
                sqlx::query("SELECT fingerprint, response FROM idempotency_keys WHERE key = $1")
                    .bind(key.key.as_str())
                    .fetch_one(&mut *self.tx)
                    .await?;
            return Ok(Claim::Taken {
                fingerprint: row.try_get("fingerprint")?,
                response: row.try_get("response")?,
            });
        }
        let now = first.try_get("now")?;
        let mut wallets = Vec::with_capacity(rows.len());
        for row in &rows {
            let Some(id) = row.try_get::<Option<Uuid>, _>("id")? else {
                continue;
            };
            let state = WalletState {
                id,
                user_id: row.try_get("user_id")?,
                balance: row.try_get("balance")?,
                last_seq: row.try_get("last_seq")?,
            };
            wallets.push((state, row.try_get("created_at")?));
        }
        Ok(Claim::Locked(Locked { wallets, now }))
    }

    /// One statement of data-modifying CTEs. The outbox's foreign key to
    /// the ledger is checked at the statement's end, when the entries
    /// inserted beside it are there; the relay is woken after the commit.
    async fn write(&mut self, change: Change<'_>) -> Result<(), DbError> {
        let Change {
            wallets,
            entries,
            at,
            key,
            response,
        } = change;
        let wallet_ids: Vec<Uuid> = wallets.iter().map(|w| w.id).collect();
        let balances: Vec<Decimal> = wallets.iter().map(|w| w.balance).collect();
        let last_seqs: Vec<i64> = wallets.iter().map(|w| w.last_seq).collect();
        let column = |f: fn(&NewEntry) -> Option<Uuid>| entries.iter().map(f).collect::<Vec<_>>();
        let event_ids: Vec<Uuid> = entries.iter().map(|e| e.event_id).collect();
        let entry_wallets: Vec<Uuid> = entries.iter().map(|e| e.wallet_id).collect();
        let seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
        let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
        let amounts: Vec<Decimal> = entries.iter().map(|e| e.amount).collect();
        let balances_after: Vec<Decimal> = entries.iter().map(|e| e.balance_after).collect();
        let payloads: Vec<String> = entries.iter().map(|e| e.event(at).to_json_text()).collect();
        sqlx::query(
            "WITH changed AS (
                 UPDATE wallets w SET balance = c.balance, last_seq = c.last_seq, updated_at = $12
                 FROM UNNEST($1::uuid[], $2::numeric[], $3::bigint[]) AS c(id, balance, last_seq)
                 WHERE w.id = c.id),
             entries AS (
                 INSERT INTO ledger_entries (id, wallet_id, seq, kind, amount, balance_after,
                                             transfer_id, counterparty_wallet_id, created_at, request_key)
                 SELECT e.*, $12::timestamptz, $13::text
                 FROM UNNEST($4::uuid[], $5::uuid[], $6::bigint[], $7::text[],
                             $8::numeric[], $9::numeric[], $10::uuid[], $11::uuid[]) AS e),
             published AS (
                 INSERT INTO outbox (event_id, wallet_id, payload)
                 SELECT * FROM UNNEST($4::uuid[], $5::uuid[], $14::text[])),
             answered AS (
                 UPDATE idempotency_keys SET response = $15 WHERE key = $13 AND $15 IS NOT NULL)
             SELECT 1",
        )
        .bind(&wallet_ids)
        .bind(&balances)
        .bind(&last_seqs)
        .bind(&event_ids)
        .bind(&entry_wallets)
        .bind(&seqs)
        .bind(&kinds)
        .bind(&amounts)
        .bind(&balances_after)
        .bind(column(|e| e.transfer_id))
        .bind(column(|e| e.counterparty_wallet_id))
        .bind(at)
        .bind(key.map(IdempotencyKey::as_str))
        .bind(&payloads)
        .bind(response.map(sqlx::types::Json))
        .execute(&mut *self.tx)
        .await?;
        self.wrote_outbox |= !entries.is_empty();
        Ok(())
    }

    async fn commit(self) -> Result<(), DbError> {
        self.tx.commit().await?;
        if self.wrote_outbox {
            self.wake.raise();
        }
        Ok(())
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
