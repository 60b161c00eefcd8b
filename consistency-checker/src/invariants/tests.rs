//! One clean world that must pass every invariant, then one defect per
//! test: the right invariant must fail and name the culprit, and the
//! invariants the defect does not touch must still hold.

use chrono::Duration;
use run_log::{FaultKind, FaultWindow, OpKind, OpRecord, Outcome};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use uuid::Uuid;

use super::*;
use crate::fixture::{World, Written};
use crate::report::{Violation, render_text};
use crate::snapshot::ParkedRow;
use run_log::summary::Convergence;

/// The clean world and the handles the tests break it through.
struct Clean {
    world: World,
    alice: Uuid,
    bob: Uuid,
    carol: Uuid,
    fund_alice: Written,
    fund_bob: Written,
    alice_to_bob: Written,
}

/// Three wallets; funds; transfers; a refused transfer; an indeterminate
/// fund that did not apply; an indeterminate transfer that did; an
/// indeterminate transfer retried to success; a read.
fn clean() -> Clean {
    let mut world = World::new();
    let alice = world.create("alice");
    let bob = world.create("bob");
    let carol = world.create("carol");
    let fund_alice = world.fund(alice, dec!(100), Outcome::Ok, 1);
    let fund_bob = world.fund(bob, dec!(50), Outcome::Ok, 1);
    let alice_to_bob = world.transfer(alice, bob, dec!(30), Outcome::Ok, 1);
    world.transfer(bob, carol, dec!(12.5), Outcome::Ok, 1);
    world.transfer(carol, alice, dec!(1000), Outcome::Failed, 0);
    world.fund(carol, dec!(7.25), Outcome::Indeterminate, 0);
    world.transfer(alice, carol, dec!(0.0001), Outcome::Indeterminate, 1);
    let retried = world.transfer(bob, alice, dec!(5), Outcome::Indeterminate, 1);
    world.retry(retried.op_id, Outcome::Ok);
    world.read(alice);
    world.read_history(bob);
    world.converged(1_200, 30_000);
    // A poison message: not a wallet event, rightly dead-lettered.
    world
        .snap
        .dead_letters
        .push(crate::snapshot::DeadLetterRow {
            id: 1,
            topic: "wallet-events".into(),
            partition: 3,
            offset: 17,
            error: "not a wallet event".into(),
            received_at: crate::fixture::at(30),
            event_id: None,
        });
    world.walked();
    Clean {
        world,
        alice,
        bob,
        carol,
        fund_alice,
        fund_bob,
        alice_to_bob,
    }
}

fn result(report: &Report, invariant: Invariant) -> &CheckResult {
    report.check(invariant).expect("every invariant is checked")
}

/// Exactly `violated` fail; every other invariant passed.
#[track_caller]
fn assert_violated_exactly(report: &Report, violated: &[Invariant]) {
    for check in &report.checks {
        let expected = if violated.contains(&check.invariant) {
            Status::Violated
        } else {
            Status::Passed
        };
        assert_eq!(
            check.status,
            expected,
            "{}: {:#?}\n{}",
            check.invariant,
            check.violations,
            render_text(report)
        );
    }
    assert_eq!(report.passed, violated.is_empty());
}

/// The single stored violation of `invariant`.
#[track_caller]
fn only_violation(report: &Report, invariant: Invariant) -> &Violation {
    let check = result(report, invariant);
    assert_eq!(
        check.violations.len(),
        1,
        "{invariant}: {:#?}",
        check.violations
    );
    assert_eq!(check.violations_total, 1);
    &check.violations[0]
}

fn wallet_mut(snap: &mut Snapshot, id: Uuid) -> &mut crate::snapshot::WalletRow {
    snap.wallets
        .iter_mut()
        .find(|w| w.id == id)
        .expect("wallet")
}

#[test]
fn clean_world_passes_every_invariant() {
    let c = clean();
    let snap = c.world.snapshot();
    let report = check(&snap);
    assert_violated_exactly(&report, &[]);
    assert_eq!(report.checks.len(), Invariant::ALL.len());
    // Every invariant looked at something.
    for check in &report.checks {
        assert!(check.examined > 0, "{} examined nothing", check.invariant);
    }
    let balances: Vec<Decimal> = [c.alice, c.bob, c.carol]
        .iter()
        .map(|id| snap.wallets.iter().find(|w| w.id == *id).unwrap().balance)
        .collect();
    assert_eq!(balances, [dec!(74.9999), dec!(62.5), dec!(12.5001)]);
    assert_eq!(report.facts.total_balance, dec!(150));
    assert_eq!(report.facts.total_funded, dec!(150));
    // 3 creates + fund, fund, transfer, transfer; refused transfer; two
    // indeterminate; one indeterminate + its ok retry; two reads.
    assert_eq!(report.facts.ops, 14);
    assert_eq!(report.facts.ops_ok, 10);
    assert_eq!(report.facts.ops_failed, 1);
    assert_eq!(report.facts.ops_indeterminate, 3);
    assert_eq!(report.facts.ops_unverifiable, 0);
    // 3 creates and 8 key groups, then the 13 ledger rows each asked for.
    assert_eq!(result(&report, Invariant::AckedWriteDurable).examined, 24);
    // The one balance read.
    assert_eq!(result(&report, Invariant::ReadsConsistent).examined, 1);
    // The history page read, then the walk: 13 entries by wallet and 13
    // by user.
    assert_eq!(
        result(&report, Invariant::HistoryReadsMatch).examined,
        1 + 13 + 13
    );
}

#[test]
fn the_same_snapshot_gives_the_same_report() {
    let snap = clean().world.snapshot();
    let mut broken = snap.clone();
    broken.history.clear();
    assert_eq!(check(&snap), check(&snap));
    assert_eq!(check(&broken), check(&broken));
}

#[test]
fn missing_history_row_is_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    // The credit of alice -> bob: seq 3 of bob's four entries.
    let credit = c.alice_to_bob.events[1];
    snap.history.retain(|h| h.event_id != credit);
    let report = check(&snap);
    assert_violated_exactly(
        &report,
        &[
            Invariant::HistoryNoMissing,
            // The gap it leaves, and the money it leaves out.
            Invariant::HistoryOrdered,
            Invariant::HistoryBalanceMatches,
        ],
    );
    let missing = only_violation(&report, Invariant::HistoryNoMissing);
    assert_eq!(missing.event_id, Some(credit));
    assert_eq!(missing.wallet_id, Some(c.bob));
    assert_eq!(missing.transfer_id, Some(c.alice_to_bob.transfer_ids[0]));
    assert_eq!(missing.expected, Some(dec!(30)));
    assert!(
        missing.message.contains("transfer_in 30.0000"),
        "{}",
        missing.message
    );
    assert!(
        missing.message.contains("not in history"),
        "{}",
        missing.message
    );
    let gap = only_violation(&report, Invariant::HistoryOrdered);
    assert_eq!(gap.wallet_id, Some(c.bob));
    assert!(
        gap.message.contains("jumps from seq 2 to seq 4"),
        "{}",
        gap.message
    );
    let sum = only_violation(&report, Invariant::HistoryBalanceMatches);
    assert_eq!(sum.wallet_id, Some(c.bob));
    assert_eq!(
        (sum.expected, sum.actual),
        (Some(dec!(62.5)), Some(dec!(32.5)))
    );
}

#[test]
fn duplicated_history_row_is_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let funded = c.fund_alice.events[0];
    let mut copy = snap
        .history
        .iter()
        .find(|h| h.event_id == funded)
        .unwrap()
        .clone();
    copy.applied_at = snap.history.last().unwrap().applied_at + Duration::seconds(1);
    snap.history.push(copy);
    let report = check(&snap);
    assert_violated_exactly(
        &report,
        &[
            Invariant::HistoryNoDuplicate,
            Invariant::HistoryBalanceMatches,
        ],
    );
    let duplicate = only_violation(&report, Invariant::HistoryNoDuplicate);
    assert_eq!(duplicate.event_id, Some(funded));
    assert_eq!(duplicate.wallet_id, Some(c.alice));
    assert_eq!(
        (duplicate.expected, duplicate.actual),
        (Some(dec!(100)), Some(dec!(200)))
    );
    assert!(
        duplicate.message.contains("2 times"),
        "{}",
        duplicate.message
    );
    assert!(
        duplicate.message.contains("off by +100.0000"),
        "{}",
        duplicate.message
    );
    let sum = only_violation(&report, Invariant::HistoryBalanceMatches);
    assert_eq!(sum.wallet_id, Some(c.alice));
    assert!(sum.message.contains("off by 100.0000"), "{}", sum.message);
}

