//! `acked-write-durable`: what the operation log says the clients were told,
//! against the ledger.

use run_log::{Observed, ObservedEntry, OpKind, OpRecord, Outcome};
use rust_decimal::Decimal;
use rustc_hash::{FxHashMap, FxHashSet};
use uuid::Uuid;
use wallet_events::EventKind;

use super::findings::*;
use crate::report::{CheckResult, Invariant};
use crate::snapshot::{LedgerRow, Snapshot};

/// `acked-write-durable`: the operation log against the ledger, matched by
/// idempotency key (`ledger_entries.request_key`). The attempts of all
/// records sharing a key are one operation, folded by `Outcome::fold`: an
/// `ok` attempt makes it acknowledged; only if every attempt was refused is
/// it refused; otherwise it is maybe-applied. Then:
/// acknowledged means exactly the expected rows, refused means none,
/// indeterminate means none or exactly the expected rows. What each
/// acknowledged attempt's response said (event ids, wallets, seqs,
/// amounts, `balance_after`) must be what the ledger holds: a replay that
/// answers with other data is caught here. An acknowledged create means
/// the wallet exists (creates carry no key in the ledger). A ledger row
/// that no operation of the log asked for (no key, or a key the log never
/// sent) is a violation: the run's databases are the load's alone.
/// Examines mutating operations (key groups, and creates) and ledger rows;
/// not evaluated without an operation log.
pub fn acked_write_durable(s: &Snapshot) -> CheckResult {
    let mut f = Findings::new(s);
    if s.ops.is_empty() {
        return f.not_evaluated(Invariant::AckedWriteDurable);
    }
    let mut by_key: FxHashMap<&str, Vec<&LedgerRow>> = FxHashMap::default();
    for entry in &s.ledger {
        if let Some(key) = entry.request_key.as_deref() {
            by_key.entry(key).or_default().push(entry);
        }
    }
    let wallets: FxHashSet<Uuid> = s.wallets.iter().map(|w| w.id).collect();

    for op in s.ops.iter().filter(|op| op.kind == OpKind::CreateWallet) {
        judge_create(&mut f, op, &wallets);
    }
    let KeyGroups { groups, index } = key_groups(&s.ops);
    let created: FxHashSet<Uuid> = s
        .ops
        .iter()
        .filter(|op| op.kind == OpKind::CreateWallet)
        .filter_map(|op| op.wallet_id)
        .collect();
    for records in &groups {
        f.examined += 1;
        let key = records[0].idempotency_key.as_deref().unwrap_or_default();
        let rows: &[&LedgerRow] = by_key.get(key).map(Vec::as_slice).unwrap_or_default();
        judge_keyed(&mut f, records, rows);
        judge_responses(&mut f, records, rows);
    }
    for entry in &s.ledger {
        f.examined += 1;
        let unasked = match entry.request_key.as_deref() {
            Some(key) if index.contains_key(key) => None,
            Some(key) => Some(format!(
                "carries key {key:?}, which no operation of the load sent"
            )),
            // A create writes its wallet's first entry, without a key.
            None if entry.kind == EventKind::Created && created.contains(&entry.wallet_id) => None,
            None if entry.kind == EventKind::Created => {
                Some("creates a wallet no logged create made".to_owned())
            }
            None => Some("carries no idempotency key".to_owned()),
        };
        if let Some(why) = unasked {
            f.push(entry_finding(
                entry,
                format!("{} {why}: no operation asked for it", describe_entry(entry)),
            ));
        }
    }
    f.finish(Invariant::AckedWriteDurable)
}

/// What each acknowledged attempt of a key's operation was told, against
/// the rows that carry the key (when those are the right rows: a wrong
/// set is reported by [`judge_keyed`]).
fn judge_responses(f: &mut Findings, records: &[&OpRecord], rows: &[&LedgerRow]) {
    for op in records {
        let told = op
            .attempts
            .iter()
            .filter(|a| a.outcome == Outcome::Ok)
            .filter_map(|a| a.observed.as_ref());
        for observed in told {
            let problem = match observed {
                Observed::Entries(entries) => response_mismatch(entries, rows),
                Observed::WalletAfter { wallet_id, balance } => match rows {
                    [row] if row.wallet_id != *wallet_id || row.balance_after != *balance => {
                        Some(format!(
                            "the response said wallet {wallet_id} holds {} after it; the ledger's entry says wallet {} balance_after {}",
                            money(*balance),
                            row.wallet_id,
                            money(row.balance_after)
                        ))
                    }
                    _ => None,
                },
                Observed::Malformed(reason) => Some(format!(
                    "its 2xx body is not what the API promises: {reason}"
                )),
                Observed::Balance(_) | Observed::HistoryPage(_) => {
                    Some("its response showed a read, not what it wrote".into())
                }
            };
            if let Some(problem) = problem {
                let desc = describe_op(op, op.attempt_count());
                f.push(
                    op_finding(op, None, None, format!("acked {desc}: {problem}")).with_rows(rows),
                );
                return;
            }
        }
    }
}

/// How a response's entries differ from the ledger rows of their key.
fn response_mismatch(entries: &[ObservedEntry], rows: &[&LedgerRow]) -> Option<String> {
    if rows.is_empty() {
        return None;
    }
    if entries.len() != rows.len() {
        return Some(format!(
            "the response named {} entries, the ledger holds {} for its key",
            entries.len(),
            rows.len()
        ));
    }
    for told in entries {
        let Some(row) = rows.iter().find(|r| r.event_id == told.event_id) else {
            return Some(format!(
                "the response named event {}, which the ledger does not hold under its key",
                told.event_id
            ));
        };
        let same = row.wallet_id == told.wallet_id
            && row.seq == told.seq
            && row.amount == told.amount
            && row.balance_after == told.balance_after;
        if !same {
            return Some(format!(
                "the response said event {} is wallet {} seq {} amount {} balance_after {}; the ledger says wallet {} seq {} amount {} balance_after {}",
                told.event_id,
                told.wallet_id,
                told.seq,
                money(told.amount),
                money(told.balance_after),
                row.wallet_id,
                row.seq,
                money(row.amount),
                money(row.balance_after)
            ));
        }
    }
    None
}

