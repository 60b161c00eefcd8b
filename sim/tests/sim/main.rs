//! The simulator end to end: a seed runs the real services' logic to a
//! passing verdict, one seed gives one trace, another seed another, and
//! the fault machinery reaches what it claims to reach.

use sim::{SimConfig, run_seed};

#[test]
fn a_seed_passes_and_replays_to_the_same_trace() {
    let config = SimConfig::standard();
    let first = run_seed(11, &config, None);
    assert!(
        first.passed(),
        "violated: {:?} {:?}",
        first.violated(),
        first.panic
    );
    assert!(first.ops.len() >= 2_000, "{} operations", first.ops.len());
    assert!(first.simulated.as_secs() >= 60);
    let again = run_seed(11, &config, None);
    assert_eq!(first.trace_hash, again.trace_hash, "one seed, one trace");
    assert_eq!(first.ops, again.ops, "one seed, one operation log");
    let other = run_seed(12, &config, None);
    assert_ne!(
        first.trace_hash, other.trace_hash,
        "another seed, another trace"
    );
}

#[test]
fn faults_strike_where_they_claim_to() {
    let mut config = SimConfig::standard();
    config.swarm = true;
    let mut totals = sim::world::Counters::default();
    for seed in 1..=4 {
        let outcome = run_seed(seed, &config, None);
        assert!(
            outcome.passed(),
            "seed {seed}: {:?} {:?}",
            outcome.violated(),
            outcome.panic
        );
        totals.add(&outcome.counters);
    }
    assert!(
        totals.rebalances > 0 && totals.redeliveries > 0,
        "{totals:?}"
    );
    assert!(totals.parked_events > 0, "{totals:?}");
    assert!(totals.aborted_transactions > 0, "{totals:?}");
}

#[test]
fn without_faults_nothing_is_injected() {
    let mut config = SimConfig::standard();
    config.faults = false;
    let outcome = run_seed(3, &config, None);
    assert!(outcome.passed());
    assert!(outcome.chaos.is_empty());
    let c = &outcome.counters;
    assert_eq!(
        (
            c.serialization_failures,
            c.commits_unknown,
            c.acks_lost,
            c.responses_lost
        ),
        (0, 0, 0, 0)
    );
    assert!(c.crash_points.is_empty());
}