#[test]
fn phantom_history_row_is_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let mut phantom = snap
        .history
        .iter()
        .rev()
        .find(|h| h.wallet_id == c.carol)
        .unwrap()
        .clone();
    let phantom_id = Uuid::from_u128(0xBAD);
    phantom.event_id = phantom_id;
    phantom.seq += 1;
    phantom.kind = "funded".into();
    phantom.amount = dec!(20);
    phantom.balance_after += dec!(20);
    phantom.transfer_id = None;
    phantom.counterparty_wallet_id = None;
    phantom.applied_at += Duration::seconds(60);
    snap.history.push(phantom);
    let report = check(&snap);
    // The phantom continues carol's sequence, so the order still holds.
    assert_violated_exactly(
        &report,
        &[
            Invariant::HistoryNoPhantom,
            Invariant::HistoryBalanceMatches,
        ],
    );
    let v = only_violation(&report, Invariant::HistoryNoPhantom);
    assert_eq!(v.event_id, Some(phantom_id));
    assert_eq!(v.wallet_id, Some(c.carol));
    assert_eq!(v.actual, Some(dec!(20)));
    assert!(v.message.starts_with("phantom:"), "{}", v.message);
    assert!(v.message.contains("has no ledger entry"), "{}", v.message);
}

#[test]
fn balance_off_by_a_hundredth_of_a_cent_is_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    wallet_mut(&mut snap, c.alice).balance += dec!(0.0001);
    let report = check(&snap);
    assert_violated_exactly(
        &report,
        &[
            Invariant::BalanceMatchesLedger,
            // The extra 0.0001 came from nowhere, and the history disagrees.
            Invariant::MoneyConserved,
            Invariant::HistoryBalanceMatches,
        ],
    );
    let v = only_violation(&report, Invariant::BalanceMatchesLedger);
    assert_eq!(v.wallet_id, Some(c.alice));
    assert_eq!(
        (v.expected, v.actual),
        (Some(dec!(74.9999)), Some(dec!(75.0000)))
    );
    assert_eq!(
        v.message,
        format!(
            "wallet {}: balance 75.0000 but its ledger sums to 74.9999 (off by 0.0001)",
            c.alice
        )
    );
    let conserved = only_violation(&report, Invariant::MoneyConserved);
    assert!(
        conserved.message.contains("0.0001 created"),
        "{}",
        conserved.message
    );
}

#[test]
fn lost_acked_transfer_is_named_with_its_fault_window() {
    let mut c = clean();
    let lost = c
        .world
        .transfer(c.alice, c.carol, dec!(12.5), Outcome::Ok, 0);
    let mut snap = c.world.snapshot();
    let intended_at = snap
        .ops
        .iter()
        .find(|op| op.op_id == lost.op_id)
        .unwrap()
        .intended_at;
    snap.faults = vec![
        FaultWindow {
            fault_id: 1,
            kind: FaultKind::HistoryKill,
            target: "history".into(),
            start: intended_at - Duration::seconds(100),
            healed: Some(intended_at - Duration::seconds(90)),
            recovered: Some(intended_at - Duration::seconds(89)),
        },
        FaultWindow {
            fault_id: 2,
            kind: FaultKind::BrokerKill,
            target: "broker".into(),
            start: intended_at - Duration::seconds(1),
            healed: Some(intended_at + Duration::seconds(5)),
            recovered: None,
        },
    ];
    let report = check(&snap);
    assert_violated_exactly(&report, &[Invariant::AckedWriteDurable]);
    let v = only_violation(&report, Invariant::AckedWriteDurable);
    assert_eq!(v.op_id, Some(lost.op_id));
    assert_eq!(v.wallet_id, Some(c.alice));
    assert_eq!((v.expected, v.actual), (Some(dec!(12.5)), Some(dec!(0))));
    assert_eq!(v.at, Some(intended_at));
    assert_eq!(v.fault_windows, ["fault #2 broker_kill (broker)"]);
    assert_eq!(
        v.message,
        format!(
            "acked transfer op {} (12.5000 from wallet {} to wallet {}, key {}) is not in the ledger \
             [during fault #2 broker_kill (broker)]",
            lost.op_id, c.alice, c.carol, lost.key
        )
    );
}

#[test]
fn applied_failed_op_is_named() {
    let mut c = clean();
    let refused = c
        .world
        .transfer(c.carol, c.bob, dec!(1), Outcome::Failed, 1);
    let report = check(&c.world.snapshot());
    assert_violated_exactly(&report, &[Invariant::AckedWriteDurable]);
    let v = only_violation(&report, Invariant::AckedWriteDurable);
    assert_eq!(v.op_id, Some(refused.op_id));
    assert_eq!(v.transfer_id, Some(refused.transfer_ids[0]));
    assert_eq!((v.expected, v.actual), (Some(dec!(0)), Some(dec!(1))));
    assert!(
        v.message.starts_with("refused transfer op"),
        "{}",
        v.message
    );
    assert!(
        v.message.contains("is in the ledger anyway"),
        "{}",
        v.message
    );
}

#[test]
fn indeterminate_op_applied_twice_is_named() {
    let mut c = clean();
    let twice = c
        .world
        .transfer(c.alice, c.bob, dec!(2), Outcome::Indeterminate, 2);
    let report = check(&c.world.snapshot());
    // Each application is a well-formed transfer; only the log shows the
    // double spend.
    assert_violated_exactly(&report, &[Invariant::AckedWriteDurable]);
    let v = only_violation(&report, Invariant::AckedWriteDurable);
    assert_eq!(v.op_id, Some(twice.op_id));
    assert_eq!((v.expected, v.actual), (Some(dec!(2)), Some(dec!(4))));
    assert!(
        v.message.contains("applied more than once: 4 rows"),
        "{}",
        v.message
    );
    assert!(v.message.contains(&twice.key), "{}", v.message);
}

#[test]
fn acked_retry_wins_over_earlier_attempts() {
    let mut c = clean();
    let op = c
        .world
        .transfer(c.alice, c.bob, dec!(3), Outcome::Indeterminate, 0);
    c.world.retry(op.op_id, Outcome::Failed);
    c.world.retry(op.op_id, Outcome::Ok);
    let report = check(&c.world.snapshot());
    assert_violated_exactly(&report, &[Invariant::AckedWriteDurable]);
    let v = only_violation(&report, Invariant::AckedWriteDurable);
    assert!(v.message.starts_with("acked transfer op"), "{}", v.message);
    assert!(v.message.contains("3 attempts"), "{}", v.message);
}

#[test]
fn acked_create_without_wallet_is_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let create = snap
        .ops
        .iter()
        .find(|op| op.kind == OpKind::CreateWallet)
        .unwrap()
        .clone();
    let ghost = Uuid::from_u128(0x6057);
    snap.ops.push(OpRecord {
        op_id: 99,
        wallet_id: Some(ghost),
        ..create
    });
    let report = check(&snap);
    assert_violated_exactly(&report, &[Invariant::AckedWriteDurable]);
    let v = only_violation(&report, Invariant::AckedWriteDurable);
    assert_eq!((v.op_id, v.wallet_id), (Some(99), Some(ghost)));
    assert!(
        v.message.contains("the wallet does not exist"),
        "{}",
        v.message
    );
}

