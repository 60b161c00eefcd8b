//! The history against the ledger: nothing missing, duplicated or invented,
//! in order, summing to the balances.

use chrono::{DateTime, Utc};
use run_log::ShownEntry;
use rust_decimal::Decimal;
use rustc_hash::{FxHashMap, FxHashSet};
use uuid::Uuid;

use super::findings::*;
use crate::report::{CheckResult, Invariant};
use crate::snapshot::{HistoryRow, LedgerRow, Snapshot};

/// `history-no-missing`: every ledger entry reached the history, and no
/// event is still parked waiting for a predecessor. Examines ledger
/// entries.
pub fn history_no_missing(s: &Snapshot) -> CheckResult {
    let mut f = Findings::new(s);
    let in_history: FxHashSet<Uuid> = s.history.iter().map(|h| h.event_id).collect();
    let parked: FxHashSet<Uuid> = s.parked.iter().map(|p| p.event_id).collect();
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
    let mut counts: FxHashMap<Uuid, u64> =
        FxHashMap::with_capacity_and_hasher(s.history.len(), Default::default());
    for row in &s.history {
        *counts.entry(row.event_id).or_default() += 1;
    }
    f.examined = counts.len() as u64;
    let mut reported = FxHashSet::default();
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
/// (same wallet, user, seq, kind, amount, balance after, transfer,
/// counterparty and commit time); a row with no entry is a phantom, a row that differs is a
/// mismatch. Examines history rows.
pub fn history_no_phantom(s: &Snapshot) -> CheckResult {
    let mut f = Findings::new(s);
    let ledger = ledger_by_event(s);
    let users: FxHashMap<Uuid, &str> = s
        .wallets
        .iter()
        .map(|w| (w.id, w.user_id.as_str()))
        .collect();
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
        let user = users.get(&entry.wallet_id).copied();
        let differences = differences(row.into(), entry, user);
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

/// The fields a history row, or an entry the history API showed, shares
/// with the ledger entry it is the image of.
pub(super) struct Shown<'a> {
    pub user_id: &'a str,
    pub committed_at: DateTime<Utc>,
    pub wallet_id: Uuid,
    pub seq: i64,
    pub kind: &'a str,
    pub amount: Decimal,
    pub balance_after: Decimal,
    pub transfer_id: Option<Uuid>,
    pub counterparty_wallet_id: Option<Uuid>,
}

impl<'a> From<&'a HistoryRow> for Shown<'a> {
    fn from(row: &'a HistoryRow) -> Self {
        Shown {
            user_id: &row.user_id,
            committed_at: row.committed_at,
            wallet_id: row.wallet_id,
            seq: row.seq,
            kind: &row.kind,
            amount: row.amount,
            balance_after: row.balance_after,
            transfer_id: row.transfer_id,
            counterparty_wallet_id: row.counterparty_wallet_id,
        }
    }
}

impl<'a> From<&'a ShownEntry> for Shown<'a> {
    fn from(entry: &'a ShownEntry) -> Self {
        Shown {
            user_id: &entry.user_id,
            committed_at: entry.committed_at,
            wallet_id: entry.wallet_id,
            seq: entry.seq,
            kind: &entry.kind,
            amount: entry.amount,
            balance_after: entry.balance_after,
            transfer_id: entry.transfer_id,
            counterparty_wallet_id: entry.counterparty_wallet_id,
        }
    }
}

