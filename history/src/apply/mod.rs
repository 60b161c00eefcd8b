//! Applying events to the history database, exactly once and in order.
//!
//! A batch of messages is applied in one transaction. The heads of every
//! wallet in the batch are locked first, in wallet id order, in one
//! statement. Per event, against the heads as the batch changes them: an
//! event at or below the head's sequence number is a duplicate and changes
//! nothing (the duplicate guard; `event_id` is also the primary key),
//! unless it claims a sequence number another event already holds, which
//! goes to `dead_letters`; an event more than one ahead waits in
//! `parked_events` until its predecessor arrives; the next event is
//! written and then any parked successors follow. The entries and the
//! changed heads are written at the end, a statement each, so a batch
//! costs a few statements, not a few per event. An undecodable message
//! goes to `dead_letters` with its raw bytes and coordinates. The consumer
//! stores offsets only after the transaction commits, so a crash anywhere
//! means re-delivery, never loss.
//!
//! Every step on a wallet happens under its head's lock, so members of one
//! group applying batches at once see each other's parking: the head row
//! counts the wallet's parked events, parking raises the count and taking
//! a parked event lowers it, all under that lock. After applying an event
//! the count says whether to look for successors. The batch reads the count
//! once it holds the lock and keeps the lock to its end, so no other
//! member can park a successor it would miss (a member that read "nothing
//! parked" without the lock would strand one).
//!
//! [`apply_batch`] is written once over the steps of [`HistoryTx`];
//! PostgreSQL ([`postgres::PgHistoryDb`]) is the production backend, the
//! simulator's in-memory model another.

pub mod postgres;

use std::{collections::BTreeMap, future::Future};

use rust_decimal::Decimal;
use uuid::Uuid;
use wallet_events::WalletEvent;

pub use postgres::{PgHistoryDb, Replayed, replay_dead_letters};

/// A message as received from the topic, owned.
#[derive(Debug, Clone, PartialEq)]
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

/// A wallet's newest applied sequence number, running balance, and how
/// many of its events wait parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub last_seq: i64,
    pub balance: Decimal,
    pub parked: i64,
}

/// An event to write to `history_entries`, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub event: WalletEvent,
    pub partition: i32,
    pub offset: i64,
}

/// A parked event taken out of `parked_events`.
#[derive(Debug, Clone, PartialEq)]
pub struct Parked {
    pub payload: String,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A UNIQUE or CHECK constraint refused a statement.
    #[error("constraint violated: {0}")]
    Constraint(String),
    /// The database is unreachable, a connection broke, a query failed.
    #[error(transparent)]
    Other(anyhow::Error),
}

/// A history database: transactions.
pub trait HistoryDb: Clone + Send + Sync + 'static {
    type Tx: HistoryTx;

    fn begin(&self) -> impl Future<Output = Result<Self::Tx, ApplyError>> + Send;
}

/// One open transaction on the history database; dropped uncommitted, it
/// rolls back. A backend keeps the contract of `migrations/0001_history.sql`:
/// every UNIQUE and CHECK constraint, and row locks that wait.
pub trait HistoryTx: Send {
    /// Creates each wallet's head on first sight (`last_seq` 0) and locks
    /// them in the order given, waiting while another transaction holds
    /// one; returns the heads in that order. The orchestration passes the
    /// ids sorted, so two members never wait on each other in a cycle.
    fn lock_heads(
        &mut self,
        wallet_ids: &[Uuid],
    ) -> impl Future<Output = Result<Vec<Head>, ApplyError>> + Send;

    /// The event applied at `seq` of the wallet, if any.
    fn event_at(
        &mut self,
        wallet_id: Uuid,
        seq: i64,
    ) -> impl Future<Output = Result<Option<Uuid>, ApplyError>> + Send;

    /// Parks an event until its predecessor arrives (once per event id);
    /// true if it was not parked already.
    fn park(
        &mut self,
        event: &WalletEvent,
        payload: &[u8],
        source: &Incoming,
    ) -> impl Future<Output = Result<bool, ApplyError>> + Send;

    /// Takes the wallet's parked event at `seq` out of `parked_events`.
    fn take_parked(
        &mut self,
        wallet_id: Uuid,
        seq: i64,
    ) -> impl Future<Output = Result<Option<Parked>, ApplyError>> + Send;

    /// Inserts history entries, in one statement on PostgreSQL.
    fn insert_entries(
        &mut self,
        entries: &[Entry],
    ) -> impl Future<Output = Result<(), ApplyError>> + Send;

    /// Writes heads locked by [`HistoryTx::lock_heads`], in one statement
    /// on PostgreSQL.
    fn update_heads(
        &mut self,
        heads: &[(Uuid, Head)],
    ) -> impl Future<Output = Result<(), ApplyError>> + Send;

