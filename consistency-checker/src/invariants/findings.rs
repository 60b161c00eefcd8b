//! What every invariant shares: [`Findings`] (store the first violations,
//! count all, place each in its fault windows) and the helpers that describe
//! wallets, entries and operations in money terms.

use chrono::{DateTime, Duration, Utc};
use run_log::{OpKind, OpRecord, Outcome};
use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use uuid::Uuid;
use wallet_events::{EventKind, format_money};

use crate::report::{CheckResult, Invariant, Status, VIOLATIONS_STORED_MAX, Violation};
use crate::snapshot::{LedgerRow, Snapshot};

/// Legs listed in one message before the rest is elided: enough to show
/// what a key wrote, short enough to stay one line.
pub(super) const LEGS_SHOWN_MAX: usize = 4;

/// A violation before it is placed in the fault timeline.
#[derive(Debug, Clone, Default)]
pub(super) struct Finding {
    pub(super) wallet_id: Option<Uuid>,
    pub(super) event_id: Option<Uuid>,
    pub(super) op_id: Option<u64>,
    pub(super) transfer_id: Option<Uuid>,
    pub(super) expected: Option<Decimal>,
    pub(super) actual: Option<Decimal>,
    pub(super) at: Option<DateTime<Utc>>,
    /// A second instant whose fault windows also matter: the end of an
    /// operation, which can outlast the fault it started in (or start
    /// before the one that broke it).
    pub(super) until: Option<DateTime<Utc>>,
    pub(super) message: String,
}

impl Finding {
    /// Fills the transfer and event of a key's rows when it wrote one set.
    pub(super) fn with_rows(mut self, rows: &[&LedgerRow]) -> Self {
        if let [first, ..] = rows {
            self.event_id = Some(first.event_id);
            self.transfer_id = first.transfer_id;
        }
        self
    }
}

/// Collects the findings of one invariant, storing the first
/// [`VIOLATIONS_STORED_MAX`] and counting all.
pub(super) struct Findings<'a> {
    pub(super) snapshot: &'a Snapshot,
    pub(super) examined: u64,
    pub(super) violations: Vec<Violation>,
    pub(super) total: u64,
}

impl<'a> Findings<'a> {
    pub(super) fn new(snapshot: &'a Snapshot) -> Self {
        Self {
            snapshot,
            examined: 0,
            violations: Vec::new(),
            total: 0,
        }
    }

    pub(super) fn push(&mut self, finding: Finding) {
        self.total += 1;
        if self.violations.len() >= VIOLATIONS_STORED_MAX {
            return;
        }
        let faults = &self.snapshot.faults;
        let mut windows: Vec<String> = Vec::new();
        for instant in [finding.at, finding.until].into_iter().flatten() {
            for label in run_log::windows_at(faults, instant) {
                if !windows.contains(&label) {
                    windows.push(label);
                }
            }
        }
        let message = if windows.is_empty() {
            finding.message
        } else {
            format!("{} [during {}]", finding.message, windows.join(", "))
        };
        self.violations.push(Violation {
            wallet_id: finding.wallet_id,
            event_id: finding.event_id,
            op_id: finding.op_id,
            transfer_id: finding.transfer_id,
            expected: finding.expected,
            actual: finding.actual,
            at: finding.at,
            fault_windows: windows,
            message,
        });
    }

    pub(super) fn finish(self, invariant: Invariant) -> CheckResult {
        CheckResult {
            invariant,
            status: if self.total == 0 {
                Status::Passed
            } else {
                Status::Violated
            },
            examined: self.examined,
            violations: self.violations,
            violations_total: self.total,
        }
    }

    pub(super) fn not_evaluated(self, invariant: Invariant) -> CheckResult {
        CheckResult {
            invariant,
            status: Status::NotEvaluated,
            examined: 0,
            violations: Vec::new(),
            violations_total: 0,
        }
    }
}

pub(super) fn entry_finding(entry: &LedgerRow, message: String) -> Finding {
    Finding {
        wallet_id: Some(entry.wallet_id),
        event_id: Some(entry.event_id),
        transfer_id: entry.transfer_id,
        actual: Some(entry.amount),
        at: Some(entry.created_at),
        message,
        ..Finding::default()
    }
}

pub(super) fn op_finding(
    op: &OpRecord,
    expected: Option<Decimal>,
    actual: Option<Decimal>,
    message: String,
) -> Finding {
    Finding {
        wallet_id: op.wallet_id,
        op_id: Some(op.op_id),
        expected,
        actual,
        at: Some(op.intended_at),
        until: Some(op_end(op)),
        message,
        ..Finding::default()
    }
}

pub(super) fn op_end(op: &OpRecord) -> DateTime<Utc> {
    let latency = Duration::microseconds(i64::try_from(op.latency_us).unwrap_or(i64::MAX));
    op.intended_at
        .checked_add_signed(latency)
        .unwrap_or(op.intended_at)
}

