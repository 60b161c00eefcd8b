//! `loadgen sim`: the simulator's command line. One seed writes a run
//! directory; many seeds sweep with a progress bar and list each failing
//! seed with the command that replays it.

use std::{path::PathBuf, process::ExitCode, time::Instant};

use clap::Args;

use crate::{
    output,
    run::{SimConfig, run_seed},
    shrink,
    sweep::{Sweep, SweepReport},
};

const EXIT_VIOLATED: u8 = 1;
const EXIT_USAGE: u8 = 2;

#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Simulate one seed and write its run directory (ops.jsonl, chaos.jsonl,
    /// checker.json, trace.jsonl, summary.json), which `reports render` turns
    /// into a page.
    #[arg(long, conflicts_with = "seeds")]
    pub seed: Option<u64>,

    /// Sweep this many seeds (from --from), printing each failure with its repro.
    #[arg(long)]
    pub seeds: Option<u64>,

    /// The first seed of a sweep.
    #[arg(long, default_value_t = 1)]
    pub from: u64,

    /// Threads for a sweep (default: the machine's cores).
    #[arg(long)]
    pub jobs: Option<usize>,

    /// Each seed also draws which fault kinds are on and how often they strike.
    #[arg(long)]
    pub swarm: bool,

    /// Run every seed a second time in a fresh process and compare trace hashes;
    /// print the first differing trace line of any mismatch.
    #[arg(long)]
    pub check_determinism: bool,

    /// Plant a known bug (relay-marks-before-ack, offset-before-commit,
    /// no-duplicate-guard); needs a build with `--features canary`.
    #[arg(long, value_name = "NAME")]
    pub canary: Option<String>,

    /// With --seed: reduce a failing seed's operations and faults to a
    /// minimal case that still fails, and write it as a replayable scenario.
    #[arg(long, requires = "seed")]
    pub shrink: bool,

    /// Replay a scenario written by --shrink (with its seed).
    #[arg(long, value_name = "FILE", requires = "seed")]
    pub replay: Option<PathBuf>,

    /// No faults at all.
    #[arg(long)]
    pub no_faults: bool,

    /// Wallet instances (relays compete for the outbox).
    #[arg(long, default_value_t = 2)]
    pub wallet_instances: usize,

    /// History instances (members of one consumer group).
    #[arg(long, default_value_t = 2)]
    pub history_instances: usize,

    /// Where a single seed's run directory goes.
    #[arg(long, default_value = "runs")]
    pub out_dir: PathBuf,

    /// Print only the seed's trace hash (used by --check-determinism).
    #[arg(long, hide = true, requires = "seed")]
    pub hash_only: bool,

    /// Write the seed's trace lines here (used by --check-determinism).
    #[arg(long, hide = true, requires = "seed")]
    pub trace_out: Option<PathBuf>,
}

impl SimArgs {
    fn config(&self) -> SimConfig {
        let mut config = SimConfig::standard();
        config.swarm = self.swarm;
        config.faults = !self.no_faults;
        config.wallet_instances = self.wallet_instances.max(1);
        config.history_instances = self.history_instances.max(1);
        config
    }

    /// The flags that select this configuration, for repro lines.
    fn replay_args(&self) -> Vec<String> {
        let mut args = vec!["sim".to_owned()];
        if self.swarm {
            args.push("--swarm".into());
        }
        if self.no_faults {
            args.push("--no-faults".into());
        }
        if let Some(canary) = &self.canary {
            args.extend(["--canary".into(), canary.clone()]);
        }
        if self.wallet_instances != 2 {
            args.extend([
                "--wallet-instances".into(),
                self.wallet_instances.to_string(),
            ]);
        }
        if self.history_instances != 2 {
            args.extend([
                "--history-instances".into(),
                self.history_instances.to_string(),
            ]);
        }
        args
    }
}

/// Runs the command; its exit code is the verdict.
pub fn main(args: SimArgs) -> ExitCode {
    match dispatch(&args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn dispatch(args: &SimArgs) -> anyhow::Result<ExitCode> {
    set_canary(args.canary.as_deref())?;
    match (args.seed, args.seeds) {
        (Some(seed), _) if args.hash_only => {
            let mut config = args.config();
            config.keep_trace = args.trace_out.is_some();
            let outcome = run_seed(seed, &config, None);
            if let Some(path) = &args.trace_out {
                std::fs::write(path, outcome.trace_lines.join("\n") + "\n")?;
            }
            println!("trace-hash {:016x}", outcome.trace_hash);
            Ok(ExitCode::SUCCESS)
        }
        (Some(seed), _) if args.shrink => {
            shrink::run(seed, &args.config(), &args.out_dir, &args.replay_args())
        }
        (Some(seed), _) => one(seed, args),
        (None, Some(count)) => sweep(count, args),
        (None, None) => {
            anyhow::bail!("say --seed N (one seed) or --seeds COUNT (a sweep); see --help")
        }
    }
}

#[cfg(feature = "canary")]
fn set_canary(name: Option<&str>) -> anyhow::Result<()> {
    let Some(name) = name else { return Ok(()) };
    let known = service_kit::canary::NAMES
        .iter()
        .find(|n| **n == name)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no canary named {name:?}; canaries: {}",
                service_kit::canary::NAMES.join(", ")
            )
        })?;
    service_kit::canary::set(Some(known));
    println!("canary {name}: planted");
    Ok(())
}

