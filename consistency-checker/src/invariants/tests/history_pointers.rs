//! Where each history finding points, and what each history invariant
//! counts as examined: the history counterpart of `ledger_pointers`.

use super::ledger_pointers::{entry, events_of, pointers};
use super::*;
use crate::snapshot::{DeadLetterRow, HistoryRow};

fn history_row(snap: &Snapshot, event_id: Uuid) -> HistoryRow {
    snap.history
        .iter()
        .find(|h| h.event_id == event_id)
        .expect("history row")
        .clone()
}

fn history_mut(snap: &mut Snapshot, event_id: Uuid) -> &mut HistoryRow {
    snap.history
        .iter_mut()
        .find(|h| h.event_id == event_id)
        .expect("history row")
}

#[test]
fn each_history_invariant_examines_what_it_says() {
    let c = clean();
    let mut snap = c.world.snapshot();
    // A second copy of one row: history rows and distinct events differ.
    let copy = history_row(&snap, c.fund_alice.events[0]);
    snap.history.push(copy);
    let report = check(&snap);
    let examined = |invariant| result(&report, invariant).examined;
    assert_eq!((snap.ledger.len(), snap.history.len()), (13, 14));
    assert_eq!(examined(Invariant::HistoryNoMissing), 13, "ledger entries");
    assert_eq!(
        examined(Invariant::HistoryNoDuplicate),
        13,
        "distinct events"
    );
    assert_eq!(examined(Invariant::HistoryNoPhantom), 14, "history rows");
    assert_eq!(examined(Invariant::HistoryOrdered), 13, "distinct events");
    assert_eq!(examined(Invariant::HistoryBalanceMatches), 3, "wallets");
    assert_eq!(examined(Invariant::HistoryNoDeadLetter), 1, "dead letters");
}

#[test]
fn a_missing_entry_points_at_its_ledger_row() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let credit = entry(&snap, c.alice_to_bob.events[1]);
    snap.history.retain(|h| h.event_id != credit.event_id);
    let report = check(&snap);
    let v = only_violation(&report, Invariant::HistoryNoMissing);
    assert_eq!(
        pointers(v),
        (
            Some(c.bob),
            Some(credit.event_id),
            Some(c.alice_to_bob.transfer_ids[0]),
            Some(dec!(30)),
            None,
            Some(credit.created_at)
        )
    );
    assert_eq!(
        v.message,
        format!(
            "wallet {}: transfer_in 30.0000 (seq 3, event {}) is in the ledger but not in history",
            c.bob, credit.event_id
        )
    );
}

#[test]
fn parked_rows_left_behind_point_at_their_ledger_time_or_their_parking() {
    let c = clean();
    let mut snap = c.world.snapshot();
    // An applied event still parked, and a parked event no ledger knows.
    let applied = history_row(&snap, c.fund_bob.events[0]);
    let stranger = Uuid::from_u128(0x57A6);
    for (event_id, seq, parked_at) in [
        (applied.event_id, applied.seq, crate::fixture::at(50)),
        (stranger, 9, crate::fixture::at(51)),
    ] {
        snap.parked.push(ParkedRow {
            event_id,
            wallet_id: c.bob,
            seq,
            source_partition: 2,
            source_offset: 7,
            parked_at,
        });
    }
    let report = check(&snap);
    assert_violated_exactly(&report, &[Invariant::HistoryNoMissing]);
    let check = result(&report, Invariant::HistoryNoMissing);
    assert_eq!(check.violations_total, 2);
    let (first, second) = (&check.violations[0], &check.violations[1]);
    assert_eq!(
        pointers(first),
        (
            Some(c.bob),
            Some(applied.event_id),
            None,
            None,
            None,
            Some(applied.committed_at)
        )
    );
    // Bob's history ends at seq 5, so a parked event waits for seq 6.
    assert_eq!(
        first.message,
        format!(
            "event {} (seq 2 of wallet {}) is still parked after convergence, waiting for seq 6, and was applied already",
            applied.event_id, c.bob
        )
    );
    assert_eq!(
        pointers(second),
        (
            Some(c.bob),
            Some(stranger),
            None,
            None,
            None,
            Some(crate::fixture::at(51))
        )
    );
    assert_eq!(
        second.message,
        format!(
            "event {stranger} (seq 9 of wallet {}) is still parked after convergence, waiting for seq 6, and has no ledger entry",
            c.bob
        )
    );
}