#[test]
fn unpaired_leg_is_named() {
    let mut c = clean();
    let (transfer_id, debit) = c.world.half_transfer(c.alice, c.bob, dec!(3));
    let report = check(&c.world.snapshot());
    // The wallet, its ledger and its history agree; the money just left,
    // by a write no operation of the log asked for.
    assert_violated_exactly(
        &report,
        &[
            Invariant::TransferLegsPaired,
            Invariant::MoneyConserved,
            Invariant::AckedWriteDurable,
        ],
    );
    let v = only_violation(&report, Invariant::TransferLegsPaired);
    assert_eq!(v.transfer_id, Some(transfer_id));
    assert_eq!(v.event_id, Some(debit));
    assert_eq!(v.wallet_id, Some(c.alice));
    assert_eq!((v.expected, v.actual), (Some(dec!(3)), Some(dec!(0))));
    assert!(
        v.message.contains("no transfer_in credits"),
        "{}",
        v.message
    );
    // Against the ledger's funding, then against the funding requested.
    let conserved = &result(&report, Invariant::MoneyConserved).violations;
    assert_eq!(conserved.len(), 2);
    assert!(
        conserved[1]
            .message
            .contains("3.0000 lost beyond what clients requested"),
        "{}",
        conserved[1].message
    );
    let conserved = &conserved[0];
    assert_eq!(
        (conserved.expected, conserved.actual),
        (Some(dec!(150)), Some(dec!(147)))
    );
    assert!(
        conserved.message.contains("3.0000 lost"),
        "{}",
        conserved.message
    );
    assert!(
        conserved.message.contains("net -3.0000"),
        "{}",
        conserved.message
    );
}

#[test]
fn mismatched_transfer_legs_are_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let transfer_id = c.alice_to_bob.transfer_ids[0];
    let credit = snap
        .ledger
        .iter_mut()
        .find(|e| e.event_id == c.alice_to_bob.events[1])
        .unwrap();
    credit.counterparty_wallet_id = Some(c.carol);
    let report = check(&snap);
    let v = only_violation(&report, Invariant::TransferLegsPaired);
    assert_eq!(v.transfer_id, Some(transfer_id));
    assert!(
        v.message
            .contains(&format!("names counterparty {}", c.carol)),
        "{}",
        v.message
    );
}

#[test]
fn unpublished_outbox_row_is_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let event = c.fund_bob.events[0];
    snap.outbox
        .iter_mut()
        .find(|o| o.event_id == event)
        .unwrap()
        .published_at = None;
    let report = check(&snap);
    assert_violated_exactly(&report, &[Invariant::OutboxDrained]);
    let v = only_violation(&report, Invariant::OutboxDrained);
    assert_eq!((v.event_id, v.wallet_id), (Some(event), Some(c.bob)));
    assert!(v.message.contains("was never published"), "{}", v.message);
    assert!(v.message.contains("funded 50.0000"), "{}", v.message);
    assert_eq!(report.facts.outbox_unpublished, 1);
}

#[test]
fn an_unpublished_outbox_row_of_no_ledger_entry_is_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let mut stray = snap.outbox[0].clone();
    stray.id = 9_999;
    stray.event_id = Uuid::from_u128(0xdead);
    stray.published_at = None;
    let (wallet, created) = (stray.wallet_id, stray.created_at);
    snap.outbox.push(stray);
    let report = check(&snap);
    assert_violated_exactly(&report, &[Invariant::OutboxDrained]);
    let v = only_violation(&report, Invariant::OutboxDrained);
    assert_eq!(
        (v.event_id, v.wallet_id, v.at),
        (Some(Uuid::from_u128(0xdead)), Some(wallet), Some(created))
    );
    assert!(
        v.message.contains("outbox row 9999 (event") && v.message.contains("was never published"),
        "{}",
        v.message
    );
}

#[test]
fn ledger_entry_without_outbox_row_is_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let event = c.fund_bob.events[0];
    snap.outbox.retain(|o| o.event_id != event);
    let report = check(&snap);
    assert_violated_exactly(&report, &[Invariant::OutboxDrained]);
    let v = only_violation(&report, Invariant::OutboxDrained);
    assert_eq!(v.event_id, Some(event));
    assert!(v.message.contains("has no outbox row"), "{}", v.message);
}

#[test]
fn out_of_order_history_is_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    // Swap the applied order of bob's funding (seq 2) and alice's credit to
    // him (seq 3).
    crate::fixture::apply_out_of_order(&mut snap, c.bob, 2, 3);
    let report = check(&snap);
    assert_violated_exactly(&report, &[Invariant::HistoryOrdered]);
    let check = result(&report, Invariant::HistoryOrdered);
    assert_eq!(check.violations_total, 2);
    assert!(check.violations.iter().all(|v| v.wallet_id == Some(c.bob)));
    assert!(
        check.violations[0]
            .message
            .contains("jumps from seq 1 to seq 3")
    );
    assert!(
        check.violations[1].message.contains("applied seq 2"),
        "{}",
        check.violations[1].message
    );
    assert!(check.violations[1].message.contains("after seq 3"));
}

#[test]
fn negative_balance_is_named() {
    let mut c = clean();
    // Carol holds 12.5001; the fixture does not check funds.
    let overdraft = c.world.transfer(c.carol, c.alice, dec!(20), Outcome::Ok, 1);
    let report = check(&c.world.snapshot());
    assert_violated_exactly(&report, &[Invariant::NoNegativeBalance]);
    let check = result(&report, Invariant::NoNegativeBalance);
    // The final balance, and the entry that took it there.
    assert_eq!(check.violations_total, 2);
    let wallet = &check.violations[0];
    assert_eq!(wallet.wallet_id, Some(c.carol));
    assert_eq!(wallet.actual, Some(dec!(-7.4999)));
    assert_eq!(
        wallet.message,
        format!("wallet {}: balance is -7.4999", c.carol)
    );
    let dip = &check.violations[1];
    assert_eq!(dip.event_id, Some(overdraft.events[0]));
    assert!(dip.message.contains("went to -7.4999"), "{}", dip.message);
}

#[test]
fn history_amount_differing_from_ledger_is_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let event = c.fund_alice.events[0];
    snap.history
        .iter_mut()
        .find(|h| h.event_id == event)
        .unwrap()
        .amount = dec!(100.0001);
    let report = check(&snap);
    assert_violated_exactly(
        &report,
        &[
            Invariant::HistoryNoPhantom,
            Invariant::HistoryBalanceMatches,
        ],
    );
    let v = only_violation(&report, Invariant::HistoryNoPhantom);
    assert_eq!((v.event_id, v.wallet_id), (Some(event), Some(c.alice)));
    assert_eq!(
        (v.expected, v.actual),
        (Some(dec!(100)), Some(dec!(100.0001)))
    );
    assert!(v.message.starts_with("mismatch:"), "{}", v.message);
    assert!(
        v.message.contains("amount 100.0001 vs ledger 100.0000"),
        "{}",
        v.message
    );
}

#[test]
fn not_converging_in_time_is_violated() {
    let c = clean();
    let mut snap = c.world.snapshot();
    snap.convergence = Some(Convergence {
        converged: false,
        took_ms: 30_005,
        bound_ms: 30_000,
        started_offset_ms: None,
    });
    let report = check(&snap);
    assert_violated_exactly(&report, &[Invariant::ConvergedInTime]);
    let v = only_violation(&report, Invariant::ConvergedInTime);
    assert!(
        v.message.contains("gave up after 30005 ms"),
        "{}",
        v.message
    );

    snap.convergence = Some(Convergence {
        converged: true,
        took_ms: 45_000,
        bound_ms: 30_000,
        started_offset_ms: None,
    });
    let report = check(&snap);
    assert_violated_exactly(&report, &[Invariant::ConvergedInTime]);
    let v = only_violation(&report, Invariant::ConvergedInTime);
    assert!(
        v.message
            .contains("caught up after 45000 ms, over the 30000 ms bound"),
        "{}",
        v.message
    );

    // Exactly at the bound is in time.
    snap.convergence = Some(Convergence {
        converged: true,
        took_ms: 30_000,
        bound_ms: 30_000,
        started_offset_ms: None,
    });
    assert_violated_exactly(&check(&snap), &[]);

    snap.convergence = None;
    let report = check(&snap);
    assert!(report.passed);
    assert_eq!(
        result(&report, Invariant::ConvergedInTime).status,
        Status::NotEvaluated
    );
}

