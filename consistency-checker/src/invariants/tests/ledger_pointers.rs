//! Where each ledger finding points. A reader of checker.json follows a
//! violation's wallet, event, transfer, amounts and time to the culprit;
//! a finding that names the right invariant but the wrong row sends them
//! astray, so each finding's pointers are held here in one assertion.

use chrono::{DateTime, Utc};

use super::*;
use crate::snapshot::LedgerRow;

/// wallet, event, transfer, expected, actual, at.
pub(super) type Pointers = (
    Option<Uuid>,
    Option<Uuid>,
    Option<Uuid>,
    Option<Decimal>,
    Option<Decimal>,
    Option<DateTime<Utc>>,
);

pub(super) fn pointers(v: &Violation) -> Pointers {
    (
        v.wallet_id,
        v.event_id,
        v.transfer_id,
        v.expected,
        v.actual,
        v.at,
    )
}

pub(super) fn entry(snap: &Snapshot, event_id: Uuid) -> LedgerRow {
    snap.ledger
        .iter()
        .find(|e| e.event_id == event_id)
        .expect("ledger entry")
        .clone()
}

fn entry_mut(snap: &mut Snapshot, event_id: Uuid) -> &mut LedgerRow {
    snap.ledger
        .iter_mut()
        .find(|e| e.event_id == event_id)
        .expect("ledger entry")
}

/// `wallet`'s ledger entries in seq order.
pub(super) fn events_of(snap: &Snapshot, wallet: Uuid) -> Vec<Uuid> {
    let mut rows: Vec<_> = snap
        .ledger
        .iter()
        .filter(|e| e.wallet_id == wallet)
        .collect();
    rows.sort_by_key(|e| e.seq);
    rows.iter().map(|e| e.event_id).collect()
}

/// The clean world's transfers in the ledger: alice->bob, bob->carol,
/// the indeterminate alice->carol that applied, the retried bob->alice.
const TRANSFERS_IN_LEDGER: u64 = 4;

#[test]
fn each_ledger_invariant_examines_what_it_says() {
    let c = clean();
    let snap = c.world.snapshot();
    let report = check(&snap);
    let (wallets, entries) = (snap.wallets.len() as u64, snap.ledger.len() as u64);
    assert_eq!((wallets, entries), (3, 13));
    let examined = |invariant| result(&report, invariant).examined;
    assert_eq!(examined(Invariant::BalanceMatchesLedger), wallets);
    assert_eq!(examined(Invariant::MoneyConserved), wallets);
    assert_eq!(examined(Invariant::NoNegativeBalance), wallets + entries);
    assert_eq!(examined(Invariant::TransferLegsPaired), TRANSFERS_IN_LEDGER);
}

#[test]
fn a_balance_off_its_ledger_points_at_the_wallet() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let wallet = wallet_mut(&mut snap, c.alice);
    wallet.balance += dec!(0.0001);
    let updated_at = wallet.updated_at;
    let report = check(&snap);
    let v = only_violation(&report, Invariant::BalanceMatchesLedger);
    assert_eq!(
        pointers(v),
        (
            Some(c.alice),
            None,
            None,
            Some(dec!(74.9999)),
            Some(dec!(75)),
            Some(updated_at)
        )
    );
}

#[test]
fn entries_of_a_wallet_that_does_not_exist_are_named_once() {
    let c = clean();
    let mut snap = c.world.snapshot();
    snap.wallets.retain(|w| w.id != c.carol);
    let first = snap
        .ledger
        .iter()
        .find(|e| e.wallet_id == c.carol)
        .unwrap()
        .clone();
    let report = check(&snap);
    // Carol's three entries are one finding, at the first of them.
    let v = only_violation(&report, Invariant::BalanceMatchesLedger);
    assert_eq!(
        pointers(v),
        (
            Some(c.carol),
            Some(first.event_id),
            None,
            Some(dec!(0)),
            Some(dec!(12.5001)),
            Some(first.created_at)
        )
    );
    assert_eq!(
        v.message,
        format!(
            "wallet {} does not exist but has ledger entries summing to 12.5001 (first: event {})",
            c.carol, first.event_id
        )
    );
}

