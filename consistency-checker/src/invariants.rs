//! The invariants of docs/invariants.md, each a pure function over a
//! [`Snapshot`]: no I/O, no clock, no randomness, so the in-process
//! simulation can run the very same code thousands of times per minute and
//! a real run's verdict depends on its rows alone.
//!
//! Every function is linear in the snapshot (hash maps for lookups, never a
//! scan per row), since a run can leave some 300k ledger rows. Violations
//! come out in the snapshot's own row order, never a hash map's, so the
//! same snapshot always yields the same report.
//!
//! Each violation is a diagnosis in money terms: which wallet, event,
//! operation or transfer; the amounts on each side; the time it concerns
//! and the fault windows around that time.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use run_log::{OpKind, OpRecord, Outcome};
use rust_decimal::Decimal;
use uuid::Uuid;
use wallet_events::{EventKind, format_money};

use crate::report::{
    CheckResult, Facts, Invariant, Report, Status, VIOLATIONS_STORED_MAX, Violation,
};
use crate::snapshot::{LedgerRow, Snapshot};

/// Legs listed in one message before the rest is elided: enough to show
/// what a key wrote, short enough to stay one line.
const LEGS_SHOWN_MAX: usize = 4;

#[cfg(test)]
mod tests;

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
        ops_unverifiable: s.ops.iter().filter(|op| unverifiable(op)).count() as u64,
        fault_windows: s.faults.len() as u64,
        total_balance: s.wallets.iter().map(|w| w.balance).sum(),
        total_funded: total_funded(s),
        convergence: s.convergence,
    }
}

/// `balance-matches-ledger`: every wallet's balance equals the signed sum
/// of its ledger entries. Examines wallets.
pub fn balance_matches_ledger(s: &Snapshot) -> CheckResult {
    let mut f = Findings::new(s);
    let mut sums: HashMap<Uuid, Decimal> = HashMap::with_capacity(s.wallets.len());
    for entry in &s.ledger {
        *sums.entry(entry.wallet_id).or_default() += entry.signed_amount();
    }
    for wallet in &s.wallets {
        f.examined += 1;
        let ledger_sum = sums.get(&wallet.id).copied().unwrap_or_default();
        if ledger_sum != wallet.balance {
            f.push(Finding {
                wallet_id: Some(wallet.id),
                expected: Some(ledger_sum),
                actual: Some(wallet.balance),
                at: Some(wallet.updated_at),
                message: format!(
                    "wallet {}: balance {} but its ledger sums to {} (off by {})",
                    wallet.id,
                    money(wallet.balance),
                    money(ledger_sum),
                    money((wallet.balance - ledger_sum).abs())
                ),
                ..Finding::default()
            });
        }
    }
    // Entries of a wallet that does not exist count toward no balance.
    let known: HashSet<Uuid> = s.wallets.iter().map(|w| w.id).collect();
    let mut reported = HashSet::new();
    for entry in &s.ledger {
        if !known.contains(&entry.wallet_id) && reported.insert(entry.wallet_id) {
            let sum = sums[&entry.wallet_id];
            f.push(Finding {
                wallet_id: Some(entry.wallet_id),
                event_id: Some(entry.event_id),
                expected: Some(Decimal::ZERO),
                actual: Some(sum),
                at: Some(entry.created_at),
                message: format!(
                    "wallet {} does not exist but has ledger entries summing to {} (first: event {})",
                    entry.wallet_id,
                    money(sum),
                    entry.event_id
                ),
                ..Finding::default()
            });
        }
    }
    f.finish(Invariant::BalanceMatchesLedger)
}

/// `money-conserved`: the balances add up to the funding; transfers create
/// and destroy nothing. Examines wallets.
pub fn money_conserved(s: &Snapshot) -> CheckResult {
    let mut f = Findings::new(s);
    f.examined = s.wallets.len() as u64;
    let balances: Decimal = s.wallets.iter().map(|w| w.balance).sum();
    let funded = total_funded(s);
    if balances != funded {
        let difference = balances - funded;
        let verb = if difference > Decimal::ZERO {
            "created"
        } else {
            "lost"
        };
        // Where the difference comes from, when the ledger itself shows it.
        let transfers_net: Decimal = s
            .ledger
            .iter()
            .filter(|e| matches!(e.kind, EventKind::TransferIn | EventKind::TransferOut))
            .map(LedgerRow::signed_amount)
            .sum();
        let hint = if transfers_net.is_zero() {
            String::new()
        } else {
            format!(
                "; transfer legs in the ledger net {}",
                signed_money(transfers_net)
            )
        };
        f.push(Finding {
            expected: Some(funded),
            actual: Some(balances),
            message: format!(
                "balances total {} but funding totals {}: {} {verb}{hint}",
                money(balances),
                money(funded),
                money(difference.abs())
            ),
            ..Finding::default()
        });
    }
    f.finish(Invariant::MoneyConserved)
}