#[test]
fn without_an_operation_log_durability_is_not_evaluated() {
    let mut snap = clean().world.snapshot();
    snap.ops.clear();
    let report = check(&snap);
    assert!(report.passed);
    assert_eq!(
        result(&report, Invariant::AckedWriteDurable).status,
        Status::NotEvaluated
    );
}

#[test]
fn parked_events_after_convergence_are_missing_history() {
    let c = clean();
    let mut snap = c.world.snapshot();
    // Carol's seq 2 never arrived, so seq 3 waits in parked_events.
    let carol_rows: Vec<_> = snap
        .history
        .iter()
        .filter(|h| h.wallet_id == c.carol)
        .cloned()
        .collect();
    let (lost, waiting) = (&carol_rows[1], &carol_rows[2]);
    snap.history
        .retain(|h| h.event_id != lost.event_id && h.event_id != waiting.event_id);
    snap.parked.push(ParkedRow {
        event_id: waiting.event_id,
        wallet_id: c.carol,
        seq: waiting.seq,
        source_partition: 0,
        source_offset: 40,
        parked_at: waiting.applied_at,
    });
    // And a stale parked copy of an event that was applied long ago.
    let applied = snap
        .history
        .iter()
        .find(|h| h.wallet_id == c.alice)
        .unwrap()
        .clone();
    snap.parked.push(ParkedRow {
        event_id: applied.event_id,
        wallet_id: c.alice,
        seq: applied.seq,
        source_partition: 0,
        source_offset: 41,
        parked_at: applied.applied_at,
    });
    let report = check(&snap);
    let check = result(&report, Invariant::HistoryNoMissing);
    assert_eq!(check.status, Status::Violated);
    let messages: Vec<&str> = check
        .violations
        .iter()
        .map(|v| v.message.as_str())
        .collect();
    assert_eq!(check.violations_total, 3, "{messages:#?}");
    assert_eq!(check.violations[0].event_id, Some(lost.event_id));
    assert!(!messages[0].contains("parked"), "{}", messages[0]);
    assert_eq!(check.violations[1].event_id, Some(waiting.event_id));
    assert!(
        messages[1].contains("it is parked, waiting for seq 2"),
        "{}",
        messages[1]
    );
    assert_eq!(check.violations[2].event_id, Some(applied.event_id));
    assert!(
        messages[2].contains("still parked after convergence"),
        "{}",
        messages[2]
    );
    assert_eq!(report.facts.parked_events, 2);
}

#[test]
fn stored_violations_are_capped_but_counted() {
    let mut world = World::new();
    for i in 0..60 {
        world.create(&format!("user-{i}"));
    }
    let mut snap = world.snapshot();
    snap.history.clear();
    let report = check(&snap);
    let check = result(&report, Invariant::HistoryNoMissing);
    assert_eq!(check.violations.len(), crate::report::VIOLATIONS_STORED_MAX);
    assert_eq!(check.violations_total, 60);
    let text = render_text(&report);
    assert!(text.contains("60 violations (examined 60)"), "{text}");
    assert!(text.contains("… and 10 more"), "{text}");
}

#[test]
fn report_serializes_names_and_money_as_strings() {
    let c = clean();
    let mut snap = c.world.snapshot();
    wallet_mut(&mut snap, c.alice).balance += dec!(0.0001);
    snap.convergence = None;
    let report = check(&snap);
    let json = serde_json::to_value(&report).unwrap();
    let checks = json["checks"].as_array().unwrap();
    assert_eq!(checks[0]["invariant"], "balance-matches-ledger");
    assert_eq!(checks[0]["status"], "violated");
    assert_eq!(checks[0]["violations"][0]["expected"], "74.9999");
    assert_eq!(checks[0]["violations"][0]["actual"], "75.0000");
    assert_eq!(checks[0]["violations"][0]["wallet_id"], c.alice.to_string());
    assert_eq!(checks[15]["invariant"], "converged-in-time");
    assert_eq!(checks[15]["status"], "not_evaluated");
    assert_eq!(json["facts"]["total_funded"], "150.0000");
    assert_eq!(json["passed"], false);
    let back: Report = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
}

#[test]
fn text_report_marks_each_invariant() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let credit = c.alice_to_bob.events[1];
    snap.history.retain(|h| h.event_id != credit);
    snap.convergence = None;
    let text = render_text(&check(&snap));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("✔ balance-matches-ledger"), "{text}");
    assert!(lines[0].ends_with("examined 3"), "{text}");
    let missing = lines
        .iter()
        .position(|l| l.starts_with("✘ history-no-missing"))
        .expect(&text);
    assert!(
        lines[missing].ends_with("1 violation (examined 13)"),
        "{text}"
    );
    assert!(
        lines[missing + 1].starts_with(&format!("    wallet {}:", c.bob)),
        "{text}"
    );
    assert!(lines[missing + 1].contains(&credit.to_string()), "{text}");
    // Every violation is stored: no "… and 0 more" after it.
    assert!(lines[missing + 2].starts_with('✔'), "{text}");
    assert!(text.contains("– converged-in-time"), "{text}");
    assert!(text.contains("0 parked events, 1 dead letters"), "{text}");
    assert!(text.trim_end().ends_with(
        "FAILED: 3 of 16 invariants violated (history-no-missing, history-ordered, history-balance-matches)"
    ));
}

/// A run-sized snapshot (300k ledger rows) checks in linear time; a
/// quadratic loop anywhere would take hours here.
#[test]
fn a_run_sized_snapshot_checks_quickly() {
    const WALLETS: usize = 20_000;
    const TRANSFERS: usize = 130_000;
    let mut world = World::new();
    let ids: Vec<Uuid> = (0..WALLETS)
        .map(|i| world.create(&format!("u{i}")))
        .collect();
    for &id in &ids {
        world.fund(id, dec!(100), Outcome::Ok, 1);
    }
    for n in 0..TRANSFERS {
        let (from, to) = (ids[n % WALLETS], ids[(n + 1) % WALLETS]);
        world.transfer(from, to, dec!(0.0001), Outcome::Ok, 1);
    }
    world.converged(1_000, 30_000);
    world.walked();
    let snap = world.snapshot();
    assert!(snap.ledger.len() >= 300_000, "{}", snap.ledger.len());
    let started = std::time::Instant::now();
    let report = check(&snap);
    let took = started.elapsed();
    assert_violated_exactly(&report, &[]);
    assert!(
        took < std::time::Duration::from_secs(30),
        "check took {took:?}"
    );
}

#[test]
fn a_refusal_after_a_cut_off_attempt_leaves_the_operation_open() {
    // The false alarm of a wallet kill: the first attempt was cut off after
    // the service committed, the retry met the dead service's closed port.
    let mut c = clean();
    let op = c
        .world
        .transfer(c.alice, c.bob, dec!(4), Outcome::Indeterminate, 1);
    c.world.attempts(
        op.op_id,
        &[
            (Outcome::Indeterminate, "connection_error"),
            (Outcome::Failed, "connect_refused"),
        ],
    );
    let report = check(&c.world.snapshot());
    assert_violated_exactly(&report, &[]);
    assert_eq!(report.facts.ops_indeterminate, 4);
    assert_eq!(report.facts.ops_retried, 1);
}

#[test]
fn refused_on_every_attempt_yet_applied_is_named() {
    let mut c = clean();
    let op = c
        .world
        .transfer(c.alice, c.bob, dec!(4), Outcome::Failed, 1);
    c.world.attempts(
        op.op_id,
        &[
            (Outcome::Failed, "connect_refused"),
            (Outcome::Failed, "connect_refused"),
        ],
    );
    let report = check(&c.world.snapshot());
    assert_violated_exactly(&report, &[Invariant::AckedWriteDurable]);
    let v = only_violation(&report, Invariant::AckedWriteDurable);
    assert_eq!(v.op_id, Some(op.op_id));
    assert!(
        v.message.contains("is in the ledger anyway") && v.message.contains("2 attempts"),
        "{}",
        v.message
    );
}

