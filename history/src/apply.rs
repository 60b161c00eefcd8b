//! Applying events to the history database, exactly once and in order.
//!
//! A batch of messages is applied in one transaction. Per event: the wallet's
//! head row is locked; an event at or below the head's sequence number is a
//! duplicate and changes nothing (the duplicate guard; `event_id` is also the
//! primary key), unless it claims a sequence number another event already
//! holds, which goes to `dead_letters`; an event more than one ahead waits in `parked_events` until
//! its predecessor arrives; the next event is written and then any parked
//! successors follow. An undecodable message goes to `dead_letters` with its
//! raw bytes and coordinates. The consumer stores offsets only after the
//! transaction commits, so a crash anywhere means re-delivery, never loss.

use rust_decimal::Decimal;
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;
use wallet_events::WalletEvent;

/// A message as received from the topic, owned.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub applied: u64,
    pub duplicates: u64,
    pub parked: u64,
    pub dead_lettered: u64,
}

enum Effect {
    Applied(u64),
    Duplicate,
    Parked,
}

/// Applies `batch` in one transaction; nothing is applied if it fails.
pub async fn apply_batch(pool: &PgPool, batch: &[Incoming]) -> Result<BatchStats, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut stats = BatchStats::default();
    let mut parked_exist: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM parked_events)")
        .fetch_one(&mut *tx)
        .await?;
    for message in batch {
        let payload = message.payload.as_deref().unwrap_or_default();
        let event = match WalletEvent::decode(payload) {
            Ok(event) => event,
            Err(err) => {
                tracing::error!(
                    partition = message.partition,
                    offset = message.offset,
                    error = %err,
                    "undecodable message moved to dead_letters"
                );
                dead_letter(&mut tx, message, &err.to_string()).await?;
                stats.dead_lettered += 1;
                continue;
            }
        };
        match apply_event(&mut tx, &event, payload, message, parked_exist).await? {
            Effect::Applied(count) => stats.applied += count,
            Effect::Duplicate => stats.duplicates += 1,
            Effect::Parked => {
                stats.parked += 1;
                parked_exist = true;
            }
        }
    }
    tx.commit().await?;
    Ok(stats)
}

async fn apply_event(
    tx: &mut Transaction<'_, Postgres>,
    event: &WalletEvent,
    payload: &[u8],
    source: &Incoming,
    parked_exist: bool,
) -> Result<Effect, sqlx::Error> {
    let head = lock_head(tx, event.wallet_id).await?;
    if event.seq <= head.last_seq {
        drop_duplicate(tx, event, source).await?;
        return Ok(Effect::Duplicate);
    }
    if event.seq > head.last_seq + 1 {
        park(tx, event, payload, source).await?;
        tracing::debug!(wallet_id = %event.wallet_id, seq = event.seq, last_seq = head.last_seq, "event parked until its predecessor arrives");
        return Ok(Effect::Parked);
    }
    assert_eq!(
        event.seq,
        head.last_seq + 1,
        "only a wallet's next event is applied"
    );
    insert_entry(tx, event, source.partition, source.offset).await?;
    let mut head = Head {
        last_seq: event.seq,
        balance: head.balance + event.signed_amount(),
    };
    let mut applied = 1;
    if parked_exist {
        applied += apply_parked_successors(tx, event.wallet_id, &mut head).await?;
    }
    sqlx::query("UPDATE wallet_heads SET last_seq = $2, balance = $3 WHERE wallet_id = $1")
        .bind(event.wallet_id)
        .bind(head.last_seq)
        .bind(head.balance)
        .execute(&mut **tx)
        .await?;
    Ok(Effect::Applied(applied))
}

/// A wallet's newest applied sequence number and running balance.
struct Head {
    last_seq: i64,
    balance: Decimal,
}

