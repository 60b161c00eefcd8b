//! `loadgen bench`: how close the system comes to what its database
//! allows, in one command, on one private PostgreSQL with durable commits.
//!
//! 1. The model: pgbench runs the SQL of a transfer ([`model`]) with the
//!    bench's clients, as fast as they go.
//! 2. Full load: the services under a closed-loop transfer load, the same
//!    clients as goose users, history consuming (a `loadgen run`).
//! 3. Half load: pgbench, then the services, at half the services'
//!    full-load rate (open model, arrivals on schedule).
//! 4. Outage: half load again, with the broker killed for `--outage` from
//!    5 s in; how fast history catches up once it is back.
//! 5. Bare goose against a trivial endpoint ([`baseline`]), answering at
//!    once and after the full load's median latency: the load
//!    generator's CPU per request is held against the second.
//!
//! Before each measured phase the cluster is settled ([`settle`]): every
//! database vacuumed and analysed, so no phase pays for autovacuum of the
//! rows an earlier phase wrote.
//!
//! Each service phase is a whole run (set-up, load, convergence, walk,
//! checker, report) in its own directory under the bench's; the bench's
//! `summary.json` and `bench.html` set the figures side by side with the
//! targets they are measured against.

mod baseline;
mod model;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use harness::postgres::{PgCluster, PgOptions};
use run_log::FaultKind;
use run_log::{
    bench::{BenchSummary, Check, CpuPerTransfer, LagStages, LoadFigures, LoadgenCost, Phases},
    summary::RunSummary,
};
use tokio_util::sync::CancellationToken;
use workload::scenario::{Faults, Mix, Scenario, ScheduledFault};

pub use baseline::serve_trivial;

use crate::{
    attack::TRANSFER,
    cli::{BenchArgs, Cli, Command},
    run,
    run::history_event_times,
};

/// The targets (issue 12's acceptance).
const THROUGHPUT_RATIO_MIN: f64 = 0.8;
const HALF_P99_OVER_MODEL_MAX: f64 = 2.0;
const LAG_P99_MAX_MS: f64 = 100.0;
const CAUGHT_UP_MAX_S: f64 = 3.0;
const CATCH_UP_MULTIPLE_MIN: f64 = 5.0;
const LOADGEN_OVER_GOOSE_MAX: f64 = 1.5;
/// The broker goes down this far into the outage phase's load.
const OUTAGE_AT: Duration = Duration::from_secs(5);
/// Bare goose's run: long enough for a stable CPU reading (a third of a
/// phase when phases are shorter than 30 s).
const GOOSE_RUN: Duration = Duration::from_secs(10);

pub async fn bench(args: BenchArgs, interrupted: CancellationToken) -> anyhow::Result<ExitCode> {
    ensure!(
        args.duration >= Duration::from_secs(10),
        "--duration must be at least 10s (each phase needs a steady state)"
    );
    ensure!(
        OUTAGE_AT + args.outage + Duration::from_secs(5) <= args.duration,
        "--outage must end at least 5 s before the load does: the broker goes down {} s in, so --duration must be at least --outage + 10s",
        OUTAGE_AT.as_secs()
    );
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    let dir = args
        .out_dir
        .join(format!("{stamp}-bench-seed{}", args.seed));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = std::path::absolute(&dir)?;
    let command: String = std::env::args().collect::<Vec<_>>().join(" ");
    println!("bench directory: {}", dir.display());
    println!("starting a private PostgreSQL with durable commits (fsync on) ...");
    let mut postgres = PgCluster::start(PgOptions {
        durable: true,
        ..PgOptions::new(dir.join("postgres.log"))
    })
    .await
    .context("starting the bench's PostgreSQL")?;
    let outcome = phases(&args, &dir, &postgres, &command, &interrupted).await;
    postgres.fast_shutdown().await.ok();
    let summary = outcome?;
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)? + "\n",
    )?;
    print_summary(&summary);
    match reports::write_bench_report(&dir) {
        Ok(written) => println!("report: {}", written.path.display()),
        Err(err) => eprintln!("warning: could not render bench.html: {err:#}"),
    }
    println!("bench directory: {}", dir.display());
    Ok(verdict(&summary))
}