#[test]
fn a_retry_that_resolves_an_open_attempt_is_counted() {
    let mut c = clean();
    let op = c.world.transfer(c.alice, c.bob, dec!(4), Outcome::Ok, 1);
    c.world.attempts(
        op.op_id,
        &[
            (Outcome::Indeterminate, "connection_error"),
            (Outcome::Failed, "connect_refused"),
            (Outcome::Ok, "replayed"),
        ],
    );
    let report = check(&c.world.snapshot());
    assert_violated_exactly(&report, &[]);
    assert_eq!(report.facts.ops_resolved_by_retry, 1);
    // 14 records of the clean world, one attempt each, plus these 3.
    assert_eq!(report.facts.attempts, 14 + 3);
}

#[test]
fn a_ledger_event_in_dead_letters_is_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let event = c.fund_bob.events[0];
    snap.dead_letters.push(crate::snapshot::DeadLetterRow {
        id: 2,
        topic: "wallet-events".into(),
        partition: 1,
        offset: 99,
        error: "refused by the database: duplicate key".into(),
        received_at: crate::fixture::at(40),
        event_id: Some(event),
    });
    let report = check(&snap);
    assert_violated_exactly(&report, &[Invariant::HistoryNoDeadLetter]);
    let v = only_violation(&report, Invariant::HistoryNoDeadLetter);
    assert_eq!((v.event_id, v.wallet_id), (Some(event), Some(c.bob)));
    assert!(
        v.message
            .contains("sits in dead_letters (partition 1, offset 99)"),
        "{}",
        v.message
    );
}

#[test]
fn a_broken_balance_after_chain_is_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    // Bob's second entry claims a balance its entries do not sum to; the
    // balance itself still matches the sum.
    let entry = snap
        .ledger
        .iter_mut()
        .find(|e| e.wallet_id == c.bob && e.seq == 2)
        .unwrap();
    entry.balance_after += dec!(0.0001);
    for h in snap
        .history
        .iter_mut()
        .filter(|h| h.wallet_id == c.bob && h.seq == 2)
    {
        h.balance_after += dec!(0.0001);
    }
    let report = check(&snap);
    // The client that wrote the entry was told the true balance_after, and
    // the history reads, taken before the corruption, showed it too.
    assert_violated_exactly(
        &report,
        &[
            Invariant::BalanceMatchesLedger,
            Invariant::AckedWriteDurable,
            Invariant::HistoryReadsMatch,
        ],
    );
    let told = only_violation(&report, Invariant::AckedWriteDurable);
    assert!(
        told.message.contains("holds 50.0000 after it; the ledger"),
        "{}",
        told.message
    );
    let v = only_violation(&report, Invariant::BalanceMatchesLedger);
    assert!(
        v.message.contains("the ledger chain breaks"),
        "{}",
        v.message
    );
    assert!(v.message.contains("balance_after 50.0001"), "{}", v.message);
}

#[test]
fn a_last_seq_that_disagrees_with_the_ledger_is_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    wallet_mut(&mut snap, c.carol).last_seq += 1;
    let report = check(&snap);
    assert_violated_exactly(&report, &[Invariant::BalanceMatchesLedger]);
    let v = only_violation(&report, Invariant::BalanceMatchesLedger);
    assert!(v.message.contains("last_seq"), "{}", v.message);
}

#[test]
fn history_with_another_user_or_commit_time_is_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let row = snap
        .history
        .iter_mut()
        .find(|h| h.wallet_id == c.carol)
        .unwrap();
    row.user_id = "mallory".into();
    row.committed_at += Duration::seconds(1);
    let report = check(&snap);
    assert_violated_exactly(&report, &[Invariant::HistoryNoPhantom]);
    let v = only_violation(&report, Invariant::HistoryNoPhantom);
    assert!(
        v.message.contains("user mallory vs ledger carol"),
        "{}",
        v.message
    );
    assert!(v.message.contains("committed at"), "{}", v.message);
}

#[test]
fn a_500_answer_is_named_with_its_request() {
    let mut c = clean();
    let op = c
        .world
        .transfer(c.alice, c.bob, dec!(1), Outcome::Indeterminate, 0);
    c.world
        .attempts(op.op_id, &[(Outcome::Indeterminate, "internal_error")]);
    let mut snap = c.world.snapshot();
    let record = snap.ops.iter_mut().find(|o| o.op_id == op.op_id).unwrap();
    record.attempts[0].status = Some(500);
    let report = check(&snap);
    assert_violated_exactly(&report, &[Invariant::NoInternalErrors]);
    let v = only_violation(&report, Invariant::NoInternalErrors);
    assert_eq!(v.op_id, Some(op.op_id));
    assert!(
        v.message.contains(&format!(
            "POST /wallets/{}/transfer got a 500 (internal_error)",
            c.alice
        )),
        "{}",
        v.message
    );
}

/// A read of `wallet`, now, that showed `shown`.
/// The operation `op_id` of a log, to change it.
fn op_mut(ops: &mut [OpRecord], op_id: u64) -> &mut OpRecord {
    ops.iter_mut()
        .find(|op| op.op_id == op_id)
        .expect("the operation is in the log")
}

fn observed_read(world: &mut World, wallet: Uuid, shown: Decimal) -> u64 {
    let op_id = world.read(wallet);
    let op = op_mut(&mut world.snap.ops, op_id);
    op.attempts[0].observed = Some(run_log::Observed::Balance(shown));
    op_id
}

#[test]
fn a_read_showing_a_balance_the_wallet_never_held_is_named() {
    let mut c = clean();
    // Alice held 0, 100, 70, 69.9999, 74.9999; never 71.
    let op_id = observed_read(&mut c.world, c.alice, dec!(71));
    let report = check(&c.world.snapshot());
    assert_violated_exactly(&report, &[Invariant::ReadsConsistent]);
    let v = only_violation(&report, Invariant::ReadsConsistent);
    assert_eq!(v.op_id, Some(op_id));
    assert_eq!(v.actual, Some(dec!(71)));
    assert!(
        v.message.contains("showed balance 71.0000") && v.message.contains("74.9999"),
        "{}",
        v.message
    );
}

#[test]
fn a_read_answered_with_something_not_a_wallet_is_named_and_counted() {
    let mut c = clean();
    let op_id = observed_read(&mut c.world, c.alice, dec!(74.9999));
    let examined_before = result(&check(&c.world.snapshot()), Invariant::ReadsConsistent).examined;
    let read = op_mut(&mut c.world.snap.ops, op_id);
    read.attempts[0].observed = Some(run_log::Observed::Malformed("no data.balance".into()));
    let report = check(&c.world.snapshot());
    assert_violated_exactly(&report, &[Invariant::ReadsConsistent]);
    let v = only_violation(&report, Invariant::ReadsConsistent);
    assert_eq!(v.op_id, Some(op_id));
    assert!(
        v.message.contains("not a wallet: no data.balance"),
        "{}",
        v.message
    );
    assert_eq!(
        result(&report, Invariant::ReadsConsistent).examined,
        examined_before
    );
}

/// The finding spans the read attempt's own flight (a retry starts after
/// the operation's intended time): it starts then, and a fault that began
/// while the read was in flight is named.
#[test]
fn a_bad_read_is_placed_at_its_attempt_s_flight() {
    let mut c = clean();
    let op_id = observed_read(&mut c.world, c.alice, dec!(71));
    let read = op_mut(&mut c.world.snap.ops, op_id);
    read.attempts[0].started_us = 2_000_000;
    read.attempts[0].latency_us = 300_000;
    let intended = read.intended_at;
    let mut snap = c.world.snapshot();
    snap.faults = vec![FaultWindow {
        fault_id: 3,
        kind: FaultKind::WalletKill,
        target: "wallet".into(),
        start: intended + Duration::milliseconds(2_200),
        healed: Some(intended + Duration::seconds(5)),
        recovered: None,
    }];
    let report = check(&snap);
    let v = only_violation(&report, Invariant::ReadsConsistent);
    assert_eq!(v.at, Some(intended + Duration::milliseconds(2_000)));
    assert_eq!(v.fault_windows, ["fault #3 wallet_kill (wallet)"]);
}

