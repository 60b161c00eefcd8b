//! Test fixture: a small in-memory world that writes ledger, outbox,
//! history and operation log the way the real system does, so a test can
//! build a consistent snapshot and then break exactly one thing.
//!
//! Ids are deterministic (`Uuid::from_u128` with a per-kind prefix) and
//! time is a counter, so failures are reproducible and readable.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use run_log::{
    Attempt, Observed, ObservedEntry, OpKind, OpRecord, Outcome, ShownEntry, ShownPage, Walk,
    WalkedList, summary::Convergence,
};
use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use uuid::Uuid;
use wallet_events::EventKind;

use crate::snapshot::{HistoryRow, LedgerRow, OutboxRow, Snapshot, WalletRow};

const EPOCH_S: i64 = 1_700_000_000;
const WALLET_SPACE: u128 = 0xA;
const EVENT_SPACE: u128 = 0xE;
const TRANSFER_SPACE: u128 = 0x7;

/// What one fund or transfer wrote.
#[derive(Debug, Clone, Default)]
pub struct Written {
    pub op_id: u64,
    pub key: String,
    /// Ledger event ids, in write order (debit before credit).
    pub events: Vec<Uuid>,
    pub transfer_ids: Vec<Uuid>,
}

#[derive(Debug, Default)]
pub struct World {
    pub snap: Snapshot,
    seconds: i64,
    /// Whether snapshots carry the end-of-run walk.
    walks: bool,
    ids: u128,
    ops: u64,
    /// Wallet id to its position in `snap.wallets`, so run-sized worlds
    /// build in linear time.
    index: FxHashMap<Uuid, usize>,
}

impl World {
    pub fn new() -> Self {
        Self::default()
    }

    /// The snapshot, in the orders `load` produces.
    pub fn snapshot(&self) -> Snapshot {
        let mut snap = self.snap.clone();
        if self.walks {
            snap.walk = Some(self.walk());
        }
        snap.wallets.sort_by_key(|w| w.id);
        snap.ledger.sort_by_key(|e| (e.wallet_id, e.seq));
        snap
    }

    /// Advances the clock by one second and returns it.
    pub fn now(&mut self) -> DateTime<Utc> {
        self.seconds += 1;
        at(self.seconds)
    }

    fn id(&mut self, space: u128) -> Uuid {
        self.ids += 1;
        Uuid::from_u128((space << 120) | self.ids)
    }

    pub fn create(&mut self, user: &str) -> Uuid {
        let now = self.now();
        let id = self.id(WALLET_SPACE);
        self.index.insert(id, self.snap.wallets.len());
        self.snap.wallets.push(WalletRow {
            id,
            user_id: user.to_owned(),
            balance: Decimal::ZERO,
            last_seq: 0,
            created_at: now,
            updated_at: now,
        });
        self.entry(id, EventKind::Created, Decimal::ZERO, None, None, None);
        let op = self.op(OpKind::CreateWallet, Some(id), None, None, Outcome::Ok);
        self.snap.ops.push(OpRecord {
            idempotency_key: None,
            ..op
        });
        id
    }

    /// A fund the log records with `outcome`, applied `times` times.
    pub fn fund(
        &mut self,
        wallet: Uuid,
        amount: Decimal,
        outcome: Outcome,
        times: usize,
    ) -> Written {
        let op = self.op(OpKind::Fund, Some(wallet), None, Some(amount), outcome);
        let key = op.idempotency_key.clone().unwrap_or_default();
        let mut written = Written {
            op_id: op.op_id,
            key: key.clone(),
            ..Written::default()
        };
        self.snap.ops.push(op);
        for _ in 0..times {
            let event = self.entry(wallet, EventKind::Funded, amount, None, None, Some(&key));
            written.events.push(event);
        }
        self.acknowledge(&written);
        written
    }