/// What a service phase left: its summary, its directory and its history
/// database.
struct ServiceRun {
    summary: RunSummary,
    dir: PathBuf,
    wallet_db: String,
    history_db: String,
}

async fn phases(
    args: &BenchArgs,
    dir: &Path,
    postgres: &PgCluster,
    command: &str,
    interrupted: &CancellationToken,
) -> anyhow::Result<BenchSummary> {
    let pg_pid = postgres
        .pid()
        .context("the bench's PostgreSQL is not running")?;
    let model_url = postgres.create_database("bench_model").await?;
    model::prepare(&model_url, args.wallets).await?;
    settle(postgres).await?;

    println!(
        "\n== 1/5 model: pgbench, {} clients, closed loop, {} ...",
        args.clients,
        humantime::format_duration(args.duration)
    );
    let model_full = model::run(
        &model_url,
        dir,
        args.clients,
        args.wallets,
        args.duration,
        None,
    )
    .await?;
    model::verify(&model_url, args.wallets, model_full.transfers).await?;
    print_figures("model, full", &model_full);

    settle(postgres).await?;
    println!(
        "\n== 2/5 service: {} goose users, closed loop ...",
        args.clients
    );
    let full = service_run(args, dir, postgres, pg_pid, "full", 0, None, interrupted).await?;
    let service_full = transfer_figures(&full.summary)?;
    print_figures("service, full", &service_full);

    let half_rate = ((service_full.per_s / 2.0).round() as u32).max(1);
    println!("\n== 3/5 half load: {half_rate} transfers/s arriving, pgbench then the service ...");
    settle(postgres).await?;
    let model_half = model::run(
        &model_url,
        dir,
        args.clients,
        args.wallets,
        args.duration,
        Some(half_rate),
    )
    .await?;
    model::verify(
        &model_url,
        args.wallets,
        model_full.transfers + model_half.transfers,
    )
    .await?;
    print_figures("model, half", &model_half);
    settle(postgres).await?;
    let half = service_run(
        args,
        dir,
        postgres,
        pg_pid,
        "half",
        half_rate,
        None,
        interrupted,
    )
    .await?;
    let service_half = transfer_figures(&half.summary)?;
    print_figures("service, half", &service_half);
    let lag_stages = lag_stages(&half).await?;

    println!(
        "\n== 4/5 outage: half load, the broker down for {} from {} s in ...",
        humantime::format_duration(args.outage),
        OUTAGE_AT.as_secs()
    );
    settle(postgres).await?;
    let outage = service_run(
        args,
        dir,
        postgres,
        pg_pid,
        "outage",
        half_rate,
        Some(args.outage),
        interrupted,
    )
    .await?;
    let catch_up = catch_up(&outage).await?;

    // The answer delay of the matched floor: the full load's median.
    let matched_delay = Duration::from_secs_f64(service_full.p50_ms.max(0.0) / 1000.0);
    let goose_run = GOOSE_RUN.min(args.duration / 3);
    println!(
        "\n== 5/5 bare goose: {} users against a trivial endpoint for {} s, answered at once, then after {:.1} ms ...",
        args.clients,
        goose_run.as_secs(),
        matched_delay.as_secs_f64() * 1000.0
    );
    let (goose_us, goose_requests) =
        baseline::goose_cost(dir, args.clients, goose_run, baseline::Floor::Instant).await?;
    let (matched_us, matched_requests) = baseline::goose_cost(
        dir,
        args.clients,
        goose_run,
        baseline::Floor::Matched {
            delay: matched_delay,
        },
    )
    .await?;

    let transfers = service_full.transfers.max(1) as f64;
    let cpu: Vec<CpuPerTransfer> = full
        .summary
        .cpu
        .iter()
        .map(|p| CpuPerTransfer {
            process: p.clone(),
            ms_per_transfer: p.cpu_s * 1000.0 / transfers,
        })
        .collect();
    let loadgen_cpu = full
        .summary
        .cpu
        .iter()
        .find(|p| p.process == "loadgen")
        .map_or(0.0, |p| p.cpu_s);
    let loadgen_us = loadgen_cpu * 1e6 / full.summary.totals.requests.max(1) as f64;
    let loadgen = LoadgenCost {
        us_per_request: loadgen_us,
        goose_us_per_request: goose_us,
        goose_requests,
        matched_delay_ms: matched_delay.as_secs_f64() * 1000.0,
        matched_us_per_request: matched_us,
        matched_requests,
        ratio: loadgen_us / matched_us.max(1e-9),
    };
    let throughput_ratio = service_full.per_s / model_full.per_s.max(1e-9);
    let runs = [&full, &half, &outage];
    let summary = BenchSummary {
        seed: args.seed,
        command: command.to_owned(),
        clients: args.clients,
        wallets: args.wallets,
        duration_s: args.duration.as_secs_f64(),
        checks: checks(
            throughput_ratio,
            (&service_half, &model_half),
            half.summary.history_lag.as_ref().map(|l| l.p99_ms),
            catch_up.as_ref(),
            loadgen.ratio,
            &runs,
        ),
        model: Phases {
            full: model_full,
            half: model_half,
        },
        service: Phases {
            full: service_full,
            half: service_half,
        },
        throughput_ratio,
        history_lag: half.summary.history_lag.clone(),
        lag_stages,
        outage_s: args.outage.as_secs_f64(),
        catch_up,
        cpu,
        loadgen,
        runs: runs
            .iter()
            .map(|r| {
                r.dir
                    .strip_prefix(dir)
                    .unwrap_or(&r.dir)
                    .display()
                    .to_string()
            })
            .collect(),
        versions: full.summary.versions.clone(),
    };
    Ok(summary)
}