#[test]
fn a_chain_break_points_at_the_first_broken_entry_only() {
    let c = clean();
    let mut snap = c.world.snapshot();
    // Bob: opened, fund 50, +30 from alice, -12.5 to carol, ... Entries 3
    // and 4 both claim a wrong balance_after; only the first break is named.
    let bob = events_of(&snap, c.bob);
    entry_mut(&mut snap, bob[2]).balance_after += dec!(1);
    entry_mut(&mut snap, bob[3]).balance_after += dec!(1);
    let third = entry(&snap, bob[2]);
    let report = check(&snap);
    let v = only_violation(&report, Invariant::BalanceMatchesLedger);
    assert_eq!(
        pointers(v),
        (
            Some(c.bob),
            Some(third.event_id),
            third.transfer_id,
            Some(dec!(80)),
            Some(dec!(81)),
            Some(third.created_at)
        )
    );
    assert_eq!(third.transfer_id, Some(c.alice_to_bob.transfer_ids[0]));
    // A gap in the numbering is a break too, named by its seq.
    let mut snap = c.world.snapshot();
    entry_mut(&mut snap, bob[3]).seq = 5;
    let report = check(&snap);
    let v = result(&report, Invariant::BalanceMatchesLedger)
        .violations
        .iter()
        .find(|v| v.message.contains("chain breaks"))
        .expect("the gap is named");
    assert!(
        v.message.contains("seq 5 where seq 4 belongs"),
        "{}",
        v.message
    );
    assert_eq!(v.event_id, Some(bob[3]));
}

#[test]
fn a_wrong_last_seq_points_at_the_wallet_row() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let wallet = wallet_mut(&mut snap, c.carol);
    wallet.last_seq += 1;
    let updated_at = wallet.updated_at;
    let report = check(&snap);
    let v = only_violation(&report, Invariant::BalanceMatchesLedger);
    assert_eq!(
        pointers(v),
        (Some(c.carol), None, None, None, None, Some(updated_at))
    );
    assert_eq!(
        v.message,
        format!("wallet {}: last_seq 4 but it has 3 ledger entries", c.carol)
    );
}

#[test]
fn a_negative_balance_points_at_the_wallet_and_the_first_dip() {
    let mut c = clean();
    // Carol holds 12.5001; two overdrafts, only the first dip is named.
    let first = c.world.transfer(c.carol, c.alice, dec!(20), Outcome::Ok, 1);
    c.world.transfer(c.carol, c.bob, dec!(1), Outcome::Ok, 1);
    let snap = c.world.snapshot();
    let updated_at = snap
        .wallets
        .iter()
        .find(|w| w.id == c.carol)
        .unwrap()
        .updated_at;
    let dip = entry(&snap, first.events[0]);
    let report = check(&snap);
    let check = result(&report, Invariant::NoNegativeBalance);
    assert_eq!(check.violations_total, 2, "{:#?}", check.violations);
    assert_eq!(
        pointers(&check.violations[0]),
        (
            Some(c.carol),
            None,
            None,
            Some(dec!(0)),
            Some(dec!(-8.4999)),
            Some(updated_at)
        )
    );
    assert_eq!(
        pointers(&check.violations[1]),
        (
            Some(c.carol),
            Some(dip.event_id),
            Some(first.transfer_ids[0]),
            Some(dec!(0)),
            Some(dec!(-7.4999)),
            Some(dip.created_at)
        )
    );
}

#[test]
fn money_conserved_names_the_bound_it_broke() {
    let c = clean();
    // 3 lost: below the ledger's funding and below the acknowledged 150.
    let mut snap = c.world.snapshot();
    wallet_mut(&mut snap, c.alice).balance -= dec!(3);
    let report = check(&snap);
    let conserved = &result(&report, Invariant::MoneyConserved).violations;
    assert_eq!(conserved.len(), 2, "{conserved:#?}");
    assert_eq!(
        pointers(&conserved[0]),
        (None, None, None, Some(dec!(150)), Some(dec!(147)), None)
    );
    assert_eq!(
        pointers(&conserved[1]),
        (None, None, None, Some(dec!(150)), Some(dec!(147)), None)
    );
    assert!(
        conserved[1].message.contains(
            "the load asked for 150.0000 of acknowledged funding and at most 7.2500 more"
        ),
        "{}",
        conserved[1].message
    );
    // Exactly at either bound holds: the indeterminate 7.25 may have applied.
    let mut snap = c.world.snapshot();
    wallet_mut(&mut snap, c.carol).balance += dec!(7.25);
    let report = check(&snap);
    let conserved = &result(&report, Invariant::MoneyConserved).violations;
    assert_eq!(conserved.len(), 1, "{conserved:#?}");
    assert!(
        conserved[0].message.contains("7.2500 created"),
        "{}",
        conserved[0].message
    );
}

