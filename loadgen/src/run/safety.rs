//! The safety phase: the goose attack runs the seed's operations while the
//! chaos runner works through the fault plan, and a progress line shows
//! requests/s, p99 so far, errors and the faults in effect.

use std::{
    io::IsTerminal,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use chaos::{log::ChaosLog, runner::ChaosStatus};
use harness::system::System;
use service_kit::auth::Bearers;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{OpsSink, ops_log::OpsLog, plan::Plan, scrape::Scraper};
use crate::{
    arrivals::Arrivals,
    attack::{self, LoadContext},
    recorder::Recorder,
};
use workload::Workload;

/// What the load left for the phases after it.
pub struct Load {
    pub recorder: Arc<Recorder>,
    /// Second 0 of every series of the run.
    pub started_wall: chrono::DateTime<chrono::Utc>,
    pub seconds: f64,
    /// The fault timeline; the liveness phase appends its healing.
    pub chaos_log: ChaosLog,
    /// CPU of each process while the load ran.
    pub cpu: Vec<run_log::summary::ProcessCpu>,
    /// Scrapes the services' `/metrics` until the liveness phase ends
    /// (which takes it).
    pub scraper: Option<Scraper>,
}

impl Load {
    /// Milliseconds since the load started.
    pub fn offset_ms(&self) -> u64 {
        self.recorder.started().elapsed().as_millis() as u64
    }
}

pub async fn run(
    plan: &Plan,
    system: &mut System,
    workload: Workload,
    wallet_ids: Vec<Uuid>,
    bearers: Option<Arc<Bearers>>,
    ops: &OpsLog,
    interrupted: &CancellationToken,
) -> anyhow::Result<Load> {
    let scenario = &plan.scenario;
    let started = Instant::now();
    let recorder = Arc::new(Recorder::new(started));
    let context = Arc::new(load_context(
        plan,
        system,
        workload,
        wallet_ids,
        bearers,
        &recorder,
        ops.sink(),
    ));
    let started_wall = context.started_wall;
    let status = ChaosStatus::new();
    let mut chaos_log = ChaosLog::create(plan.run_dir.join("chaos.jsonl"), started, started_wall)?;
    println!(
        "load + chaos for {} ...",
        humantime::format_duration(scenario.duration)
    );
    let progress = tokio::spawn(show_progress(
        recorder.clone(),
        status.clone(),
        scenario.duration,
        interrupted.clone(),
    ));
    let cpu = super::cpu::CpuWatch::start(system, &plan.also_account);
    let scraper = Scraper::start(system, started)?;
    let (attack_result, chaos_result) = tokio::join!(
        attack::run(context, scenario.duration),
        chaos::runner::run_plan(system, &plan.faults, &mut chaos_log, &status, interrupted),
    );
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu.finish(system, &plan.also_account);
    progress.abort();
    attack_result.context("the load")?;
    chaos_result.context("the chaos schedule")?;
    Ok(Load {
        recorder,
        started_wall,
        seconds,
        chaos_log,
        cpu,
        scraper: Some(scraper),
    })
}

fn load_context(
    plan: &Plan,
    system: &System,
    workload: Workload,
    wallet_ids: Vec<Uuid>,
    bearers: Option<Arc<Bearers>>,
    recorder: &Arc<Recorder>,
    ops: OpsSink,
) -> LoadContext {
    let scenario = &plan.scenario;
    LoadContext {
        workload,
        seed: plan.seed,
        wallet_ids,
        wallet_urls: system.wallet_urls(),
        history_urls: system.history_urls(),
        arrivals: if scenario.rate == 0 {
            Arrivals::closed(u64::from(scenario.users))
        } else {
            Arrivals::open(scenario.rate, scenario.max_in_flight)
        },
        op_id_base: 2 * u64::from(scenario.wallets),
        recorder: recorder.clone(),
        ops,
        started_wall: chrono::Utc::now(),
        bearers,
    }
}

/// Elapsed, requests per second, p99 so far, errors, arrivals dropped and the faults in
/// effect: a bar on a terminal, a line every 5 s otherwise (CI logs).
async fn show_progress(
    recorder: Arc<Recorder>,
    status: ChaosStatus,
    duration: Duration,
    stop: CancellationToken,
) {
    let terminal = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new(duration.as_secs());
    if terminal {
        bar.set_style(
            indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = recorder.started();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = (0u64, Instant::now());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let (count, errors, p99) = recorder.progress();
        let rps = (count - last.0) as f64 / last.1.elapsed().as_secs_f64().max(0.001);
        last = (count, Instant::now());
        let dropped = match recorder.dropped() {
            0 => String::new(),
            n => format!("  dropped {n}"),
        };
        let message = format!(
            "{rps:>6.0} req/s  p99 {p99:>7.1} ms  errors {errors}{dropped}  faults: {}",
            active_faults(&status)
        );
        let elapsed = started.elapsed().as_secs();
        bar.set_position(elapsed.min(duration.as_secs()));
        bar.set_message(message.clone());
        if !terminal && elapsed.is_multiple_of(5) {
            println!("  {elapsed:>4}s  {message}");
        }
    }
    bar.finish_and_clear();
}

fn active_faults(status: &ChaosStatus) -> String {
    let faults: Vec<String> = status
        .active()
        .iter()
        .map(|(id, kind)| format!("#{id} {kind}"))
        .collect();
    if faults.is_empty() {
        "none".to_owned()
    } else {
        faults.join(", ")
    }
}