/// Vacuums and analyses every database of the bench's cluster, and waits.
/// An earlier phase's rows are otherwise vacuumed by autovacuum during a
/// later one, and its WAL burst stalls that phase's commits: measured with
/// PostgreSQL's own log, the vacuum of the model's ledger (written in the
/// first phase) ran in the services' half load, and every commit in flight
/// took 40-60 ms instead of 1-4. Each phase still pays for the autovacuum its
/// own writes bring on. No checkpoint: it would make the next phase's first
/// write of every page log a full page.
async fn settle(postgres: &PgCluster) -> anyhow::Result<()> {
    use sqlx::Connection;
    let started = std::time::Instant::now();
    let mut admin = sqlx::PgConnection::connect(&postgres.url())
        .await
        .context("connecting to the bench's PostgreSQL")?;
    let databases: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname",
    )
    .fetch_all(&mut admin)
    .await?;
    admin.close().await.ok();
    for database in &databases {
        let mut conn = sqlx::PgConnection::connect(&postgres.database_url(database))
            .await
            .with_context(|| format!("connecting to database {database}"))?;
        sqlx::raw_sql("VACUUM (ANALYZE)")
            .execute(&mut conn)
            .await
            .with_context(|| format!("vacuuming database {database}"))?;
        conn.close().await.ok();
    }
    println!(
        "settled: {} databases vacuumed and analysed in {:.1} s",
        databases.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One service phase as a `loadgen run` on the bench's PostgreSQL:
/// transfers only, among the bench's wallets, `rate` 0 for a closed loop,
/// the broker killed for `outage` when given.
#[allow(clippy::too_many_arguments)]
async fn service_run(
    args: &BenchArgs,
    dir: &Path,
    postgres: &PgCluster,
    pg_pid: u32,
    phase: &str,
    rate: u32,
    outage: Option<Duration>,
    interrupted: &CancellationToken,
) -> anyhow::Result<ServiceRun> {
    let scenario = Scenario {
        name: format!("bench-{phase}"),
        description: format!("bench phase {phase}: transfers only"),
        wallets: args.wallets,
        users: args.clients,
        duration: args.duration,
        rate,
        mix: Mix {
            transfer: 100,
            fund: 0,
            get_wallet: 0,
            get_history: 0,
        },
        faults: Faults {
            enabled: outage.is_some(),
            schedule: outage
                .map(|hold| ScheduledFault {
                    at: OUTAGE_AT,
                    kind: FaultKind::BrokerKill,
                    hold,
                    instance: 1,
                    overlaps: false,
                    link: None,
                })
                .into_iter()
                .collect(),
            ..Faults::default()
        },
        ..Scenario::default()
    };
    let scenario_path = dir.join(format!("{phase}.toml"));
    std::fs::write(&scenario_path, toml::to_string(&scenario)?)
        .with_context(|| format!("writing {}", scenario_path.display()))?;
    let out_dir = dir.join(phase);
    let seed = args.seed.to_string();
    let argv: Vec<&str> = vec![
        "loadgen",
        "run",
        "--scenario-file",
        scenario_path
            .to_str()
            .context("a bench path that is not UTF-8")?,
        "--seed",
        &seed,
        "--out-dir",
        out_dir.to_str().context("a bench path that is not UTF-8")?,
    ];
    let Command::Run(mut run_args) = Cli::try_parse_from(&argv)?.command else {
        unreachable!("parsed as run")
    };
    run_args.command_line = Some(argv.join(" "));
    run_args.infra.database_url = Some(postgres.url());
    run_args.infra.partitions = args.partitions;
    run_args.also_account = vec![("postgres".to_owned(), pg_pid)];
    let code = run::run(*run_args, interrupted.clone()).await?;
    if interrupted.is_cancelled() {
        bail!("interrupted");
    }
    let run_dir = single_subdir(&out_dir)?;
    let summary: RunSummary = read_json(&run_dir.join("summary.json"))?;
    let config: serde_json::Value = read_json(&run_dir.join("config.json"))?;
    let database = |name: &str| {
        config["system"][name]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("config.json names no {name}"))
    };
    let (wallet_db, history_db) = (database("wallet_db")?, database("history_db")?);
    if !summary.verdict.passed {
        println!("the {phase} run violated invariants ({code:?}); see its report");
    }
    Ok(ServiceRun {
        summary,
        dir: run_dir,
        wallet_db,
        history_db,
    })
}