/// `no-negative-balance`: no wallet ends below zero, and no ledger entry
/// ever took one there. Examines wallets and ledger entries.
pub fn no_negative_balance(s: &Snapshot) -> CheckResult {
    let mut f = Findings::new(s);
    for wallet in &s.wallets {
        f.examined += 1;
        if wallet.balance.is_sign_negative() && !wallet.balance.is_zero() {
            f.push(Finding {
                wallet_id: Some(wallet.id),
                expected: Some(Decimal::ZERO),
                actual: Some(wallet.balance),
                at: Some(wallet.updated_at),
                message: format!("wallet {}: balance is {}", wallet.id, money(wallet.balance)),
                ..Finding::default()
            });
        }
    }
    // Only the first dip per wallet: that entry is the diagnosis, the ones
    // after it follow from it.
    let mut dipped = HashSet::new();
    for entry in &s.ledger {
        f.examined += 1;
        if entry.balance_after.is_sign_negative()
            && !entry.balance_after.is_zero()
            && dipped.insert(entry.wallet_id)
        {
            f.push(Finding {
                wallet_id: Some(entry.wallet_id),
                event_id: Some(entry.event_id),
                transfer_id: entry.transfer_id,
                expected: Some(Decimal::ZERO),
                actual: Some(entry.balance_after),
                at: Some(entry.created_at),
                message: format!(
                    "wallet {} went to {} at seq {} ({})",
                    entry.wallet_id,
                    money(entry.balance_after),
                    entry.seq,
                    describe_entry(entry)
                ),
                ..Finding::default()
            });
        }
    }
    f.finish(Invariant::NoNegativeBalance)
}