#[test]
fn a_debit_applied_three_times_is_off_by_two_debits() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let debit = history_row(&snap, c.alice_to_bob.events[0]);
    snap.history.push(debit.clone());
    snap.history.push(debit.clone());
    let report = check(&snap);
    let v = only_violation(&report, Invariant::HistoryNoDuplicate);
    assert_eq!(
        pointers(v),
        (
            Some(c.alice),
            Some(debit.event_id),
            Some(c.alice_to_bob.transfer_ids[0]),
            Some(dec!(-30)),
            Some(dec!(-90)),
            Some(debit.committed_at)
        )
    );
    assert_eq!(
        v.message,
        format!(
            "wallet {}: event {} (transfer_out 30.0000, seq 3) is in history 3 times: its history is off by -60.0000",
            c.alice, debit.event_id
        )
    );
}

#[test]
fn a_phantom_points_at_its_own_row() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let mut phantom = history_row(&snap, c.alice_to_bob.events[1]);
    phantom.event_id = Uuid::from_u128(0xFA7);
    phantom.committed_at = crate::fixture::at(77);
    snap.history.push(phantom.clone());
    let report = check(&snap);
    let v = only_violation(&report, Invariant::HistoryNoPhantom);
    assert_eq!(
        pointers(v),
        (
            Some(c.bob),
            Some(phantom.event_id),
            Some(c.alice_to_bob.transfer_ids[0]),
            Some(dec!(0)),
            Some(dec!(30)),
            Some(crate::fixture::at(77))
        )
    );
    assert_eq!(
        v.message,
        format!(
            "phantom: history row for event {} (transfer_in 30.0000 on wallet {}, seq 3) has no ledger entry",
            phantom.event_id, c.bob
        )
    );
}

/// Each field a history row shares with its ledger entry, changed alone,
/// is the one difference named (and two changed together, both).
#[test]
fn a_mismatch_names_exactly_the_field_that_differs() {
    let c = clean();
    let clean_snap = c.world.snapshot();
    let event = c.alice_to_bob.events[1];
    let ledger = entry(&clean_snap, event);
    let other = Uuid::from_u128(0x07E4);
    let t = c.alice_to_bob.transfer_ids[0];
    let later = ledger.created_at + Duration::milliseconds(1);
    type Change = Box<dyn Fn(&mut HistoryRow)>;
    let cases: Vec<(Change, String)> = vec![
        (
            Box::new(|h| h.user_id = "mallory".into()),
            "user mallory vs ledger bob".into(),
        ),
        (
            Box::new(move |h| h.committed_at = later),
            format!(
                "committed at {} vs ledger {}",
                later.to_rfc3339(),
                ledger.created_at.to_rfc3339()
            ),
        ),
        (
            Box::new(move |h| h.wallet_id = c.carol),
            format!("wallet {} vs ledger {}", c.carol, c.bob),
        ),
        (Box::new(|h| h.seq = 4), "seq 4 vs ledger 3".into()),
        (
            Box::new(|h| h.kind = "funded".into()),
            "kind funded vs ledger transfer_in".into(),
        ),
        // Written at the ledger's own scale, so only the value differs.
        (
            Box::new(|h| h.amount = dec!(31)),
            "amount 31.0000 vs ledger 30.0000".into(),
        ),
        (
            Box::new(|h| h.balance_after = dec!(79)),
            "balance after 79.0000 vs ledger 80.0000".into(),
        ),
        // Both money fields off at once, each at the ledger's scale.
        (
            Box::new(|h| {
                h.amount = dec!(31);
                h.balance_after = dec!(81);
            }),
            "amount 31.0000 vs ledger 30.0000, balance after 81.0000 vs ledger 80.0000".into(),
        ),
        (
            Box::new(move |h| h.transfer_id = Some(other)),
            format!("transfer {other} vs ledger {t}"),
        ),
        (
            Box::new(|h| h.counterparty_wallet_id = None),
            format!("counterparty none vs ledger {}", c.alice),
        ),
    ];
    for (change, difference) in cases {
        let mut snap = c.world.snapshot();
        change(history_mut(&mut snap, event));
        let row = history_row(&snap, event);
        let report = check(&snap);
        let v = only_violation(&report, Invariant::HistoryNoPhantom);
        assert_eq!(
            pointers(v),
            (
                Some(row.wallet_id),
                Some(event),
                row.transfer_id,
                Some(dec!(30)),
                Some(row.amount),
                Some(row.committed_at)
            ),
            "{difference}"
        );
        assert_eq!(
            v.message,
            format!(
                "mismatch: history row for event {event} (wallet {}, seq 3) differs from its ledger entry: {difference}",
                c.bob
            )
        );
    }
}