/// A write acknowledged at the very instant a read starts need not be
/// visible to it: only those acknowledged before.
#[test]
fn a_read_starting_as_a_write_is_acknowledged_may_miss_it() {
    let mut c = clean();
    let op_id = observed_read(&mut c.world, c.alice, dec!(100));
    let transfer = c
        .world
        .snap
        .ops
        .iter()
        .find(|op| op.op_id == c.alice_to_bob.op_id)
        .unwrap();
    let ack = &transfer.attempts[0];
    let acked_at =
        transfer.intended_at + Duration::microseconds((ack.started_us + ack.latency_us) as i64);
    let read = op_mut(&mut c.world.snap.ops, op_id);
    read.intended_at = acked_at;
    read.attempts[0].started_us = 0;
    read.attempts[0].latency_us = 1;
    assert_violated_exactly(&check(&c.world.snapshot()), &[]);
    // A microsecond later, it must see it.
    let read = op_mut(&mut c.world.snap.ops, op_id);
    read.intended_at = acked_at + Duration::microseconds(1);
    assert_violated_exactly(&check(&c.world.snapshot()), &[Invariant::ReadsConsistent]);
}

#[test]
fn a_stale_read_after_an_acknowledged_write_is_named() {
    let mut c = clean();
    // 100 is a balance alice held, but before writes that were
    // acknowledged before this read started.
    observed_read(&mut c.world, c.alice, dec!(100));
    let report = check(&c.world.snapshot());
    assert_violated_exactly(&report, &[Invariant::ReadsConsistent]);
    let v = only_violation(&report, Invariant::ReadsConsistent);
    assert!(v.message.contains("could only hold"), "{}", v.message);
    // The same read, had it been in flight before the transfer out of
    // alice started, may show 100.
    let mut c = clean();
    let op_id = observed_read(&mut c.world, c.alice, dec!(100));
    let transfer_start = c
        .world
        .snap
        .ops
        .iter()
        .find(|op| op.op_id == c.alice_to_bob.op_id)
        .unwrap()
        .intended_at;
    let read = op_mut(&mut c.world.snap.ops, op_id);
    read.intended_at = transfer_start - chrono::Duration::milliseconds(1);
    read.attempts[0].latency_us = 500;
    let report = check(&c.world.snapshot());
    assert_violated_exactly(&report, &[]);
}

/// A transfer's response is held to its ledger rows field by field: each
/// field wrong on its own is named.
#[test]
fn a_transfer_response_wrong_in_any_one_field_is_named() {
    type Tweak = fn(&mut run_log::ObservedEntry);
    let tweaks: [(&str, Tweak); 4] = [
        ("wallet", |e| e.wallet_id = Uuid::from_u128(0xbad)),
        ("seq", |e| e.seq += 7),
        ("amount", |e| e.amount += dec!(0.0001)),
        ("balance_after", |e| e.balance_after += dec!(0.0001)),
    ];
    for (field, tweak) in tweaks {
        let c = clean();
        let mut snap = c.world.snapshot();
        let op = op_mut(&mut snap.ops, c.alice_to_bob.op_id);
        let Some(run_log::Observed::Entries(entries)) = &mut op.attempts[0].observed else {
            panic!("the transfer's response is observed");
        };
        tweak(&mut entries[0]);
        let report = check(&snap);
        assert_violated_exactly(&report, &[Invariant::AckedWriteDurable]);
        let v = only_violation(&report, Invariant::AckedWriteDurable);
        assert!(
            v.message.contains("the response said event"),
            "{field}: {}",
            v.message
        );
    }
}

/// An acknowledged fund whose ledger row moved another amount is named,
/// whatever its response said (here: nothing).
#[test]
fn an_acked_fund_that_applied_another_amount_is_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let op = op_mut(&mut snap.ops, c.fund_bob.op_id);
    for attempt in &mut op.attempts {
        attempt.observed = None;
    }
    snap.ledger
        .iter_mut()
        .find(|e| c.fund_bob.events.contains(&e.event_id))
        .unwrap()
        .amount += dec!(1);
    let report = check(&snap);
    let v = result(&report, Invariant::AckedWriteDurable)
        .violations
        .iter()
        .find(|v| v.op_id == Some(c.fund_bob.op_id))
        .expect("the fund is named");
    assert!(
        v.message
            .contains("does not match the ledger: 1 rows carry its key (expected 1)"),
        "{}",
        v.message
    );
}

/// An indeterminate transfer that applied once but with another amount
/// does not match; it did not apply twice.
#[test]
fn an_indeterminate_transfer_that_applied_otherwise_is_named_as_such() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let key = snap
        .ops
        .iter()
        .find(|op| {
            op.kind == OpKind::Transfer
                && op.outcome == Outcome::Indeterminate
                && op.amount == Some(dec!(0.0001))
        })
        .and_then(|op| op.idempotency_key.clone())
        .expect("the clean world's indeterminate transfer");
    for row in snap
        .ledger
        .iter_mut()
        .filter(|e| e.request_key.as_deref() == Some(key.as_str()))
    {
        row.amount += dec!(1);
    }
    let report = check(&snap);
    let v = result(&report, Invariant::AckedWriteDurable)
        .violations
        .iter()
        .find(|v| v.message.contains(&key))
        .expect("the transfer is named");
    assert!(
        v.message
            .contains("does not match the ledger: 2 rows carry its key"),
        "{}",
        v.message
    );
}

/// An acknowledged transfer's rows are held to it in every part: the pair's
/// transfer id, both wallets and both amounts.
#[test]
fn an_acked_transfer_whose_rows_differ_in_any_part_is_named() {
    type Tweak = fn(&mut crate::snapshot::LedgerRow, &mut crate::snapshot::LedgerRow);
    let tweaks: [(&str, Tweak); 5] = [
        ("transfer id", |_, credit| {
            credit.transfer_id = Some(Uuid::from_u128(0x7d))
        }),
        ("debited wallet", |out, _| {
            out.wallet_id = Uuid::from_u128(0xd)
        }),
        ("credited wallet", |_, credit| {
            credit.wallet_id = Uuid::from_u128(0xc)
        }),
        ("debit amount", |out, _| out.amount += dec!(1)),
        ("credit amount", |_, credit| credit.amount += dec!(1)),
    ];
    for (part, tweak) in tweaks {
        let c = clean();
        let mut snap = c.world.snapshot();
        let op = op_mut(&mut snap.ops, c.alice_to_bob.op_id);
        for attempt in &mut op.attempts {
            attempt.observed = None;
        }
        let [out_id, credit_id] = [c.alice_to_bob.events[0], c.alice_to_bob.events[1]];
        let mut legs: Vec<&mut crate::snapshot::LedgerRow> = snap
            .ledger
            .iter_mut()
            .filter(|e| e.event_id == out_id || e.event_id == credit_id)
            .collect();
        let (first, second) = legs.split_at_mut(1);
        let (out, credit) = if first[0].event_id == out_id {
            (&mut *first[0], &mut *second[0])
        } else {
            (&mut *second[0], &mut *first[0])
        };
        tweak(out, credit);
        let report = check(&snap);
        let found = result(&report, Invariant::AckedWriteDurable)
            .violations
            .iter()
            .any(|v| {
                v.op_id == Some(c.alice_to_bob.op_id)
                    && v.message.contains("does not match the ledger")
            });
        assert!(
            found,
            "{part}: {:#?}",
            result(&report, Invariant::AckedWriteDurable)
        );
    }
}

/// An operation without a key cannot be held against the ledger: it is
/// counted as unverifiable, not judged.
#[test]
fn a_fund_without_a_key_is_counted_unverifiable() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let op = op_mut(&mut snap.ops, c.fund_bob.op_id);
    op.idempotency_key = None;
    let report = check(&snap);
    assert_eq!(report.facts.ops_unverifiable, 1);
}

