//! The production backend of [`super::apply_batch`]: the history steps as
//! SQL on PostgreSQL. The heads' locks are row locks taken by an upsert,
//! so a wallet seen for the first time is locked like any other; the
//! batch's entries and heads are written with arrays, a statement each.

use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;
use wallet_events::WalletEvent;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::{ApplyError, Entry, Head, HistoryDb, HistoryTx, Incoming, Parked};

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
    async fn lock_heads(&mut self, wallet_ids: &[Uuid]) -> Result<Vec<Head>, ApplyError> {
        // Rows are inserted (and so locked) in the order given.
        let rows = sqlx::query(
            "INSERT INTO wallet_heads (wallet_id, last_seq, balance)
             SELECT id, 0, 0 FROM UNNEST($1::uuid[]) WITH ORDINALITY AS given(id, n) ORDER BY n
             ON CONFLICT (wallet_id) DO UPDATE SET wallet_id = EXCLUDED.wallet_id
             RETURNING wallet_id, last_seq, balance, parked",
        )
        .bind(wallet_ids)
        .fetch_all(&mut *self.0)
        .await?;
        let mut heads = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            let head = Head {
                last_seq: row.try_get("last_seq")?,
                balance: row.try_get("balance")?,
                parked: i64::from(row.try_get::<i32, _>("parked")?),
            };
            heads.insert(row.try_get::<Uuid, _>("wallet_id")?, head);
        }
        wallet_ids
            .iter()
            .map(|id| {
                heads.get(id).copied().ok_or_else(|| {
                    ApplyError::Other(anyhow::anyhow!("the head of wallet {id} was not locked"))
                })
            })
            .collect()
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

    async fn insert_entries(&mut self, entries: &[Entry]) -> Result<(), ApplyError> {
        let column = |f: fn(&WalletEvent) -> Option<Uuid>| {
            entries.iter().map(|e| f(&e.event)).collect::<Vec<_>>()
        };
        let event_ids: Vec<Uuid> = entries.iter().map(|e| e.event.event_id).collect();
        let wallet_ids: Vec<Uuid> = entries.iter().map(|e| e.event.wallet_id).collect();
        let user_ids: Vec<&str> = entries.iter().map(|e| e.event.user_id.as_str()).collect();
        let seqs: Vec<i64> = entries.iter().map(|e| e.event.seq).collect();
        let kinds: Vec<&str> = entries.iter().map(|e| e.event.kind.as_str()).collect();
        let amounts: Vec<Decimal> = entries.iter().map(|e| e.event.amount).collect();
        let balances: Vec<Decimal> = entries.iter().map(|e| e.event.balance_after).collect();
        let committed: Vec<DateTime<Utc>> = entries.iter().map(|e| e.event.committed_at).collect();
        let partitions: Vec<i32> = entries.iter().map(|e| e.partition).collect();
        let offsets: Vec<i64> = entries.iter().map(|e| e.offset).collect();
        sqlx::query(
            "INSERT INTO history_entries (event_id, wallet_id, user_id, seq, kind, amount, balance_after,
                                          transfer_id, counterparty_wallet_id, committed_at,
                                          source_partition, source_offset)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::text[],
                                  $6::numeric[], $7::numeric[], $8::uuid[], $9::uuid[],
                                  $10::timestamptz[], $11::int[], $12::bigint[])",
        )
        .bind(&event_ids)
        .bind(&wallet_ids)
        .bind(&user_ids)
        .bind(&seqs)
        .bind(&kinds)
        .bind(&amounts)
        .bind(&balances)
        .bind(column(|e| e.transfer_id))
        .bind(column(|e| e.counterparty_wallet_id))
        .bind(&committed)
        .bind(&partitions)
        .bind(&offsets)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn update_heads(&mut self, heads: &[(Uuid, Head)]) -> Result<(), ApplyError> {
        let ids: Vec<Uuid> = heads.iter().map(|(id, _)| *id).collect();
        let seqs: Vec<i64> = heads.iter().map(|(_, h)| h.last_seq).collect();
        let balances: Vec<Decimal> = heads.iter().map(|(_, h)| h.balance).collect();
        let parked: Vec<i32> = heads
            .iter()
            .map(|(_, h)| i32::try_from(h.parked).unwrap_or(i32::MAX))
            .collect();
        sqlx::query(
            "UPDATE wallet_heads h SET last_seq = c.last_seq, balance = c.balance, parked = c.parked
             FROM UNNEST($1::uuid[], $2::bigint[], $3::numeric[], $4::int[])
                  AS c(wallet_id, last_seq, balance, parked)
             WHERE h.wallet_id = c.wallet_id",
        )
        .bind(&ids)
        .bind(&seqs)
        .bind(&balances)
        .bind(&parked)
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
