//! A PostgreSQL model: one server holding the wallet and the history
//! database, with what the services rely on and nothing more.
//!
//! - Transactions see committed rows and their own writes; their writes
//!   become visible at commit, all at once; dropped uncommitted (or when
//!   their process dies, or the server restarts) they roll back.
//! - Row locks ([`Lock`]) wait while another transaction holds them, and a
//!   wait that would close a cycle fails with a deadlock, as PostgreSQL's
//!   detector does. Unique indexes are locks too: inserting a key another
//!   open transaction inserted waits for it to finish.
//! - `FOR UPDATE SKIP LOCKED` skips rows another transaction holds.
//! - BIGSERIAL ids are taken at insert and visible at commit, so ids can
//!   commit out of order.
//! - Every UNIQUE and CHECK constraint of both migrations, NUMERIC(19,4)
//!   (rounded to four places, refused beyond fifteen integer digits),
//!   VARCHAR(100), and text that cannot hold a NUL.
//! - Injected faults (under simulation only): serialization failures at
//!   any statement, and commits whose outcome the client never hears.
//!
//! [`wallet`] and [`history`] implement the services' backend traits over
//! it. The same contract tests run against this model and real PostgreSQL.

pub mod history;
pub mod wallet;

use std::{
    collections::{BTreeMap, BTreeSet},
    future::poll_fn,
    sync::{Arc, Mutex, MutexGuard},
    task::{Poll, Waker},
};

use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use uuid::Uuid;

use crate::{exec, world};

pub type TxId = u64;

/// A hash map with a fixed hash function, for indexes that are looked up
/// on every statement and never iterated in an order the schedule depends
/// on: as deterministic as a tree, and cheaper.
#[allow(clippy::disallowed_types)]
pub type FixedMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// A set with a fixed hash function, as [`FixedMap`].
#[allow(clippy::disallowed_types)]
pub type FixedSet<K> = rustc_hash::FxHashSet<K>;

/// Lock tables (see `PgState::locks`).
type LockMap<V> = FixedMap<Lock, V>;

/// What a row lock or unique-index entry is on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lock {
    Wallet(Uuid),
    IdempotencyKey(String),
    LedgerSeq(Uuid, i64),
    Outbox(i64),
    Head(Uuid),
    HistoryEvent(Uuid),
    HistorySeq(Uuid, i64),
    Parked(Uuid),
    DeadLetter(String, i32, i64),
}

/// Why a statement failed, before a backend maps it to its error type.
#[derive(Debug, Clone, PartialEq)]
pub enum PgError {
    /// 40001 / 40P01: the transaction is lost; run it again.
    Conflict(String),
    /// 23xxx, 22xxx: a constraint or a value the column cannot hold.
    Constraint(String),
    /// The server is down, restarted under the transaction, or the
    /// connection broke (a commit's outcome is then unknown).
    Connection(String),
}

/// The server's tables and locks, behind one mutex.
pub struct PgState {
    up: bool,
    /// Bumped by every restart: transactions of an older epoch are dead.
    epoch: u64,
    next_tx: TxId,
    open: BTreeMap<TxId, u64>,
    /// Lock tables are looked up on every statement and never iterated
    /// for anything the schedule depends on (a restart wakes waiters in
    /// `Lock` order): a fixed hasher keeps them deterministic and faster
    /// than a tree (4 % of a seed went to comparing `Lock`s).
    locks: LockMap<TxId>,
    held: BTreeMap<TxId, Vec<Lock>>,
    waiters: LockMap<Vec<Waker>>,
    waits_for: BTreeMap<TxId, TxId>,
    pub wallet: wallet::Tables,
    pub history: history::Tables,
    /// Commits so far: orders history rows by when they were applied.
    pub commits: u64,
}

/// The server, shared by every process of the world.
#[derive(Clone)]
pub struct Postgres {
    state: Arc<Mutex<PgState>>,
}

impl Default for Postgres {
    fn default() -> Self {
        Postgres::new()
    }
}

/// Rows a seed's tables grow to (the default scenario writes about 4,500
/// ledger entries and as many history entries): the hash indexes are
/// sized for it up front instead of rehashing as they grow.
const ROWS_EXPECTED: usize = 8_192;

impl Postgres {
    pub fn new() -> Postgres {
        Postgres {
            state: Arc::new(Mutex::new(PgState {
                up: true,
                epoch: 0,
                next_tx: 1,
                open: BTreeMap::new(),
                locks: LockMap::default(),
                held: BTreeMap::new(),
                waiters: LockMap::default(),
                waits_for: BTreeMap::new(),
                wallet: wallet::Tables::sized(ROWS_EXPECTED),
                history: history::Tables::sized(ROWS_EXPECTED),
                commits: 0,
            })),
        }
    }