/// Every ledger row must have been asked for: a keyless fund, or the
/// first entry of a wallet no logged create made, is named.
#[test]
fn ledger_rows_nobody_asked_for_are_named() {
    let c = clean();
    // A keyless funded row (its wallet's balance and chain kept right).
    let mut snap = c.world.snapshot();
    let row = snap
        .ledger
        .iter_mut()
        .find(|e| c.fund_bob.events.contains(&e.event_id))
        .unwrap();
    row.request_key = None;
    let report = check(&snap);
    let check_result = result(&report, Invariant::AckedWriteDurable);
    assert!(
        check_result
            .violations
            .iter()
            .any(|v| v.message.contains("carries no idempotency key")),
        "{:#?}",
        check_result.violations
    );
    // A wallet whose create the log does not hold.
    let mut snap = c.world.snapshot();
    snap.ops
        .retain(|op| !(op.kind == OpKind::CreateWallet && op.wallet_id == Some(c.carol)));
    let report = check(&snap);
    let v = only_violation(&report, Invariant::AckedWriteDurable);
    assert_eq!(v.wallet_id, Some(c.carol));
    assert!(
        v.message.contains("creates a wallet no logged create made"),
        "{}",
        v.message
    );
    // The clean world's creates are all asked for.
    assert_violated_exactly(&check(&c.world.snapshot()), &[]);
}

/// An acknowledged create means the wallet exists; a refused one, that it
/// does not.
#[test]
fn creates_are_held_to_the_wallets_they_made() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let ghost = Uuid::from_u128(0x6057);
    let template = snap
        .ops
        .iter()
        .find(|op| op.kind == OpKind::CreateWallet)
        .unwrap()
        .clone();
    snap.ops.push(OpRecord {
        op_id: 900,
        wallet_id: Some(ghost),
        ..template.clone()
    });
    let report = check(&snap);
    let v = only_violation(&report, Invariant::AckedWriteDurable);
    assert_eq!(v.wallet_id, Some(ghost));
    assert!(
        v.message
            .contains("is acknowledged but the wallet does not exist"),
        "{}",
        v.message
    );
    // Refused, and indeed not made: fine.
    let mut snap = c.world.snapshot();
    snap.ops.push(OpRecord {
        op_id: 902,
        wallet_id: Some(ghost),
        outcome: Outcome::Failed,
        ..template.clone()
    });
    assert_violated_exactly(&check(&snap), &[]);
    let mut snap = c.world.snapshot();
    snap.ops.push(OpRecord {
        op_id: 901,
        wallet_id: Some(c.alice),
        outcome: Outcome::Failed,
        ..template
    });
    let report = check(&snap);
    let v = only_violation(&report, Invariant::AckedWriteDurable);
    assert!(
        v.message.contains("was refused but the wallet exists"),
        "{}",
        v.message
    );
}

#[test]
fn a_response_that_differs_from_the_ledger_is_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    // The ledger is right; the client was told another balance_after.
    let op = op_mut(&mut snap.ops, c.fund_bob.op_id);
    let Some(run_log::Observed::WalletAfter { balance, .. }) = &mut op.attempts[0].observed else {
        panic!("the fund's response is observed");
    };
    *balance = dec!(5);
    let report = check(&snap);
    assert_violated_exactly(&report, &[Invariant::AckedWriteDurable]);
    let v = only_violation(&report, Invariant::AckedWriteDurable);
    assert_eq!(v.op_id, Some(c.fund_bob.op_id));
    assert!(
        v.message
            .contains("holds 5.0000 after it; the ledger's entry says"),
        "{}",
        v.message
    );
}

#[test]
fn a_fund_no_client_asked_for_is_named_twice() {
    let mut c = clean();
    let extra = c.world.fund(c.carol, dec!(10), Outcome::Ok, 1);
    // The row, its outbox and history are all consistent; only the log
    // never asked for it.
    c.world.snap.ops.retain(|op| op.op_id != extra.op_id);
    let report = check(&c.world.snapshot());
    assert_violated_exactly(
        &report,
        &[Invariant::AckedWriteDurable, Invariant::MoneyConserved],
    );
    let v = only_violation(&report, Invariant::AckedWriteDurable);
    assert_eq!(v.event_id, Some(extra.events[0]));
    assert!(
        v.message.contains("no operation asked for it"),
        "{}",
        v.message
    );
    let m = only_violation(&report, Invariant::MoneyConserved);
    assert_eq!(
        (m.expected, m.actual),
        (Some(dec!(157.25)), Some(dec!(160)))
    );
    assert!(
        m.message
            .contains("2.7500 created beyond what clients requested"),
        "{}",
        m.message
    );
}

/// The walk of `wallet`'s history in `snap`.
fn walked_wallet(snap: &mut Snapshot, wallet: Uuid) -> &mut run_log::WalkedList {
    snap.walk
        .as_mut()
        .expect("the clean world walks")
        .wallets
        .iter_mut()
        .find(|w| w.id == wallet.to_string())
        .expect("every wallet is walked")
}

/// The page the clean world's history read showed.
fn history_page(snap: &mut Snapshot) -> &mut run_log::ShownPage {
    snap.ops
        .iter_mut()
        .filter(|op| op.kind == OpKind::GetHistory)
        .flat_map(|op| op.attempts.iter_mut())
        .find_map(|a| match &mut a.observed {
            Some(run_log::Observed::HistoryPage(page)) => Some(page),
            _ => None,
        })
        .expect("the clean world reads a history page")
}

#[test]
fn a_history_page_with_a_gap_is_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let page = history_page(&mut snap);
    assert!(page.entries.len() >= 3);
    page.entries.remove(1);
    let report = check(&snap);
    assert_violated_exactly(&report, &[Invariant::HistoryReadsMatch]);
    let v = only_violation(&report, Invariant::HistoryReadsMatch);
    assert_eq!(v.wallet_id, Some(c.bob));
    assert!(v.message.contains("not gap-free"), "{}", v.message);
}

#[test]
fn a_last_page_that_stops_short_is_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    // The newest entries, truthful, but with no cursor to the older ones.
    history_page(&mut snap).entries.pop();
    let report = check(&snap);
    assert_violated_exactly(&report, &[Invariant::HistoryReadsMatch]);
    let v = only_violation(&report, Invariant::HistoryReadsMatch);
    assert!(v.message.contains("leaving out seq 1..1"), "{}", v.message);
}

#[test]
fn a_page_showing_a_wrong_amount_is_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    history_page(&mut snap).entries[0].amount += dec!(0.0001);
    let report = check(&snap);
    assert_violated_exactly(&report, &[Invariant::HistoryReadsMatch]);
    let v = only_violation(&report, Invariant::HistoryReadsMatch);
    assert!(v.message.contains("amount"), "{}", v.message);
}

#[test]
fn a_history_read_answered_with_something_not_a_page_is_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let attempt = snap
        .ops
        .iter_mut()
        .filter(|op| op.kind == OpKind::GetHistory)
        .flat_map(|op| op.attempts.iter_mut())
        .find(|a| matches!(a.observed, Some(run_log::Observed::HistoryPage(_))))
        .expect("the clean world reads a history page");
    attempt.observed = Some(run_log::Observed::Malformed("no data.entries".into()));
    let report = check(&snap);
    assert_violated_exactly(&report, &[Invariant::HistoryReadsMatch]);
    let v = only_violation(&report, Invariant::HistoryReadsMatch);
    assert!(
        v.message.contains("not a page: no data.entries"),
        "{}",
        v.message
    );
}

/// A prefix of the history is fine during the load: history lags.
#[test]
fn a_page_read_behind_the_ledger_passes() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let page = history_page(&mut snap);
    page.entries.remove(0);
    assert!(page.entries.last().is_some_and(|e| e.seq == 1));
    assert_violated_exactly(&check(&snap), &[]);
}

#[test]
fn a_walk_missing_an_entry_is_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let credit = c.alice_to_bob.events[1];
    walked_wallet(&mut snap, c.bob)
        .entries
        .retain(|e| e.event_id != credit);
    let report = check(&snap);
    assert_violated_exactly(&report, &[Invariant::HistoryReadsMatch]);
    let v = only_violation(&report, Invariant::HistoryReadsMatch);
    assert_eq!(v.wallet_id, Some(c.bob));
    assert!(
        v.message.contains(&format!("history of wallet {}", c.bob)),
        "{}",
        v.message
    );
}