    /// A transfer the log records with `outcome`, applied `times` times.
    /// Funds are not checked: a test may overdraw on purpose.
    pub fn transfer(
        &mut self,
        from: Uuid,
        to: Uuid,
        amount: Decimal,
        outcome: Outcome,
        times: usize,
    ) -> Written {
        let op = self.op(
            OpKind::Transfer,
            Some(from),
            Some(to),
            Some(amount),
            outcome,
        );
        let key = op.idempotency_key.clone().unwrap_or_default();
        let mut written = Written {
            op_id: op.op_id,
            key: key.clone(),
            ..Written::default()
        };
        self.snap.ops.push(op);
        for _ in 0..times {
            let (transfer_id, out, credit) = self.legs(from, to, amount, Some(&key), true);
            written.transfer_ids.push(transfer_id);
            written.events.push(out);
            written.events.extend(credit);
        }
        self.acknowledge(&written);
        written
    }

    /// An acknowledged write that applied once tells its client the
    /// entries it wrote, as the API's response does.
    fn acknowledge(&mut self, written: &Written) {
        // The op and its rows were just written: look from the end.
        let Some(op) = self
            .snap
            .ops
            .iter()
            .rev()
            .find(|op| op.op_id == written.op_id)
        else {
            return;
        };
        let applied_once = match op.kind {
            OpKind::Transfer => written.events.len() == 2,
            _ => written.events.len() == 1,
        };
        if op.outcome != Outcome::Ok || !applied_once {
            return;
        }
        let entries: Vec<ObservedEntry> = written
            .events
            .iter()
            .filter_map(|id| self.snap.ledger.iter().rev().find(|e| e.event_id == *id))
            .map(|e| ObservedEntry {
                event_id: e.event_id,
                wallet_id: e.wallet_id,
                seq: e.seq,
                amount: e.amount,
                balance_after: e.balance_after,
            })
            .collect();
        let observed = match (op.kind, entries.as_slice()) {
            (OpKind::Fund, [entry]) => Observed::WalletAfter {
                wallet_id: entry.wallet_id,
                balance: entry.balance_after,
            },
            _ => Observed::Entries(entries),
        };
        let op_id = written.op_id;
        if let Some(op) = self.snap.ops.iter_mut().rev().find(|op| op.op_id == op_id) {
            op.attempts = vec![ok_attempt(observed)];
        }
    }

    /// Only the debit of a transfer, outside the operation log.
    pub fn half_transfer(&mut self, from: Uuid, to: Uuid, amount: Decimal) -> (Uuid, Uuid) {
        let (transfer_id, out, _) = self.legs(from, to, amount, None, false);
        (transfer_id, out)
    }

    /// Another attempt of the same operation (same key), e.g. a retry.
    pub fn retry(&mut self, op_id: u64, outcome: Outcome) {
        let original = self
            .snap
            .ops
            .iter()
            .find(|op| op.op_id == op_id)
            .cloned()
            .expect("retry of a logged op");
        let intended_at = self.now();
        self.snap.ops.push(OpRecord {
            outcome,
            intended_at,
            ..original
        });
    }

    /// Records the attempts of op `op_id` (as loadgen does, all in its one
    /// record) and folds its outcome over them.
    pub fn attempts(&mut self, op_id: u64, outcomes: &[(Outcome, &str)]) {
        let op = self
            .snap
            .ops
            .iter_mut()
            .find(|op| op.op_id == op_id)
            .expect("attempts of a logged op");
        let attempts: Vec<Attempt> = outcomes
            .iter()
            .zip(0u64..)
            .map(|(&(outcome, code), n)| Attempt {
                outcome,
                status: None,
                error_code: Some(code.to_owned()),
                started_us: n * 1_000,
                latency_us: 500,
                observed: None,
            })
            .collect();
        *op = op.clone().settle(attempts);
    }

    /// A balance read that showed what the wallet holds now.
    pub fn read(&mut self, wallet: Uuid) -> u64 {
        let balance = self.snap.wallets[self.index[&wallet]].balance;
        let op = self.op(OpKind::GetWallet, Some(wallet), None, None, Outcome::Ok);
        let op_id = op.op_id;
        self.snap.ops.push(OpRecord {
            idempotency_key: None,
            attempts: vec![ok_attempt(Observed::Balance(balance))],
            ..op
        });
        op_id
    }

