//! What the shared finding helpers add to an operation's finding: the
//! fault windows of its whole flight, and the legs its key wrote.

use chrono::{DateTime, Utc};

use super::*;

/// An acknowledged transfer that never reached the ledger, its log record
/// taking `latency` to answer.
fn lost_transfer(latency: Duration) -> (Written, Snapshot) {
    let mut c = clean();
    let lost = c
        .world
        .transfer(c.alice, c.carol, dec!(12.5), Outcome::Ok, 0);
    let mut snap = c.world.snapshot();
    op_mut(&mut snap.ops, lost.op_id).latency_us =
        u64::try_from(latency.num_microseconds().unwrap()).unwrap();
    (lost, snap)
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
    let (lost, mut snap) = lost_transfer(Duration::seconds(3));
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
    let (lost, mut snap) = lost_transfer(Duration::milliseconds(500));
    let intended_at = op_mut(&mut snap.ops, lost.op_id).intended_at;
    snap.faults = vec![broker_down_a_second_after(intended_at)];
    let report = check(&snap);
    let v = only_violation(&report, Invariant::AckedWriteDurable);
    assert!(v.fault_windows.is_empty(), "{:?}", v.fault_windows);
    assert!(v.message.ends_with("is not in the ledger"), "{}", v.message);
}

/// An indeterminate 2.00 transfer from alice to bob that applied `times`
/// times: the finding's message, and each leg that carries its key, in
/// ledger order, as the message lists legs
/// (`transfer_out 2.0000 on wallet W (event E, transfer T)`).
fn applied(times: usize) -> (String, Vec<String>) {
    let mut c = clean();
    let op = c
        .world
        .transfer(c.alice, c.bob, dec!(2), Outcome::Indeterminate, times);
    let snap = c.world.snapshot();
    let message = only_violation(&check(&snap), Invariant::AckedWriteDurable)
        .message
        .clone();
    let legs = snap
        .ledger
        .iter()
        .filter(|e| e.request_key.as_deref() == Some(op.key.as_str()))
        .map(|e| {
            format!(
                "{} 2.0000 on wallet {} (event {}, transfer {})",
                e.kind,
                e.wallet_id,
                e.event_id,
                e.transfer_id.expect("a transfer leg")
            )
        })
        .collect();
    (message, legs)
}

#[test]
fn a_key_applied_twice_lists_all_four_legs() {
    let (message, legs) = applied(2);
    assert_eq!(legs.len(), 4);
    assert!(
        message.ends_with(&format!(
            "applied more than once: 4 rows carry its key (expected none or 2): {}",
            legs.join("; ")
        )),
        "{message}"
    );
}

#[test]
fn a_key_applied_three_times_lists_four_legs_and_counts_the_rest() {
    let (message, legs) = applied(3);
    assert_eq!(legs.len(), 6);
    assert!(
        message.ends_with(&format!(
            "applied more than once: 6 rows carry its key (expected none or 2): {}; and 2 more",
            legs[..4].join("; ")
        )),
        "{message}"
    );
}
