//! Many seeds: on `jobs` threads, with a progress bar, the coverage over
//! all seeds, the failing seeds with a one-line repro each, and, when
//! asked, each seed run a second time in a fresh process to prove the
//! trace is a function of the seed alone.

use std::{
    io::IsTerminal,
    path::PathBuf,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use crate::{
    run::{SeedOutcome, SimConfig, run_seed},
    world::Counters,
};

/// How a sweep went.
#[derive(Debug, Default)]
pub struct SweepReport {
    pub seeds: u64,
    pub failures: Vec<Failure>,
    pub mismatches: Vec<Mismatch>,
    pub counters: Counters,
    pub simulated: Duration,
    pub wall: Duration,
    pub ops: u64,
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub violated: Vec<String>,
    pub first_violation: String,
}

#[derive(Debug, Clone)]
pub struct Mismatch {
    pub seed: u64,
    pub here: u64,
    pub fresh: u64,
    pub first_difference: String,
}

/// What the sweep runs.
pub struct Sweep {
    pub config: SimConfig,
    pub from: u64,
    pub count: u64,
    pub jobs: usize,
    pub check_determinism: bool,
    /// This program, to run a seed again in a fresh process.
    pub exe: PathBuf,
    /// The arguments that select the same configuration in that process.
    pub replay_args: Vec<String>,
}

struct SeedResult {
    /// Without its operation log and fault timeline (see [`run_one`]).
    outcome: SeedOutcome,
    ops: u64,
    mismatch: Option<Mismatch>,
}

impl Sweep {
    pub fn run(&self) -> anyhow::Result<SweepReport> {
        #[allow(clippy::disallowed_methods)] // the sweep's wall time
        let started = Instant::now();
        let next = Arc::new(AtomicU64::new(self.from));
        let end = self.from + self.count;
        let (sender, receiver) = mpsc::channel::<anyhow::Result<SeedResult>>();
        let config = Arc::new(self.config.clone());
        let fresh = Arc::new(Mutex::new(()));
        let mut workers = Vec::new();
        for _ in 0..self.jobs.max(1) {
            let (next, sender, config) = (next.clone(), sender.clone(), config.clone());
            let (exe, args, check, _fresh) = (
                self.exe.clone(),
                self.replay_args.clone(),
                self.check_determinism,
                fresh.clone(),
            );
            workers.push(std::thread::spawn(move || {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        return;
                    }
                    let result = run_one(seed, &config, check, &exe, &args);
                    if sender.send(result).is_err() {
                        return;
                    }
                }
            }));
        }
        drop(sender);
        let bar = progress(self.count);
        let mut report = SweepReport::default();
        for result in receiver {
            let result = result?;
            let outcome = &result.outcome;
            report.seeds += 1;
            report.counters.add(&outcome.counters);
            report.simulated += outcome.simulated;
            report.ops += result.ops;
            if !outcome.passed() {
                report.failures.push(failure(outcome));
            }
            if let Some(mismatch) = result.mismatch {
                report.mismatches.push(mismatch);
            }
            bar.inc(1);
            bar.set_message(format!(
                "{} failed, {} mismatched",
                report.failures.len(),
                report.mismatches.len()
            ));
            if !bar.is_hidden() || report.seeds % 100 != 0 {
                continue;
            }
            println!(
                "  {} / {} seeds, {} failed, {:.1} seeds/s",
                report.seeds,
                self.count,
                report.failures.len(),
                report.seeds as f64 / started.elapsed().as_secs_f64()
            );
        }
        for worker in workers {
            let _ = worker.join();
        }
        bar.finish_and_clear();
        report.failures.sort_by_key(|f| f.seed);
        report.mismatches.sort_by_key(|m| m.seed);
        report.wall = started.elapsed();
        Ok(report)
    }
}

fn progress(count: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(count);
    if std::io::stderr().is_terminal() {
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed:>4} [{bar:30}] {pos}/{len} seeds  {per_sec}  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

fn failure(outcome: &SeedOutcome) -> Failure {
    let first_violation = match (&outcome.panic, &outcome.report) {
        (Some(panic), _) => format!("panic: {panic}"),
        (None, Some(report)) => report
            .checks
            .iter()
            .flat_map(|c| {
                c.violations
                    .iter()
                    .map(move |v| format!("{}: {}", c.invariant, v.message))
            })
            .next()
            .unwrap_or_default(),
        (None, None) => "no verdict".to_owned(),
    };
    Failure {
        seed: outcome.seed,
        violated: outcome.violated(),
        first_violation,
    }
}

fn run_one(
    seed: u64,
    config: &SimConfig,
    check: bool,
    exe: &PathBuf,
    args: &[String],
) -> anyhow::Result<SeedResult> {
    let mut outcome = run_seed(seed, config, None);
    let ops = outcome.ops.len() as u64;
    // A sweep keeps counts and verdicts. The log and the timeline are freed
    // here, by the thread that allocated them, not by the collecting one
    // (which on 2 cores shares a core with a worker).
    outcome.ops = Vec::new();
    outcome.chaos = Vec::new();
    let mismatch = if check {
        let fresh = fresh_hash(exe, args, seed, None)?;
        (fresh != outcome.trace_hash)
            .then(|| diagnose(seed, config, exe, args, outcome.trace_hash, fresh))
    } else {
        None
    };
    Ok(SeedResult {
        outcome,
        ops,
        mismatch,
    })
}

/// The trace hash of `seed` computed by a new process of this program.
pub fn fresh_hash(
    exe: &PathBuf,
    args: &[String],
    seed: u64,
    trace_out: Option<&PathBuf>,
) -> anyhow::Result<u64> {
    let mut command = Command::new(exe);
    command
        .args(args)
        .args(["--seed", &seed.to_string(), "--hash-only"]);
    if let Some(path) = trace_out {
        command.arg("--trace-out").arg(path);
    }
    let output = command.output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let hash = text
        .lines()
        .find_map(|l| l.strip_prefix("trace-hash "))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the fresh process for seed {seed} printed no hash ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    Ok(u64::from_str_radix(hash.trim(), 16)?)
}

/// Runs the seed again here and in a fresh process, both keeping their
/// traces, and names the first line where they part.
fn diagnose(
    seed: u64,
    config: &SimConfig,
    exe: &PathBuf,
    args: &[String],
    here: u64,
    fresh: u64,
) -> Mismatch {
    let mut keeping = config.clone();
    keeping.keep_trace = true;
    let local = run_seed(seed, &keeping, None).trace_lines;
    let path = std::env::temp_dir().join(format!("sim-trace-{seed}-{}.jsonl", std::process::id()));
    let first_difference = match fresh_hash(exe, args, seed, Some(&path)) {
        Ok(_) => {
            let other: Vec<String> = std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect();
            let _ = std::fs::remove_file(&path);
            local
                .iter()
                .zip(other.iter().chain(std::iter::repeat(&String::new())))
                .enumerate()
                .find(|(_, (a, b))| a != b)
                .map(|(i, (a, b))| format!("line {}: here {a} / fresh {b}", i + 1))
                .unwrap_or_else(|| "the traces agree line by line (the hash differs)".into())
        }
        Err(err) => format!("could not rerun: {err:#}"),
    };
    Mismatch {
        seed,
        here,
        fresh,
        first_difference,
    }
}