/// `transfer-legs-paired`: each transfer has exactly one `transfer_out`
/// and one `transfer_in` of the same amount, on the wallets each names as
/// its counterparty. Examines transfers.
pub fn transfer_legs_paired(s: &Snapshot) -> CheckResult {
    let mut f = Findings::new(s);
    let mut groups: HashMap<Uuid, Vec<&LedgerRow>> = HashMap::new();
    let mut order: Vec<Uuid> = Vec::new();
    for entry in &s.ledger {
        let is_leg = matches!(entry.kind, EventKind::TransferIn | EventKind::TransferOut);
        match (is_leg, entry.transfer_id) {
            (true, Some(transfer_id)) => {
                let legs = groups.entry(transfer_id).or_default();
                if legs.is_empty() {
                    order.push(transfer_id);
                }
                legs.push(entry);
            }
            (true, None) => f.push(entry_finding(
                entry,
                format!("{} has no transfer_id", describe_entry(entry)),
            )),
            (false, Some(transfer_id)) => f.push(Finding {
                transfer_id: Some(transfer_id),
                ..entry_finding(
                    entry,
                    format!(
                        "{} carries transfer_id {transfer_id}",
                        describe_entry(entry)
                    ),
                )
            }),
            (false, None) => {}
        }
    }
    for transfer_id in order {
        f.examined += 1;
        let legs = &groups[&transfer_id];
        let outs: Vec<&LedgerRow> = legs
            .iter()
            .copied()
            .filter(|e| e.kind == EventKind::TransferOut)
            .collect();
        let ins: Vec<&LedgerRow> = legs
            .iter()
            .copied()
            .filter(|e| e.kind == EventKind::TransferIn)
            .collect();
        let first = legs[0];
        let base = Finding {
            wallet_id: Some(first.wallet_id),
            event_id: Some(first.event_id),
            transfer_id: Some(transfer_id),
            at: Some(first.created_at),
            ..Finding::default()
        };
        match (outs.as_slice(), ins.as_slice()) {
            ([out], [credit]) => {
                if out.amount != credit.amount {
                    f.push(Finding {
                        expected: Some(out.amount),
                        actual: Some(credit.amount),
                        message: format!(
                            "transfer {transfer_id}: wallet {} was debited {} but wallet {} credited {} (off by {})",
                            out.wallet_id,
                            money(out.amount),
                            credit.wallet_id,
                            money(credit.amount),
                            money((out.amount - credit.amount).abs())
                        ),
                        ..base.clone()
                    });
                }
                if out.wallet_id == credit.wallet_id {
                    f.push(Finding {
                        message: format!(
                            "transfer {transfer_id}: both legs ({}) are on wallet {}",
                            money(out.amount),
                            out.wallet_id
                        ),
                        ..base.clone()
                    });
                } else if out.counterparty_wallet_id != Some(credit.wallet_id)
                    || credit.counterparty_wallet_id != Some(out.wallet_id)
                {
                    f.push(Finding {
                        message: format!(
                            "transfer {transfer_id}: debit on wallet {} names counterparty {}, credit on wallet {} names counterparty {}",
                            out.wallet_id,
                            optional(out.counterparty_wallet_id),
                            credit.wallet_id,
                            optional(credit.counterparty_wallet_id)
                        ),
                        ..base.clone()
                    });
                }
            }
            ([out], []) => f.push(Finding {
                wallet_id: Some(out.wallet_id),
                event_id: Some(out.event_id),
                expected: Some(out.amount),
                actual: Some(Decimal::ZERO),
                message: format!(
                    "transfer {transfer_id}: {} left wallet {} (event {}) but no transfer_in credits wallet {}",
                    money(out.amount),
                    out.wallet_id,
                    out.event_id,
                    optional(out.counterparty_wallet_id)
                ),
                ..base.clone()
            }),
            ([], [credit]) => f.push(Finding {
                wallet_id: Some(credit.wallet_id),
                event_id: Some(credit.event_id),
                expected: Some(credit.amount),
                actual: Some(Decimal::ZERO),
                message: format!(
                    "transfer {transfer_id}: {} arrived in wallet {} (event {}) but no transfer_out debits wallet {}",
                    money(credit.amount),
                    credit.wallet_id,
                    credit.event_id,
                    optional(credit.counterparty_wallet_id)
                ),
                ..base.clone()
            }),
            _ => {
                let legs: Vec<&LedgerRow> = legs.to_vec();
                f.push(Finding {
                    message: format!(
                        "transfer {transfer_id} has {} transfer_out and {} transfer_in legs, not one of each: {}",
                        outs.len(),
                        ins.len(),
                        describe_legs(&legs)
                    ),
                    ..base.clone()
                });
            }
        }
    }
    f.finish(Invariant::TransferLegsPaired)
}

