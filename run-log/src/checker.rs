//! `checker.json`: what the consistency checker says about a run. One
//! [`CheckResult`] per [`Invariant`], each [`Violation`] a diagnosis in
//! money terms, plus non-failing [`Facts`]. The checker writes these types
//! and the reports read them back; money travels as four-digit decimal
//! strings, as everywhere else.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::summary::Convergence;

/// The invariants, by their stable names (docs/invariants.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Invariant {
    BalanceMatchesLedger,
    MoneyConserved,
    NoNegativeBalance,
    TransferLegsPaired,
    AckedWriteDurable,
    OutboxDrained,
    HistoryNoMissing,
    HistoryNoDuplicate,
    HistoryNoPhantom,
    HistoryOrdered,
    HistoryBalanceMatches,
    HistoryNoDeadLetter,
    NoInternalErrors,
    ReadsConsistent,
    HistoryReadsMatch,
    ConvergedInTime,
}

impl Invariant {
    /// Every invariant, in report order.
    pub const ALL: [Invariant; 16] = [
        Invariant::BalanceMatchesLedger,
        Invariant::MoneyConserved,
        Invariant::NoNegativeBalance,
        Invariant::TransferLegsPaired,
        Invariant::AckedWriteDurable,
        Invariant::OutboxDrained,
        Invariant::HistoryNoMissing,
        Invariant::HistoryNoDuplicate,
        Invariant::HistoryNoPhantom,
        Invariant::HistoryOrdered,
        Invariant::HistoryBalanceMatches,
        Invariant::HistoryNoDeadLetter,
        Invariant::NoInternalErrors,
        Invariant::ReadsConsistent,
        Invariant::HistoryReadsMatch,
        Invariant::ConvergedInTime,
    ];

    /// The stable name used in JSON and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Invariant::BalanceMatchesLedger => "balance-matches-ledger",
            Invariant::MoneyConserved => "money-conserved",
            Invariant::NoNegativeBalance => "no-negative-balance",
            Invariant::TransferLegsPaired => "transfer-legs-paired",
            Invariant::AckedWriteDurable => "acked-write-durable",
            Invariant::OutboxDrained => "outbox-drained",
            Invariant::HistoryNoMissing => "history-no-missing",
            Invariant::HistoryNoDuplicate => "history-no-duplicate",
            Invariant::HistoryNoPhantom => "history-no-phantom",
            Invariant::HistoryOrdered => "history-ordered",
            Invariant::HistoryBalanceMatches => "history-balance-matches",
            Invariant::HistoryNoDeadLetter => "history-no-dead-letter",
            Invariant::NoInternalErrors => "no-internal-errors",
            Invariant::ReadsConsistent => "reads-consistent",
            Invariant::HistoryReadsMatch => "history-reads-match",
            Invariant::ConvergedInTime => "converged-in-time",
        }
    }
}

impl std::fmt::Display for Invariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict on one invariant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Passed,
    Violated,
    /// The snapshot lacks what the check needs (no operation log, no
    /// convergence measurement). Not a failure.
    NotEvaluated,
}

/// One way an invariant was broken, named in money terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    pub wallet_id: Option<Uuid>,
    pub event_id: Option<Uuid>,
    pub op_id: Option<u64>,
    pub transfer_id: Option<Uuid>,
    /// What the amount should have been.
    #[serde(with = "wallet_events::money_str_opt")]
    pub expected: Option<Decimal>,
    /// What it was.
    #[serde(with = "wallet_events::money_str_opt")]
    pub actual: Option<Decimal>,
    /// The time the violation concerns: the ledger entry's creation, the
    /// operation's intended start, or the history row's commit time.
    pub at: Option<DateTime<Utc>>,
    /// Labels of the fault windows that contain `at`.
    pub fault_windows: Vec<String>,
    /// One line for a human, fault windows included.
    pub message: String,
}

/// The verdict on one invariant with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub invariant: Invariant,
    pub status: Status,
    /// How many things (wallets, entries, operations, ...) were examined.
    pub examined: u64,
    /// The first [`VIOLATIONS_STORED_MAX`] violations.
    pub violations: Vec<Violation>,
    /// All violations, including those not stored.
    pub violations_total: u64,
}

/// Stored violations per invariant: one systematic bug can break every row
/// of a run, and a report of 300k identical lines helps nobody; the total
/// is still counted.
pub const VIOLATIONS_STORED_MAX: usize = 50;

/// Non-failing observations about the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    pub wallets: u64,
    pub ledger_entries: u64,
    pub outbox_rows: u64,
    pub outbox_unpublished: u64,
    pub history_entries: u64,
    /// Events still waiting for a predecessor (a `history-no-missing`
    /// problem when non-zero).
    pub parked_events: u64,
    /// Messages the consumer could not decode.
    pub dead_letters: u64,
    pub ops: u64,
    pub ops_ok: u64,
    pub ops_failed: u64,
    pub ops_indeterminate: u64,
    /// Operations sent more than once (same idempotency key).
    #[serde(default)]
    pub ops_retried: u64,
    /// Operations with an indeterminate attempt that a retry resolved to
    /// acknowledged.
    #[serde(default)]
    pub ops_resolved_by_retry: u64,
    /// HTTP attempts over all operations.
    #[serde(default)]
    pub attempts: u64,
    /// Mutating operations the ledger cannot be asked about (no
    /// idempotency key, or no wallet id for a create).
    pub ops_unverifiable: u64,
    pub fault_windows: u64,
    /// Sum of all wallet balances.
    #[serde(with = "wallet_events::money_str")]
    pub total_balance: Decimal,
    /// Sum of all `funded` ledger entries: the only money that enters.
    #[serde(with = "wallet_events::money_str")]
    pub total_funded: Decimal,
    pub convergence: Option<Convergence>,
}

/// The checker's whole verdict: `checker.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// No invariant was violated (not-evaluated ones do not count).
    pub passed: bool,
    pub checks: Vec<CheckResult>,
    pub facts: Facts,
}

impl Report {
    /// The result for `invariant`.
    pub fn check(&self, invariant: Invariant) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.invariant == invariant)
    }

    /// The invariants that were violated.
    pub fn violated(&self) -> Vec<Invariant> {
        self.checks
            .iter()
            .filter(|c| c.status == Status::Violated)
            .map(|c| c.invariant)
            .collect()
    }
}
