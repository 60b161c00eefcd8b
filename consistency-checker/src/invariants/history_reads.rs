//! `history-reads-match`: what the history API showed, held against the
//! ledger. History lags the ledger, so a page read during the load may
//! show any prefix of a wallet's entries, but what it shows must be the
//! ledger's own: newest first, gap-free, every field equal. The walk after
//! convergence must show each wallet's whole ledger, and each user's
//! activity exactly that user's entries, in the API's order.

use std::collections::BTreeMap;

use run_log::{Observed, OpKind, Outcome, ShownEntry, ShownPage, WalkedList};
use rustc_hash::FxHashMap;
use uuid::Uuid;

use super::findings::*;
use super::history::differences;
use crate::report::{CheckResult, Invariant};
use crate::snapshot::{LedgerRow, Snapshot};

/// `history-reads-match`: each acknowledged `GET /wallets/{id}/history` of
/// the load showed a gap-free, newest-first run of that wallet's ledger
/// entries with equal fields (a last page ends at seq 1; a page with a
/// cursor does not); the end-of-run walk showed every wallet's whole
/// ledger and every user's entries (`committed_at` then `event_id`,
/// newest first), field for field. Examines page reads and walked
/// entries; not evaluated without a walk (the simulator serves no history
/// API), unless a page read already broke it.
pub fn history_reads_match(s: &Snapshot) -> CheckResult {
    let mut f = Findings::new(s);
    let ledger = Ledger::new(s);
    for op in s.ops.iter().filter(|op| op.kind == OpKind::GetHistory) {
        let Some(wallet) = op.wallet_id else { continue };
        for attempt in op.attempts.iter().filter(|a| a.outcome == Outcome::Ok) {
            let problem = match &attempt.observed {
                Some(Observed::HistoryPage(page)) => page_problem(wallet, page, &ledger),
                Some(Observed::Malformed(reason)) => Some(format!(
                    "answered 2xx with a body that is not a page: {reason}"
                )),
                _ => continue,
            };
            f.examined += 1;
            if let Some(problem) = problem {
                let message = format!("op {}: GET /wallets/{wallet}/history {problem}", op.op_id);
                f.push(op_finding(op, None, None, message));
            }
        }
    }
    let Some(walk) = &s.walk else {
        return if f.total == 0 {
            f.not_evaluated(Invariant::HistoryReadsMatch)
        } else {
            f.finish(Invariant::HistoryReadsMatch)
        };
    };
    let walked: FxHashMap<&str, &WalkedList> =
        walk.wallets.iter().map(|w| (w.id.as_str(), w)).collect();
    for wallet in &s.wallets {
        let expected = ledger.of_wallet(wallet.id);
        let list = walked.get(wallet.id.to_string().as_str()).copied();
        let what = format!("history of wallet {}", wallet.id);
        judge_list(&mut f, &what, list, expected, &ledger, Some(wallet.id));
    }
    let users: FxHashMap<&str, &WalkedList> =
        walk.users.iter().map(|u| (u.id.as_str(), u)).collect();
    for (user, expected) in ledger.by_user() {
        let list = users.get(user).copied();
        let what = format!("activity of user {user:?}");
        judge_list(&mut f, &what, list, &expected, &ledger, None);
    }
    f.finish(Invariant::HistoryReadsMatch)
}

/// The ledger as the history API should show it.
struct Ledger<'a> {
    owners: FxHashMap<Uuid, &'a str>,
    rows: &'a [LedgerRow],
    /// Each wallet's entries, newest seq first.
    by_wallet: FxHashMap<Uuid, Vec<&'a LedgerRow>>,
}

impl<'a> Ledger<'a> {
    fn new(s: &'a Snapshot) -> Ledger<'a> {
        let mut by_wallet: FxHashMap<Uuid, Vec<&LedgerRow>> = FxHashMap::default();
        for entry in &s.ledger {
            by_wallet.entry(entry.wallet_id).or_default().push(entry);
        }
        for rows in by_wallet.values_mut() {
            rows.sort_by_key(|e| std::cmp::Reverse(e.seq));
        }
        Ledger {
            by_wallet,
            owners: s
                .wallets
                .iter()
                .map(|w| (w.id, w.user_id.as_str()))
                .collect(),
            rows: &s.ledger,
        }
    }

    /// A wallet's entries as its history shows them: newest seq first.
    fn of_wallet(&self, wallet: Uuid) -> &[&'a LedgerRow] {
        self.by_wallet.get(&wallet).map_or(&[], Vec::as_slice)
    }

    /// The wallet's entry at `seq`, found in its newest-first list.
    fn at(&self, wallet: Uuid, seq: i64) -> Option<&'a LedgerRow> {
        let rows = self.of_wallet(wallet);
        rows.binary_search_by(|e| seq.cmp(&e.seq))
            .ok()
            .map(|i| rows[i])
    }