/// `acked-write-durable`: the operation log against the ledger, matched by
/// idempotency key (`ledger_entries.request_key`). The attempts of all
/// records sharing a key are one operation, folded by `Outcome::fold`: an
/// `ok` attempt makes it acknowledged; only if every attempt was refused is
/// it refused; otherwise it is maybe-applied. Then:
/// acknowledged means exactly the expected rows, refused means none,
/// indeterminate means none or exactly the expected rows. An acknowledged
/// create means the wallet exists (creates carry no key in the ledger).
/// Ledger keys the log never sent (seeding, manual requests) are not
/// judged: the log speaks only for what loadgen did.
/// Examines mutating operations (key groups, and creates); not evaluated
/// without an operation log.
pub fn acked_write_durable(s: &Snapshot) -> CheckResult {
    let mut f = Findings::new(s);
    if s.ops.is_empty() {
        return f.not_evaluated(Invariant::AckedWriteDurable);
    }
    let mut by_key: HashMap<&str, Vec<&LedgerRow>> = HashMap::new();
    for entry in &s.ledger {
        if let Some(key) = entry.request_key.as_deref() {
            by_key.entry(key).or_default().push(entry);
        }
    }
    let wallets: HashSet<Uuid> = s.wallets.iter().map(|w| w.id).collect();

    // Key groups in order of first appearance in the log.
    let mut groups: Vec<Vec<&OpRecord>> = Vec::new();
    let mut group_of: HashMap<&str, usize> = HashMap::new();
    for op in &s.ops {
        match op.kind {
            OpKind::CreateWallet => {
                let Some(wallet_id) = op.wallet_id else {
                    continue;
                };
                f.examined += 1;
                let exists = wallets.contains(&wallet_id);
                let problem = match op.outcome {
                    Outcome::Ok if !exists => "is acknowledged but the wallet does not exist",
                    Outcome::Failed if exists => "was refused but the wallet exists",
                    _ => continue,
                };
                f.push(op_finding(
                    op,
                    None,
                    None,
                    format!("{} {problem}", describe_op(op, 1)),
                ));
            }
            OpKind::Fund | OpKind::Transfer => {
                let Some(key) = op.idempotency_key.as_deref() else {
                    continue;
                };
                let index = *group_of.entry(key).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
                groups[index].push(op);
            }
            OpKind::GetWallet | OpKind::GetHistory => {}
        }
    }

    for records in &groups {
        f.examined += 1;
        // Every attempt of every record with this key: one operation.
        let outcome = Outcome::fold(records.iter().flat_map(|op| op.attempt_outcomes()))
            .expect("a key group holds at least one record");
        // The record that decided the outcome speaks for the operation.
        let op = records
            .iter()
            .copied()
            .find(|op| op.outcome == outcome)
            .unwrap_or(records[0]);
        let attempts: usize = records.iter().map(|op| op.attempt_count()).sum();
        let key = op.idempotency_key.as_deref().unwrap_or_default();
        let rows: &[&LedgerRow] = by_key.get(key).map(Vec::as_slice).unwrap_or_default();
        let expected_rows = if op.kind == OpKind::Transfer { 2 } else { 1 };
        let exact = rows_match(op, rows);
        let moved = moved(rows);
        let desc = describe_op(op, attempts);
        let finding = |expected: Decimal, message: String| {
            op_finding(op, Some(expected), Some(moved), message).with_rows(rows)
        };
        let amount = op.amount.unwrap_or_default();
        match outcome {
            Outcome::Ok if rows.is_empty() => {
                f.push(finding(amount, format!("acked {desc} is not in the ledger")));
            }
            Outcome::Ok if !exact => f.push(finding(
                amount,
                format!(
                    "acked {desc} does not match the ledger: {} rows carry its key (expected {expected_rows}): {}",
                    rows.len(),
                    describe_legs(rows)
                ),
            )),
            Outcome::Failed if !rows.is_empty() => f.push(finding(
                Decimal::ZERO,
                format!(
                    "refused {desc}{} is in the ledger anyway: {}",
                    op.error_code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default(),
                    describe_legs(rows)
                ),
            )),
            Outcome::Indeterminate if !rows.is_empty() && !exact => {
                let what = if rows.len() > expected_rows {
                    "applied more than once"
                } else {
                    "does not match the ledger"
                };
                f.push(finding(
                    amount,
                    format!(
                        "indeterminate {desc} {what}: {} rows carry its key (expected none or {expected_rows}): {}",
                        rows.len(),
                        describe_legs(rows)
                    ),
                ));
            }
            _ => {}
        }
    }
    f.finish(Invariant::AckedWriteDurable)
}

/// `outbox-drained`: every outbox row was published, and every ledger
/// entry has its outbox row (an entry without one can never reach the
/// topic). Examines outbox rows.
pub fn outbox_drained(s: &Snapshot) -> CheckResult {
    let mut f = Findings::new(s);
    let ledger = ledger_by_event(s);
    let mut with_row = HashSet::with_capacity(s.outbox.len());
    for row in &s.outbox {
        f.examined += 1;
        with_row.insert(row.event_id);
        if row.published_at.is_some() {
            continue;
        }
        let finding = match ledger.get(&row.event_id) {
            Some(entry) => entry_finding(
                entry,
                format!(
                    "outbox row {} was never published: {}",
                    row.id,
                    describe_entry(entry)
                ),
            ),
            None => Finding {
                wallet_id: Some(row.wallet_id),
                event_id: Some(row.event_id),
                at: Some(row.created_at),
                message: format!(
                    "outbox row {} (event {} of wallet {}) was never published",
                    row.id, row.event_id, row.wallet_id
                ),
                ..Finding::default()
            },
        };
        f.push(finding);
    }
    for entry in &s.ledger {
        if !with_row.contains(&entry.event_id) {
            f.push(entry_finding(
                entry,
                format!(
                    "{} has no outbox row: its event can never be published",
                    describe_entry(entry)
                ),
            ));
        }
    }
    f.finish(Invariant::OutboxDrained)
}