#[test]
fn an_activity_showing_another_users_entry_is_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let walk = snap.walk.as_mut().unwrap();
    let bobs = walk.users.iter().find(|u| u.id == "bob").unwrap().entries[0].clone();
    let alice = walk.users.iter_mut().find(|u| u.id == "alice").unwrap();
    alice.entries.insert(0, bobs.clone());
    let report = check(&snap);
    assert_violated_exactly(&report, &[Invariant::HistoryReadsMatch]);
    let v = only_violation(&report, Invariant::HistoryReadsMatch);
    assert!(
        v.message.contains("activity of user \"alice\""),
        "{}",
        v.message
    );
    assert!(
        v.message.contains(&bobs.event_id.to_string()),
        "{}",
        v.message
    );
}

#[test]
fn a_walk_showing_two_entries_swapped_names_both_positions() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let walked = walked_wallet(&mut snap, c.alice);
    let total = walked.entries.len();
    assert!(total >= 2);
    walked.entries.swap(0, 1);
    let (first, second) = (walked.entries[0].event_id, walked.entries[1].event_id);
    let report = check(&snap);
    assert_violated_exactly(&report, &[Invariant::HistoryReadsMatch]);
    let v = only_violation(&report, Invariant::HistoryReadsMatch);
    assert!(
        v.message
            .contains(&format!("2 of {total} positions differ")),
        "{}",
        v.message
    );
    assert!(
        v.message
            .contains(&format!("position 0 shows event {first}"))
            && v.message
                .contains(&format!("where the ledger has event {second}")),
        "{}",
        v.message
    );
}

#[test]
fn a_walk_that_stopped_early_is_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    walked_wallet(&mut snap, c.carol).error = Some("GET answered 503".into());
    let report = check(&snap);
    assert_violated_exactly(&report, &[Invariant::HistoryReadsMatch]);
    let v = only_violation(&report, Invariant::HistoryReadsMatch);
    assert!(v.message.contains("GET answered 503"), "{}", v.message);
}

#[test]
fn a_wallet_the_walk_left_out_is_named() {
    let c = clean();
    let mut snap = c.world.snapshot();
    let carol = c.carol.to_string();
    snap.walk
        .as_mut()
        .expect("the clean world walks")
        .wallets
        .retain(|w| w.id != carol);
    let report = check(&snap);
    assert_violated_exactly(&report, &[Invariant::HistoryReadsMatch]);
    let v = only_violation(&report, Invariant::HistoryReadsMatch);
    assert_eq!(v.wallet_id, Some(c.carol));
    assert!(v.message.contains("not walked"), "{}", v.message);
}

#[test]
fn a_page_cursor_that_leads_nowhere_is_named() {
    let c = clean();
    // A full page that reaches seq 1 but still offers a cursor.
    let mut snap = c.world.snapshot();
    history_page(&mut snap).next_cursor = Some("more".into());
    let report = check(&snap);
    assert_violated_exactly(&report, &[Invariant::HistoryReadsMatch]);
    let v = only_violation(&report, Invariant::HistoryReadsMatch);
    assert!(v.message.contains("cursor past seq 1"), "{}", v.message);
    // An empty page with a cursor.
    let mut snap = c.world.snapshot();
    let page = history_page(&mut snap);
    page.entries.clear();
    page.next_cursor = Some("more".into());
    let v = only_violation(&check(&snap), Invariant::HistoryReadsMatch).clone();
    assert!(
        v.message.contains("cursor with an empty page"),
        "{}",
        v.message
    );
    // An empty page without one is an honest read of a history not yet
    // applied.
    let mut snap = c.world.snapshot();
    history_page(&mut snap).entries.clear();
    assert_violated_exactly(&check(&snap), &[]);
}

#[test]
fn without_a_walk_history_reads_are_not_evaluated() {
    let mut snap = clean().world.snapshot();
    snap.walk = None;
    let report = check(&snap);
    assert!(report.passed);
    assert_eq!(
        result(&report, Invariant::HistoryReadsMatch).status,
        Status::NotEvaluated
    );
    // Unless a page read already broke it.
    history_page(&mut snap).entries[0].seq += 5;
    assert_violated_exactly(&check(&snap), &[Invariant::HistoryReadsMatch]);
}

mod history_pointers;
mod ledger_pointers;
mod op_findings;

/// A run's summary as `loadgen run` writes it, with `thresholds` checked
/// and `missed`.
fn run_summary(checked: &[&str], missed: &[&str]) -> run_log::summary::RunSummary {
    serde_json::from_value(serde_json::json!({
        "scenario": "smoke", "seed": 1, "command": "run smoke --seed 1", "users": 4,
        "duration_s": 20.0, "endpoints": [], "totals": {"requests": 0, "rps": 0.0},
        "errors": [], "convergence": {"converged": true, "took_ms": 1200, "bound_ms": 30000},
        "faults": [], "verdict": {"passed": false, "violated": []},
        "thresholds": {"checked": checked, "missed": missed},
        "versions": {"loadgen": "0", "commit": "abc", "os": "linux", "arch": "x86_64", "cpus": 2},
    }))
    .expect("a valid summary")
}

#[test]
fn junit_names_the_violated_invariant_and_its_violation() {
    let c = clean();
    let mut snap = c.world.snapshot();
    wallet_mut(&mut snap, c.alice).balance += dec!(0.0001);
    let report = check(&snap);
    let summary = run_summary(
        &["p99<200ms", "max<2s"],
        &["max<2s: GET /wallets/{id} measured 2304.5 ms"],
    );
    let xml = run_log::ci::junit_xml(&summary, &report).expect("junit");

    let parsed = junit_parser::from_reader(std::io::Cursor::new(xml.as_bytes()))
        .unwrap_or_else(|err| panic!("not JUnit XML: {err}\n{xml}"));
    let invariants = parsed
        .suites
        .iter()
        .find(|s| s.name == "invariants")
        .expect("an invariants suite");
    assert_eq!(invariants.cases.len(), Invariant::ALL.len());
    assert_eq!(invariants.failures, 3, "{xml}");
    let failure = |name: &str| {
        let case = invariants
            .cases
            .iter()
            .find(|case| case.original_name == name)
            .unwrap_or_else(|| panic!("no case {name}"));
        assert_eq!(case.classname.as_deref(), Some("invariants"));
        match &case.status {
            junit_parser::TestStatus::Failure(failure) => Some(failure.clone()),
            _ => None,
        }
    };
    let balance = failure("balance-matches-ledger").expect("balance-matches-ledger fails");
    assert!(
        balance.text.contains(&format!(
            "wallet {}: balance 75.0000 but its ledger sums to 74.9999",
            c.alice
        )),
        "{}",
        balance.text
    );
    assert!(failure("money-conserved").is_some());
    assert!(failure("history-no-missing").is_none());

    let thresholds = parsed
        .suites
        .iter()
        .find(|s| s.name == "thresholds")
        .expect("a thresholds suite");
    let names: Vec<&str> = thresholds.cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["thresholds::p99<200ms", "thresholds::max<2s"]);
    assert!(thresholds.cases[0].status.is_success());
    match &thresholds.cases[1].status {
        junit_parser::TestStatus::Failure(failure) => {
            assert!(
                failure
                    .text
                    .contains("GET /wallets/{id} measured 2304.5 ms")
            )
        }
        other => panic!("max<2s should fail: {other:?}"),
    }
}

#[test]
fn markdown_summary_gives_the_verdict_and_names_each_violation() {
    let c = clean();
    let clean_md = run_log::ci::markdown(&run_summary(&[], &[]), &check(&c.world.snapshot()));
    assert!(
        clean_md.starts_with("## ✅ `smoke` seed 1: passed"),
        "{clean_md}"
    );
    assert!(
        clean_md.contains("| `money-conserved` | passed |"),
        "{clean_md}"
    );

    let mut snap = c.world.snapshot();
    wallet_mut(&mut snap, c.alice).balance += dec!(0.0001);
    let md = run_log::ci::markdown(&run_summary(&[], &[]), &check(&snap));
    assert!(md.starts_with("## ❌ `smoke` seed 1: FAILED"), "{md}");
    assert!(
        md.contains("| `balance-matches-ledger` | **violated** | 3 | 1 |"),
        "{md}"
    );
    assert!(
        md.contains(&format!("- wallet {}: balance 75.0000", c.alice)),
        "{md}"
    );
}
