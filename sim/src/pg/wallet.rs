//! The wallet database on the PostgreSQL model: its tables, and the
//! store's and the relay's backend traits over them.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use consistency_checker::snapshot::{LedgerRow, OutboxRow as OutboxView, WalletRow};
use uuid::Uuid;
use wallet::{
    domain::{NewEntry, WalletState},
    relay::round::{Outbox, OutboxRound, OutboxRow},
    store::{Change, Claim, DbError, KeyToClaim, Locked, Wallet, WalletDb, WalletTx},
};
use wallet_events::{IdempotencyKey, UserId};

use super::{
    FixedSet, Lock, PgError, PgState, Postgres, TxId, clock_timestamp, numeric_19_4, text,
};
use crate::world;

/// `user_id VARCHAR(100)`.
const USER_ID_CHARS_MAX: usize = 100;

/// An outbox row with its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRecord {
    pub view: OutboxView,
    pub payload: String,
}

/// An idempotency key's row.
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub fingerprint: String,
    pub response: Option<Box<serde_json::value::RawValue>>,
}

/// The committed rows of the wallet database.
#[derive(Debug, Default)]
pub struct Tables {
    pub wallets: BTreeMap<Uuid, WalletRow>,
    /// By (wallet, seq): UNIQUE (wallet_id, seq). Rows are boxed here and
    /// below: a tree node shifts its values on every insert, and moving a
    /// pointer is cheaper than moving a row.
    pub ledger: BTreeMap<(Uuid, i64), Box<LedgerRow>>,
    pub ledger_ids: FixedSet<Uuid>,
    pub outbox: BTreeMap<i64, Box<OutboxRecord>>,
    pub outbox_events: FixedSet<Uuid>,
    /// The partial index `outbox_unpublished`: ids not yet published.
    pub unpublished: BTreeSet<i64>,
    pub keys: BTreeMap<String, KeyRow>,
    /// BIGSERIAL: taken at insert, whether or not the insert commits.
    pub next_outbox_id: i64,
}

impl Tables {
    /// Empty tables whose hash indexes hold `rows` without rehashing.
    pub fn sized(rows: usize) -> Tables {
        Tables {
            ledger_ids: FixedSet::with_capacity_and_hasher(rows, Default::default()),
            outbox_events: FixedSet::with_capacity_and_hasher(rows, Default::default()),
            ..Tables::default()
        }
    }
}

impl From<PgError> for DbError {
    fn from(err: PgError) -> Self {
        match err {
            PgError::Conflict(cause) => DbError::Conflict(cause),
            PgError::Constraint(cause) => DbError::Constraint(cause),
            PgError::Connection(cause) => DbError::Unavailable(cause),
        }
    }
}

/// The wallet database of a [`Postgres`] model.
#[derive(Clone)]
pub struct SimWalletDb {
    pub pg: Postgres,
}

/// An open transaction and the writes it will commit.
pub struct SimWalletTx {
    pg: Postgres,
    tx: TxId,
    done: bool,
    wallets: BTreeMap<Uuid, WalletRow>,
    ledger: Vec<LedgerRow>,
    outbox: Vec<(i64, OutboxRecord)>,
    keys: BTreeMap<String, KeyRow>,
    published: Vec<i64>,
}

impl Drop for SimWalletTx {
    fn drop(&mut self) {
        if !self.done {
            let wrote = !(self.wallets.is_empty()
                && self.ledger.is_empty()
                && self.outbox.is_empty()
                && self.keys.is_empty()
                && self.published.is_empty());
            self.pg.rollback(self.tx, wrote);
        }
    }
}

impl SimWalletTx {
    fn new(pg: &Postgres, tx: TxId) -> SimWalletTx {
        SimWalletTx {
            pg: pg.clone(),
            tx,
            done: false,
            wallets: BTreeMap::new(),
            ledger: Vec::new(),
            outbox: Vec::new(),
            keys: BTreeMap::new(),
            published: Vec::new(),
        }
    }

    fn wallet_row(&self, state: &PgState, id: Uuid) -> Option<WalletRow> {
        self.wallets
            .get(&id)
            .or_else(|| state.wallet.wallets.get(&id))
            .cloned()
    }

