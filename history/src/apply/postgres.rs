//! The production backend of [`super::apply_batch`]: the history steps as
//! SQL on PostgreSQL. The head's lock is a row lock taken by an upsert, so
//! a wallet seen for the first time is locked like any other.

use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;
use wallet_events::WalletEvent;

use super::{ApplyError, Head, HistoryDb, HistoryTx, Incoming, Parked};

/// The history database on PostgreSQL.
#[derive(Clone)]
pub struct PgHistoryDb {
    pool: PgPool,
}

impl PgHistoryDb {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// Constraint violations (class 23) and values a column cannot hold (class
/// 22: too long, out of range, a NUL in text) are the statement's fault;
/// the rest is the database's.
impl From<sqlx::Error> for ApplyError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err
            && db
                .code()
                .is_some_and(|code| code.starts_with("23") || code.starts_with("22"))
        {
            return ApplyError::Constraint(db.message().to_owned());
        }
        ApplyError::Other(err.into())
    }
}

impl HistoryDb for PgHistoryDb {
    type Tx = PgHistoryTx;

    async fn begin(&self) -> Result<PgHistoryTx, ApplyError> {
        Ok(PgHistoryTx(self.pool.begin().await?))
    }
}

pub struct PgHistoryTx(Transaction<'static, Postgres>);

impl HistoryTx for PgHistoryTx {
    async fn lock_head(&mut self, wallet_id: Uuid) -> Result<Head, ApplyError> {
        let head = sqlx::query(
            "INSERT INTO wallet_heads (wallet_id, last_seq, balance) VALUES ($1, 0, 0)
             ON CONFLICT (wallet_id) DO UPDATE SET wallet_id = EXCLUDED.wallet_id
             RETURNING last_seq, balance, parked",
        )
        .bind(wallet_id)
        .fetch_one(&mut *self.0)
        .await?;
        Ok(Head {
            last_seq: head.try_get("last_seq")?,
            balance: head.try_get("balance")?,
            parked: i64::from(head.try_get::<i32, _>("parked")?),
        })
    }

    async fn event_at(&mut self, wallet_id: Uuid, seq: i64) -> Result<Option<Uuid>, ApplyError> {
        Ok(sqlx::query_scalar(
            "SELECT event_id FROM history_entries WHERE wallet_id = $1 AND seq = $2",
        )
        .bind(wallet_id)
        .bind(seq)
        .fetch_optional(&mut *self.0)
        .await?)
    }

    async fn park(
        &mut self,
        event: &WalletEvent,
        payload: &[u8],
        source: &Incoming,
    ) -> Result<bool, ApplyError> {
        let inserted = sqlx::query(
            "INSERT INTO parked_events (event_id, wallet_id, seq, payload, source_partition, source_offset)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event.event_id)
        .bind(event.wallet_id)
        .bind(event.seq)
        .bind(String::from_utf8_lossy(payload).as_ref())
        .bind(source.partition)
        .bind(source.offset)
        .execute(&mut *self.0)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn take_parked(
        &mut self,
        wallet_id: Uuid,
        seq: i64,
    ) -> Result<Option<Parked>, ApplyError> {
        let row = sqlx::query(
            "DELETE FROM parked_events WHERE wallet_id = $1 AND seq = $2
             RETURNING payload, source_partition, source_offset",
        )
        .bind(wallet_id)
        .bind(seq)
        .fetch_optional(&mut *self.0)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Parked {
            payload: row.try_get("payload")?,
            partition: row.try_get("source_partition")?,
            offset: row.try_get("source_offset")?,
        }))
    }

    async fn insert_entry(
        &mut self,
        event: &WalletEvent,
        partition: i32,
        offset: i64,
    ) -> Result<(), ApplyError> {
        sqlx::query(
            "INSERT INTO history_entries (event_id, wallet_id, user_id, seq, kind, amount, balance_after,
                                          transfer_id, counterparty_wallet_id, committed_at,
                                          source_partition, source_offset)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(event.event_id)
        .bind(event.wallet_id)
        .bind(&event.user_id)
        .bind(event.seq)
        .bind(event.kind.as_str())
        .bind(event.amount)
        .bind(event.balance_after)
        .bind(event.transfer_id)
        .bind(event.counterparty_wallet_id)
        .bind(event.committed_at)
        .bind(partition)
        .bind(offset)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn update_head(&mut self, wallet_id: Uuid, head: Head) -> Result<(), ApplyError> {
        sqlx::query(
            "UPDATE wallet_heads SET last_seq = $2, balance = $3, parked = $4 WHERE wallet_id = $1",
        )
        .bind(wallet_id)
        .bind(head.last_seq)
        .bind(head.balance)
        .bind(i32::try_from(head.parked).unwrap_or(i32::MAX))
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn dead_letter(&mut self, message: &Incoming, error: &str) -> Result<(), ApplyError> {
        sqlx::query(
            "INSERT INTO dead_letters (topic, partition, \"offset\", key, payload, error)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (topic, partition, \"offset\") DO NOTHING",
        )
        .bind(&message.topic)
        .bind(message.partition)
        .bind(message.offset)
        .bind(message.key.as_deref())
        .bind(message.payload.as_deref())
        .bind(error.replace('\0', "\\0"))
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn commit(self) -> Result<(), ApplyError> {
        Ok(self.0.commit().await?)
    }
}

/// What a replay of the dead letters did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Dead letters that now applied (or were already applied) and left
    /// `dead_letters`.
    pub released: u64,
    /// Dead letters still refused; they stay, with their reason.
    pub still_refused: u64,
}

/// Applies every dead letter again, as it first arrived (same topic,
/// partition and offset), in id order. One that now applies leaves
/// `dead_letters`, and its wallet's parked successors follow it; one that
/// is still refused stays. For after the cause is fixed (a schema that now
/// holds the value, a predecessor that arrived).
pub async fn replay_dead_letters(pool: &PgPool) -> Result<Replayed, ApplyError> {
    let rows = sqlx::query(
        "SELECT id, topic, partition, \"offset\", key, payload FROM dead_letters ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    let db = PgHistoryDb::new(pool.clone());
    let mut replayed = Replayed::default();
    for row in rows {
        let id: i64 = row.try_get("id")?;
        let message = Incoming {
            topic: row.try_get("topic")?,
            partition: row.try_get("partition")?,
            offset: row.try_get("offset")?,
            key: row.try_get("key")?,
            payload: row.try_get("payload")?,
        };
        let stats = super::apply_batch(&db, std::slice::from_ref(&message)).await?;
        if stats.dead_lettered == 0 {
            sqlx::query("DELETE FROM dead_letters WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await?;
            replayed.released += 1;
        } else {
            replayed.still_refused += 1;
        }
    }
    Ok(replayed)
}