    /// Keeps a message that cannot be applied, with why (once per topic,
    /// partition and offset).
    fn dead_letter(
        &mut self,
        message: &Incoming,
        error: &str,
    ) -> impl Future<Output = Result<(), ApplyError>> + Send;

    fn commit(self) -> impl Future<Output = Result<(), ApplyError>> + Send;
}

enum Effect {
    Applied(u64),
    Duplicate,
    Parked,
    /// It claims a sequence number another event holds.
    DeadLettered,
}

/// Applies `batch` in one transaction; nothing is applied if it fails.
///
/// A message the database refuses (a decodable event with a value a
/// column cannot hold: an amount beyond NUMERIC(19,4), an over-long user
/// id, a NUL) must not block its batch, nor every partition behind it: the
/// batch is then applied message by message, and each refused message is
/// dead-lettered with the database's reason, in its own transaction. Any
/// other failure (the database is down) fails the batch, to be retried.
pub async fn apply_batch<D: HistoryDb>(
    db: &D,
    batch: &[Incoming],
) -> Result<BatchStats, ApplyError> {
    match apply_together(db, batch).await {
        Err(ApplyError::Constraint(reason)) => {
            tracing::warn!(%reason, messages = batch.len(), "a message was refused; applying the batch one by one");
            apply_each(db, batch).await
        }
        other => other,
    }
}

/// Each message in its own transaction; a refused one is dead-lettered.
async fn apply_each<D: HistoryDb>(db: &D, batch: &[Incoming]) -> Result<BatchStats, ApplyError> {
    let mut total = BatchStats::default();
    for message in batch {
        let stats = match apply_together(db, std::slice::from_ref(message)).await {
            Ok(stats) => stats,
            Err(ApplyError::Constraint(reason)) => {
                tracing::error!(
                    partition = message.partition,
                    offset = message.offset,
                    %reason,
                    "a message the database refuses moved to dead_letters"
                );
                let mut tx = db.begin().await?;
                tx.dead_letter(message, &format!("refused by the database: {reason}"))
                    .await?;
                tx.commit().await?;
                BatchStats {
                    dead_lettered: 1,
                    ..BatchStats::default()
                }
            }
            Err(other) => return Err(other),
        };
        total.applied += stats.applied;
        total.duplicates += stats.duplicates;
        total.parked += stats.parked;
        total.dead_lettered += stats.dead_lettered;
    }
    Ok(total)
}

/// The batch's working state: the heads it locked, as it changes them,
/// and the entries it will insert. Both are written once, at the end.
struct Work {
    heads: BTreeMap<Uuid, (Head, bool)>,
    entries: Vec<Entry>,
}

impl Work {
    fn head(&self, wallet_id: Uuid) -> Head {
        self.heads[&wallet_id].0
    }

    fn set_head(&mut self, wallet_id: Uuid, head: Head) {
        self.heads.insert(wallet_id, (head, true));
    }

    /// The event this batch already applied at `seq` of the wallet.
    fn applied_at(&self, wallet_id: Uuid, seq: i64) -> Option<Uuid> {
        self.entries
            .iter()
            .rev()
            .find(|e| (e.event.wallet_id, e.event.seq) == (wallet_id, seq))
            .map(|e| e.event.event_id)
    }
}

/// One transaction: decode the batch, lock every head it touches (in
/// wallet id order, in one statement), decide each event against the
/// heads in memory, then insert the entries and write the changed heads
/// (a statement each). Duplicates, parking and parked successors need a
/// statement of their own; they are the exception.
async fn apply_together<D: HistoryDb>(
    db: &D,
    batch: &[Incoming],
) -> Result<BatchStats, ApplyError> {
    let mut tx = db.begin().await?;
    let mut stats = BatchStats::default();
    let mut decoded = Vec::with_capacity(batch.len());
    for message in batch {
        let payload = message.payload.as_deref().unwrap_or_default();
        match WalletEvent::decode(payload) {
            Ok(event) => decoded.push((event, message)),
            Err(err) => {
                tracing::error!(
                    partition = message.partition,
                    offset = message.offset,
                    error = %err,
                    "undecodable message moved to dead_letters"
                );
                tx.dead_letter(message, &err.to_string()).await?;
                stats.dead_lettered += 1;
            }
        }
    }
    let mut wallet_ids: Vec<Uuid> = decoded.iter().map(|(e, _)| e.wallet_id).collect();
    wallet_ids.sort_unstable();
    wallet_ids.dedup();
    let mut work = Work {
        heads: BTreeMap::new(),
        entries: Vec::with_capacity(decoded.len()),
    };
    if !wallet_ids.is_empty() {
        let heads = tx.lock_heads(&wallet_ids).await?;
        assert_eq!(heads.len(), wallet_ids.len(), "one head per wallet locked");
        work.heads = wallet_ids
            .iter()
            .zip(heads)
            .map(|(&id, head)| (id, (head, false)))
            .collect();
    }
    for (event, message) in decoded {
        let payload = message.payload.as_deref().unwrap_or_default();
        match apply_event(&mut tx, &mut work, event, payload, message).await? {
            Effect::Applied(count) => stats.applied += count,
            Effect::Duplicate => stats.duplicates += 1,
            Effect::Parked => stats.parked += 1,
            Effect::DeadLettered => stats.dead_lettered += 1,
        }
    }
    if !work.entries.is_empty() {
        tx.insert_entries(&work.entries).await?;
    }
    let changed: Vec<(Uuid, Head)> = work
        .heads
        .iter()
        .filter(|(_, (_, changed))| *changed)
        .map(|(&id, &(head, _))| (id, head))
        .collect();
    if !changed.is_empty() {
        tx.update_heads(&changed).await?;
    }
    tx.commit().await?;
    Ok(stats)
}