/// The transfers of a run's summary as bench figures: successful
/// transfers per second, latency of every transfer.
fn transfer_figures(summary: &RunSummary) -> anyhow::Result<LoadFigures> {
    let transfers = summary
        .endpoints
        .iter()
        .find(|e| e.endpoint == TRANSFER)
        .context("the run made no transfer")?;
    Ok(LoadFigures {
        rate: summary.rate,
        transfers: transfers.ok,
        per_s: transfers.ok as f64 / summary.duration_s.max(1e-3),
        p50_ms: transfers.p50_ms,
        p99_ms: transfers.p99_ms,
        max_ms: transfers.max_ms,
    })
}

/// The outage phase's catch-up: the broker's restart from the run's
/// fault timeline, every event's commit and visibility from its history
/// database (both on the one server's clock).
async fn catch_up(outage: &ServiceRun) -> anyhow::Result<Option<run_log::summary::CatchUp>> {
    let restart = outage
        .summary
        .faults
        .iter()
        .find(|f| f.kind == FaultKind::BrokerKill)
        .and_then(|f| f.healed)
        .context("the outage run has no healed broker kill in its timeline")?;
    let started = outage
        .summary
        .started_at
        .context("the outage run has no start time")?;
    let epoch = |t: chrono::DateTime<chrono::Utc>| t.timestamp_micros() as f64 / 1e6;
    let events: Vec<(f64, f64)> = history_event_times(&outage.history_db)
        .await
        .context("the outage run's history")?
        .into_iter()
        .map(|e| (e.committed, e.applied))
        .collect();
    let load = (epoch(started), epoch(started) + outage.summary.duration_s);
    Ok(run_log::summary::catch_up(&events, epoch(restart), load))
}

