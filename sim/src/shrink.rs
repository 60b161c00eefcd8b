//! Shrinking a failing seed: the smallest case found that still fails, by
//! greedy steps that each keep a reduction only if the run still fails
//! with the same invariant: drop timed faults one by one, turn off each
//! injected fault kind, lower the crash budget, then shorten the load
//! (fewer operations) by halves and then by tenths. The result is written
//! as a scenario file that `sim --seed N --replay FILE` runs exactly.

use std::{path::Path, process::ExitCode, time::Duration};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::{
    chaos::FaultPlan,
    run::{SimConfig, run_seed},
    world::Knobs,
};

/// A replayable case: the seed, the load and the faults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    pub seed: u64,
    pub duration_ms: u64,
    pub wallet_instances: usize,
    pub history_instances: usize,
    pub plan: FaultPlan,
}

impl Scenario {
    fn config(&self, base: &SimConfig) -> SimConfig {
        let mut config = base.clone();
        config.scenario.duration = Duration::from_millis(self.duration_ms);
        config.wallet_instances = self.wallet_instances;
        config.history_instances = self.history_instances;
        config
    }

    /// The operations this case runs (rate × duration).
    fn operations(&self, base: &SimConfig) -> u64 {
        self.duration_ms * u64::from(base.scenario.rate) / 1_000
    }
}

/// Reads a scenario written by `--shrink`.
pub fn read_scenario(path: &Path) -> anyhow::Result<Scenario> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a shrunk scenario", path.display()))
}

/// The config and plan a replay runs with.
pub fn replay(path: &Path, base: &SimConfig) -> anyhow::Result<(SimConfig, FaultPlan)> {
    let scenario = read_scenario(path)?;
    Ok((scenario.config(base), scenario.plan))
}

/// `sim --seed N --shrink`.
pub fn run(
    seed: u64,
    base: &SimConfig,
    out_dir: &Path,
    replay_args: &[String],
) -> anyhow::Result<ExitCode> {
    let first = run_seed(seed, base, None);
    if first.passed() {
        println!("seed {seed} passes: nothing to shrink");
        return Ok(ExitCode::SUCCESS);
    }
    let target = first.violated();
    println!("seed {seed} violates {}; shrinking ...", target.join(", "));
    let mut best = Scenario {
        seed,
        duration_ms: base.scenario.duration.as_millis() as u64,
        wallet_instances: base.wallet_instances,
        history_instances: base.history_instances,
        plan: first.plan.clone(),
    };
    let still_fails = |candidate: &Scenario| -> bool {
        let outcome = run_seed(seed, &candidate.config(base), Some(candidate.plan.clone()));
        !outcome.passed() && outcome.violated().iter().any(|v| target.contains(v))
    };
    let before = describe(&best, base);
    let mut tries = 0;
    shrink_faults(&mut best, &still_fails, &mut tries);
    shrink_load(&mut best, &still_fails, &mut tries);
    // Fewer operations can make faults removable that were not before.
    shrink_faults(&mut best, &still_fails, &mut tries);
    let after = describe(&best, base);
    std::fs::create_dir_all(out_dir)?;
    let path = out_dir.join(format!("shrunk-seed{seed}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&best)? + "\n")?;
    println!("before: {before}");
    println!("after:  {after}  ({tries} runs)");
    println!("scenario: {}", path.display());
    println!(
        "replay: cargo run --release{} -- {} --seed {seed} --replay {}",
        if replay_args.iter().any(|a| a == "--canary") {
            " --features canary"
        } else {
            ""
        },
        replay_args.join(" "),
        path.display()
    );
    Ok(ExitCode::from(1))
}

fn shrink_faults(best: &mut Scenario, still_fails: &impl Fn(&Scenario) -> bool, tries: &mut u32) {
    let mut index = 0;
    while index < best.plan.timed.len() {
        let mut candidate = best.clone();
        candidate.plan.timed.remove(index);
        *tries += 1;
        if still_fails(&candidate) {
            *best = candidate;
        } else {
            index += 1;
        }
    }
    type Knob = fn(&mut Knobs) -> &mut f64;
    let knobs: [Knob; 6] = [
        |k| &mut k.crash,
        |k| &mut k.serialization_failure,
        |k| &mut k.commit_unknown,
        |k| &mut k.ack_lost,
        |k| &mut k.produce_refused,
        |k| &mut k.response_lost,
    ];
    for knob in knobs {
        if *knob(&mut best.plan.knobs.clone()) == 0.0 {
            continue;
        }
        let mut candidate = best.clone();
        *knob(&mut candidate.plan.knobs) = 0.0;
        if knob(&mut candidate.plan.knobs.clone()) == &0.0 && candidate.plan.knobs.crash == 0.0 {
            candidate.plan.crash_budget = 0;
        }
        *tries += 1;
        if still_fails(&candidate) {
            *best = candidate;
        }
    }
    while best.plan.crash_budget > 0 {
        let mut candidate = best.clone();
        candidate.plan.crash_budget -= 1;
        *tries += 1;
        if !still_fails(&candidate) {
            break;
        }
        *best = candidate;
    }
}

fn shrink_load(best: &mut Scenario, still_fails: &impl Fn(&Scenario) -> bool, tries: &mut u32) {
    for divisor in [2, 10] {
        loop {
            let shorter = best.duration_ms - best.duration_ms / divisor;
            if shorter < 1_000 || shorter == best.duration_ms {
                break;
            }
            let mut candidate = best.clone();
            candidate.duration_ms = shorter;
            candidate
                .plan
                .timed
                .retain(|f| f.at_ms + f.hold_ms < shorter);
            *tries += 1;
            if !still_fails(&candidate) {
                break;
            }
            *best = candidate;
        }
    }
}

fn describe(scenario: &Scenario, base: &SimConfig) -> String {
    let k = &scenario.plan.knobs;
    let on: Vec<&str> = [
        ("crash", k.crash),
        ("serialization", k.serialization_failure),
        ("commit-unknown", k.commit_unknown),
        ("ack-lost", k.ack_lost),
        ("produce-refused", k.produce_refused),
        ("response-lost", k.response_lost),
    ]
    .into_iter()
    .filter(|(_, p)| *p > 0.0)
    .map(|(name, _)| name)
    .collect();
    let timed: Vec<String> = scenario
        .plan
        .timed
        .iter()
        .map(|f| {
            format!(
                "{} at {:.1}s for {:.1}s",
                f.kind,
                f.at_ms as f64 / 1e3,
                f.hold_ms as f64 / 1e3
            )
        })
        .collect();
    format!(
        "{} operations over {:.1} s; timed faults [{}]; injected [{}]; crash budget {}",
        scenario.operations(base),
        scenario.duration_ms as f64 / 1e3,
        timed.join(", "),
        on.join(", "),
        scenario.plan.crash_budget
    )
}