/// `history-no-missing`: every ledger entry reached the history, and no
/// event is still parked waiting for a predecessor. Examines ledger
/// entries.
pub fn history_no_missing(s: &Snapshot) -> CheckResult {
    let mut f = Findings::new(s);
    let in_history: HashSet<Uuid> = s.history.iter().map(|h| h.event_id).collect();
    let parked: HashSet<Uuid> = s.parked.iter().map(|p| p.event_id).collect();
    let heads = history_heads(s);
    let waiting_for = |wallet_id: &Uuid| heads.get(wallet_id).copied().unwrap_or(0) + 1;
    for entry in &s.ledger {
        f.examined += 1;
        if in_history.contains(&entry.event_id) {
            continue;
        }
        let parked_note = if parked.contains(&entry.event_id) {
            format!(
                "; it is parked, waiting for seq {}",
                waiting_for(&entry.wallet_id)
            )
        } else {
            String::new()
        };
        f.push(Finding {
            expected: Some(entry.amount),
            actual: None,
            ..entry_finding(
                entry,
                format!(
                    "wallet {}: {} {} (seq {}, event {}) is in the ledger but not in history{parked_note}",
                    entry.wallet_id,
                    entry.kind,
                    money(entry.amount),
                    entry.seq,
                    entry.event_id
                ),
            )
        });
    }
    // Parked events already named above need no second line; the rest
    // (applied meanwhile, or unknown to the ledger) are still stuck rows.
    let ledger = ledger_by_event(s);
    for row in &s.parked {
        let entry = ledger.get(&row.event_id);
        if entry.is_some() && !in_history.contains(&row.event_id) {
            continue;
        }
        let why = match entry {
            None => "has no ledger entry",
            Some(_) => "was applied already",
        };
        f.push(Finding {
            wallet_id: Some(row.wallet_id),
            event_id: Some(row.event_id),
            at: Some(entry.map_or(row.parked_at, |e| e.created_at)),
            message: format!(
                "event {} (seq {} of wallet {}) is still parked after convergence, waiting for seq {}, and {why}",
                row.event_id,
                row.seq,
                row.wallet_id,
                waiting_for(&row.wallet_id)
            ),
            ..Finding::default()
        });
    }
    f.finish(Invariant::HistoryNoMissing)
}

/// `history-no-duplicate`: no event is in the history more than once.
/// Examines distinct history events.
pub fn history_no_duplicate(s: &Snapshot) -> CheckResult {
    let mut f = Findings::new(s);
    let mut counts: HashMap<Uuid, u64> = HashMap::with_capacity(s.history.len());
    for row in &s.history {
        *counts.entry(row.event_id).or_default() += 1;
    }
    f.examined = counts.len() as u64;
    let mut reported = HashSet::new();
    for row in &s.history {
        let times = counts[&row.event_id];
        if times < 2 || !reported.insert(row.event_id) {
            continue;
        }
        let signed = row.signed_amount().unwrap_or(row.amount);
        let extra = signed * Decimal::from(times - 1);
        f.push(Finding {
            wallet_id: Some(row.wallet_id),
            event_id: Some(row.event_id),
            transfer_id: row.transfer_id,
            expected: Some(signed),
            actual: Some(signed * Decimal::from(times)),
            at: Some(row.committed_at),
            message: format!(
                "wallet {}: event {} ({} {}, seq {}) is in history {times} times: its history is off by {}",
                row.wallet_id,
                row.event_id,
                row.kind,
                money(row.amount),
                row.seq,
                signed_money(extra)
            ),
            ..Finding::default()
        });
    }
    f.finish(Invariant::HistoryNoDuplicate)
}