    /// Every user's entries as the activity shows them: newest commit
    /// first, then the greater event id; users in id order.
    fn by_user(&self) -> BTreeMap<&'a str, Vec<&'a LedgerRow>> {
        let mut users: BTreeMap<&str, Vec<&LedgerRow>> = self
            .owners
            .values()
            .map(|user| (*user, Vec::new()))
            .collect();
        for entry in self.rows {
            if let Some(user) = self.owners.get(&entry.wallet_id) {
                users.entry(user).or_default().push(entry);
            }
        }
        for rows in users.values_mut() {
            rows.sort_by_key(|e| std::cmp::Reverse((e.created_at, e.event_id)));
        }
        users
    }

    fn mismatch(&self, shown: &ShownEntry, entry: &LedgerRow) -> Option<String> {
        let owner = self.owners.get(&entry.wallet_id).copied();
        let differences = differences(shown.into(), entry, owner);
        (!differences.is_empty()).then(|| {
            format!(
                "event {} (wallet {}, seq {}) differs from the ledger: {}",
                shown.event_id,
                entry.wallet_id,
                entry.seq,
                differences.join(", ")
            )
        })
    }
}

/// What is wrong with a page of `wallet`'s history read during the load.
fn page_problem(wallet: Uuid, page: &ShownPage, ledger: &Ledger<'_>) -> Option<String> {
    let mut previous: Option<i64> = None;
    for shown in &page.entries {
        if shown.wallet_id != wallet {
            return Some(format!(
                "showed event {} of wallet {}",
                shown.event_id, shown.wallet_id
            ));
        }
        if let Some(before) = previous
            && shown.seq != before - 1
        {
            return Some(format!(
                "showed seq {} after seq {before}: not gap-free, newest first",
                shown.seq
            ));
        }
        previous = Some(shown.seq);
        let Some(entry) = ledger.at(wallet, shown.seq) else {
            return Some(format!(
                "showed seq {} (event {}), which the ledger does not have",
                shown.seq, shown.event_id
            ));
        };
        if let Some(mismatch) = ledger.mismatch(shown, entry) {
            return Some(format!("showed {mismatch}"));
        }
    }
    match (previous, &page.next_cursor) {
        (Some(last), None) if last != 1 => Some(format!(
            "showed a last page that ends at seq {last}, leaving out seq {}..1",
            last - 1
        )),
        (Some(1), Some(_)) => Some("gave a cursor past seq 1".to_owned()),
        (None, Some(_)) => Some("gave a cursor with an empty page".to_owned()),
        _ => None,
    }
}

/// Holds one walked list (every page, joined) against the ledger entries
/// it should show, position by position; one finding for the first
/// difference, with how many positions differ.
fn judge_list(
    f: &mut Findings<'_>,
    what: &str,
    list: Option<&WalkedList>,
    expected: &[&LedgerRow],
    ledger: &Ledger<'_>,
    wallet: Option<Uuid>,
) {
    let base = Finding {
        wallet_id: wallet,
        ..Finding::default()
    };
    let Some(list) = list else {
        f.push(Finding {
            message: format!(
                "{what}: not walked ({} ledger entries unverified)",
                expected.len()
            ),
            ..base
        });
        return;
    };
    if let Some(error) = &list.error {
        f.push(Finding {
            message: format!(
                "{what}: the walk stopped after {} pages: {error}",
                list.pages
            ),
            ..base.clone()
        });
    }
    let positions = list.entries.len().max(expected.len());
    f.examined += positions as u64;
    let mut first: Option<String> = None;
    let mut differing = 0usize;
    for i in 0..positions {
        let problem = match (list.entries.get(i), expected.get(i)) {
            (Some(shown), Some(entry)) if shown.event_id != entry.event_id => Some(format!(
                "position {i} shows event {} (wallet {}, seq {}) where the ledger has event {} (wallet {}, seq {})",
                shown.event_id,
                shown.wallet_id,
                shown.seq,
                entry.event_id,
                entry.wallet_id,
                entry.seq
            )),
            (Some(shown), Some(entry)) => ledger.mismatch(shown, entry),
            (Some(shown), None) => Some(format!(
                "position {i} shows event {} (wallet {}, seq {}) beyond the ledger's {} entries",
                shown.event_id,
                shown.wallet_id,
                shown.seq,
                expected.len()
            )),
            (None, Some(entry)) => Some(format!(
                "position {i} is missing event {} (wallet {}, seq {})",
                entry.event_id, entry.wallet_id, entry.seq
            )),
            (None, None) => None,
        };
        if let Some(problem) = problem {
            differing += 1;
            first.get_or_insert(problem);
        }
    }
    if let Some(first) = first {
        f.push(Finding {
            message: format!(
                "{what}: {differing} of {positions} positions differ from the ledger over {} pages; first: {first}",
                list.pages
            ),
            ..base
        });
    }
}
