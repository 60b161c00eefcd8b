//! `reads-consistent`: every balance a read showed is one the wallet held
//! while the read was in flight (the bank read check of Jepsen, against
//! the ledger's `balance_after` chain).

use chrono::{DateTime, Duration, Utc};
use run_log::{Attempt, Observed, OpKind, OpRecord, Outcome};
use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use uuid::Uuid;

use super::findings::*;
use crate::report::{CheckResult, Invariant};
use crate::snapshot::{LedgerRow, Snapshot};

/// When the operation of an idempotency key was in flight, from the log.
#[derive(Debug, Clone, Copy, Default)]
struct KeyTimes {
    /// The start of its first attempt: no entry of it can exist before.
    first_start: Option<DateTime<Utc>>,
    /// The end of its first acknowledged attempt: its entries exist by then.
    acked_end: Option<DateTime<Utc>>,
}

fn attempt_start(op: &OpRecord, attempt: &Attempt) -> DateTime<Utc> {
    op.intended_at + micros(attempt.started_us)
}

fn attempt_end(op: &OpRecord, attempt: &Attempt) -> DateTime<Utc> {
    attempt_start(op, attempt) + micros(attempt.latency_us)
}

fn micros(us: u64) -> Duration {
    Duration::microseconds(i64::try_from(us).unwrap_or(i64::MAX))
}

fn key_times(ops: &[OpRecord]) -> FxHashMap<&str, KeyTimes> {
    let mut times: FxHashMap<&str, KeyTimes> = FxHashMap::default();
    for op in ops {
        let Some(key) = op.idempotency_key.as_deref() else {
            continue;
        };
        let entry = times.entry(key).or_default();
        for attempt in &op.attempts {
            let start = attempt_start(op, attempt);
            entry.first_start = Some(entry.first_start.map_or(start, |s| s.min(start)));
            if attempt.outcome == Outcome::Ok {
                let end = attempt_end(op, attempt);
                entry.acked_end = Some(entry.acked_end.map_or(end, |e| e.min(end)));
            }
        }
    }
    times
}

/// `reads-consistent`: each acknowledged `GET /wallets/{id}` showed a
/// balance the wallet held at some instant while the read was in flight.
/// Of the wallet's ledger chain (0, then each entry's `balance_after` in
/// seq order), the read may show position k only if every write
/// acknowledged before the read started is at or before k (it must be
/// visible) and every entry up to k belongs to an operation that had
/// started before the read ended (it cannot be from the future). Entries
/// whose key the log does not know are given the benefit of the doubt.
/// A 2xx whose body broke the API's promise is a violation too.
/// Examines balance reads; not evaluated without an operation log.
pub fn reads_consistent(s: &Snapshot) -> CheckResult {
    let mut f = Findings::new(s);
    if s.ops.is_empty() {
        return f.not_evaluated(Invariant::ReadsConsistent);
    }
    let times = key_times(&s.ops);
    let mut entries: FxHashMap<Uuid, Vec<&LedgerRow>> = FxHashMap::default();
    for entry in &s.ledger {
        entries.entry(entry.wallet_id).or_default().push(entry);
    }
    let chains: FxHashMap<Uuid, Chain> = entries
        .into_iter()
        .map(|(wallet, entries)| (wallet, Chain::new(entries, &times)))
        .collect();
    let empty = Chain::default();
    for op in s.ops.iter().filter(|op| op.kind == OpKind::GetWallet) {
        let Some(wallet) = op.wallet_id else { continue };
        let chain = chains.get(&wallet).unwrap_or(&empty);
        for attempt in op.attempts.iter().filter(|a| a.outcome == Outcome::Ok) {
            match &attempt.observed {
                Some(Observed::Balance(shown)) => {
                    f.examined += 1;
                    judge_read(&mut f, op, attempt, *shown, chain);
                }
                Some(Observed::Malformed(reason)) => {
                    f.examined += 1;
                    f.push(op_finding(
                        op,
                        None,
                        None,
                        format!(
                            "op {}: GET /wallets/{wallet} answered 2xx with a body that is not a wallet: {reason}",
                            op.op_id
                        ),
                    ));
                }
                Some(
                    Observed::Entries(_) | Observed::WalletAfter { .. } | Observed::HistoryPage(_),
                )
                | None => {}
            }
        }
    }
    f.finish(Invariant::ReadsConsistent)
}