#[test]
fn money_written_at_another_scale_is_the_same_money() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let row = history_mut(&mut snap, c.alice_to_bob.events[1]);
    row.amount = dec!(30.00);
    row.balance_after = dec!(80.000000);
    assert_violated_exactly(&check(&snap), &[]);
}

#[test]
fn history_of_a_wallet_nobody_knows_is_not_held_to_an_owner() {
    let c = clean();
    let mut snap = c.world.snapshot();
    snap.wallets.retain(|w| w.id != c.carol);
    let report = check(&snap);
    // Other invariants name the unknown wallet; the rows still match their
    // ledger entries, whose owner is unknown.
    assert_eq!(
        result(&report, Invariant::HistoryNoPhantom).status,
        Status::Passed
    );
}

#[test]
fn history_that_starts_late_points_at_its_first_row() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let carol = events_of(&snap, c.carol);
    snap.history.retain(|h| h.event_id != carol[0]);
    let second = history_row(&snap, carol[1]);
    let report = check(&snap);
    let v = only_violation(&report, Invariant::HistoryOrdered);
    assert_eq!(
        pointers(v),
        (
            Some(c.carol),
            Some(second.event_id),
            second.transfer_id,
            None,
            None,
            Some(second.committed_at)
        )
    );
    assert_eq!(
        v.message,
        format!(
            "wallet {}: history starts at seq 2 (event {}), not 1",
            c.carol, second.event_id
        )
    );
}

#[test]
fn a_jump_over_two_entries_names_the_range_it_skips() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let bob = events_of(&snap, c.bob);
    snap.history
        .retain(|h| h.event_id != bob[1] && h.event_id != bob[2]);
    let fourth = history_row(&snap, bob[3]);
    let report = check(&snap);
    let v = only_violation(&report, Invariant::HistoryOrdered);
    assert_eq!(
        pointers(v),
        (
            Some(c.bob),
            Some(fourth.event_id),
            fourth.transfer_id,
            None,
            None,
            Some(fourth.committed_at)
        )
    );
    assert_eq!(
        v.message,
        format!(
            "wallet {}: history jumps from seq 1 to seq 4 (event {}), skipping seq 2..3",
            c.bob, fourth.event_id
        )
    );
}

#[test]
fn an_entry_applied_after_its_successor_is_named_where_it_lands() {
    let c = clean();
    let mut snap = c.world.snapshot();
    crate::fixture::apply_out_of_order(&mut snap, c.alice, 3, 4);
    let alice = events_of(&snap, c.alice);
    let third = history_row(&snap, alice[2]);
    let report = check(&snap);
    let check = result(&report, Invariant::HistoryOrdered);
    // The jump to 4, then 3 after 4; seq 5 follows 4 again without a finding.
    assert_eq!(check.violations_total, 2);
    let fourth = history_row(&snap, alice[3]);
    assert_eq!(
        check.violations[0].message,
        format!(
            "wallet {}: history jumps from seq 2 to seq 4 (event {}), skipping seq 3",
            c.alice, fourth.event_id
        )
    );
    let back = &check.violations[1];
    assert_eq!(
        pointers(back),
        (
            Some(c.alice),
            Some(third.event_id),
            third.transfer_id,
            None,
            None,
            Some(third.committed_at)
        )
    );
    assert_eq!(
        back.message,
        format!(
            "wallet {}: history applied seq 3 (event {}) after seq 4",
            c.alice, third.event_id
        )
    );
}