/// A transfer without a key is not funding: only funds count toward the
/// money clients asked for.
#[test]
fn a_transfer_without_a_key_is_not_funding() {
    let c = clean();
    let mut snap = c.world.snapshot();
    op_mut(&mut snap.ops, c.alice_to_bob.op_id).idempotency_key = None;
    let report = check(&snap);
    assert_eq!(
        result(&report, Invariant::MoneyConserved).status,
        Status::Passed
    );
}

#[test]
fn a_leg_without_its_transfer_id_and_a_fund_with_one_are_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let transfer_id = c.alice_to_bob.transfer_ids[0];
    let (debit, credit) = (c.alice_to_bob.events[0], c.alice_to_bob.events[1]);
    entry_mut(&mut snap, debit).transfer_id = None;
    let stray = Uuid::from_u128(7);
    entry_mut(&mut snap, c.fund_bob.events[0]).transfer_id = Some(stray);
    let (debit, credit, fund) = (
        entry(&snap, debit),
        entry(&snap, credit),
        entry(&snap, c.fund_bob.events[0]),
    );
    let report = check(&snap);
    let found = &result(&report, Invariant::TransferLegsPaired).violations;
    assert_eq!(found.len(), 3, "{found:#?}");
    let named = |text: &str| {
        found
            .iter()
            .find(|v| v.message.contains(text))
            .unwrap_or_else(|| panic!("no finding says {text:?}: {found:#?}"))
    };
    assert_eq!(
        pointers(named("has no transfer_id")),
        (
            Some(c.alice),
            Some(debit.event_id),
            None,
            None,
            Some(dec!(30)),
            Some(debit.created_at)
        )
    );
    assert_eq!(
        pointers(named(&format!("carries transfer_id {stray}"))),
        (
            Some(c.bob),
            Some(fund.event_id),
            Some(stray),
            None,
            Some(dec!(50)),
            Some(fund.created_at)
        )
    );
    // The credit, left alone under its transfer id.
    assert_eq!(
        pointers(named("no transfer_out debits")),
        (
            Some(c.bob),
            Some(credit.event_id),
            Some(transfer_id),
            Some(dec!(30)),
            Some(dec!(0)),
            Some(credit.created_at)
        )
    );
}

#[test]
fn a_transfer_with_three_legs_points_at_its_first() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let transfer_id = c.alice_to_bob.transfer_ids[0];
    let debit = entry(&snap, c.alice_to_bob.events[0]);
    let mut second_credit = entry(&snap, c.alice_to_bob.events[1]);
    second_credit.event_id = Uuid::from_u128(8);
    snap.ledger.push(second_credit);
    let report = check(&snap);
    let v = only_violation(&report, Invariant::TransferLegsPaired);
    assert_eq!(
        pointers(v),
        (
            Some(c.alice),
            Some(debit.event_id),
            Some(transfer_id),
            None,
            None,
            Some(debit.created_at)
        )
    );
    assert!(
        v.message
            .contains("has 1 transfer_out and 2 transfer_in legs"),
        "{}",
        v.message
    );
}

#[test]
fn legs_of_different_amounts_or_one_wallet_are_named() {
    let c = clean();
    let transfer_id = c.alice_to_bob.transfer_ids[0];
    let (debit_id, credit_id) = (c.alice_to_bob.events[0], c.alice_to_bob.events[1]);
    let mut snap = c.world.snapshot();
    entry_mut(&mut snap, credit_id).amount = dec!(31);
    let debit = entry(&snap, debit_id);
    let report = check(&snap);
    let v = only_violation(&report, Invariant::TransferLegsPaired);
    assert_eq!(
        pointers(v),
        (
            Some(c.alice),
            Some(debit_id),
            Some(transfer_id),
            Some(dec!(30)),
            Some(dec!(31)),
            Some(debit.created_at)
        )
    );
    assert!(v.message.contains("(off by 1.0000)"), "{}", v.message);
    let mut snap = c.world.snapshot();
    entry_mut(&mut snap, credit_id).wallet_id = c.alice;
    let report = check(&snap);
    let v = result(&report, Invariant::TransferLegsPaired)
        .violations
        .iter()
        .find(|v| v.message.contains("both legs"))
        .expect("both legs on one wallet is named");
    assert_eq!(
        pointers(v),
        (
            Some(c.alice),
            Some(debit_id),
            Some(transfer_id),
            None,
            None,
            Some(debit.created_at)
        )
    );
}