/// A wallet's ledger in seq order, with what bounds a read in O(log n):
/// for each entry, the earliest acknowledgement among it and the entries
/// after it, and the latest first start among it and the entries before.
/// Both are monotone in the position, so a binary search finds the bounds.
#[derive(Default)]
struct Chain<'a> {
    entries: Vec<&'a LedgerRow>,
    acked_from_here: Vec<Option<DateTime<Utc>>>,
    started_up_to_here: Vec<Option<DateTime<Utc>>>,
}

impl<'a> Chain<'a> {
    fn new(mut entries: Vec<&'a LedgerRow>, times: &FxHashMap<&str, KeyTimes>) -> Chain<'a> {
        entries.sort_by_key(|e| e.seq);
        let timing: Vec<KeyTimes> = entries
            .iter()
            .map(|e| {
                e.request_key
                    .as_deref()
                    .and_then(|key| times.get(key))
                    .copied()
                    .unwrap_or_default()
            })
            .collect();
        // Unknown times never bound a read: no acknowledgement, no start.
        let mut acked_from_here = vec![None; entries.len()];
        let mut earliest: Option<DateTime<Utc>> = None;
        for (i, t) in timing.iter().enumerate().rev() {
            earliest = match (earliest, t.acked_end) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            acked_from_here[i] = earliest;
        }
        let mut started_up_to_here = vec![None; entries.len()];
        let mut latest: Option<DateTime<Utc>> = None;
        for (i, t) in timing.iter().enumerate() {
            latest = latest.max(t.first_start);
            started_up_to_here[i] = latest;
        }
        Chain {
            entries,
            acked_from_here,
            started_up_to_here,
        }
    }

    /// Position k stands for the balance after the first k entries. The
    /// lowest a read from `start` to `end` may show: past every entry
    /// acknowledged before it started. The highest: short of the first
    /// entry whose operation started after it ended.
    fn bounds(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> (usize, usize) {
        let lowest = self
            .acked_from_here
            .partition_point(|acked| acked.is_some_and(|acked| acked < start));
        let highest = self
            .started_up_to_here
            .partition_point(|first| first.is_none_or(|first| first <= end));
        (lowest, highest)
    }
}

/// Whether positions `lowest..=highest` are more than a message lists.
fn more_than_shown(lowest: usize, highest: usize) -> bool {
    highest.saturating_sub(lowest) + 1 > LEGS_SHOWN_MAX
}

fn judge_read(f: &mut Findings, op: &OpRecord, attempt: &Attempt, shown: Decimal, chain: &Chain) {
    let (start, end) = (attempt_start(op, attempt), attempt_end(op, attempt));
    let (lowest, highest) = chain.bounds(start, end);
    let chain = &chain.entries;
    let balance_at = |k: usize| {
        if k == 0 {
            Decimal::ZERO
        } else {
            chain[k - 1].balance_after
        }
    };
    if lowest <= highest && (lowest..=highest).any(|k| balance_at(k) == shown) {
        return;
    }
    let allowed: Vec<String> = (lowest..=highest.max(lowest))
        .take(LEGS_SHOWN_MAX)
        .map(|k| money(balance_at(k)))
        .collect();
    let more = if more_than_shown(lowest, highest) {
        ", ..."
    } else {
        ""
    };
    let mut finding = op_finding(
        op,
        Some(balance_at(lowest)),
        Some(shown),
        format!(
            "op {}: GET /wallets/{} showed balance {} but while it was in flight the wallet could only hold {}{more} (after seq {}..{})",
            op.op_id,
            op.wallet_id.map(|w| w.to_string()).unwrap_or_default(),
            money(shown),
            allowed.join(", "),
            lowest,
            highest.max(lowest)
        ),
    );
    finding.at = Some(start);
    finding.until = Some(end);
    f.push(finding);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_lists_at_most_legs_shown_max_balances() {
        let last_listed = LEGS_SHOWN_MAX - 1;
        assert!(!more_than_shown(0, 0));
        assert!(!more_than_shown(2, 2 + last_listed));
        assert!(more_than_shown(2, 2 + last_listed + 1));
        assert!(more_than_shown(0, 10));
        // An empty range (nothing allowed) lists one balance.
        assert!(!more_than_shown(5, 3));
    }
}
