//! The history database on the PostgreSQL model: its tables, and the
//! history service's apply backend over them.

use std::collections::{BTreeMap, BTreeSet};

use consistency_checker::snapshot::{DeadLetterRow, HistoryRow, ParkedRow};
use history::apply::{ApplyError, Entry, Head, HistoryDb, HistoryTx, Incoming, Parked};
use rust_decimal::Decimal;
use uuid::Uuid;
use wallet_events::WalletEvent;

use super::{
    FixedMap, FixedSet, Lock, PgError, PgState, Postgres, TxId, clock_timestamp, numeric_19_4, text,
};
use crate::world;

/// `user_id VARCHAR(100)`.
const USER_ID_CHARS_MAX: usize = 100;

/// A parked event with its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct ParkedRecord {
    pub view: ParkedRow,
    pub payload: String,
}

/// The committed rows of the history database.
#[derive(Debug, Default)]
pub struct Tables {
    /// By event id (the primary key), with the commit that applied it;
    /// boxed, as the wallet model's ledger is.
    /// (The snapshot sorts them by commit.)
    pub entries: FixedMap<Uuid, (u64, Box<HistoryRow>)>,
    /// UNIQUE (wallet_id, seq).
    pub by_seq: FixedMap<(Uuid, i64), Uuid>,
    pub heads: BTreeMap<Uuid, Head>,
    pub parked: BTreeMap<Uuid, ParkedRecord>,
    /// The index `parked_by_wallet (wallet_id, seq)`.
    pub parked_by_seq: BTreeMap<(Uuid, i64), BTreeSet<Uuid>>,
    /// UNIQUE (topic, partition, offset).
    pub dead_letters: BTreeMap<(String, i32, i64), DeadLetterRow>,
    pub next_dead_letter_id: i64,
}

impl Tables {
    /// Empty tables whose hash indexes hold `rows` without rehashing.
    pub fn sized(rows: usize) -> Tables {
        Tables {
            entries: FixedMap::with_capacity_and_hasher(rows, Default::default()),
            by_seq: FixedMap::with_capacity_and_hasher(rows, Default::default()),
            ..Tables::default()
        }
    }
}

impl From<PgError> for ApplyError {
    fn from(err: PgError) -> Self {
        match err {
            PgError::Constraint(cause) => ApplyError::Constraint(cause),
            PgError::Conflict(cause) | PgError::Connection(cause) => {
                ApplyError::Other(anyhow::anyhow!(cause))
            }
        }
    }
}

/// The history database of a [`Postgres`] model.
#[derive(Clone)]
pub struct SimHistoryDb {
    pub pg: Postgres,
}

/// An open transaction and the writes it will commit.
pub struct SimHistoryTx {
    pg: Postgres,
    tx: TxId,
    done: bool,
    entries: Vec<HistoryRow>,
    /// This transaction's entries by (wallet, seq), and their event ids.
    entry_seqs: BTreeMap<(Uuid, i64), Uuid>,
    entry_ids: FixedSet<Uuid>,
    heads: BTreeMap<Uuid, Head>,
    parked: BTreeMap<Uuid, ParkedRecord>,
    unparked: Vec<Uuid>,
    dead_letters: Vec<DeadLetterRow>,
}

impl Drop for SimHistoryTx {
    fn drop(&mut self) {
        if !self.done {
            let wrote = !(self.entries.is_empty()
                && self.heads.is_empty()
                && self.parked.is_empty()
                && self.unparked.is_empty()
                && self.dead_letters.is_empty());
            self.pg.rollback(self.tx, wrote);
        }
    }
}

impl HistoryDb for SimHistoryDb {
    type Tx = SimHistoryTx;

    async fn begin(&self) -> Result<SimHistoryTx, ApplyError> {
        world::io("history.begin").await;
        let tx = self.pg.begin()?;
        Ok(SimHistoryTx {
            pg: self.pg.clone(),
            tx,
            done: false,
            entries: Vec::new(),
            entry_seqs: BTreeMap::new(),
            entry_ids: FixedSet::default(),
            heads: BTreeMap::new(),
            parked: BTreeMap::new(),
            unparked: Vec::new(),
            dead_letters: Vec::new(),
        })
    }
}

impl SimHistoryTx {
    fn entry_at(&self, state: &PgState, wallet_id: Uuid, seq: i64) -> Option<Uuid> {
        self.entry_seqs
            .get(&(wallet_id, seq))
            .or_else(|| state.history.by_seq.get(&(wallet_id, seq)))
            .copied()
    }

    fn has_entry(&self, state: &PgState, event_id: Uuid) -> bool {
        self.entry_ids.contains(&event_id) || state.history.entries.contains_key(&event_id)
    }

