//! `reads-consistent`: every balance a read showed is one the wallet held
//! while the read was in flight (the bank read check of Jepsen, against
//! the ledger's `balance_after` chain).

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use run_log::{Attempt, Observed, OpKind, OpRecord, Outcome};
use rust_decimal::Decimal;
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

fn key_times(ops: &[OpRecord]) -> HashMap<&str, KeyTimes> {
    let mut times: HashMap<&str, KeyTimes> = HashMap::new();
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
    let mut chains: HashMap<Uuid, Vec<&LedgerRow>> = HashMap::new();
    for entry in &s.ledger {
        chains.entry(entry.wallet_id).or_default().push(entry);
    }
    for chain in chains.values_mut() {
        chain.sort_by_key(|e| e.seq);
    }
    for op in s.ops.iter().filter(|op| op.kind == OpKind::GetWallet) {
        let Some(wallet) = op.wallet_id else { continue };
        let chain = chains.get(&wallet).map(Vec::as_slice).unwrap_or_default();
        for attempt in op.attempts.iter().filter(|a| a.outcome == Outcome::Ok) {
            match &attempt.observed {
                Some(Observed::Balance(shown)) => {
                    f.examined += 1;
                    judge_read(&mut f, op, attempt, *shown, chain, &times);
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
                Some(Observed::Entries(_) | Observed::WalletAfter { .. }) | None => {}
            }
        }
    }
    f.finish(Invariant::ReadsConsistent)
}

fn judge_read(
    f: &mut Findings,
    op: &OpRecord,
    attempt: &Attempt,
    shown: Decimal,
    chain: &[&LedgerRow],
    times: &HashMap<&str, KeyTimes>,
) {
    let (start, end) = (attempt_start(op, attempt), attempt_end(op, attempt));
    let timing = |entry: &LedgerRow| {
        entry
            .request_key
            .as_deref()
            .and_then(|key| times.get(key))
            .copied()
            .unwrap_or_default()
    };
    // Position k stands for the balance after the chain's first k entries.
    let lowest = chain
        .iter()
        .rposition(|e| timing(e).acked_end.is_some_and(|acked| acked < start))
        .map_or(0, |i| i + 1);
    let highest = chain
        .iter()
        .position(|e| timing(e).first_start.is_some_and(|first| first > end))
        .unwrap_or(chain.len());
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
    let more = if highest.saturating_sub(lowest) + 1 > LEGS_SHOWN_MAX {
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
