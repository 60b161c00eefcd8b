//! The ledger on its own: balances against entries, money in against money
//! held, no negative balance, transfer legs in pairs.

use run_log::{OpKind, Outcome};
use rust_decimal::Decimal;
use rustc_hash::{FxHashMap, FxHashSet};
use uuid::Uuid;
use wallet_events::EventKind;

use super::findings::*;
use crate::report::{CheckResult, Invariant};
use crate::snapshot::{LedgerRow, Snapshot};

/// `balance-matches-ledger`: every wallet's balance equals the signed sum
/// of its ledger entries, and the ledger is a chain: the wallet's entries
/// are numbered 1..n without a gap, each entry's `balance_after` is the
/// running sum up to it, and the wallet's `last_seq` is n. Examines
/// wallets.
pub fn balance_matches_ledger(s: &Snapshot) -> CheckResult {
    let mut f = Findings::new(s);
    let mut sums: FxHashMap<Uuid, Decimal> =
        FxHashMap::with_capacity_and_hasher(s.wallets.len(), Default::default());
    let mut chains: FxHashMap<Uuid, Vec<&LedgerRow>> =
        FxHashMap::with_capacity_and_hasher(s.wallets.len(), Default::default());
    for entry in &s.ledger {
        *sums.entry(entry.wallet_id).or_default() += entry.signed_amount();
        chains.entry(entry.wallet_id).or_default().push(entry);
    }
    for wallet in &s.wallets {
        f.examined += 1;
        let mut chain = chains.remove(&wallet.id).unwrap_or_default();
        chain.sort_by_key(|e| e.seq);
        judge_chain(&mut f, wallet, &chain);
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
    let known: FxHashSet<Uuid> = s.wallets.iter().map(|w| w.id).collect();
    let mut reported = FxHashSet::default();
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

/// The wallet's entries as a chain; the first break is named.
fn judge_chain(f: &mut Findings, wallet: &crate::snapshot::WalletRow, chain: &[&LedgerRow]) {
    let mut running = Decimal::ZERO;
    for (index, entry) in chain.iter().enumerate() {
        let expected_seq = index as i64 + 1;
        running += entry.signed_amount();
        let problem = if entry.seq != expected_seq {
            Some(format!(
                "seq {} where seq {expected_seq} belongs",
                entry.seq
            ))
        } else if entry.balance_after != running {
            Some(format!(
                "balance_after {} but the entries up to it sum to {}",
                money(entry.balance_after),
                money(running)
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            f.push(Finding {
                expected: Some(running),
                actual: Some(entry.balance_after),
                ..entry_finding(
                    entry,
                    format!(
                        "wallet {}: the ledger chain breaks at {}: {problem}",
                        wallet.id,
                        describe_entry(entry)
                    ),
                )
            });
            return;
        }
    }
    if chain.len() as i64 != wallet.last_seq {
        f.push(Finding {
            wallet_id: Some(wallet.id),
            at: Some(wallet.updated_at),
            message: format!(
                "wallet {}: last_seq {} but it has {} ledger entries",
                wallet.id,
                wallet.last_seq,
                chain.len()
            ),
            ..Finding::default()
        });
    }
}

/// `money-conserved`: the balances add up to the funding in the ledger;
/// transfers create and destroy nothing. And, with an operation log, to
/// the funding the clients asked for, not the ledger's word for it: at
/// least every acknowledged fund, at most those plus every fund that may
/// have applied (indeterminate). Examines wallets.
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
    if !s.ops.is_empty() {
        judge_requested_funding(&mut f, s, balances);
    }
    f.finish(Invariant::MoneyConserved)
}

/// The balances against the funding the operation log asked for, one
/// operation per idempotency key (a fund without a key is its own).
fn judge_requested_funding(f: &mut Findings, s: &Snapshot, balances: Decimal) {
    let funds = key_groups(&s.ops)
        .groups
        .into_iter()
        .filter(|g| g[0].kind == OpKind::Fund);
    let keyless = s
        .ops
        .iter()
        .filter(|op| op.kind == OpKind::Fund && op.idempotency_key.is_none())
        .map(|op| vec![op]);
    let (mut acked, mut maybe) = (Decimal::ZERO, Decimal::ZERO);
    for records in funds.chain(keyless) {
        let amount = records[0].amount.unwrap_or_default();
        match group_outcome(&records) {
            Outcome::Ok => acked += amount,
            Outcome::Indeterminate => maybe += amount,
            Outcome::Failed => {}
        }
    }
    let (low, high) = (acked, acked + maybe);
    if balances < low || balances > high {
        let (expected, verb, difference) = if balances < low {
            (low, "lost", low - balances)
        } else {
            (high, "created", balances - high)
        };
        f.push(Finding {
            expected: Some(expected),
            actual: Some(balances),
            message: format!(
                "balances total {} but the load asked for {} of acknowledged funding and at most {} more that may have applied: {} {verb} beyond what clients requested",
                money(balances),
                money(acked),
                money(maybe),
                money(difference)
            ),
            ..Finding::default()
        });
    }
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
    let mut dipped = FxHashSet::default();
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
    let (groups, order) = legs_by_transfer(s, &mut f);
    for transfer_id in order {
        f.examined += 1;
        judge_transfer(&mut f, transfer_id, &groups[&transfer_id]);
    }
    f.finish(Invariant::TransferLegsPaired)
}

/// Transfer legs by transfer, transfers in order of first appearance;
/// a leg without a transfer id, or a non-leg with one, is a finding.
fn legs_by_transfer<'a>(
    s: &'a Snapshot,
    f: &mut Findings,
) -> (FxHashMap<Uuid, Vec<&'a LedgerRow>>, Vec<Uuid>) {
    let mut groups: FxHashMap<Uuid, Vec<&LedgerRow>> = FxHashMap::default();
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
            // The finding carries the entry's transfer id.
            (false, Some(transfer_id)) => f.push(entry_finding(
                entry,
                format!(
                    "{} carries transfer_id {transfer_id}",
                    describe_entry(entry)
                ),
            )),
            (false, None) => {}
        }
    }
    (groups, order)
}

/// One transfer's legs: exactly one debit and one credit.
fn judge_transfer(f: &mut Findings, transfer_id: Uuid, legs: &[&LedgerRow]) {
    let of_kind = |kind: EventKind| -> Vec<&LedgerRow> {
        legs.iter().copied().filter(|e| e.kind == kind).collect()
    };
    let (outs, ins) = (
        of_kind(EventKind::TransferOut),
        of_kind(EventKind::TransferIn),
    );
    // A lone leg is the first, so `base` points at it.
    let first = legs[0];
    let base = Finding {
        wallet_id: Some(first.wallet_id),
        event_id: Some(first.event_id),
        transfer_id: Some(transfer_id),
        at: Some(first.created_at),
        ..Finding::default()
    };
    match (outs.as_slice(), ins.as_slice()) {
        ([out], [credit]) => judge_pair(f, &base, out, credit),
        ([out], []) => f.push(Finding {
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

/// A debit and a credit: the same amount, on two wallets that name each
/// other.
fn judge_pair(f: &mut Findings, base: &Finding, out: &LedgerRow, credit: &LedgerRow) {
    let transfer_id = base.transfer_id.unwrap_or_default();
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
