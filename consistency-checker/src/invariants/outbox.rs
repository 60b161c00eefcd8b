//! `outbox-drained`: every entry was handed to the topic.

use rustc_hash::FxHashSet;

use super::findings::*;
use crate::report::{CheckResult, Invariant};
use crate::snapshot::Snapshot;

/// `outbox-drained`: every outbox row was published, and every ledger
/// entry has its outbox row (an entry without one can never reach the
/// topic). Examines outbox rows.
pub fn outbox_drained(s: &Snapshot) -> CheckResult {
    let mut f = Findings::new(s);
    let ledger = ledger_by_event(s);
    let mut with_row = FxHashSet::with_capacity_and_hasher(s.outbox.len(), Default::default());
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