#[test]
fn a_row_of_unknown_kind_counts_toward_no_balance() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let event = c.fund_bob.events[0];
    history_mut(&mut snap, event).kind = "refund".into();
    let row = history_row(&snap, event);
    let report = check(&snap);
    let check = result(&report, Invariant::HistoryBalanceMatches);
    assert_eq!(check.violations_total, 2);
    let (kind, sum) = (&check.violations[0], &check.violations[1]);
    assert_eq!(
        pointers(kind),
        (
            Some(c.bob),
            Some(event),
            None,
            None,
            Some(dec!(50)),
            Some(row.committed_at)
        )
    );
    assert_eq!(
        kind.message,
        format!(
            "wallet {}: history row for event {event} has unknown kind \"refund\", so its 50.0000 counts toward no balance",
            c.bob
        )
    );
    let bob_updated = snap
        .wallets
        .iter()
        .find(|w| w.id == c.bob)
        .unwrap()
        .updated_at;
    assert_eq!(
        pointers(sum),
        (
            Some(c.bob),
            None,
            None,
            Some(dec!(62.5)),
            Some(dec!(12.5)),
            Some(bob_updated)
        )
    );
    assert_eq!(
        sum.message,
        format!(
            "wallet {}: balance 62.5000 but its history sums to 12.5000 (off by 50.0000)",
            c.bob
        )
    );
}

#[test]
fn history_of_a_wallet_that_does_not_exist_is_named_once_with_its_sum() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let ghost = Uuid::from_u128(0x6057);
    let mut first = history_row(&snap, c.fund_alice.events[0]);
    first.wallet_id = ghost;
    first.event_id = Uuid::from_u128(0x6058);
    let mut second = history_row(&snap, c.alice_to_bob.events[0]);
    second.wallet_id = ghost;
    second.event_id = Uuid::from_u128(0x6059);
    snap.history.push(first.clone());
    snap.history.push(second);
    let report = check(&snap);
    let v = only_violation(&report, Invariant::HistoryBalanceMatches);
    // +100 funded, -30 sent: one finding, at the wallet's first row.
    assert_eq!(
        pointers(v),
        (
            Some(ghost),
            Some(first.event_id),
            None,
            Some(dec!(0)),
            Some(dec!(70)),
            Some(first.committed_at)
        )
    );
    assert_eq!(
        v.message,
        format!("wallet {ghost} does not exist but its history sums to 70.0000")
    );
}

#[test]
fn a_dead_lettered_event_points_at_its_entry_and_its_arrival() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let debit = entry(&snap, c.alice_to_bob.events[0]);
    snap.dead_letters.push(DeadLetterRow {
        id: 2,
        topic: "wallet-events".into(),
        partition: 4,
        offset: 12,
        error: "amount out of range".into(),
        received_at: crate::fixture::at(90),
        event_id: Some(debit.event_id),
    });
    let report = check(&snap);
    let v = only_violation(&report, Invariant::HistoryNoDeadLetter);
    assert_eq!(
        pointers(v),
        (
            Some(c.alice),
            Some(debit.event_id),
            Some(c.alice_to_bob.transfer_ids[0]),
            Some(dec!(0)),
            Some(dec!(30)),
            Some(crate::fixture::at(90))
        )
    );
    assert_eq!(
        v.message,
        format!(
            "ledger entry {} (transfer_out 30.0000 on wallet {}, seq 3) sits in dead_letters (partition 4, offset 12): amount out of range",
            debit.event_id, c.alice
        )
    );
}

#[test]
fn a_second_event_at_the_same_seq_is_a_step_back_not_a_jump() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let original = history_row(&snap, c.alice_to_bob.events[1]);
    let mut rival = original.clone();
    rival.event_id = Uuid::from_u128(0x5E9);
    let at = snap
        .history
        .iter()
        .position(|h| h.event_id == original.event_id)
        .unwrap();
    snap.history.insert(at + 1, rival.clone());
    let report = check(&snap);
    let v = only_violation(&report, Invariant::HistoryOrdered);
    assert_eq!(
        v.message,
        format!(
            "wallet {}: history applied seq 3 (event {}) after seq 3",
            c.bob, rival.event_id
        )
    );
}