#[cfg(not(feature = "canary"))]
fn set_canary(name: Option<&str>) -> anyhow::Result<()> {
    match name {
        None => Ok(()),
        Some(name) => anyhow::bail!(
            "--canary {name}: this build has no canaries; build with `--features canary` \
             (e.g. cargo run --release --features canary -- sim --canary {name} --seeds 100)"
        ),
    }
}

fn one(seed: u64, args: &SimArgs) -> anyhow::Result<ExitCode> {
    let mut config = args.config();
    config.keep_trace = true;
    let plan = match &args.replay {
        Some(path) => {
            let (replayed, plan) = shrink::replay(path, &config)?;
            config = replayed;
            Some(plan)
        }
        None => None,
    };
    println!(
        "seed {seed}   (replay: cargo run --release -- {} --seed {seed})",
        args.replay_args().join(" ")
    );
    #[allow(clippy::disallowed_methods)] // the wall time the seed took
    let started = Instant::now();
    let outcome = run_seed(seed, &config, plan);
    let real = started.elapsed();
    let dir = output::write_run(&args.out_dir, &config, &outcome, real)?;
    if let Some(report) = &outcome.report {
        println!("{}", consistency_checker::render_text(report));
    }
    if let Some(panic) = &outcome.panic {
        println!("PANIC in the simulated code: {panic}");
    }
    println!(
        "simulated {:.1} s in {:.3} s ({:.0}x), {} operations, {} trace events, trace hash {:016x}",
        outcome.simulated.as_secs_f64(),
        real.as_secs_f64(),
        outcome.simulated.as_secs_f64() / real.as_secs_f64().max(1e-9),
        outcome.ops.len(),
        outcome.trace_events,
        outcome.trace_hash
    );
    println!("run directory: {}", dir.display());
    if outcome.passed() {
        println!("VERDICT: every invariant held (exit 0)");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "VERDICT: violated: {} (exit {EXIT_VIOLATED})",
            outcome.violated().join(", ")
        );
        Ok(ExitCode::from(EXIT_VIOLATED))
    }
}

fn sweep(count: u64, args: &SimArgs) -> anyhow::Result<ExitCode> {
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let sweep = Sweep {
        config: args.config(),
        from: args.from,
        count,
        jobs,
        check_determinism: args.check_determinism,
        exe: std::env::current_exe()?,
        replay_args: args.replay_args(),
    };
    println!(
        "sweeping seeds {}..{} on {jobs} thread(s){}{}",
        args.from,
        args.from + count - 1,
        if args.swarm { ", swarm" } else { "" },
        if args.check_determinism {
            ", each seed also in a fresh process"
        } else {
            ""
        }
    );
    let report = sweep.run()?;
    print_report(&report, jobs, args);
    let bad = !report.failures.is_empty() || !report.mismatches.is_empty();
    Ok(if bad {
        ExitCode::from(EXIT_VIOLATED)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_report(report: &SweepReport, jobs: usize, args: &SimArgs) {
    let wall = report.wall.as_secs_f64().max(1e-9);
    let rate = report.seeds as f64 / wall;
    println!(
        "{} seeds in {:.1} s: {:.1} seeds/s ({:.1} per core on {jobs}), {:.0} operations per seed, simulated {:.0}x real time{}",
        report.seeds,
        wall,
        rate,
        rate / jobs as f64,
        report.ops as f64 / report.seeds.max(1) as f64,
        report.simulated.as_secs_f64() / (wall * jobs as f64),
        if args.check_determinism {
            " (with the fresh-process reruns)"
        } else {
            ""
        },
    );
    println!("coverage:");
    for (name, count) in report.counters.required() {
        println!(
            "  {name:<22} {count}{}",
            if count == 0 {
                "   <- never happened"
            } else {
                ""
            }
        );
    }
    for (kind, count) in &report.counters.crash_points {
        println!("    crash before {kind:<28} {count}");
    }
    let c = &report.counters;
    println!(
        "  also: {} serialization failures, {} commits with unknown outcome, {} acks lost, {} responses lost, {} duplicates skipped, {} lock waits, {} deadlocks",
        c.serialization_failures,
        c.commits_unknown,
        c.acks_lost,
        c.responses_lost,
        c.duplicates_skipped,
        c.lock_waits,
        c.deadlocks
    );
    if args.check_determinism {
        println!(
            "determinism: {} mismatches in {} seeds",
            report.mismatches.len(),
            report.seeds
        );
        for m in &report.mismatches {
            println!(
                "  seed {}: {:016x} here, {:016x} fresh; {}",
                m.seed, m.here, m.fresh, m.first_difference
            );
        }
    }
    if report.failures.is_empty() {
        println!("VERDICT: no violation in {} seeds", report.seeds);
        return;
    }
    println!(
        "VERDICT: {} of {} seeds violated an invariant:",
        report.failures.len(),
        report.seeds
    );
    let replay = args.replay_args().join(" ");
    for f in report.failures.iter().take(20) {
        println!(
            "  seed {} ({}): {}",
            f.seed,
            f.violated.join(", "),
            f.first_violation
        );
        println!(
            "    repro: cargo run --release{} -- {replay} --seed {}",
            if args.canary.is_some() {
                " --features canary"
            } else {
                ""
            },
            f.seed
        );
    }
    if report.failures.len() > 20 {
        println!("  ... and {} more", report.failures.len() - 20);
    }
}