/// Creates the wallet's head on first sight and locks it either way.
async fn lock_head(
    tx: &mut Transaction<'_, Postgres>,
    wallet_id: Uuid,
) -> Result<Head, sqlx::Error> {
    let head = sqlx::query(
        "INSERT INTO wallet_heads (wallet_id, last_seq, balance) VALUES ($1, 0, 0)
         ON CONFLICT (wallet_id) DO UPDATE SET wallet_id = EXCLUDED.wallet_id
         RETURNING last_seq, balance",
    )
    .bind(wallet_id)
    .fetch_one(&mut **tx)
    .await?;
    Ok(Head {
        last_seq: head.try_get("last_seq")?,
        balance: head.try_get("balance")?,
    })
}

/// An event at or below the head: the same event again changes nothing;
/// another event claiming a taken seq goes to `dead_letters`.
async fn drop_duplicate(
    tx: &mut Transaction<'_, Postgres>,
    event: &WalletEvent,
    source: &Incoming,
) -> Result<(), sqlx::Error> {
    let applied: Option<Uuid> = sqlx::query_scalar(
        "SELECT event_id FROM history_entries WHERE wallet_id = $1 AND seq = $2",
    )
    .bind(event.wallet_id)
    .bind(event.seq)
    .fetch_optional(&mut **tx)
    .await?;
    if applied != Some(event.event_id) {
        let reason = format!(
            "event {} claims seq {} of wallet {}, already taken by {:?}",
            event.event_id, event.seq, event.wallet_id, applied
        );
        tracing::error!(%reason, "conflicting event moved to dead_letters");
        dead_letter(tx, source, &reason).await?;
    }
    Ok(())
}

async fn park(
    tx: &mut Transaction<'_, Postgres>,
    event: &WalletEvent,
    payload: &[u8],
    source: &Incoming,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO parked_events (event_id, wallet_id, seq, payload, source_partition, source_offset)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event.event_id)
    .bind(event.wallet_id)
    .bind(event.seq)
    .bind(String::from_utf8_lossy(payload).as_ref())
    .bind(source.partition)
    .bind(source.offset)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Applies the parked events that follow `head`, in order, and returns
/// how many.
async fn apply_parked_successors(
    tx: &mut Transaction<'_, Postgres>,
    wallet_id: Uuid,
    head: &mut Head,
) -> Result<u64, sqlx::Error> {
    let mut applied = 0;
    loop {
        let next = sqlx::query(
            "DELETE FROM parked_events WHERE wallet_id = $1 AND seq = $2
             RETURNING payload, source_partition, source_offset",
        )
        .bind(wallet_id)
        .bind(head.last_seq + 1)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(row) = next else {
            return Ok(applied);
        };
        let payload: String = row.try_get("payload")?;
        // Only decoded events are parked, and the payload is stored as it
        // arrived; stopping here would strand its successors.
        let parked = WalletEvent::decode(payload.as_bytes())
            .expect("a parked event decoded when it was parked");
        assert_eq!(
            (parked.wallet_id, parked.seq),
            (wallet_id, head.last_seq + 1),
            "the row unparked is the wallet's next event"
        );
        insert_entry(
            tx,
            &parked,
            row.try_get("source_partition")?,
            row.try_get("source_offset")?,
        )
        .await?;
        head.last_seq = parked.seq;
        head.balance += parked.signed_amount();
        applied += 1;
    }
}

async fn insert_entry(
    tx: &mut Transaction<'_, Postgres>,
    event: &WalletEvent,
    partition: i32,
    offset: i64,
) -> Result<(), sqlx::Error> {
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
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn dead_letter(
    tx: &mut Transaction<'_, Postgres>,
    message: &Incoming,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO dead_letters (topic, partition, \"offset\", key, payload, error)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (topic, partition, \"offset\") DO NOTHING",
    )
    .bind(&message.topic)
    .bind(message.partition)
    .bind(message.offset)
    .bind(message.key.as_deref())
    .bind(message.payload.as_deref())
    .bind(error)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