/// Where the half load's history lag goes: from the wallet's commit to
/// the relay marking the row published (outbox, produce, acknowledgement),
/// and from there to visible in history (fetch, apply, commit). Times from
/// the one server's clock; the load's events only.
async fn lag_stages(run: &ServiceRun) -> anyhow::Result<Option<LagStages>> {
    let started = run
        .summary
        .started_at
        .context("the half-load run has no start time")?;
    let wallet = sqlx::PgPool::connect(&run.wallet_db).await?;
    let published: std::collections::HashMap<uuid::Uuid, f64> = sqlx::query_as(
        "SELECT event_id, EXTRACT(EPOCH FROM published_at)::float8 FROM outbox
         WHERE published_at IS NOT NULL",
    )
    .fetch_all(&wallet)
    .await
    .context("reading the half-load run's outbox")?
    .into_iter()
    .collect();
    wallet.close().await;
    let events = history_event_times(&run.history_db)
        .await
        .context("the half-load run's history")?;
    let load_started = started.timestamp_micros() as f64 / 1e6;
    let (mut relay, mut consumer) = (Vec::new(), Vec::new());
    for event in events.iter().filter(|e| e.committed >= load_started) {
        if let Some(&at) = published.get(&event.event_id) {
            relay.push((event.committed, at));
            consumer.push((at, event.applied));
        }
    }
    Ok(
        match (
            run_log::summary::lag_stats(&relay, f64::MIN),
            run_log::summary::lag_stats(&consumer, f64::MIN),
        ) {
            (Some(relay), Some(consumer)) => Some(LagStages { relay, consumer }),
            _ => None,
        },
    )
}

fn checks(
    throughput_ratio: f64,
    (service_half, model_half): (&LoadFigures, &LoadFigures),
    lag_p99: Option<f64>,
    catch_up: Option<&run_log::summary::CatchUp>,
    loadgen_ratio: f64,
    runs: &[&ServiceRun],
) -> Vec<Check> {
    let check = |name: &str, target: String, measured: String, passed: bool| Check {
        name: name.to_owned(),
        target,
        measured,
        passed,
    };
    let violated: Vec<String> = runs
        .iter()
        .flat_map(|r| r.summary.verdict.violated.iter().cloned())
        .collect();
    vec![
        check(
            "throughput",
            format!("service ≥ {THROUGHPUT_RATIO_MIN}x the model's transfers/s"),
            format!("{throughput_ratio:.2}x"),
            throughput_ratio >= THROUGHPUT_RATIO_MIN,
        ),
        check(
            "latency at half load",
            format!("service p99 ≤ {HALF_P99_OVER_MODEL_MAX}x the model's p99"),
            format!(
                "{:.1} ms vs {:.1} ms ({:.2}x)",
                service_half.p99_ms,
                model_half.p99_ms,
                service_half.p99_ms / model_half.p99_ms.max(1e-9)
            ),
            service_half.p99_ms <= HALF_P99_OVER_MODEL_MAX * model_half.p99_ms,
        ),
        check(
            "history lag at half load",
            format!("p99 ≤ {LAG_P99_MAX_MS} ms"),
            lag_p99.map_or("no events".to_owned(), |p| format!("{p:.1} ms")),
            lag_p99.is_some_and(|p| p <= LAG_P99_MAX_MS),
        ),
        check(
            "catch-up after the broker outage",
            format!(
                "caught up ≤ {CAUGHT_UP_MAX_S} s after the restart, ≥ {CATCH_UP_MULTIPLE_MIN}x production"
            ),
            catch_up.map_or("no backlog measured".to_owned(), |c| {
                format!("{:.2} s, {:.1}x", c.caught_up_s, c.multiple)
            }),
            catch_up.is_some_and(|c| {
                c.caught_up_s <= CAUGHT_UP_MAX_S && c.multiple >= CATCH_UP_MULTIPLE_MIN
            }),
        ),
        check(
            "load generator cost",
            format!(
                "CPU per request ≤ {LOADGEN_OVER_GOOSE_MAX}x bare goose's, same requests answered after the full load's p50"
            ),
            format!("{loadgen_ratio:.2}x"),
            loadgen_ratio <= LOADGEN_OVER_GOOSE_MAX,
        ),
        check(
            "invariants",
            "every service phase's checker verdict holds".to_owned(),
            if violated.is_empty() {
                "held".to_owned()
            } else {
                format!("violated: {}", violated.join(", "))
            },
            violated.is_empty(),
        ),
    ]
}

