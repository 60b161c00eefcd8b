//! The simulator's power to find bugs, checked on every test run: each
//! canary plants a known bug in the real code, and the simulator must
//! report a violation within the first 100 seeds.
//!
//! Canaries exist only with the `canary` feature; the README's test
//! command turns it on (`cargo test --workspace --features sim/canary`).
//! Without it this test fails and says so, rather than pass unchecked.

#[cfg(not(feature = "canary"))]
#[test]
fn every_canary_is_caught_within_100_seeds() {
    panic!("the canaries need the `canary` feature: cargo test --workspace --features sim/canary");
}

#[cfg(feature = "canary")]
#[test]
fn every_canary_is_caught_within_100_seeds() {
    use sim::{SimConfig, run_seed};

    /// Seeds a canary has to be caught within.
    const SEEDS_MAX: u64 = 100;
    {
        let config = SimConfig::standard();
        for name in service_kit::canary::NAMES {
            service_kit::canary::set(Some(name));
            let caught = (1..=SEEDS_MAX).find_map(|seed| {
                let outcome = run_seed(seed, &config, None);
                (!outcome.passed()).then(|| (seed, outcome.violated()))
            });
            service_kit::canary::set(None);
            let (seed, violated) =
                caught.unwrap_or_else(|| panic!("canary {name} survived {SEEDS_MAX} seeds"));
            println!(
                "canary {name}: caught at seed {seed}: {}",
                violated.join(", ")
            );
        }
        // And with every canary off, the same seeds pass.
        assert!(run_seed(1, &config, None).passed());
    }
}