/// `history-no-phantom`: every history row is the image of a ledger entry
/// (same wallet, seq, kind, amount, balance after, transfer and
/// counterparty); a row with no entry is a phantom, a row that differs is a
/// mismatch. Examines history rows.
pub fn history_no_phantom(s: &Snapshot) -> CheckResult {
    let mut f = Findings::new(s);
    let ledger = ledger_by_event(s);
    for row in &s.history {
        f.examined += 1;
        let base = Finding {
            wallet_id: Some(row.wallet_id),
            event_id: Some(row.event_id),
            transfer_id: row.transfer_id,
            actual: Some(row.amount),
            at: Some(row.committed_at),
            ..Finding::default()
        };
        let Some(entry) = ledger.get(&row.event_id) else {
            f.push(Finding {
                expected: Some(Decimal::ZERO),
                message: format!(
                    "phantom: history row for event {} ({} {} on wallet {}, seq {}) has no ledger entry",
                    row.event_id,
                    row.kind,
                    money(row.amount),
                    row.wallet_id,
                    row.seq
                ),
                ..base
            });
            continue;
        };
        let mut differences = Vec::new();
        if row.wallet_id != entry.wallet_id {
            differences.push(format!(
                "wallet {} vs ledger {}",
                row.wallet_id, entry.wallet_id
            ));
        }
        if row.seq != entry.seq {
            differences.push(format!("seq {} vs ledger {}", row.seq, entry.seq));
        }
        if row.kind != entry.kind.as_str() {
            differences.push(format!("kind {} vs ledger {}", row.kind, entry.kind));
        }
        if row.amount != entry.amount {
            differences.push(format!(
                "amount {} vs ledger {}",
                money(row.amount),
                money(entry.amount)
            ));
        }
        if row.balance_after != entry.balance_after {
            differences.push(format!(
                "balance after {} vs ledger {}",
                money(row.balance_after),
                money(entry.balance_after)
            ));
        }
        if row.transfer_id != entry.transfer_id {
            differences.push(format!(
                "transfer {} vs ledger {}",
                optional(row.transfer_id),
                optional(entry.transfer_id)
            ));
        }
        if row.counterparty_wallet_id != entry.counterparty_wallet_id {
            differences.push(format!(
                "counterparty {} vs ledger {}",
                optional(row.counterparty_wallet_id),
                optional(entry.counterparty_wallet_id)
            ));
        }
        if !differences.is_empty() {
            f.push(Finding {
                expected: Some(entry.amount),
                message: format!(
                    "mismatch: history row for event {} (wallet {}, seq {}) differs from its ledger entry: {}",
                    row.event_id,
                    entry.wallet_id,
                    entry.seq,
                    differences.join(", ")
                ),
                ..base
            });
        }
    }
    f.finish(Invariant::HistoryNoPhantom)
}

/// `history-ordered`: per wallet, in applied order, seq runs 1, 2, 3, ...
/// with no gap and no step back. A second copy of an event is left to
/// `history-no-duplicate`. Examines history rows.
pub fn history_ordered(s: &Snapshot) -> CheckResult {
    let mut f = Findings::new(s);
    let mut seen: HashSet<Uuid> = HashSet::with_capacity(s.history.len());
    // Per wallet, the highest seq applied so far.
    let mut last: HashMap<Uuid, i64> = HashMap::new();
    for row in &s.history {
        if !seen.insert(row.event_id) {
            continue;
        }
        f.examined += 1;
        let before = last.get(&row.wallet_id).copied().unwrap_or(0);
        let message = if row.seq == before + 1 {
            None
        } else if before == 0 && row.seq > 1 {
            Some(format!(
                "wallet {}: history starts at seq {} (event {}), not 1",
                row.wallet_id, row.seq, row.event_id
            ))
        } else if row.seq > before {
            Some(format!(
                "wallet {}: history jumps from seq {before} to seq {} (event {}), skipping {}",
                row.wallet_id,
                row.seq,
                row.event_id,
                seq_range(before + 1, row.seq - 1)
            ))
        } else {
            Some(format!(
                "wallet {}: history applied seq {} (event {}) after seq {before}",
                row.wallet_id, row.seq, row.event_id
            ))
        };
        if let Some(message) = message {
            f.push(Finding {
                wallet_id: Some(row.wallet_id),
                event_id: Some(row.event_id),
                transfer_id: row.transfer_id,
                at: Some(row.committed_at),
                message,
                ..Finding::default()
            });
        }
        last.insert(row.wallet_id, before.max(row.seq));
    }
    f.finish(Invariant::HistoryOrdered)
}