fn print_figures(label: &str, f: &LoadFigures) {
    println!(
        "{label:<16} {:>8} transfers  {:>8.1}/s  p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>8.1} ms",
        f.transfers, f.per_s, f.p50_ms, f.p99_ms, f.max_ms
    );
}

fn print_summary(bench: &BenchSummary) {
    println!(
        "\n== bench: {} clients, {} wallets",
        bench.clients, bench.wallets
    );
    print_figures("model, full", &bench.model.full);
    print_figures("service, full", &bench.service.full);
    print_figures("model, half", &bench.model.half);
    print_figures("service, half", &bench.service.half);
    if let Some(lag) = &bench.history_lag {
        println!(
            "history lag at half load: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} events",
            lag.p50_ms, lag.p99_ms, lag.max_ms, lag.events
        );
    }
    if let Some(stages) = &bench.lag_stages {
        println!(
            "  of which commit to published (relay): p50 {:.1} ms, p99 {:.1} ms; published to visible (consumer): p50 {:.1} ms, p99 {:.1} ms",
            stages.relay.p50_ms,
            stages.relay.p99_ms,
            stages.consumer.p50_ms,
            stages.consumer.p99_ms
        );
    }
    if let Some(c) = &bench.catch_up {
        println!(
            "catch-up: {} events behind at the broker's restart, caught up {:.2} s later, {:.0} events/s applied = {:.1}x the {:.0}/s produced",
            c.backlog, c.caught_up_s, c.applied_per_s, c.multiple, c.produced_per_s
        );
    }
    let cpu: Vec<String> = bench
        .cpu
        .iter()
        .map(|p| format!("{} {:.3}", p.process.process, p.ms_per_transfer))
        .collect();
    println!("CPU ms per transfer at full load: {}", cpu.join(", "));
    let cost = &bench.loadgen;
    println!(
        "load generator: {:.1} µs CPU per request; bare goose answered after {:.1} ms {:.1} µs ({:.2}x), answered at once {:.1} µs",
        cost.us_per_request,
        cost.matched_delay_ms,
        cost.matched_us_per_request,
        cost.ratio,
        cost.goose_us_per_request
    );
    println!("targets:");
    for check in &bench.checks {
        println!(
            "  [{}] {}: {} (target: {})",
            if check.passed { "met" } else { "MISSED" },
            check.name,
            check.measured,
            check.target
        );
    }
}

/// 1 when a phase violated an invariant, 3 when a target was missed.
fn verdict(bench: &BenchSummary) -> ExitCode {
    let missed: Vec<&Check> = bench.checks.iter().filter(|c| !c.passed).collect();
    if missed.iter().any(|c| c.name == "invariants") {
        println!("VERDICT: invariants violated (exit {})", run::EXIT_VIOLATED);
        return ExitCode::from(run::EXIT_VIOLATED);
    }
    if !missed.is_empty() {
        println!(
            "VERDICT: {} of {} targets missed (exit {})",
            missed.len(),
            bench.checks.len(),
            run::EXIT_THRESHOLD
        );
        return ExitCode::from(run::EXIT_THRESHOLD);
    }
    println!("VERDICT: every target met (exit 0)");
    ExitCode::SUCCESS
}

fn single_subdir(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    match dirs.len() {
        1 => Ok(dirs.remove(0)),
        n => bail!("expected one run directory in {}, found {n}", dir.display()),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}
