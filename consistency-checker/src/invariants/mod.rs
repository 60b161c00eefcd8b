//! The invariants of docs/invariants.md, each a pure function over a
//! [`Snapshot`]: no I/O, no clock, no randomness, so a real run's verdict
//! depends on its rows alone and rows built in memory are judged by the
//! very same code. One module per family: [`ledger`], [`acked`],
//! [`outbox`], [`history`], [`reads`], [`history_reads`], [`liveness`];
//! [`findings`] holds what they share.
//!
//! Every function is linear in the snapshot (hash maps for lookups, never a
//! scan per row), since a run can leave some 300k ledger rows. Violations
//! come out in the snapshot's own row order, never a hash map's, so the
//! same snapshot always yields the same report.
//!
//! Each violation is a diagnosis in money terms: which wallet, event,
//! operation or transfer; the amounts on each side; the time it concerns
//! and the fault windows around that time.

use run_log::Outcome;

use crate::report::{CheckResult, Facts, Invariant, Report, Status};
use crate::snapshot::Snapshot;

mod acked;
mod findings;
mod history;
mod history_reads;
mod ledger;
mod liveness;
mod outbox;
#[cfg(test)]
mod properties;
mod reads;
#[cfg(test)]
mod tests;

pub use acked::{acked_write_durable, no_internal_errors};
pub use history::{
    history_balance_matches, history_no_dead_letter, history_no_duplicate, history_no_missing,
    history_no_phantom, history_ordered,
};
pub use history_reads::history_reads_match;
pub use ledger::{
    balance_matches_ledger, money_conserved, no_negative_balance, transfer_legs_paired,
};
pub use liveness::converged_in_time;
pub use outbox::outbox_drained;
pub use reads::reads_consistent;
/// Runs every invariant and gathers the facts.
pub fn check(snapshot: &Snapshot) -> Report {
    let checks: Vec<CheckResult> = Invariant::ALL
        .iter()
        .map(|&invariant| check_one(snapshot, invariant))
        .collect();
    let passed = checks.iter().all(|c| c.status != Status::Violated);
    Report {
        passed,
        checks,
        facts: facts(snapshot),
    }
}

/// Runs one invariant.
pub fn check_one(snapshot: &Snapshot, invariant: Invariant) -> CheckResult {
    match invariant {
        Invariant::BalanceMatchesLedger => balance_matches_ledger(snapshot),
        Invariant::MoneyConserved => money_conserved(snapshot),
        Invariant::NoNegativeBalance => no_negative_balance(snapshot),
        Invariant::TransferLegsPaired => transfer_legs_paired(snapshot),
        Invariant::AckedWriteDurable => acked_write_durable(snapshot),
        Invariant::OutboxDrained => outbox_drained(snapshot),
        Invariant::HistoryNoMissing => history_no_missing(snapshot),
        Invariant::HistoryNoDuplicate => history_no_duplicate(snapshot),
        Invariant::HistoryNoPhantom => history_no_phantom(snapshot),
        Invariant::HistoryOrdered => history_ordered(snapshot),
        Invariant::HistoryBalanceMatches => history_balance_matches(snapshot),
        Invariant::HistoryNoDeadLetter => history_no_dead_letter(snapshot),
        Invariant::NoInternalErrors => no_internal_errors(snapshot),
        Invariant::ReadsConsistent => reads_consistent(snapshot),
        Invariant::HistoryReadsMatch => history_reads_match(snapshot),
        Invariant::ConvergedInTime => converged_in_time(snapshot),
    }
}

/// The non-failing facts of the report.
pub fn facts(s: &Snapshot) -> Facts {
    let count = |outcome: Outcome| s.ops.iter().filter(|op| op.outcome == outcome).count() as u64;
    Facts {
        wallets: s.wallets.len() as u64,
        ledger_entries: s.ledger.len() as u64,
        outbox_rows: s.outbox.len() as u64,
        outbox_unpublished: s.outbox.iter().filter(|o| o.published_at.is_none()).count() as u64,
        history_entries: s.history.len() as u64,
        parked_events: s.parked.len() as u64,
        dead_letters: s.dead_letters.len() as u64,
        ops: s.ops.len() as u64,
        ops_ok: count(Outcome::Ok),
        ops_failed: count(Outcome::Failed),
        ops_indeterminate: count(Outcome::Indeterminate),
        ops_retried: s.ops.iter().filter(|op| op.attempt_count() > 1).count() as u64,
        ops_resolved_by_retry: s.ops.iter().filter(|op| op.resolved_by_retry()).count() as u64,
        attempts: s.ops.iter().map(|op| op.attempt_count() as u64).sum(),
        ops_unverifiable: s.ops.iter().filter(|op| acked::unverifiable(op)).count() as u64,
        fault_windows: s.faults.len() as u64,
        total_balance: s.wallets.iter().map(|w| w.balance).sum(),
        total_funded: findings::total_funded(s),
        convergence: s.convergence,
    }
}