/// The log's funds and transfers as operations: the records that share an
/// idempotency key (retries, reruns) are one, in order of first appearance.
/// Records without a key are in no group.
pub(super) struct KeyGroups<'a> {
    pub(super) groups: Vec<Vec<&'a OpRecord>>,
    pub(super) index: FxHashMap<&'a str, usize>,
}

pub(super) fn key_groups(ops: &[OpRecord]) -> KeyGroups<'_> {
    // Most keys have one record: size for that.
    let mut groups: Vec<Vec<&OpRecord>> = Vec::with_capacity(ops.len());
    let mut index: FxHashMap<&str, usize> =
        FxHashMap::with_capacity_and_hasher(ops.len(), Default::default());
    for op in ops {
        if !matches!(op.kind, OpKind::Fund | OpKind::Transfer) {
            continue;
        }
        let Some(key) = op.idempotency_key.as_deref() else {
            continue;
        };
        let at = *index.entry(key).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[at].push(op);
    }
    KeyGroups { groups, index }
}

/// One operation's outcome: every attempt of every record of its key,
/// folded.
pub(super) fn group_outcome(records: &[&OpRecord]) -> Outcome {
    Outcome::fold(records.iter().flat_map(|op| op.attempt_outcomes()))
        .expect("a key group holds at least one record")
}

pub(super) fn total_funded(s: &Snapshot) -> Decimal {
    s.ledger
        .iter()
        .filter(|e| e.kind == EventKind::Funded)
        .map(|e| e.amount)
        .sum()
}

pub(super) fn ledger_by_event(s: &Snapshot) -> FxHashMap<Uuid, &LedgerRow> {
    s.ledger.iter().map(|e| (e.event_id, e)).collect()
}

/// Per wallet, the highest seq in history.
pub(super) fn history_heads(s: &Snapshot) -> FxHashMap<Uuid, i64> {
    let mut heads: FxHashMap<Uuid, i64> = FxHashMap::default();
    for row in &s.history {
        let head = heads.entry(row.wallet_id).or_default();
        *head = (*head).max(row.seq);
    }
    heads
}

pub(super) fn money(value: Decimal) -> String {
    format_money(value)
}

/// Money with an explicit sign, for changes.
pub(super) fn signed_money(value: Decimal) -> String {
    if value.is_sign_negative() && !value.is_zero() {
        format_money(value)
    } else {
        format!("+{}", format_money(value))
    }
}

pub(super) fn optional(id: Option<Uuid>) -> String {
    id.map_or_else(|| "none".to_owned(), |id| id.to_string())
}

pub(super) fn seq_range(from: i64, to: i64) -> String {
    if from == to {
        format!("seq {from}")
    } else {
        format!("seq {from}..{to}")
    }
}

/// `ledger entry E (transfer_out 12.5000 on wallet W, seq 4)`.
pub(super) fn describe_entry(entry: &LedgerRow) -> String {
    format!(
        "ledger entry {} ({} {} on wallet {}, seq {})",
        entry.event_id,
        entry.kind,
        money(entry.amount),
        entry.wallet_id,
        entry.seq
    )
}

/// The legs of a key or transfer, a few of them.
pub(super) fn describe_legs(rows: &[&LedgerRow]) -> String {
    let mut parts: Vec<String> = rows
        .iter()
        .take(LEGS_SHOWN_MAX)
        .map(|e| {
            format!(
                "{} {} on wallet {} (event {}{})",
                e.kind,
                money(e.amount),
                e.wallet_id,
                e.event_id,
                e.transfer_id
                    .map(|t| format!(", transfer {t}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    if rows.len() > LEGS_SHOWN_MAX {
        parts.push(format!("and {} more", rows.len() - LEGS_SHOWN_MAX));
    }
    parts.join("; ")
}

/// `transfer op 17 (12.5000 from wallet A to wallet B, key k-17)`.
pub(super) fn describe_op(op: &OpRecord, attempts: usize) -> String {
    let amount = op.amount.map_or_else(|| "?".to_owned(), format_money);
    let wallet = |id: Option<Uuid>| id.map_or_else(|| "?".to_owned(), |id| id.to_string());
    let key = op.idempotency_key.as_deref().unwrap_or("none");
    let tries = if attempts > 1 {
        format!(", {attempts} attempts")
    } else {
        String::new()
    };
    match op.kind {
        OpKind::CreateWallet => format!("create op {} (wallet {})", op.op_id, wallet(op.wallet_id)),
        OpKind::Fund => format!(
            "fund op {} ({amount} into wallet {}, key {key}{tries})",
            op.op_id,
            wallet(op.wallet_id)
        ),
        OpKind::Transfer => format!(
            "transfer op {} ({amount} from wallet {} to wallet {}, key {key}{tries})",
            op.op_id,
            wallet(op.wallet_id),
            wallet(op.to_wallet_id)
        ),
        OpKind::GetWallet | OpKind::GetHistory => format!("op {}", op.op_id),
    }
}