    /// A history page read that showed the wallet's whole history as it
    /// stands now, newest first, on one page.
    pub fn read_history(&mut self, wallet: Uuid) -> u64 {
        let mut entries: Vec<ShownEntry> = self
            .snap
            .history
            .iter()
            .filter(|row| row.wallet_id == wallet)
            .map(shown)
            .collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.seq));
        let page = ShownPage {
            entries,
            next_cursor: None,
        };
        let op = self.op(OpKind::GetHistory, Some(wallet), None, None, Outcome::Ok);
        let op_id = op.op_id;
        self.snap.ops.push(OpRecord {
            idempotency_key: None,
            attempts: vec![ok_attempt(Observed::HistoryPage(page))],
            ..op
        });
        op_id
    }

    /// From now on each snapshot carries the end-of-run walk an honest
    /// history API would give of the history table at that moment.
    pub fn walked(&mut self) {
        self.walks = true;
    }

    /// Each wallet newest seq first, each user newest commit (then
    /// greatest event id) first, all on one page.
    fn walk(&self) -> Walk {
        let mut by_wallet: BTreeMap<String, Vec<ShownEntry>> = BTreeMap::new();
        let mut by_user: BTreeMap<String, Vec<ShownEntry>> = BTreeMap::new();
        for wallet in &self.snap.wallets {
            by_wallet.entry(wallet.id.to_string()).or_default();
            by_user.entry(wallet.user_id.clone()).or_default();
        }
        for row in &self.snap.history {
            let wallet = by_wallet.entry(row.wallet_id.to_string()).or_default();
            wallet.push(shown(row));
            by_user
                .entry(row.user_id.clone())
                .or_default()
                .push(shown(row));
        }
        let lists = |map: BTreeMap<String, Vec<ShownEntry>>| -> Vec<WalkedList> {
            map.into_iter()
                .map(|(id, entries)| list(id, entries))
                .collect()
        };
        for entries in by_wallet.values_mut() {
            entries.sort_by_key(|e| std::cmp::Reverse(e.seq));
        }
        for entries in by_user.values_mut() {
            entries.sort_by_key(|e| std::cmp::Reverse((e.committed_at, e.event_id)));
        }
        Walk {
            wallets: lists(by_wallet),
            users: lists(by_user),
        }
    }

    pub fn converged(&mut self, took_ms: u64, bound_ms: u64) {
        self.snap.convergence = Some(Convergence {
            converged: true,
            took_ms,
            bound_ms,
            started_offset_ms: None,
        });
    }

    fn legs(
        &mut self,
        from: Uuid,
        to: Uuid,
        amount: Decimal,
        key: Option<&str>,
        credit: bool,
    ) -> (Uuid, Uuid, Option<Uuid>) {
        let transfer_id = self.id(TRANSFER_SPACE);
        let out = self.entry(
            from,
            EventKind::TransferOut,
            amount,
            Some(transfer_id),
            Some(to),
            key,
        );
        let credit = credit.then(|| {
            self.entry(
                to,
                EventKind::TransferIn,
                amount,
                Some(transfer_id),
                Some(from),
                key,
            )
        });
        (transfer_id, out, credit)
    }

    fn op(
        &mut self,
        kind: OpKind,
        wallet_id: Option<Uuid>,
        to_wallet_id: Option<Uuid>,
        amount: Option<Decimal>,
        outcome: Outcome,
    ) -> OpRecord {
        self.ops += 1;
        let op_id = self.ops;
        OpRecord {
            op_id,
            kind,
            wallet_index: None,
            to_wallet_index: None,
            wallet_id,
            to_wallet_id,
            amount,
            idempotency_key: Some(format!("k-{op_id}")),
            outcome,
            status: match outcome {
                Outcome::Ok => Some(200),
                Outcome::Failed => Some(422),
                Outcome::Indeterminate => None,
            },
            error_code: match outcome {
                Outcome::Ok => None,
                Outcome::Failed => Some("insufficient_funds".into()),
                Outcome::Indeterminate => Some("timeout".into()),
            },
            intended_at: self.now(),
            latency_us: 1_000,
            attempts: Vec::new(),
        }
    }

    /// Writes one entry as the wallet would (balance, ledger, outbox) and
    /// the history as a healthy consumer would.
    fn entry(
        &mut self,
        wallet_id: Uuid,
        kind: EventKind,
        amount: Decimal,
        transfer_id: Option<Uuid>,
        counterparty_wallet_id: Option<Uuid>,
        key: Option<&str>,
    ) -> Uuid {
        let now = self.now();
        let event_id = self.id(EVENT_SPACE);
        let wallet = &mut self.snap.wallets[self.index[&wallet_id]];
        wallet.last_seq += 1;
        wallet.balance += kind.signed(amount);
        wallet.updated_at = now;
        let (seq, balance_after, user_id) =
            (wallet.last_seq, wallet.balance, wallet.user_id.clone());
        self.snap.ledger.push(LedgerRow {
            event_id,
            wallet_id,
            seq,
            kind,
            amount,
            balance_after,
            transfer_id,
            counterparty_wallet_id,
            created_at: now,
            request_key: key.map(str::to_owned),
        });
        let outbox_id = self.snap.outbox.len() as i64 + 1;
        self.snap.outbox.push(OutboxRow {
            id: outbox_id,
            event_id,
            wallet_id,
            created_at: now,
            published_at: Some(now + Duration::milliseconds(100)),
        });
        self.snap.history.push(HistoryRow {
            event_id,
            wallet_id,
            user_id,
            seq,
            kind: kind.as_str().to_owned(),
            amount,
            balance_after,
            transfer_id,
            counterparty_wallet_id,
            committed_at: now,
            applied_at: now + Duration::milliseconds(200),
            source_partition: 0,
            source_offset: outbox_id - 1,
        });
        event_id
    }
}