/// How a history row (or a shown entry) differs from its ledger entry,
/// field by field, as the text each side shows. `user` is the wallet's
/// owner, when the wallet is known.
pub(super) fn differences(row: Shown<'_>, entry: &LedgerRow, user: Option<&str>) -> Vec<String> {
    if identical(&row, entry, user) {
        return Vec::new();
    }
    let fields = [
        (
            "user",
            row.user_id.to_owned(),
            user.unwrap_or(row.user_id).to_owned(),
        ),
        (
            "committed at",
            row.committed_at.to_rfc3339(),
            entry.created_at.to_rfc3339(),
        ),
        (
            "wallet",
            row.wallet_id.to_string(),
            entry.wallet_id.to_string(),
        ),
        ("seq", row.seq.to_string(), entry.seq.to_string()),
        ("kind", row.kind.to_owned(), entry.kind.to_string()),
        ("amount", money(row.amount), money(entry.amount)),
        (
            "balance after",
            money(row.balance_after),
            money(entry.balance_after),
        ),
        (
            "transfer",
            optional(row.transfer_id),
            optional(entry.transfer_id),
        ),
        (
            "counterparty",
            optional(row.counterparty_wallet_id),
            optional(entry.counterparty_wallet_id),
        ),
    ];
    fields
        .into_iter()
        .filter(|(_, ours, ledger)| ours != ledger)
        .map(|(name, ours, ledger)| format!("{name} {ours} vs ledger {ledger}"))
        .collect()
}

/// Whether every field is the same value in the same representation: then
/// each side's text is the same too, and nothing needs formatting. (Equal
/// decimals of different scale are left to the text comparison.)
fn identical(row: &Shown<'_>, entry: &LedgerRow, user: Option<&str>) -> bool {
    let same_money = |a: Decimal, b: Decimal| a == b && a.scale() == b.scale();
    user.is_none_or(|user| user == row.user_id)
        && row.committed_at == entry.created_at
        && row.wallet_id == entry.wallet_id
        && row.seq == entry.seq
        && row.kind == entry.kind.as_str()
        && same_money(row.amount, entry.amount)
        && same_money(row.balance_after, entry.balance_after)
        && row.transfer_id == entry.transfer_id
        && row.counterparty_wallet_id == entry.counterparty_wallet_id
}

/// `history-ordered`: per wallet, in applied order, seq runs 1, 2, 3, ...
/// with no gap and no step back. A second copy of an event is left to
/// `history-no-duplicate`. Examines history rows.
pub fn history_ordered(s: &Snapshot) -> CheckResult {
    let mut f = Findings::new(s);
    let mut seen: FxHashSet<Uuid> =
        FxHashSet::with_capacity_and_hasher(s.history.len(), Default::default());
    // Per wallet, the highest seq applied so far.
    let mut last: FxHashMap<Uuid, i64> = FxHashMap::default();
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
    let mut sums: FxHashMap<Uuid, Decimal> =
        FxHashMap::with_capacity_and_hasher(s.wallets.len(), Default::default());
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
    let known: FxHashSet<Uuid> = s.wallets.iter().map(|w| w.id).collect();
    let mut reported = FxHashSet::default();
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

/// `history-no-dead-letter`: no event of the ledger sits in
/// `dead_letters`. A dead letter is for a message that is not a genuine
/// event (undecodable, or claiming a sequence number another event holds);
/// a ledger event there is history the consumer dropped, even if a copy of
/// it was applied. Examines dead letters.
pub fn history_no_dead_letter(s: &Snapshot) -> CheckResult {
    let mut f = Findings::new(s);
    let ledger = ledger_by_event(s);
    for dead in &s.dead_letters {
        f.examined += 1;
        let Some(entry) = dead.event_id.and_then(|id| ledger.get(&id)) else {
            continue;
        };
        f.push(Finding {
            wallet_id: Some(entry.wallet_id),
            event_id: Some(entry.event_id),
            transfer_id: entry.transfer_id,
            expected: Some(Decimal::ZERO),
            actual: Some(entry.amount),
            at: Some(dead.received_at),
            message: format!(
                "{} sits in dead_letters (partition {}, offset {}): {}",
                describe_entry(entry),
                dead.partition,
                dead.offset,
                dead.error
            ),
            ..Finding::default()
        });
    }
    f.finish(Invariant::HistoryNoDeadLetter)
}
