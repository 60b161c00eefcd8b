//! What the shared finding helpers add to an operation's finding: the
//! fault windows of its whole flight, and the legs its key wrote.

use chrono::{DateTime, Utc};

use super::ledger_pointers::entry;
use super::*;

/// An acknowledged transfer that never reached the ledger, its log record
/// taking `latency` to answer.
fn lost_transfer(latency: Duration) -> (Clean, Written, Snapshot) {
    let mut c = clean();
    let lost = c
        .world
        .transfer(c.alice, c.carol, dec!(12.5), Outcome::Ok, 0);
    let mut snap = c.world.snapshot();
    op_mut(&mut snap.ops, lost.op_id).latency_us =
        u64::try_from(latency.num_microseconds().unwrap()).unwrap();
    (c, lost, snap)
}

/// The broker killed one second after `intended_at`, for nine seconds.
fn broker_down_a_second_after(intended_at: DateTime<Utc>) -> FaultWindow {
    FaultWindow {
        fault_id: 1,
        kind: FaultKind::BrokerKill,
        target: "broker".into(),
        start: intended_at + Duration::seconds(1),
        healed: Some(intended_at + Duration::seconds(10)),
        recovered: None,
    }
}

#[test]
fn a_fault_that_began_while_the_operation_was_in_flight_is_named() {
    let (_, lost, mut snap) = lost_transfer(Duration::seconds(3));
    let intended_at = op_mut(&mut snap.ops, lost.op_id).intended_at;
    // The broker died a second after the request left and before its
    // answer came: only the operation's end lies in the window.
    snap.faults = vec![broker_down_a_second_after(intended_at)];
    let report = check(&snap);
    let v = only_violation(&report, Invariant::AckedWriteDurable);
    assert_eq!(v.at, Some(intended_at));
    assert_eq!(v.fault_windows, ["fault #1 broker_kill (broker)"]);
    assert!(
        v.message
            .ends_with("is not in the ledger [during fault #1 broker_kill (broker)]"),
        "{}",
        v.message
    );
}

#[test]
fn a_fault_after_the_answer_is_not_named() {
    let (_, lost, mut snap) = lost_transfer(Duration::milliseconds(500));
    let intended_at = op_mut(&mut snap.ops, lost.op_id).intended_at;
    snap.faults = vec![broker_down_a_second_after(intended_at)];
    let report = check(&snap);
    let v = only_violation(&report, Invariant::AckedWriteDurable);
    assert!(v.fault_windows.is_empty(), "{:?}", v.fault_windows);
    assert!(v.message.ends_with("is not in the ledger"), "{}", v.message);
}

/// `transfer_out 2.0000 on wallet W (event E, transfer T)`.
fn leg(snap: &Snapshot, event: Uuid) -> String {
    let e = entry(snap, event);
    format!(
        "{} 2.0000 on wallet {} (event {}, transfer {})",
        e.kind,
        e.wallet_id,
        e.event_id,
        e.transfer_id.expect("a transfer leg")
    )
}

/// The legs that carry `key`, in ledger order.
fn legs_of(snap: &Snapshot, key: &str) -> Vec<String> {
    snap.ledger
        .iter()
        .filter(|e| e.request_key.as_deref() == Some(key))
        .map(|e| leg(snap, e.event_id))
        .collect()
}

#[test]
fn a_key_applied_twice_lists_all_four_legs() {
    let mut c = clean();
    let twice = c
        .world
        .transfer(c.alice, c.bob, dec!(2), Outcome::Indeterminate, 2);
    let snap = c.world.snapshot();
    let report = check(&snap);
    let v = only_violation(&report, Invariant::AckedWriteDurable);
    let legs = legs_of(&snap, &twice.key);
    assert_eq!(legs.len(), 4);
    assert!(
        v.message.ends_with(&format!(
            "applied more than once: 4 rows carry its key (expected none or 2): {}",
            legs.join("; ")
        )),
        "{}",
        v.message
    );
}

#[test]
fn a_key_applied_three_times_lists_four_legs_and_counts_the_rest() {
    let mut c = clean();
    let thrice = c
        .world
        .transfer(c.alice, c.bob, dec!(2), Outcome::Indeterminate, 3);
    let snap = c.world.snapshot();
    let report = check(&snap);
    let v = only_violation(&report, Invariant::AckedWriteDurable);
    let legs = legs_of(&snap, &thrice.key);
    assert_eq!(legs.len(), 6);
    assert!(
        v.message.ends_with(&format!(
            "applied more than once: 6 rows carry its key (expected none or 2): {}; and 2 more",
            legs[..4].join("; ")
        )),
        "{}",
        v.message
    );
}