/// `seconds` after the fixture's epoch.
pub fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(EPOCH_S + seconds, 0).expect("in range")
}

/// Makes history have applied `wallet`'s entries `first` and `second` the
/// other way round: swapped in applied order and in `applied_at`.
pub fn apply_out_of_order(snap: &mut Snapshot, wallet: Uuid, first: i64, second: i64) {
    let position = |snap: &Snapshot, seq: i64| {
        snap.history
            .iter()
            .position(|h| h.wallet_id == wallet && h.seq == seq)
            .expect("both entries are in history")
    };
    let (a, b) = (position(snap, first), position(snap, second));
    let (early, late) = (snap.history[a].applied_at, snap.history[b].applied_at);
    snap.history[a].applied_at = late;
    snap.history[b].applied_at = early;
    snap.history.swap(a, b);
}

/// One acknowledged attempt that showed `observed`.
/// A history row as the history API shows it.
pub fn shown(row: &HistoryRow) -> ShownEntry {
    ShownEntry {
        event_id: row.event_id,
        wallet_id: row.wallet_id,
        user_id: row.user_id.clone(),
        seq: row.seq,
        kind: row.kind.clone(),
        amount: row.amount,
        balance_after: row.balance_after,
        transfer_id: row.transfer_id,
        counterparty_wallet_id: row.counterparty_wallet_id,
        committed_at: row.committed_at,
    }
}

fn list(id: String, entries: Vec<ShownEntry>) -> WalkedList {
    WalkedList {
        id,
        pages: 1,
        entries,
        error: None,
    }
}

fn ok_attempt(observed: Observed) -> Attempt {
    Attempt {
        outcome: Outcome::Ok,
        status: Some(200),
        error_code: None,
        started_us: 0,
        latency_us: 500,
        observed: Some(observed),
    }
}