/// `history-balance-matches`: per wallet, the signed sum of its history
/// rows (every row, duplicates included: that is what a reader of the
/// history would add up) equals its balance. Examines wallets.
pub fn history_balance_matches(s: &Snapshot) -> CheckResult {
    let mut f = Findings::new(s);
    let mut sums: HashMap<Uuid, Decimal> = HashMap::with_capacity(s.wallets.len());
    for row in &s.history {
        let sum = sums.entry(row.wallet_id).or_default();
        match row.signed_amount() {
            Some(signed) => *sum += signed,
            None => f.push(Finding {
                wallet_id: Some(row.wallet_id),
                event_id: Some(row.event_id),
                actual: Some(row.amount),
                at: Some(row.committed_at),
                message: format!(
                    "wallet {}: history row for event {} has unknown kind {:?}, so its {} counts toward no balance",
                    row.wallet_id,
                    row.event_id,
                    row.kind,
                    money(row.amount)
                ),
                ..Finding::default()
            }),
        }
    }
    for wallet in &s.wallets {
        f.examined += 1;
        let history_sum = sums.get(&wallet.id).copied().unwrap_or_default();
        if history_sum != wallet.balance {
            f.push(Finding {
                wallet_id: Some(wallet.id),
                expected: Some(wallet.balance),
                actual: Some(history_sum),
                at: Some(wallet.updated_at),
                message: format!(
                    "wallet {}: balance {} but its history sums to {} (off by {})",
                    wallet.id,
                    money(wallet.balance),
                    money(history_sum),
                    money((wallet.balance - history_sum).abs())
                ),
                ..Finding::default()
            });
        }
    }
    let known: HashSet<Uuid> = s.wallets.iter().map(|w| w.id).collect();
    let mut reported = HashSet::new();
    for row in &s.history {
        if !known.contains(&row.wallet_id) && reported.insert(row.wallet_id) {
            let sum = sums[&row.wallet_id];
            f.push(Finding {
                wallet_id: Some(row.wallet_id),
                event_id: Some(row.event_id),
                expected: Some(Decimal::ZERO),
                actual: Some(sum),
                at: Some(row.committed_at),
                message: format!(
                    "wallet {} does not exist but its history sums to {}",
                    row.wallet_id,
                    money(sum)
                ),
                ..Finding::default()
            });
        }
    }
    f.finish(Invariant::HistoryBalanceMatches)
}

/// `converged-in-time`: the history caught up within the bound after load
/// and faults stopped. Not evaluated without a measurement.
pub fn converged_in_time(s: &Snapshot) -> CheckResult {
    let mut f = Findings::new(s);
    let Some(c) = s.convergence else {
        return f.not_evaluated(Invariant::ConvergedInTime);
    };
    f.examined = 1;
    if !c.converged {
        f.push(Finding {
            message: format!(
                "history did not catch up with the ledger: gave up after {} ms (bound {} ms)",
                c.took_ms, c.bound_ms
            ),
            ..Finding::default()
        });
    } else if c.took_ms > c.bound_ms {
        f.push(Finding {
            message: format!(
                "history caught up after {} ms, over the {} ms bound",
                c.took_ms, c.bound_ms
            ),
            ..Finding::default()
        });
    }
    f.finish(Invariant::ConvergedInTime)
}

// ---------------------------------------------------------------------------
// Shared pieces.

/// A violation before it is placed in the fault timeline.
#[derive(Debug, Clone, Default)]
struct Finding {
    wallet_id: Option<Uuid>,
    event_id: Option<Uuid>,
    op_id: Option<u64>,
    transfer_id: Option<Uuid>,
    expected: Option<Decimal>,
    actual: Option<Decimal>,
    at: Option<DateTime<Utc>>,
    /// A second instant whose fault windows also matter: the end of an
    /// operation, which can outlast the fault it started in (or start
    /// before the one that broke it).
    until: Option<DateTime<Utc>>,
    message: String,
}

impl Finding {
    /// Fills the transfer and event of a key's rows when it wrote one set.
    fn with_rows(mut self, rows: &[&LedgerRow]) -> Self {
        if let [first, ..] = rows {
            self.event_id = Some(first.event_id);
            self.transfer_id = first.transfer_id;
        }
        self
    }
}

/// Collects the findings of one invariant, storing the first
/// [`VIOLATIONS_STORED_MAX`] and counting all.
struct Findings<'a> {
    snapshot: &'a Snapshot,
    examined: u64,
    violations: Vec<Violation>,
    total: u64,
}

impl<'a> Findings<'a> {
    fn new(snapshot: &'a Snapshot) -> Self {
        Self {
            snapshot,
            examined: 0,
            violations: Vec::new(),
            total: 0,
        }
    }

