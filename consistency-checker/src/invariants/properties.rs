//! Properties of the checker over random worlds: a world the system could
//! have produced passes every invariant; the same world with one defect
//! planted is named by exactly the invariant that guards against it.

use proptest::prelude::*;
use run_log::{Outcome, summary::Convergence};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::check;
use crate::fixture::World;
use crate::report::Invariant;

/// One step of a random load: who, how much (in hundredths), and what the
/// client heard (0 ok, 1 refused, 2 open and applied, 3 open and not).
#[derive(Debug, Clone)]
enum Step {
    Fund {
        wallet: usize,
        cents: u32,
        heard: u8,
    },
    Transfer {
        from: usize,
        to: usize,
        cents: u32,
        heard: u8,
    },
}

fn step(wallets: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..wallets, 1..50_000u32, 0..4u8).prop_map(|(wallet, cents, heard)| Step::Fund {
            wallet,
            cents,
            heard
        }),
        (0..wallets, 0..wallets, 1..50_000u32, 0..4u8).prop_map(|(from, to, cents, heard)| {
            Step::Transfer {
                from,
                to,
                cents,
                heard,
            }
        }),
    ]
}

/// The world `steps` produce, as a correct system would have written it,
/// and the wallets' ids. Every wallet starts funded with 1000.
fn world(wallets: usize, steps: &[Step]) -> (World, Vec<Uuid>) {
    let mut w = World::new();
    let ids: Vec<Uuid> = (0..wallets)
        .map(|i| w.create(&format!("user{i}")))
        .collect();
    let mut balances = vec![Decimal::new(1_000, 0); wallets];
    for id in &ids {
        w.fund(*id, Decimal::new(1_000, 0), Outcome::Ok, 1);
    }
    // A third entry on wallet 0, so history has an order to break.
    w.fund(ids[0], Decimal::new(1, 0), Outcome::Ok, 1);
    balances[0] += Decimal::ONE;
    for step in steps {
        match *step {
            Step::Fund {
                wallet,
                cents,
                heard,
            } => {
                let amount = Decimal::new(i64::from(cents), 2);
                let (outcome, times) = heard_as(heard);
                w.fund(ids[wallet], amount, outcome, times);
                balances[wallet] += amount * Decimal::from(times);
            }
            Step::Transfer {
                from,
                to,
                cents,
                heard,
            } => {
                let amount = Decimal::new(i64::from(cents), 2);
                let (mut outcome, mut times) = heard_as(heard);
                if from == to || balances[from] < amount {
                    // The rules refuse it: nothing applies, the client hears a 4xx.
                    (outcome, times) = (Outcome::Failed, 0);
                }
                w.transfer(ids[from], ids[to], amount, outcome, times);
                balances[from] -= amount * Decimal::from(times);
                balances[to] += amount * Decimal::from(times);
            }
        }
    }
    w.converged(500, 30_000);
    (w, ids)
}

fn heard_as(heard: u8) -> (Outcome, usize) {
    match heard {
        0 => (Outcome::Ok, 1),
        1 => (Outcome::Failed, 0),
        2 => (Outcome::Indeterminate, 1),
        _ => (Outcome::Indeterminate, 0),
    }
}

/// A defect a broken system could leave, and the invariant that names it.
#[derive(Debug, Clone, Copy)]
enum Defect {
    UnpublishedOutboxRow,
    RefusedYetApplied,
    AppliedTwice,
    HistoryOutOfOrder,
    NotConverged,
}

impl Defect {
    fn invariant(self) -> Invariant {
        match self {
            Defect::UnpublishedOutboxRow => Invariant::OutboxDrained,
            Defect::RefusedYetApplied | Defect::AppliedTwice => Invariant::AckedWriteDurable,
            Defect::HistoryOutOfOrder => Invariant::HistoryOrdered,
            Defect::NotConverged => Invariant::ConvergedInTime,
        }
    }
}

fn defect() -> impl Strategy<Value = Defect> {
    prop_oneof![
        Just(Defect::UnpublishedOutboxRow),
        Just(Defect::RefusedYetApplied),
        Just(Defect::AppliedTwice),
        Just(Defect::HistoryOutOfOrder),
        Just(Defect::NotConverged),
    ]
}

fn plant(w: &mut World, ids: &[Uuid], defect: Defect, pick: usize) -> crate::snapshot::Snapshot {
    // From the richest wallet (it holds 250 at least: 4 wallets share
    // 4001), so the planted transfer overdraws nothing.
    let cent = Decimal::new(1, 2);
    let snap = w.snapshot();
    let richest = snap
        .wallets
        .iter()
        .max_by_key(|wallet| wallet.balance)
        .map(|wallet| wallet.id)
        .expect("wallets");
    let other = *ids.iter().find(|id| **id != richest).expect("two wallets");
    match defect {
        Defect::RefusedYetApplied => {
            w.transfer(richest, other, cent, Outcome::Failed, 1);
        }
        Defect::AppliedTwice => {
            w.transfer(richest, other, cent, Outcome::Indeterminate, 2);
        }
        _ => {}
    }
    let mut snap = w.snapshot();
    match defect {
        Defect::UnpublishedOutboxRow => {
            let index = pick % snap.outbox.len();
            snap.outbox[index].published_at = None;
        }
        Defect::HistoryOutOfOrder => crate::fixture::apply_out_of_order(&mut snap, ids[0], 2, 3),
        Defect::NotConverged => {
            snap.convergence = Some(Convergence {
                converged: false,
                took_ms: 30_001,
                bound_ms: 30_000,
                started_offset_ms: None,
            });
        }
        Defect::RefusedYetApplied | Defect::AppliedTwice => {}
    }
    snap
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_world_a_correct_system_writes_passes(steps in proptest::collection::vec(step(4), 0..40)) {
        let (w, _) = world(4, &steps);
        let report = check(&w.snapshot());
        prop_assert!(report.passed, "{:?}", report.violated());
    }

    #[test]
    fn one_defect_is_named_by_exactly_its_invariant(
        steps in proptest::collection::vec(step(4), 0..30),
        defect in defect(),
        pick in 0usize..1_000,
    ) {
        let (mut w, ids) = world(4, &steps);
        let snap = plant(&mut w, &ids, defect, pick);
        let report = check(&snap);
        prop_assert_eq!(report.violated(), vec![defect.invariant()], "{:?}", defect);
    }
}
