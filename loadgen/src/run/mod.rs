//! `loadgen run`: one seeded experiment from start to verdict.
//! [`experiment`] reads as the phase list; each phase is a module:
//!
//! 1. [`plan`]: the scenario, the seed, the fault plan and the run
//!    directory, printed before anything starts.
//! 2. Provision: private PostgreSQL and broker unless pointed elsewhere,
//!    fresh databases, the wallet and history processes (`harness::system`).
//! 3. [`setup`]: create and fund the wallets the seed defines.
//! 4. [`safety`]: the goose attack runs while the fault plan kills and
//!    restarts processes; [`scrape`] reads the services' `/metrics` once a
//!    second from here until the liveness phase ends.
//! 5. [`liveness`]: heal every process, then wait for the outbox to drain
//!    and history to catch up.
//! 6. [`walk`]: read every page of every wallet's history and user's
//!    activity through the history API (`walk.json`).
//! 7. Check every invariant; the verdict is the exit code.
//! 8. [`outputs`]: `summary.json`, `timeline.json`, `lag.json` and the
//!    latency log next to the operation log ([`ops_log`]), the fault
//!    timeline, `checker.json`, `metrics.jsonl`, `junit.xml`, `summary.md`
//!    and every process's log; then `report.html`.

mod cpu;
mod liveness;
mod ops_log;
mod outputs;
mod plan;
mod safety;
mod scrape;
mod setup;
mod walk;

use std::process::ExitCode;

use anyhow::{Context, bail};
use harness::system::System;
use tokio_util::sync::CancellationToken;

pub use ops_log::OpsSink;
pub use outputs::{EventTimes, history_event_times};

use workload::Workload;

use crate::{cli::RunArgs, thresholds};

pub const EXIT_VIOLATED: u8 = 1;
pub const EXIT_HARNESS: u8 = 2;
pub const EXIT_THRESHOLD: u8 = 3;

pub async fn run(args: RunArgs, interrupted: CancellationToken) -> anyhow::Result<ExitCode> {
    let plan = plan::prepare(&args)?;
    plan.print();
    let mut options = plan.system_options(&args)?;
    let mut system = match args.external.attach(args.infra.open)? {
        Some((external, secret)) => {
            println!(
                "attaching to the system at {} (wallet) and {} (history){}; faults on the \
                 parts this run did not start are skipped ...",
                external.wallet_urls.join(", "),
                external.history_urls.join(", "),
                if options.network_faults {
                    ", a fault proxy on the link to each wallet instance"
                } else {
                    ""
                }
            );
            options.auth_secret = secret;
            System::attach(options, external)
                .await
                .context("reaching the system")?
        }
        None => {
            println!(
                "provisioning PostgreSQL, broker, {} wallet and {} history instance(s){} ...",
                options.wallet_instances,
                options.history_instances,
                if options.network_faults {
                    ", fault proxies on every link"
                } else {
                    ""
                }
            );
            System::start(options)
                .await
                .context("provisioning the system")?
        }
    };
    let outcome = experiment(&args, &plan, &mut system, &interrupted).await;
    println!("stopping every process this run started ...");
    let stopped = system.shutdown().await;
    let code = outcome?;
    stopped.context("stopping the system")?;
    Ok(code)
}

async fn experiment(
    args: &RunArgs,
    plan: &plan::Plan,
    system: &mut System,
    interrupted: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let versions = outputs::versions();
    outputs::write_config(plan, system, &versions)?;
    let ops = ops_log::OpsLog::create(&plan.run_dir)?;
    let workload = Workload::new(plan.seed, &plan.scenario);

    let bearers = crate::auth::bearers(system.options.auth_secret.as_deref(), &workload)?;

    println!("seeding {} wallets ...", plan.scenario.wallets);
    let wallet_ids = setup::seed_wallets(
        &workload,
        plan.seed,
        &system.wallet_url,
        bearers.as_deref(),
        &ops.sink(),
    )
    .await?;

    let admin = bearers.as_ref().map(|b| b.admin().to_owned());
    let mut load = safety::run(
        plan,
        system,
        workload,
        wallet_ids,
        bearers,
        &ops,
        interrupted,
    )
    .await?;
    if interrupted.is_cancelled() {
        bail!("interrupted");
    }

    let convergence = liveness::run(system, args.converge_timeout, &mut load, interrupted).await?;
    ops.finish().await?;
    if let Some(scraper) = load.scraper.take() {
        scraper.finish(&plan.run_dir.join("metrics.jsonl")).await?;
    }
    walk::run(
        &system.wallet_db,
        &system.history_url,
        admin.as_deref(),
        &plan.run_dir,
    )
    .await?;

    let checker_args = consistency_checker::Args {
        wallet_db: system.wallet_db.clone(),
        history_db: system.history_db.clone(),
        ops: Some(plan.run_dir.join("ops.jsonl")),
        chaos: Some(plan.run_dir.join("chaos.jsonl")),
        walk: Some(plan.run_dir.join("walk.json")),
        json: false,
        out: Some(plan.run_dir.join("checker.json")),
        convergence: Some(convergence),
    };
    let report = consistency_checker::run(&checker_args)
        .await
        .context("running the consistency checker")?;
    println!("{}", consistency_checker::render_text(&report));

    let missed =
        outputs::write_results(args, plan, system, &load, convergence, &report, versions).await?;
    outputs::render_report(&plan.run_dir);
    // A run gives the checker everything it needs; an invariant it could
    // not evaluate is a gap in the verdict, not a pass.
    let unevaluated: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| c.status == run_log::checker::Status::NotEvaluated)
        .map(|c| c.invariant.as_str())
        .collect();
    if !unevaluated.is_empty() {
        println!(
            "not evaluated, though the run should have: {}",
            unevaluated.join(", ")
        );
    }
    Ok(verdict(report.passed && unevaluated.is_empty(), &missed))
}

/// The exit code: invariants first, then thresholds.
fn verdict(passed: bool, missed: &[String]) -> ExitCode {
    if !passed {
        println!("VERDICT: invariants violated (exit {EXIT_VIOLATED})");
        return ExitCode::from(EXIT_VIOLATED);
    }
    if !missed.is_empty() {
        for line in missed {
            println!("threshold missed: {line}");
        }
        println!("VERDICT: invariants held, thresholds missed (exit {EXIT_THRESHOLD})");
        return ExitCode::from(EXIT_THRESHOLD);
    }
    println!("VERDICT: every invariant held (exit 0)");
    ExitCode::SUCCESS
}

/// Every threshold parses, so a typo fails before anything starts.
fn parse_thresholds(args: &RunArgs) -> anyhow::Result<Vec<thresholds::Threshold>> {
    args.thresholds
        .iter()
        .map(|t| thresholds::parse(t))
        .collect::<Result<_, _>>()
}