    fn push(&mut self, finding: Finding) {
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

    fn finish(self, invariant: Invariant) -> CheckResult {
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

    fn not_evaluated(self, invariant: Invariant) -> CheckResult {
        CheckResult {
            invariant,
            status: Status::NotEvaluated,
            examined: 0,
            violations: Vec::new(),
            violations_total: 0,
        }
    }
}

fn entry_finding(entry: &LedgerRow, message: String) -> Finding {
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

fn op_finding(
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

fn op_end(op: &OpRecord) -> DateTime<Utc> {
    let latency = Duration::microseconds(i64::try_from(op.latency_us).unwrap_or(i64::MAX));
    op.intended_at
        .checked_add_signed(latency)
        .unwrap_or(op.intended_at)
}

/// Whether the ledger rows of a key are exactly what the operation should
/// have written. A detail the log lacks (amount, wallet) is not held
/// against the rows; the count and shape still are.
fn rows_match(op: &OpRecord, rows: &[&LedgerRow]) -> bool {
    let amount_ok = |e: &LedgerRow| op.amount.is_none_or(|a| a == e.amount);
    match op.kind {
        OpKind::Fund => match rows {
            [e] => {
                e.kind == EventKind::Funded
                    && op.wallet_id.is_none_or(|w| w == e.wallet_id)
                    && amount_ok(e)
            }
            _ => false,
        },
        OpKind::Transfer => {
            let [a, b] = rows else { return false };
            let (out, credit) = match (a.kind, b.kind) {
                (EventKind::TransferOut, EventKind::TransferIn) => (a, b),
                (EventKind::TransferIn, EventKind::TransferOut) => (b, a),
                _ => return false,
            };
            out.transfer_id.is_some()
                && out.transfer_id == credit.transfer_id
                && op.wallet_id.is_none_or(|w| w == out.wallet_id)
                && op.to_wallet_id.is_none_or(|w| w == credit.wallet_id)
                && amount_ok(out)
                && amount_ok(credit)
        }
        OpKind::CreateWallet | OpKind::GetWallet | OpKind::GetHistory => rows.is_empty(),
    }
}

/// The money a key's rows moved: funding, plus each transfer once (its
/// debit side).
fn moved(rows: &[&LedgerRow]) -> Decimal {
    rows.iter()
        .filter(|e| matches!(e.kind, EventKind::Funded | EventKind::TransferOut))
        .map(|e| e.amount)
        .sum()
}

/// A mutating operation the ledger cannot be asked about.
fn unverifiable(op: &OpRecord) -> bool {
    match op.kind {
        OpKind::CreateWallet => op.wallet_id.is_none(),
        OpKind::Fund | OpKind::Transfer => op.idempotency_key.is_none(),
        OpKind::GetWallet | OpKind::GetHistory => false,
    }
}

fn total_funded(s: &Snapshot) -> Decimal {
    s.ledger
        .iter()
        .filter(|e| e.kind == EventKind::Funded)
        .map(|e| e.amount)
        .sum()
}

fn ledger_by_event(s: &Snapshot) -> HashMap<Uuid, &LedgerRow> {
    s.ledger.iter().map(|e| (e.event_id, e)).collect()
}

/// Per wallet, the highest seq in history.
fn history_heads(s: &Snapshot) -> HashMap<Uuid, i64> {
    let mut heads: HashMap<Uuid, i64> = HashMap::new();
    for row in &s.history {
        let head = heads.entry(row.wallet_id).or_default();
        *head = (*head).max(row.seq);
    }
    heads
}

fn money(value: Decimal) -> String {
    format_money(value)
}

/// Money with an explicit sign, for changes.
fn signed_money(value: Decimal) -> String {
    if value.is_sign_negative() && !value.is_zero() {
        format_money(value)
    } else {
        format!("+{}", format_money(value))
    }
}

fn optional(id: Option<Uuid>) -> String {
    id.map_or_else(|| "none".to_owned(), |id| id.to_string())
}

fn seq_range(from: i64, to: i64) -> String {
    if from == to {
        format!("seq {from}")
    } else {
        format!("seq {from}..{to}")
    }
}

/// `ledger entry E (transfer_out 12.5000 on wallet W, seq 4)`.
fn describe_entry(entry: &LedgerRow) -> String {
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
fn describe_legs(rows: &[&LedgerRow]) -> String {
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
fn describe_op(op: &OpRecord, attempts: usize) -> String {
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