    /// The parked row of (wallet, seq) this transaction sees: its own, or
    /// a committed one it has not deleted (the lowest event id if several).
    fn parked_at(&self, state: &PgState, wallet_id: Uuid, seq: i64) -> Option<ParkedRecord> {
        let matches = |r: &&ParkedRecord| (r.view.wallet_id, r.view.seq) == (wallet_id, seq);
        self.parked.values().find(matches).cloned().or_else(|| {
            state
                .history
                .parked_by_seq
                .get(&(wallet_id, seq))?
                .iter()
                .find(|id| !self.unparked.contains(id))
                .and_then(|id| state.history.parked.get(id))
                .cloned()
        })
    }

    fn apply(&mut self, state: &mut PgState) {
        let commit = state.commits + 1;
        let tables = &mut state.history;
        for id in self.unparked.drain(..) {
            if let Some(record) = tables.parked.remove(&id) {
                let key = (record.view.wallet_id, record.view.seq);
                if let Some(ids) = tables.parked_by_seq.get_mut(&key) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        tables.parked_by_seq.remove(&key);
                    }
                }
            }
        }
        for (id, record) in std::mem::take(&mut self.parked) {
            let key = (record.view.wallet_id, record.view.seq);
            tables.parked_by_seq.entry(key).or_default().insert(id);
            tables.parked.insert(id, record);
        }
        for row in self.entries.drain(..) {
            tables.by_seq.insert((row.wallet_id, row.seq), row.event_id);
            tables.entries.insert(row.event_id, (commit, Box::new(row)));
        }
        tables.heads.extend(std::mem::take(&mut self.heads));
        for mut row in self.dead_letters.drain(..) {
            tables.next_dead_letter_id += 1;
            row.id = tables.next_dead_letter_id;
            tables
                .dead_letters
                .insert((row.topic.clone(), row.partition, row.offset), row);
        }
    }
}

/// The rows inside [`HistoryTx::lock_heads`], [`HistoryTx::insert_entries`]
/// and [`HistoryTx::update_heads`], one by one as PostgreSQL takes them.
impl SimHistoryTx {
    async fn lock_head(&mut self, wallet_id: Uuid) -> Result<Head, ApplyError> {
        self.pg.lock(self.tx, Lock::Head(wallet_id)).await?;
        let state = self.pg.statement(self.tx)?;
        let head = self
            .heads
            .get(&wallet_id)
            .or_else(|| state.history.heads.get(&wallet_id))
            .copied()
            .unwrap_or(Head {
                last_seq: 0,
                balance: Decimal::ZERO,
                parked: 0,
            });
        drop(state);
        self.heads.entry(wallet_id).or_insert(head);
        Ok(head)
    }

    async fn insert_entry(
        &mut self,
        event: &WalletEvent,
        partition: i32,
        offset: i64,
    ) -> Result<(), ApplyError> {
        self.pg
            .lock(self.tx, Lock::HistoryEvent(event.event_id))
            .await?;
        self.pg
            .lock(self.tx, Lock::HistorySeq(event.wallet_id, event.seq))
            .await?;
        let state = self.pg.statement(self.tx)?;
        if self.has_entry(&state, event.event_id) {
            return Err(PgError::Constraint(
                "duplicate key value violates unique constraint \"history_entries_pkey\"".into(),
            )
            .into());
        }
        if self.entry_at(&state, event.wallet_id, event.seq).is_some() {
            return Err(PgError::Constraint(
                "duplicate key value violates unique constraint \"history_entries_wallet_id_seq_key\"".into(),
            )
            .into());
        }
        drop(state);
        let row = HistoryRow {
            event_id: event.event_id,
            wallet_id: event.wallet_id,
            user_id: text(
                &event.user_id,
                Some(USER_ID_CHARS_MAX),
                "history_entries.user_id",
            )?,
            seq: event.seq,
            kind: event.kind.as_str().to_owned(),
            amount: numeric_19_4(event.amount, "history_entries.amount")?,
            balance_after: numeric_19_4(event.balance_after, "history_entries.balance_after")?,
            transfer_id: event.transfer_id,
            counterparty_wallet_id: event.counterparty_wallet_id,
            committed_at: event.committed_at,
            applied_at: clock_timestamp(),
            source_partition: partition,
            source_offset: offset,
        };
        self.entry_seqs
            .insert((row.wallet_id, row.seq), row.event_id);
        self.entry_ids.insert(row.event_id);
        self.entries.push(row);
        Ok(())
    }

    fn update_head(&mut self, wallet_id: Uuid, head: Head) -> Result<(), ApplyError> {
        let state = self.pg.statement(self.tx)?;
        assert!(
            state.holds(self.tx, &Lock::Head(wallet_id)),
            "a head is written only under its lock"
        );
        drop(state);
        let balance = numeric_19_4(head.balance, "wallet_heads.balance")?;
        if head.parked < 0 {
            return Err(PgError::Constraint(
                "violates check constraint \"wallet_heads_parked_check\"".into(),
            )
            .into());
        }
        self.heads.insert(
            wallet_id,
            Head {
                last_seq: head.last_seq,
                balance,
                parked: head.parked,
            },
        );
        Ok(())
    }
}