/// An acknowledged create means the wallet exists; a refused one, that it
/// does not.
fn judge_create(f: &mut Findings, op: &OpRecord, wallets: &FxHashSet<Uuid>) {
    let Some(wallet_id) = op.wallet_id else {
        return;
    };
    f.examined += 1;
    let exists = wallets.contains(&wallet_id);
    let problem = match op.outcome {
        Outcome::Ok if !exists => "is acknowledged but the wallet does not exist",
        Outcome::Failed if exists => "was refused but the wallet exists",
        _ => return,
    };
    f.push(op_finding(
        op,
        None,
        None,
        format!("{} {problem}", describe_op(op, 1)),
    ));
}

/// The records of one idempotency key (one operation) against the ledger
/// rows that carry the key.
fn judge_keyed(f: &mut Findings, records: &[&OpRecord], rows: &[&LedgerRow]) {
    // Every attempt of every record with this key: one operation.
    let outcome = group_outcome(records);
    // The record that decided the outcome speaks for the operation.
    let op = records
        .iter()
        .copied()
        .find(|op| op.outcome == outcome)
        .unwrap_or(records[0]);
    let attempts: usize = records.iter().map(|op| op.attempt_count()).sum();
    let expected_rows = if op.kind == OpKind::Transfer { 2 } else { 1 };
    let exact = rows_match(op, rows);
    let moved = moved(rows);
    // Named only when something is wrong: most operations are fine.
    let describe = || describe_op(op, attempts);
    let finding = |expected: Decimal, message: String| {
        op_finding(op, Some(expected), Some(moved), message).with_rows(rows)
    };
    let amount = op.amount.unwrap_or_default();
    match outcome {
        Outcome::Ok if rows.is_empty() => {
            let message = format!("acked {} is not in the ledger", describe());
            f.push(finding(amount, message));
        }
        Outcome::Ok if !exact => f.push(finding(
            amount,
            format!(
                "acked {desc} does not match the ledger: {} rows carry its key (expected {expected_rows}): {}",
                rows.len(),
                describe_legs(rows),
                desc = describe(),
            ),
        )),
        Outcome::Failed if !rows.is_empty() => f.push(finding(
            Decimal::ZERO,
            format!(
                "refused {desc}{} is in the ledger anyway: {}",
                op.error_code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default(),
                describe_legs(rows),
                desc = describe(),
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
                    describe_legs(rows),
                desc = describe(),
            ),
            ));
        }
        _ => {}
    }
}

/// Whether the ledger rows of a key are exactly what the operation should
/// have written. A detail the log lacks (amount, wallet) is not held
/// against the rows; the count and shape still are.
pub(super) fn rows_match(op: &OpRecord, rows: &[&LedgerRow]) -> bool {
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
pub(super) fn moved(rows: &[&LedgerRow]) -> Decimal {
    rows.iter()
        .filter(|e| matches!(e.kind, EventKind::Funded | EventKind::TransferOut))
        .map(|e| e.amount)
        .sum()
}

/// A mutating operation the ledger cannot be asked about.
pub(super) fn unverifiable(op: &OpRecord) -> bool {
    match op.kind {
        OpKind::CreateWallet => op.wallet_id.is_none(),
        OpKind::Fund | OpKind::Transfer => op.idempotency_key.is_none(),
        OpKind::GetWallet | OpKind::GetHistory => false,
    }
}

/// `no-internal-errors`: no request of the load was answered with a 500.
/// A service that cannot reach its database answers 503 (retry); a 500 is
/// an error nobody expected, and the request that caused it is named.
/// Examines operations; not evaluated without an operation log.
pub fn no_internal_errors(s: &Snapshot) -> CheckResult {
    let mut f = Findings::new(s);
    if s.ops.is_empty() {
        return f.not_evaluated(Invariant::NoInternalErrors);
    }
    for op in &s.ops {
        f.examined += 1;
        let statuses: Vec<Option<u16>> = if op.attempts.is_empty() {
            vec![op.status]
        } else {
            op.attempts.iter().map(|a| a.status).collect()
        };
        let Some(attempt) = statuses.iter().position(|s| *s == Some(500)) else {
            continue;
        };
        let code = op
            .attempts
            .get(attempt)
            .and_then(|a| a.error_code.clone())
            .or_else(|| op.error_code.clone())
            .unwrap_or_default();
        f.push(op_finding(
            op,
            None,
            None,
            format!(
                "{} got a 500 ({code}) on attempt {}",
                describe_request(op),
                attempt + 1
            ),
        ));
    }
    f.finish(Invariant::NoInternalErrors)
}

/// The request an operation sent, as a client would log it.
fn describe_request(op: &OpRecord) -> String {
    let wallet = op
        .wallet_id
        .map_or_else(|| "?".to_owned(), |id| id.to_string());
    match op.kind {
        OpKind::CreateWallet => format!("op {}: POST /wallets", op.op_id),
        OpKind::Fund => format!("op {}: POST /wallets/{wallet}/fund", op.op_id),
        OpKind::Transfer => format!("op {}: POST /wallets/{wallet}/transfer", op.op_id),
        OpKind::GetWallet => format!("op {}: GET /wallets/{wallet}", op.op_id),
        OpKind::GetHistory => format!("op {}: GET /wallets/{wallet}/history", op.op_id),
    }
}