    pub fn lock_state(&self) -> MutexGuard<'_, PgState> {
        self.state.lock().expect("postgres model lock")
    }

    /// The server stops: every open transaction is lost, new ones are
    /// refused until [`Postgres::start`].
    pub fn stop(&self) {
        let mut state = self.lock_state();
        state.up = false;
        state.epoch += 1;
        let open: Vec<TxId> = state.open.keys().copied().collect();
        for tx in open {
            state.release(tx);
            world::count(|c| c.aborted_transactions += 1);
        }
        // Wake every waiter: its transaction is dead and must hear it.
        let mut waiting: Vec<(Lock, Vec<Waker>)> =
            std::mem::take(&mut state.waiters).into_iter().collect();
        waiting.sort_by(|a, b| a.0.cmp(&b.0));
        let waiters: Vec<Waker> = waiting.into_iter().flat_map(|(_, w)| w).collect();
        drop(state);
        waiters.into_iter().for_each(Waker::wake);
    }

    pub fn start(&self) {
        self.lock_state().up = true;
    }

    pub fn is_up(&self) -> bool {
        self.lock_state().up
    }

    /// Opens a transaction.
    pub fn begin(&self) -> Result<TxId, PgError> {
        let mut state = self.lock_state();
        if !state.up {
            return Err(PgError::Connection(
                "connection refused: the server is not running".into(),
            ));
        }
        let tx = state.next_tx;
        state.next_tx += 1;
        let epoch = state.epoch;
        state.open.insert(tx, epoch);
        Ok(tx)
    }

    /// Fails if `tx` died (server restart) since it began; with an injected
    /// serialization failure, rolls it back and fails.
    pub fn statement(&self, tx: TxId) -> Result<MutexGuard<'_, PgState>, PgError> {
        let mut state = self.lock_state();
        state.alive(tx)?;
        if world::chance(|k| k.serialization_failure) {
            state.release(tx);
            world::count(|c| {
                c.serialization_failures += 1;
                c.aborted_transactions += 1;
            });
            return Err(PgError::Conflict(
                "could not serialize access due to concurrent update".into(),
            ));
        }
        Ok(state)
    }

    /// Takes `lock` for `tx`, waiting while another transaction holds it.
    pub async fn lock(&self, tx: TxId, lock: Lock) -> Result<(), PgError> {
        let mut waited = false;
        poll_fn(|cx| {
            let mut state = self.lock_state();
            if let Err(err) = state.alive(tx) {
                state.waits_for.remove(&tx);
                return Poll::Ready(Err(err));
            }
            match state.locks.get(&lock).copied() {
                None => {
                    state.locks.insert(lock.clone(), tx);
                    state.held.entry(tx).or_default().push(lock.clone());
                    state.waits_for.remove(&tx);
                    Poll::Ready(Ok(()))
                }
                Some(holder) if holder == tx => {
                    state.waits_for.remove(&tx);
                    Poll::Ready(Ok(()))
                }
                Some(holder) => {
                    if state.would_deadlock(tx, holder) {
                        state.waits_for.remove(&tx);
                        state.release(tx);
                        world::count(|c| {
                            c.deadlocks += 1;
                            c.aborted_transactions += 1;
                        });
                        return Poll::Ready(Err(PgError::Conflict("deadlock detected".into())));
                    }
                    if !waited {
                        waited = true;
                        world::count(|c| c.lock_waits += 1);
                    }
                    state.waits_for.insert(tx, holder);
                    state
                        .waiters
                        .entry(lock.clone())
                        .or_default()
                        .push(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Ends `tx` without its writes (its writes live in the backend's
    /// transaction object and are dropped with it). Counted as aborted if
    /// it had written or locked anything: a read that found nothing to do
    /// is not an abort.
    pub fn rollback(&self, tx: TxId, wrote: bool) {
        let mut state = self.lock_state();
        if state.open.contains_key(&tx) {
            let locked = state.held.get(&tx).is_some_and(|locks| !locks.is_empty());
            state.release(tx);
            if wrote || locked {
                world::count(|c| c.aborted_transactions += 1);
            }
        }
    }

    /// Ends `tx` after `apply` wrote its changes into the tables. An
    /// injected fault may lose the answer: the commit then happened or not
    /// (drawn), and the caller hears only that the connection broke.
    pub fn commit(&self, tx: TxId, apply: impl FnOnce(&mut PgState)) -> Result<(), PgError> {
        let mut state = self.lock_state();
        state.alive(tx)?;
        let unknown = world::chance(|k| k.commit_unknown);
        let applies = !unknown || exec::with(|e| e.random(|rng| rand::Rng::random_bool(rng, 0.5)));
        if applies {
            apply(&mut state);
            state.commits += 1;
        } else {
            world::count(|c| c.aborted_transactions += 1);
        }
        state.release(tx);
        if unknown {
            world::count(|c| c.commits_unknown += 1);
            world::trace("pg.commit_unknown", &[i64::from(applies)], None);
            return Err(PgError::Connection(
                "server closed the connection unexpectedly during COMMIT".into(),
            ));
        }
        Ok(())
    }
}

impl PgState {
    pub fn is_up(&self) -> bool {
        self.up
    }

    fn alive(&self, tx: TxId) -> Result<(), PgError> {
        match self.open.get(&tx) {
            Some(epoch) if *epoch == self.epoch && self.up => Ok(()),
            Some(_) => Err(PgError::Connection(
                "terminating connection due to administrator command".into(),
            )),
            None => Err(PgError::Connection(
                "the transaction is no longer open".into(),
            )),
        }
    }

    /// Releases every lock of `tx` and wakes their waiters.
    fn release(&mut self, tx: TxId) {
        self.open.remove(&tx);
        self.waits_for.remove(&tx);
        for lock in self.held.remove(&tx).unwrap_or_default() {
            self.locks.remove(&lock);
            for waker in self.waiters.remove(&lock).unwrap_or_default() {
                waker.wake();
            }
        }
    }

    /// Whether `tx` waiting for `holder` closes a cycle.
    fn would_deadlock(&self, tx: TxId, holder: TxId) -> bool {
        let mut seen = BTreeSet::new();
        let mut current = holder;
        while let Some(next) = self.waits_for.get(&current) {
            if *next == tx {
                return true;
            }
            if !seen.insert(*next) {
                return false;
            }
            current = *next;
        }
        false
    }

    /// Whether `tx` holds `lock`.
    pub fn holds(&self, tx: TxId, lock: &Lock) -> bool {
        self.locks.get(lock) == Some(&tx)
    }

    /// Whether a transaction other than `tx` holds `lock`.
    pub fn locked_by_other(&self, tx: TxId, lock: &Lock) -> bool {
        self.locks.get(lock).is_some_and(|holder| *holder != tx)
    }

    /// Takes `lock` for `tx` if free (no waiting: SKIP LOCKED). True if
    /// `tx` holds it now.
    pub fn try_lock(&mut self, tx: TxId, lock: Lock) -> bool {
        match self.locks.get(&lock) {
            Some(holder) => *holder == tx,
            None => {
                self.locks.insert(lock.clone(), tx);
                self.held.entry(tx).or_default().push(lock);
                true
            }
        }
    }
}

/// The database's clock: simulated time from a fixed origin in a
/// simulation, the wall clock otherwise (the contract tests under tokio).
pub fn clock_timestamp() -> DateTime<Utc> {
    if exec::in_simulation() {
        let origin = DateTime::from_timestamp(1_798_761_600, 0).expect("2027-01-01");
        let since = exec::with(|e| e.now());
        origin + chrono::Duration::from_std(since).expect("simulated time fits")
    } else {
        #[allow(clippy::disallowed_methods)] // not the simulated path
        Utc::now()
    }
}

/// A value as NUMERIC(19,4) stores it: rounded to four places; beyond
/// fifteen integer digits it is refused.
pub fn numeric_19_4(value: Decimal, column: &str) -> Result<Decimal, PgError> {
    let rounded = value.round_dp_with_strategy(4, RoundingStrategy::MidpointAwayFromZero);
    if rounded.abs() >= Decimal::from(1_000_000_000_000_000_i64) {
        return Err(PgError::Constraint(format!(
            "numeric field overflow in {column}: precision 19, scale 4 must round to an absolute value less than 10^15"
        )));
    }
    Ok(rounded)
}

/// A value as VARCHAR(`max`) or TEXT stores it: no NUL, at most `max`
/// characters.
pub fn text(value: &str, max: Option<usize>, column: &str) -> Result<String, PgError> {
    if value.contains('\0') {
        return Err(PgError::Constraint(format!(
            "invalid byte sequence for encoding \"UTF8\": 0x00 in {column}"
        )));
    }
    if let Some(max) = max
        && value.chars().count() > max
    {
        return Err(PgError::Constraint(format!(
            "value too long for type character varying({max}) in {column}"
        )));
    }
    Ok(value.to_owned())
}