impl HistoryTx for SimHistoryTx {
    async fn lock_heads(&mut self, wallet_ids: &[Uuid]) -> Result<Vec<Head>, ApplyError> {
        world::io("history.lock_heads").await;
        let mut heads = Vec::with_capacity(wallet_ids.len());
        for &id in wallet_ids {
            heads.push(self.lock_head(id).await?);
        }
        Ok(heads)
    }

    async fn insert_entries(&mut self, entries: &[Entry]) -> Result<(), ApplyError> {
        world::io("history.insert_entries").await;
        for entry in entries {
            self.insert_entry(&entry.event, entry.partition, entry.offset)
                .await?;
        }
        Ok(())
    }

    async fn update_heads(&mut self, heads: &[(Uuid, Head)]) -> Result<(), ApplyError> {
        world::io("history.update_heads").await;
        for &(id, head) in heads {
            self.update_head(id, head)?;
        }
        Ok(())
    }

    async fn event_at(&mut self, wallet_id: Uuid, seq: i64) -> Result<Option<Uuid>, ApplyError> {
        world::io("history.event_at").await;
        let state = self.pg.statement(self.tx)?;
        Ok(self.entry_at(&state, wallet_id, seq))
    }

    async fn park(
        &mut self,
        event: &WalletEvent,
        payload: &[u8],
        source: &Incoming,
    ) -> Result<bool, ApplyError> {
        world::io("history.park").await;
        self.pg.lock(self.tx, Lock::Parked(event.event_id)).await?;
        let state = self.pg.statement(self.tx)?;
        let exists = self.parked.contains_key(&event.event_id)
            || (state.history.parked.contains_key(&event.event_id)
                && !self.unparked.contains(&event.event_id));
        drop(state);
        if exists {
            return Ok(false); // ON CONFLICT (event_id) DO NOTHING
        }
        let record = ParkedRecord {
            view: ParkedRow {
                event_id: event.event_id,
                wallet_id: event.wallet_id,
                seq: event.seq,
                source_partition: source.partition,
                source_offset: source.offset,
                parked_at: clock_timestamp(),
            },
            payload: text(
                &String::from_utf8_lossy(payload),
                None,
                "parked_events.payload",
            )?,
        };
        self.parked.insert(event.event_id, record);
        world::count(|c| c.parked_events += 1);
        Ok(true)
    }

    async fn take_parked(
        &mut self,
        wallet_id: Uuid,
        seq: i64,
    ) -> Result<Option<Parked>, ApplyError> {
        world::io("history.take_parked").await;
        let candidate = {
            let state = self.pg.statement(self.tx)?;
            self.parked_at(&state, wallet_id, seq)
        };
        let Some(record) = candidate else {
            return Ok(None);
        };
        // DELETE takes the row's lock; re-read after waiting for it.
        self.pg
            .lock(self.tx, Lock::Parked(record.view.event_id))
            .await?;
        let state = self.pg.lock_state();
        let Some(record) = self.parked_at(&state, wallet_id, seq) else {
            return Ok(None);
        };
        drop(state);
        if self.parked.remove(&record.view.event_id).is_none() {
            self.unparked.push(record.view.event_id);
        }
        Ok(Some(Parked {
            payload: record.payload,
            partition: record.view.source_partition,
            offset: record.view.source_offset,
        }))
    }

    async fn dead_letter(&mut self, message: &Incoming, error: &str) -> Result<(), ApplyError> {
        world::io("history.dead_letter").await;
        let key = (message.topic.clone(), message.partition, message.offset);
        self.pg
            .lock(self.tx, Lock::DeadLetter(key.0.clone(), key.1, key.2))
            .await?;
        let state = self.pg.statement(self.tx)?;
        let exists = state.history.dead_letters.contains_key(&key)
            || self.dead_letters.iter().any(|d| {
                (d.topic.as_str(), d.partition, d.offset) == (key.0.as_str(), key.1, key.2)
            });
        drop(state);
        if !exists {
            self.dead_letters.push(DeadLetterRow {
                id: 0,
                topic: message.topic.clone(),
                partition: message.partition,
                offset: message.offset,
                error: error.replace('\0', "\\0"),
                received_at: clock_timestamp(),
                event_id: message
                    .payload
                    .as_deref()
                    .and_then(|p| WalletEvent::decode(p).ok())
                    .map(|e| e.event_id),
            });
        }
        Ok(())
    }

    async fn commit(mut self) -> Result<(), ApplyError> {
        world::io("history.commit").await;
        self.done = true;
        let pg = self.pg.clone();
        let tx = self.tx;
        pg.commit(tx, |state| self.apply(state))?;
        world::trace("history.committed", &[tx as i64], None);
        // Committed, offsets not yet stored: a crash here means redelivery.
        world::io("history.after_commit").await;
        Ok(())
    }
}