    /// Applies this transaction's writes to the committed tables.
    fn apply(&mut self, state: &mut PgState) {
        let tables = &mut state.wallet;
        // Insert one by one: `BTreeMap::append` rebuilds the whole map.
        tables.wallets.extend(std::mem::take(&mut self.wallets));
        for row in self.ledger.drain(..) {
            tables.ledger_ids.insert(row.event_id);
            tables
                .ledger
                .insert((row.wallet_id, row.seq), Box::new(row));
        }
        for (id, record) in self.outbox.drain(..) {
            tables.outbox_events.insert(record.view.event_id);
            tables.unpublished.insert(id);
            tables.outbox.insert(id, Box::new(record));
        }
        tables.keys.extend(std::mem::take(&mut self.keys));
        let now = clock_timestamp();
        for id in self.published.drain(..) {
            if let Some(record) = tables.outbox.get_mut(&id) {
                record.view.published_at = Some(now);
                tables.unpublished.remove(&id);
            }
        }
    }
}

fn wallet_view(row: &WalletRow) -> Wallet {
    Wallet {
        id: row.id,
        user_id: row.user_id.clone(),
        balance: row.balance,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

impl WalletDb for SimWalletDb {
    type Tx = SimWalletTx;

    async fn begin(&self) -> Result<SimWalletTx, DbError> {
        world::io("wallet.begin").await;
        let tx = self.pg.begin()?;
        Ok(SimWalletTx::new(&self.pg, tx))
    }

    async fn wallet(&self, id: Uuid) -> Result<Option<Wallet>, DbError> {
        world::io("wallet.read").await;
        let state = self.pg.lock_state();
        if !state.is_up() {
            return Err(PgError::Connection("connection refused".into()).into());
        }
        Ok(state.wallet.wallets.get(&id).map(wallet_view))
    }

    async fn user_wallets(&self, user_id: &UserId) -> Result<Vec<Wallet>, DbError> {
        world::io("wallet.read").await;
        let state = self.pg.lock_state();
        if !state.is_up() {
            return Err(PgError::Connection("connection refused".into()).into());
        }
        let mut wallets: Vec<&WalletRow> = state
            .wallet
            .wallets
            .values()
            .filter(|w| w.user_id == user_id.as_str())
            .collect();
        wallets.sort_by_key(|w| (w.created_at, w.id));
        Ok(wallets.into_iter().map(wallet_view).collect())
    }

    async fn ping(&self) -> Result<(), DbError> {
        if self.pg.is_up() {
            Ok(())
        } else {
            Err(PgError::Connection("connection refused".into()).into())
        }
    }
}

/// The statements inside [`WalletTx::claim_and_lock`] and
/// [`WalletTx::write`], as PostgreSQL runs them one after the other.
impl SimWalletTx {
    /// The claim: `Some` when a committed request holds the key.
    async fn claim_key(
        &mut self,
        key: &IdempotencyKey,
        fingerprint: &str,
    ) -> Result<Option<Claim>, DbError> {
        // The unique index: a key another open transaction inserted waits
        // for it to commit or roll back.
        self.pg
            .lock(self.tx, Lock::IdempotencyKey(key.as_str().to_owned()))
            .await?;
        let state = self.pg.statement(self.tx)?;
        if let Some(row) = state.wallet.keys.get(key.as_str()) {
            // jsonb hands the stored document back parsed.
            let response = row
                .response
                .as_deref()
                .map(|raw| serde_json::from_str(raw.get()))
                .transpose()
                .map_err(|e| DbError::Other(e.into()))?;
            return Ok(Some(Claim::Taken {
                fingerprint: row.fingerprint.clone(),
                response,
            }));
        }
        drop(state);
        self.keys.insert(
            key.as_str().to_owned(),
            KeyRow {
                fingerprint: text(fingerprint, None, "idempotency_keys.fingerprint")?,
                response: None,
            },
        );
        Ok(None)
    }

    async fn lock_wallets(
        &mut self,
        ids: &[Uuid],
    ) -> Result<Vec<(WalletState, DateTime<Utc>)>, DbError> {
        drop(self.pg.statement(self.tx)?);
        let mut sorted = ids.to_vec();
        sorted.sort();
        sorted.dedup();
        let mut locked = Vec::with_capacity(sorted.len());
        for id in sorted {
            let exists = {
                let state = self.pg.lock_state();
                self.wallet_row(&state, id).is_some()
            };
            if !exists {
                continue;
            }
            self.pg.lock(self.tx, Lock::Wallet(id)).await?;
            let state = self.pg.lock_state();
            if let Some(row) = self.wallet_row(&state, id) {
                let wallet = WalletState {
                    id: row.id,
                    user_id: row.user_id.clone(),
                    balance: row.balance,
                    last_seq: row.last_seq,
                };
                locked.push((wallet, row.created_at));
            }
        }
        Ok(locked)
    }

    fn update_wallets(
        &mut self,
        wallets: &[&WalletState],
        now: DateTime<Utc>,
    ) -> Result<(), DbError> {
        let state = self.pg.statement(self.tx)?;
        let mut updated = Vec::with_capacity(wallets.len());
        for wallet in wallets {
            assert!(
                state.holds(self.tx, &Lock::Wallet(wallet.id)),
                "the store updates only wallets it locked"
            );
            let Some(mut row) = self.wallet_row(&state, wallet.id) else {
                continue;
            };
            row.balance = numeric_19_4(wallet.balance, "wallets.balance")?;
            if row.balance.is_sign_negative() && !row.balance.is_zero() {
                return Err(PgError::Constraint(
                    "new row for relation \"wallets\" violates check constraint \"wallets_balance_check\"".into(),
                )
                .into());
            }
            if wallet.last_seq < 1 {
                return Err(PgError::Constraint(
                    "violates check constraint \"wallets_last_seq_check\"".into(),
                )
                .into());
            }
            row.last_seq = wallet.last_seq;
            row.updated_at = now;
            updated.push(row);
        }
        drop(state);
        for row in updated {
            self.wallets.insert(row.id, row);
        }
        Ok(())
    }

    async fn write_entries(
        &mut self,
        entries: &[NewEntry],
        committed_at: DateTime<Utc>,
        key: Option<&IdempotencyKey>,
    ) -> Result<(), DbError> {
        for entry in entries {
            self.pg
                .lock(self.tx, Lock::LedgerSeq(entry.wallet_id, entry.seq))
                .await?;
        }
        let mut state = self.pg.statement(self.tx)?;
        let mut rows = Vec::with_capacity(entries.len());
        for entry in entries {
            let taken = state
                .wallet
                .ledger
                .contains_key(&(entry.wallet_id, entry.seq))
                || self
                    .ledger
                    .iter()
                    .any(|r| (r.wallet_id, r.seq) == (entry.wallet_id, entry.seq));
            let id_taken = state.wallet.ledger_ids.contains(&entry.event_id)
                || self.ledger.iter().any(|r| r.event_id == entry.event_id);
            if taken || id_taken {
                return Err(PgError::Constraint(
                    "duplicate key value violates unique constraint on ledger_entries".into(),
                )
                .into());
            }
            if self.wallet_row(&state, entry.wallet_id).is_none() {
                return Err(PgError::Constraint(
                    "insert on ledger_entries violates foreign key constraint".into(),
                )
                .into());
            }
            if entry.amount.is_sign_negative() && !entry.amount.is_zero() {
                return Err(PgError::Constraint(
                    "violates check constraint \"ledger_entries_amount_check\"".into(),
                )
                .into());
            }
            rows.push(LedgerRow {
                event_id: entry.event_id,
                wallet_id: entry.wallet_id,
                seq: entry.seq,
                kind: entry.kind,
                amount: numeric_19_4(entry.amount, "ledger_entries.amount")?,
                balance_after: numeric_19_4(entry.balance_after, "ledger_entries.balance_after")?,
                transfer_id: entry.transfer_id,
                counterparty_wallet_id: entry.counterparty_wallet_id,
                created_at: committed_at,
                request_key: key.map(|k| k.as_str().to_owned()),
            });
        }
        let now = clock_timestamp();
        let mut outbox = Vec::with_capacity(entries.len());
        for entry in entries {
            let id = state.wallet.next_outbox_id + 1;
            state.wallet.next_outbox_id = id;
            let payload = entry.event(committed_at).to_json_text();
            outbox.push((
                id,
                OutboxRecord {
                    view: OutboxView {
                        id,
                        event_id: entry.event_id,
                        wallet_id: entry.wallet_id,
                        created_at: now,
                        published_at: None,
                    },
                    payload,
                },
            ));
        }
        drop(state);
        self.ledger.extend(rows);
        self.outbox.extend(outbox);
        Ok(())
    }
}

impl WalletTx for SimWalletTx {
    async fn insert_wallet(&mut self, wallet: &WalletState) -> Result<Wallet, DbError> {
        world::io("wallet.insert_wallet").await;
        self.pg.lock(self.tx, Lock::Wallet(wallet.id)).await?;
        let state = self.pg.statement(self.tx)?;
        if state.wallet.wallets.contains_key(&wallet.id) || self.wallets.contains_key(&wallet.id) {
            return Err(PgError::Constraint(
                "duplicate key value violates unique constraint \"wallets_pkey\"".into(),
            )
            .into());
        }
        let now = clock_timestamp();
        let row = WalletRow {
            id: wallet.id,
            user_id: text(&wallet.user_id, Some(USER_ID_CHARS_MAX), "wallets.user_id")?,
            balance: numeric_19_4(rust_decimal::Decimal::ZERO, "wallets.balance")?,
            last_seq: 1,
            created_at: now,
            updated_at: now,
        };
        drop(state);
        let view = wallet_view(&row);
        self.wallets.insert(row.id, row);
        Ok(view)
    }

    async fn claim_and_lock(
        &mut self,
        key: Option<KeyToClaim<'_>>,
        ids: &[Uuid],
    ) -> Result<Claim, DbError> {
        world::io("wallet.claim_and_lock").await;
        if let Some(key) = key
            && let Some(taken) = self.claim_key(key.key, key.fingerprint).await?
        {
            return Ok(taken);
        }
        let wallets = self.lock_wallets(ids).await?;
        Ok(Claim::Locked(Locked {
            wallets,
            now: clock_timestamp(),
        }))
    }

    async fn write(&mut self, change: Change<'_>) -> Result<(), DbError> {
        world::io("wallet.write").await;
        self.update_wallets(change.wallets, change.at)?;
        self.write_entries(change.entries, change.at, change.key)
            .await?;
        if let (Some(key), Some(response)) = (change.key, change.response)
            && let Some(row) = self.keys.get_mut(key.as_str())
        {
            row.response = Some(response.to_owned());
        }
        Ok(())
    }

    async fn commit(mut self) -> Result<(), DbError> {
        world::io("wallet.commit").await;
        self.done = true;
        let pg = self.pg.clone();
        let tx = self.tx;
        pg.commit(tx, |state| self.apply(state))?;
        world::trace("wallet.committed", &[tx as i64], None);
        // Committed, not yet answered: a crash here loses the response.
        world::io("wallet.after_commit").await;
        Ok(())
    }
}

impl Outbox for SimWalletDb {
    type Round = SimWalletTx;

    async fn lock_unpublished(
        &self,
        batch_max: i64,
    ) -> Result<(SimWalletTx, Vec<OutboxRow>), DbError> {
        world::io("outbox.lock_unpublished").await;
        let tx = self.pg.begin()?;
        let round = SimWalletTx::new(&self.pg, tx);
        let mut state = self.pg.statement(tx)?;
        let limit = usize::try_from(batch_max.max(0)).unwrap_or(usize::MAX);
        let candidates: Vec<i64> = state.wallet.unpublished.iter().copied().collect();
        let mut rows = Vec::new();
        for id in candidates {
            if rows.len() >= limit {
                break;
            }
            // SKIP LOCKED: another round holds it.
            if state.try_lock(tx, Lock::Outbox(id)) {
                let record = &state.wallet.outbox[&id];
                rows.push(OutboxRow {
                    id,
                    wallet_id: record.view.wallet_id,
                    payload: record.payload.clone(),
                });
            }
        }
        drop(state);
        Ok((round, rows))
    }
}

impl OutboxRound for SimWalletTx {
    async fn mark_sent(&mut self, ids: &[i64]) -> Result<(), DbError> {
        world::io("outbox.mark_sent").await;
        drop(self.pg.statement(self.tx)?);
        self.published.extend_from_slice(ids);
        Ok(())
    }

    async fn commit(mut self) -> Result<(), DbError> {
        world::io("outbox.commit").await;
        self.done = true;
        let pg = self.pg.clone();
        let tx = self.tx;
        pg.commit(tx, |state| self.apply(state))?;
        Ok(())
    }
}