async fn apply_event(
    tx: &mut impl HistoryTx,
    work: &mut Work,
    event: WalletEvent,
    payload: &[u8],
    source: &Incoming,
) -> Result<Effect, ApplyError> {
    let head = work.head(event.wallet_id);
    let guarded = !service_kit::canary::enabled("no-duplicate-guard");
    if event.seq <= head.last_seq && guarded {
        return Ok(if drop_duplicate(tx, work, &event, source).await? {
            Effect::DeadLettered
        } else {
            Effect::Duplicate
        });
    }
    if event.seq > head.last_seq + 1 {
        if tx.park(&event, payload, source).await? {
            let counted = Head {
                parked: head.parked + 1,
                ..head
            };
            work.set_head(event.wallet_id, counted);
        }
        tracing::debug!(wallet_id = %event.wallet_id, seq = event.seq, last_seq = head.last_seq, "event parked until its predecessor arrives");
        return Ok(Effect::Parked);
    }
    if guarded {
        assert_eq!(
            event.seq,
            head.last_seq + 1,
            "only a wallet's next event is applied"
        );
    }
    let wallet_id = event.wallet_id;
    let mut head = Head {
        last_seq: event.seq,
        balance: head.balance + event.signed_amount(),
        parked: head.parked,
    };
    work.entries.push(Entry {
        event,
        partition: source.partition,
        offset: source.offset,
    });
    let mut applied = 1;
    if head.parked > 0 {
        applied += apply_parked_successors(tx, work, wallet_id, &mut head).await?;
    }
    work.set_head(wallet_id, head);
    Ok(Effect::Applied(applied))
}

/// An event at or below the head: the same event again changes nothing;
/// another event claiming a taken seq goes to `dead_letters` (true).
async fn drop_duplicate(
    tx: &mut impl HistoryTx,
    work: &Work,
    event: &WalletEvent,
    source: &Incoming,
) -> Result<bool, ApplyError> {
    let applied = match work.applied_at(event.wallet_id, event.seq) {
        Some(id) => Some(id),
        None => tx.event_at(event.wallet_id, event.seq).await?,
    };
    if applied == Some(event.event_id) {
        return Ok(false);
    }
    let reason = format!(
        "event {} claims seq {} of wallet {}, already taken by {:?}",
        event.event_id, event.seq, event.wallet_id, applied
    );
    tracing::error!(%reason, "conflicting event moved to dead_letters");
    tx.dead_letter(source, &reason).await?;
    Ok(true)
}

/// Applies the parked events that follow `head`, in order, and returns
/// how many.
async fn apply_parked_successors(
    tx: &mut impl HistoryTx,
    work: &mut Work,
    wallet_id: Uuid,
    head: &mut Head,
) -> Result<u64, ApplyError> {
    let mut applied = 0;
    while let Some(parked) = tx.take_parked(wallet_id, head.last_seq + 1).await? {
        // Only decoded events are parked, and the payload is stored as it
        // arrived; stopping here would strand its successors.
        let event = WalletEvent::decode(parked.payload.as_bytes())
            .expect("a parked event decoded when it was parked");
        assert_eq!(
            (event.wallet_id, event.seq),
            (wallet_id, head.last_seq + 1),
            "the row unparked is the wallet's next event"
        );
        head.last_seq = event.seq;
        head.balance += event.signed_amount();
        head.parked -= 1;
        assert!(head.parked >= 0, "the parked count counts the parked rows");
        work.entries.push(Entry {
            event,
            partition: parked.partition,
            offset: parked.offset,
        });
        applied += 1;
    }
    Ok(applied)
}
